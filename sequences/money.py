"""Money display for shoppers, following the store's locale (en-IN: ₹1,00,000.00)."""

from __future__ import annotations

from decimal import Decimal

from babel import Locale
from babel.numbers import format_currency


def format_money(amount: Decimal, currency: str, locale: str = "en_IN") -> str:
    return format_currency(amount, currency, locale=locale)


def format_offer_amount(amount: Decimal, currency: str, locale: str = "en_IN") -> str:
    """Whole amounts without decimals ("₹100"), as an offer reads in a message."""
    if amount == amount.to_integral_value():
        # The locale's own pattern (keeps Indian grouping) without its fraction digits.
        pattern = Locale.parse(locale).currency_formats["standard"].pattern.split(";")[0]
        whole = pattern.split(".")[0] + pattern[pattern.index(".") + 3 :] if "." in pattern else pattern
        return format_currency(amount, currency, locale=locale, format=whole, currency_digits=False)
    return format_currency(amount, currency, locale=locale)


def to_amount_1000(amount: Decimal) -> int:
    """WhatsApp's `currency` parameter takes the amount multiplied by 1000 as an integer."""
    return int((amount * 1000).to_integral_value())
