"""`cartback experiments plan`: the carts an experiment needs, from the command line."""

from __future__ import annotations

from click.testing import CliRunner

from app.cli.main import main
from sequences.experiments.stats import plan_rates


def test_the_plan_prints_the_carts_each_arm_needs():
    result = CliRunner().invoke(main, ["experiments", "plan", "--baseline-rate", "0.08", "--mde", "0.02"])
    assert result.exit_code == 0, result.output
    per_arm = plan_rates(0.08, 0.02).carts_per_arm
    assert f"eligible carts per arm: {per_arm:,}" in result.output
    assert "8.0% → 10.0%" in result.output


def test_more_arms_and_more_power_need_more_carts():
    def per_arm(*extra: str) -> int:
        result = CliRunner().invoke(
            main, ["experiments", "plan", "--baseline-rate", "0.08", "--mde", "0.02", *extra]
        )
        assert result.exit_code == 0, result.output
        return int(result.output.splitlines()[0].rpartition(" ")[2].replace(",", ""))

    two = per_arm()
    assert per_arm("--arms", "3") > two
    assert per_arm("--power", "0.9") > two


def test_a_rate_given_as_a_percentage_is_refused_with_the_form_expected():
    result = CliRunner().invoke(main, ["experiments", "plan", "--baseline-rate", "8", "--mde", "2"])
    assert result.exit_code == 2
    assert "0.08 for 8 %" in result.output
