"""Starting and stopping a store's experiment.

An arm may change the levers of the recovery sequence, nothing else: each step's offer, the
merchant's line per step and language (inside the approved templates, so no new Meta
approval), the step delays and the number of steps (``steps``), and the inactivity before a
cart counts as abandoned (``inactivity_minutes``). Every arm's settings are validated as the
settings page validates the store's, so an arm never runs with settings the store could not
have.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlmodel import select

from sequences.experiments.assignment import arm_settings
from sequences.experiments.results import experiment_results
from sequences.merchant.settings_changes import Saved, SettingsRejected, as_payload, enqueue_replan, save
from sequences.merchant.store_settings import COLLECT_PROBLEMS, Problem, StoreSettings
from sequences.models import Experiment, ExperimentArm, ExperimentStatus, Store, StoreStatus
from sequences.runtime import Runtime

# What an arm may change (StoreSettings' field names).
LEVERS = frozenset({"steps", "inactivity_minutes"})
METRICS = ("net_revenue_per_cart", "recovery_rate")
# The holdout's share when the merchant turns it on without naming one.
DEFAULT_HOLDOUT_SHARE = 0.10
# Who the settings history names for a winner promoted by itself.
AUTO_PROMOTER = "cartback (auto-promotion)"
log = logging.getLogger("cartback.experiments")
MAX_ARMS = 6


class ExperimentError(ValueError):
    """An experiment that cannot start, with every reason in the merchant's words."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{problem.field}: {problem.message}" for problem in problems))
        self.problems = problems


class ExperimentNotFound(LookupError):
    """No such experiment (or arm) for this store."""


@dataclass(frozen=True)
class ArmSpec:
    name: str
    weight: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)
    control: bool = False
    holdout: bool = False


def with_holdout(arms: Sequence[ArmSpec], share: float = DEFAULT_HOLDOUT_SHARE) -> list[ArmSpec]:
    """The arms plus a holdout taking ``share`` of the carts, the rest split by their weights
    (in whole percents: weights 1, 1 and a 10 % holdout become 45, 45, 10)."""
    if not 0 < share < 1:
        raise ExperimentError([Problem("holdout_share", "give the holdout's share as a fraction below 1")])
    held = max(1, round(share * 100))
    total = sum(arm.weight for arm in arms) or 1
    scaled = [
        ArmSpec(arm.name, max(1, round(arm.weight * (100 - held) / total)), arm.overrides, arm.control)
        for arm in arms
    ]
    return [*scaled, ArmSpec("Holdout (no messages)", held, holdout=True)]


def _problems(store_settings: StoreSettings, arms: Sequence[ArmSpec], metric: str) -> list[Problem]:
    found: list[Problem] = []
    if metric not in METRICS:
        found.append(Problem("metric", f"choose one of {', '.join(METRICS)}"))
    if not 2 <= len(arms) <= MAX_ARMS:
        found.append(Problem("arms", f"an experiment has 2 to {MAX_ARMS} arms"))
    if sum(arm.control for arm in arms) != 1:
        found.append(Problem("arms", "mark exactly one arm as the control"))
    if sum(arm.holdout for arm in arms) > 1:
        found.append(Problem("arms", "at most one holdout"))
    if len({arm.name.strip().lower() for arm in arms}) != len(arms):
        found.append(Problem("arms", "give each arm its own name"))
    for index, arm in enumerate(arms):
        prefix = f"arms.{index}"
        if not arm.name.strip():
            found.append(Problem(f"{prefix}.name", "name the arm"))
        if arm.weight < 1:
            found.append(Problem(f"{prefix}.weight", "a weight is a whole number from 1"))
        if arm.control and arm.holdout:
            found.append(Problem(prefix, "the holdout sends nothing, so it cannot be the control"))
        if arm.holdout and arm.overrides:
            found.append(Problem(f"{prefix}.overrides", "the holdout sends nothing: it changes no setting"))
        for key in sorted(set(arm.overrides) - LEVERS):
            found.append(Problem(f"{prefix}.overrides.{key}", "an arm may change only steps and inactivity"))
        if arm.overrides and not set(arm.overrides) - LEVERS:
            merged = {**store_settings.to_stored(), **arm.overrides}
            try:
                settings = StoreSettings.model_validate(merged, context={COLLECT_PROBLEMS: True})
            except ValidationError as exc:
                for error in exc.errors():
                    where = ".".join(str(part) for part in error["loc"])
                    found.append(Problem(f"{prefix}.overrides.{where}", error["msg"]))
            else:
                found.extend(
                    Problem(f"{prefix}.overrides.{problem.field}", problem.message)
                    for problem in settings.problems()
                )
    return found


def start_experiment(
    runtime: Runtime,
    store_id: int,
    name: str,
    arms: Sequence[ArmSpec],
    *,
    metric: str = "net_revenue_per_cart",
    planned_per_arm: int = 5_000,
    auto_promote: bool = False,
) -> Experiment:
    """Start an experiment for the store: from now on each cart that becomes eligible is given
    an arm. A store runs one experiment at a time."""
    with runtime.database.locked_session() as session:
        # The store's row lock: two starts at once cannot both find no running experiment.
        store = session.exec(select(Store).where(Store.id == store_id).with_for_update()).first()
        if store is None:
            raise ExperimentError([Problem("store", "no such store")])
        problems = _problems(runtime.store_settings(store), arms, metric)
        if not name.strip():
            problems.insert(0, Problem("name", "name the experiment"))
        if planned_per_arm < 100:
            problems.append(Problem("planned_per_arm", "plan at least 100 eligible carts per arm"))
        running = session.exec(
            select(Experiment).where(
                Experiment.store_id == store_id, Experiment.status == ExperimentStatus.RUNNING
            )
        ).first()
        if running is not None:
            problems.append(Problem("store", f"“{running.name}” is running: stop it first"))
        if problems:
            raise ExperimentError(problems)
        experiment = Experiment(
            store_id=store_id,
            name=name.strip(),
            metric=metric,
            planned_per_arm=planned_per_arm,
            auto_promote=auto_promote,
            assignment_key=secrets.token_hex(32),
            started_at=runtime.now(),
            created_at=runtime.now(),
        )
        session.add(experiment)
        session.flush()
        assert experiment.id is not None
        for position, arm in enumerate(arms):
            session.add(
                ExperimentArm(
                    experiment_id=experiment.id,
                    name=arm.name.strip(),
                    weight=arm.weight,
                    is_control=arm.control,
                    is_holdout=arm.holdout,
                    overrides=dict(arm.overrides),
                    position=position,
                )
            )
        session.commit()
        session.refresh(experiment)
        return experiment


def stop_experiment(runtime: Runtime, store_id: int, experiment_id: int) -> Experiment | None:
    """No new cart is assigned; carts in an arm keep it until their sequence ends. None when
    the store has no such experiment."""
    with runtime.database.locked_session() as session:
        experiment = session.exec(
            select(Experiment)
            .where(Experiment.id == experiment_id, Experiment.store_id == store_id)
            .with_for_update()
        ).first()
        if experiment is None:
            return None
        if experiment.status == ExperimentStatus.RUNNING:
            experiment.status, experiment.stopped_at = ExperimentStatus.STOPPED, runtime.now()
            session.commit()
            session.refresh(experiment)
        return experiment


def promote_arm(runtime: Runtime, store_id: int, experiment_id: int, arm_id: int, actor: str) -> Saved:
    """The store's settings become the arm's, recorded in the settings audit trail as the
    merchant's change, and the experiment stops (its carts keep their arms). Promoting the
    control only stops it: its settings are the store's."""
    with runtime.database.session() as session:
        experiment = session.exec(
            select(Experiment).where(Experiment.id == experiment_id, Experiment.store_id == store_id)
        ).first()
        arm = session.exec(
            select(ExperimentArm).where(
                ExperimentArm.id == arm_id, ExperimentArm.experiment_id == experiment_id
            )
        ).first()
        store = session.get(Store, store_id)
        if experiment is None or arm is None or store is None:
            raise ExperimentNotFound(experiment_id)
        if arm.is_holdout:
            raise ExperimentError([Problem("arm", "the holdout sends nothing: promote an arm that messages")])
        payload = as_payload(store, arm_settings(runtime.store_settings(store), arm))
        # The pause switch is not the arm's to change.
        payload.pop("sending_paused", None)
        label = f"{actor} · promoted “{arm.name}” of experiment “{experiment.name}”"
    saved = save(runtime, store_id, payload, label)
    with runtime.database.locked_session() as session:
        held = session.exec(select(Experiment).where(Experiment.id == experiment_id).with_for_update()).one()
        held.promoted_arm_id = arm_id
        if held.status == ExperimentStatus.RUNNING:
            held.status, held.stopped_at = ExperimentStatus.STOPPED, runtime.now()
        session.commit()
    return saved


def promote_winners(runtime: Runtime) -> list[tuple[int, int]]:
    """Promote the winner of every running experiment the merchant set to promote by itself:
    an arm declared better than the control on the deciding figure with the opt-out guardrail
    held (the best of them, when several), exactly as the merchant's click would. The
    intervals are valid at every look, so promoting at the first look that shows a winner
    keeps their error rate. Returns (experiment id, arm id) of each promotion."""
    chosen: list[tuple[int, int, int]] = []
    with runtime.database.session() as session:
        candidates = session.exec(
            select(Experiment).where(
                Experiment.status == ExperimentStatus.RUNNING,
                Experiment.auto_promote == True,  # noqa: E712
            )
        ).all()
        for experiment in candidates:
            assert experiment.id is not None
            store = session.get(Store, experiment.store_id)
            if store is None or store.status != StoreStatus.ACTIVE:
                continue
            results = experiment_results(session, experiment, runtime.store_settings(store))

            def estimate(arm_id: int, found: Any = results, metric: str = experiment.metric) -> float:
                comparison = found.comparison(arm_id, "control", metric)
                return comparison.interval.estimate if comparison and comparison.interval else 0.0

            if results.better:
                chosen.append((experiment.store_id, experiment.id, max(results.better, key=estimate)))
    promoted: list[tuple[int, int]] = []
    for store_id, experiment_id, arm_id in chosen:
        try:
            saved = promote_arm(runtime, store_id, experiment_id, arm_id, AUTO_PROMOTER)
        except (ExperimentError, SettingsRejected) as refused:
            # The store's settings moved since the start and the arm no longer fits them:
            # the merchant decides; the experiment runs on and the page shows the winner.
            log.warning(
                "experiment winner not promoted",
                extra={"experiment_id": experiment_id, "arm_id": arm_id, "reason": type(refused).__name__},
            )
            continue
        if saved.replan_needed:
            enqueue_replan(runtime, store_id)
        log.info("experiment winner promoted", extra={"experiment_id": experiment_id, "arm_id": arm_id})
        promoted.append((experiment_id, arm_id))
    return promoted
