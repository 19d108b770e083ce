"""What applying one Meta webhook delivery did: shared by the router and its handlers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Applied:
    """What a delivery did, for the response log and for work after the commit."""

    applied: int = 0
    ignored: int = 0
    opted_out_contacts: set[int] = field(default_factory=set)
    confirmations: list[int] = field(default_factory=list)
