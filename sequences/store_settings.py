"""A merchant's recovery settings, validated with the bounds DESIGN.md gives.

Stored as JSON on ``Store.settings``; missing keys take the defaults, so older rows keep
working when a setting is added.
"""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Bounds from DESIGN.md ("Defaults"): minutes.
MIN_INACTIVITY_MINUTES = 5
MAX_INACTIVITY_MINUTES = 120
# Every step must fall within 24 h of the cart's last activity.
SEQUENCE_WINDOW_MINUTES = 24 * 60
MAX_STEPS = 3


class Offer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["fixed", "percent"]
    # Rupees for "fixed", percent for "percent".
    value: Decimal = Field(gt=0)
    # Percent offers are capped in money ("10% off, up to ₹200").
    max_amount: Decimal | None = Field(default=None, gt=0)
    # The offer applies only to carts at least this large.
    min_subtotal: Decimal | None = Field(default=None, ge=0)
    valid_hours: int = Field(default=48, ge=1, le=24 * 14)

    @model_validator(mode="after")
    def _percent_is_capped(self) -> Self:
        if self.kind == "percent":
            if self.value >= 100:
                raise ValueError("a percentage offer must be below 100")
            if self.max_amount is None:
                raise ValueError("a percentage offer needs a maximum amount (max_amount)")
        return self


class StepSetting(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    delay_minutes: int = Field(ge=MIN_INACTIVITY_MINUTES, le=SEQUENCE_WINDOW_MINUTES)
    offer: Offer | None = None


def _default_steps() -> list[StepSetting]:
    hundred_off = Offer(kind="fixed", value=Decimal("100"), min_subtotal=Decimal("999"))
    return [
        StepSetting(delay_minutes=15),
        StepSetting(delay_minutes=4 * 60, offer=hundred_off),
        StepSetting(delay_minutes=22 * 60, offer=hundred_off),
    ]


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
    # "checkout_checkbox": only shoppers who ticked the platform's marketing box.
    # "store_collects_optin": the merchant collects WhatsApp opt-in elsewhere (recorded).
    consent_policy: Literal["checkout_checkbox", "store_collects_optin"] = "checkout_checkbox"

    @model_validator(mode="after")
    def _steps_in_order(self) -> Self:
        previous = 0
        for number, step in enumerate(self.steps, start=1):
            if step.delay_minutes <= previous:
                raise ValueError(f"step {number} must come after step {number - 1}")
            if number == 1 and step.delay_minutes < self.inactivity_minutes:
                raise ValueError("step 1 cannot come before the cart counts as abandoned")
            previous = step.delay_minutes
        return self

    @classmethod
    def from_stored(cls, raw: dict[str, object] | None) -> StoreSettings:
        return cls.model_validate(raw or {})

    def to_stored(self) -> dict[str, object]:
        return self.model_dump(mode="json")
