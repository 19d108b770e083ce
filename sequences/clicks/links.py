"""Signed one-click recovery links.

The token carries ids only (our message id; never a phone or email), is salted for this one
purpose, and expires. Signing uses the newest SECRET_KEY; older keys in SECRET_KEY_FALLBACKS
still verify, so rotating the secret does not break links already on shoppers' phones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

LINK_SALT = "cartback.recovery-link.v1"
# A link outlives its discount only long enough to land the shopper somewhere useful.
DEFAULT_LINK_LIFETIME = timedelta(days=7)


class LinkProblem(StrEnum):
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True)
class LinkPayload:
    message_id: int


@dataclass(frozen=True)
class LinkCheck:
    payload: LinkPayload | None
    problem: LinkProblem | None = None
    # For a bad token, the message id it claims (unverified): only ever used to choose which
    # store's front page to land on, never to act.
    claimed_message_id: int | None = None


class LinkSigner:
    def __init__(self, keys_oldest_first: list[str]) -> None:
        self._serializer = URLSafeTimedSerializer(keys_oldest_first, salt=LINK_SALT)

    def sign(self, message_id: int) -> str:
        return self._serializer.dumps([message_id])

    def check(self, token: str, max_age: timedelta) -> LinkCheck:
        try:
            data = self._serializer.loads(token, max_age=int(max_age.total_seconds()))
        except SignatureExpired as exc:
            # The signature was good, only old: its ids are genuine (used to find the cart).
            claimed = None
            if isinstance(exc.payload, bytes):
                try:
                    claimed = _message_id(self._serializer.load_payload(exc.payload))
                except BadSignature:
                    claimed = None
            return LinkCheck(None, LinkProblem.EXPIRED, claimed)
        except BadSignature:
            return LinkCheck(None, LinkProblem.INVALID, self.claimed(token))
        message_id = _message_id(data)
        if message_id is None:
            return LinkCheck(None, LinkProblem.INVALID)
        return LinkCheck(LinkPayload(message_id))

    def claimed(self, token: str) -> int | None:
        """The message id an unverifiable token claims (for choosing a landing page only)."""
        try:
            _ok, data = self._serializer.loads_unsafe(token)
        except Exception:  # noqa: BLE001 - any garbage token simply claims nothing
            return None
        return _message_id(data)


def _message_id(data: object) -> int | None:
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], int) and data[0] > 0:
        return data[0]
    return None
