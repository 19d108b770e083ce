"""A merchant's recovery settings, validated with the bounds DESIGN.md gives.

Stored as JSON on ``Store.settings``; missing keys take the defaults, so older rows keep
working when a setting is added.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from decimal import Decimal
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# Bounds from DESIGN.md ("Defaults"): minutes.
MIN_INACTIVITY_MINUTES = 5
MAX_INACTIVITY_MINUTES = 120
# Every step must fall within 24 h of the cart's last activity.
SEQUENCE_WINDOW_MINUTES = 24 * 60
MAX_STEPS = 3


# Contact.consent_source when consent came from the store's own opt-in (consent_policy
# "store_collects_optin") rather than the shopper's tick at checkout.
STORE_POLICY_CONSENT = "store_policy"
# The largest amount an offer may name (₹1 crore): far above any cart, far below overflow.
MAX_MONEY = Decimal("10000000")
# The merchant's line in the message ({{4}} of the template): one line, placeholders below.
MAX_COPY_CHARS = 100
COPY_LANGUAGES = ("en", "hi")
OFFER_PLACEHOLDER = "{offer}"
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


@dataclass(frozen=True)
class Problem:
    """A setting that cannot be saved: the field's dotted path and why, in the merchant's words."""

    field: str
    message: str


class Offer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["fixed", "percent"]
    # Rupees for "fixed", percent for "percent". Money has paise at most, and stays within what
    # the discount tables and the platforms' price fields hold.
    value: Decimal = Field(gt=0, le=MAX_MONEY, decimal_places=2)
    # Percent offers are capped in money ("10% off, up to ₹200").
    max_amount: Decimal | None = Field(default=None, gt=0, le=MAX_MONEY, decimal_places=2)
    # The offer applies only to carts at least this large.
    min_subtotal: Decimal | None = Field(default=None, ge=0, le=MAX_MONEY, decimal_places=2)
    valid_hours: int = Field(default=48, ge=1, le=24 * 14)

    @field_validator("value", "max_amount", "min_subtotal")
    @classmethod
    def _fixed_point(cls, amount: Decimal | None) -> Decimal | None:
        # "1E+2" is a hundred, written as platforms' price fields expect it: "100".
        return None if amount is None else Decimal(format(amount, "f"))

    def problems(self, prefix: str) -> list[Problem]:
        found: list[Problem] = []
        if self.kind == "percent":
            if self.value >= 100:
                found.append(Problem(f"{prefix}.value", "a percentage must be below 100"))
            if self.max_amount is None:
                found.append(Problem(f"{prefix}.max_amount", "a percentage offer needs a maximum amount"))
        return found

    @model_validator(mode="after")
    def _percent_is_capped(self, info: ValidationInfo) -> Self:
        _raise_first(self.problems("offer"), info)
        return self


class StepSetting(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    delay_minutes: int = Field(ge=MIN_INACTIVITY_MINUTES, le=SEQUENCE_WINDOW_MINUTES)
    offer: Offer | None = None
    # The merchant's own line per language, in place of the default ("{offer}!" or "We've
    # saved your cart for you."); the rest of the message is the Meta-approved template.
    copy_lines: dict[str, str] = Field(default_factory=dict)

    @field_validator("copy_lines")
    @classmethod
    def _blank_lines_are_unset(cls, lines: dict[str, str]) -> dict[str, str]:
        # A blank line would be an empty template parameter, which Meta refuses.
        return {language: line.strip() for language, line in lines.items() if line.strip()}

    def problems(self, prefix: str) -> list[Problem]:
        found = self.offer.problems(f"{prefix}.offer") if self.offer else []
        for language, line in self.copy_lines.items():
            field = f"{prefix}.copy_lines.{language}"
            if language not in COPY_LANGUAGES:
                found.append(Problem(field, f"language must be one of {', '.join(COPY_LANGUAGES)}"))
            elif len(line) > MAX_COPY_CHARS:
                found.append(Problem(field, f"keep it to {MAX_COPY_CHARS} characters (it is {len(line)})"))
            elif any(char in line for char in "\n\r\t") or "    " in line:
                # Meta refuses a parameter with a line break, a tab or 4 spaces in a row (132018).
                found.append(Problem(field, "one line only: no line breaks, tabs or runs of spaces"))
            elif any(token != OFFER_PLACEHOLDER for token in _PLACEHOLDER.findall(line)):
                found.append(Problem(field, "the only placeholder is {offer}"))
            elif self.offer is not None and OFFER_PLACEHOLDER not in line:
                found.append(Problem(field, "include {offer} so the shopper sees the discount"))
            elif self.offer is None and OFFER_PLACEHOLDER in line:
                found.append(Problem(field, "this step has no offer: remove {offer}"))
        return found


# Validation context flag: the settings form collects every problem (``problems()``) itself.
COLLECT_PROBLEMS = "collect_problems"


def _raise_first(problems: list[Problem], info: ValidationInfo) -> None:
    if problems and not (info.context or {}).get(COLLECT_PROBLEMS):
        raise ValueError(f"{problems[0].field}: {problems[0].message}")


def _default_steps() -> list[StepSetting]:
    hundred_off = Offer(kind="fixed", value=Decimal("100"), min_subtotal=Decimal("999"))
    return [
        StepSetting(delay_minutes=15),
        StepSetting(delay_minutes=4 * 60, offer=hundred_off),
        StepSetting(delay_minutes=22 * 60, offer=hundred_off),
    ]


# An address a mail server will take: one @, a dotted domain, no spaces or angle brackets (no
# header injection through a "name <address>" or a newline).
ALERT_EMAIL = re.compile(r"[^@\s<>,;]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")


class StoreSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    inactivity_minutes: int = Field(default=15, ge=MIN_INACTIVITY_MINUTES, le=MAX_INACTIVITY_MINUTES)
    steps: list[StepSetting] = Field(default_factory=_default_steps, min_length=1, max_length=MAX_STEPS)
    quiet_hours_enabled: bool = True
    quiet_hours_start: time = time(21, 0)
    quiet_hours_end: time = time(9, 0)
    # Most messages one contact may get from this store in any 24 h.
    max_messages_per_24h: int = Field(default=3, ge=1, le=MAX_STEPS)
    attribution_days: int = Field(default=7, ge=1, le=30)
    # What the store keeps of a sale's revenue, in percent: experiments weigh an arm by net
    # revenue (revenue x margin, less discounts and messaging cost), so a discount that buys
    # a sale is paid out of the margin, not out of the price.
    gross_margin_percent: Decimal = Field(default=Decimal("40"), gt=0, le=100, decimal_places=2)
    # Discount rules (engine.offer_rules): no offer to a shopper offered one for another cart
    # within this many days (0: no such rule); offers stop once the month's discounts used
    # reach the budget (None: no budget); no offer above this share of the cart's value.
    repeat_offer_days: int = Field(default=30, ge=0, le=365)
    monthly_discount_budget: Decimal | None = Field(default=None, gt=0, le=MAX_MONEY, decimal_places=2)
    max_offer_percent: Decimal | None = Field(default=None, gt=0, le=100, decimal_places=2)
    # "checkout_checkbox": only shoppers who ticked the platform's marketing box.
    # "store_collects_optin": the merchant collects WhatsApp opt-in elsewhere (recorded).
    consent_policy: Literal["checkout_checkbox", "store_collects_optin"] = "checkout_checkbox"
    # Where incidents are emailed (sequences.alerts); None: shown in the admin only.
    alert_email: str | None = Field(default=None, max_length=254)

    @field_validator("alert_email")
    @classmethod
    def _email_address(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        if not value:
            return None
        if not ALERT_EMAIL.fullmatch(value):
            raise ValueError("give an email address like you@yourstore.com (or leave it empty)")
        return value

    @field_validator("quiet_hours_start", "quiet_hours_end")
    @classmethod
    def _wall_clock(cls, moment: time) -> time:
        # Quiet hours are the store's wall-clock hours; a zone here would make every
        # comparison with the store's local time fail.
        if moment.tzinfo is not None:
            raise ValueError("give a time of day without a zone, like 21:00 (the store's time zone applies)")
        return moment

    def problems(self) -> list[Problem]:
        """Rules across fields, each pinned to the field the merchant should change."""
        found: list[Problem] = []
        if self.quiet_hours_enabled and self.quiet_hours_start == self.quiet_hours_end:
            found.append(Problem("quiet_hours_end", "must differ from the start (or turn quiet hours off)"))
        previous = 0
        for index, step in enumerate(self.steps):
            prefix = f"steps.{index}"
            if index == 0 and step.delay_minutes < self.inactivity_minutes:
                found.append(
                    Problem(
                        f"{prefix}.delay_minutes", "step 1 cannot come before the cart counts as abandoned"
                    )
                )
            elif step.delay_minutes <= previous:
                found.append(
                    Problem(f"{prefix}.delay_minutes", f"step {index + 1} must come after step {index}")
                )
            previous = step.delay_minutes
            found.extend(step.problems(prefix))
        return found

    @model_validator(mode="after")
    def _steps_in_order(self, info: ValidationInfo) -> Self:
        _raise_first(self.problems(), info)
        return self

    @classmethod
    def from_stored(cls, raw: dict[str, object] | None) -> StoreSettings:
        return cls.model_validate(raw or {})

    def to_stored(self) -> dict[str, object]:
        return self.model_dump(mode="json")
