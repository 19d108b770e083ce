"""`cartback experiments …`: plan an experiment before starting it."""

from __future__ import annotations

import click

from sequences.experiments.stats import ALPHA, DEFAULT_POWER, plan_rates


def register(main: click.Group) -> None:
    @main.group(help="A/B tests of the recovery sequence against a holdout.")
    def experiments() -> None:
        pass

    @experiments.command(
        "plan",
        help=(
            "Print the eligible carts each arm needs to find a lift. Rates are fractions and the "
            "minimum detectable effect is absolute: --baseline-rate 0.08 --mde 0.02 means 8 % "
            "against 10 %."
        ),
    )
    @click.option("--baseline-rate", type=float, required=True, help="Today's recovery rate, e.g. 0.08.")
    @click.option("--mde", type=float, required=True, help="The smallest lift worth finding, e.g. 0.02.")
    @click.option(
        "--power", type=float, default=DEFAULT_POWER, show_default=True, help="Chance of finding it."
    )
    @click.option(
        "--arms", type=click.IntRange(2, 10), default=2, show_default=True, help="Arms, control included."
    )
    def plan(baseline_rate: float, mde: float, power: float, arms: int) -> None:
        try:
            planned = plan_rates(baseline_rate, mde, power=power, arms=arms)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        total = planned.carts_per_arm * arms
        click.echo(f"eligible carts per arm: {planned.carts_per_arm:,}")
        click.echo(
            f"{arms} arms, {total:,} eligible carts in all, to find {baseline_rate:.1%} → "
            f"{baseline_rate + mde:.1%} with {power:.0%} power; the intervals hold at every look "
            f"({1 - ALPHA:.0%}), so the results may be read every day."
        )
