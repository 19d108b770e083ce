"""Auto-promotion: a running experiment the merchant set to promote by itself has its winner
made the store's settings by the sweep, exactly as the merchant's click would, and nothing
else is touched."""

from __future__ import annotations

from sqlmodel import col, select

from sequences.engine.sweep import run_sweep
from sequences.experiments.manage import AUTO_PROMOTER, promote_winners
from sequences.models import Experiment, ExperimentArm, ExperimentStatus, SettingsChange, Store
from tests.support.experiments import seed_experiment


def _auto(runtime, experiment_id: int | None) -> None:
    with runtime.database.session() as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        experiment.auto_promote = True
        session.add(experiment)
        session.commit()


def _state(runtime, experiment_id: int | None):
    with runtime.database.session() as session:
        experiment = session.get(Experiment, experiment_id)
        store = session.get(Store, 1)
        assert experiment is not None and store is not None
        changes = session.exec(select(SettingsChange).order_by(col(SettingsChange.id))).all()
        return experiment, runtime.store_settings(store), changes


def test_a_clear_winner_becomes_the_stores_settings_at_the_next_sweep(journey):
    # ₹100 off brings back 35 % against 5 %: far more net revenue per cart, no opt-outs.
    experiment = seed_experiment(journey.runtime, 1, per_arm=600, rates=(0.05, 0.35, 0.03))
    _auto(journey.runtime, experiment.id)

    report = run_sweep(journey.runtime)

    assert report.winners_promoted == 1
    held, settings, changes = _state(journey.runtime, experiment.id)
    with journey.runtime.database.session() as session:
        winner = session.exec(select(ExperimentArm).where(ExperimentArm.name == "₹100 off")).one()
    assert held.status == ExperimentStatus.STOPPED and held.promoted_arm_id == winner.id
    assert settings.steps[0].offer is not None and settings.steps[0].offer.value == 100
    assert changes and changes[-1].actor.startswith(AUTO_PROMOTER)
    # Promoted once: the next sweep finds nothing running.
    assert promote_winners(journey.runtime) == []


def test_without_the_merchants_consent_a_winner_is_only_shown(journey):
    experiment = seed_experiment(journey.runtime, 1, per_arm=600, rates=(0.05, 0.35, 0.03))

    assert promote_winners(journey.runtime) == []

    held, settings, changes = _state(journey.runtime, experiment.id)
    assert held.status == ExperimentStatus.RUNNING and held.promoted_arm_id is None
    assert settings.steps[0].offer is None and changes == []


def test_no_winner_yet_promotes_nothing(journey):
    experiment = seed_experiment(journey.runtime, 1, per_arm=600, rates=(0.10, 0.10, 0.10))
    _auto(journey.runtime, experiment.id)

    assert promote_winners(journey.runtime) == []

    held, _settings, changes = _state(journey.runtime, experiment.id)
    assert held.status == ExperimentStatus.RUNNING and changes == []
