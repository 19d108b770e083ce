"""Applying Meta's webhook events (see ``statuses``)."""

from sequences.whatsapp.inbound.statuses import REPLY_WINDOW, Applied, apply_events

__all__ = ["REPLY_WINDOW", "Applied", "apply_events"]
