"""Encryption at rest for platform and WhatsApp secrets (invariant 7).

MultiFernet: the first key encrypts, every key decrypts, so ENCRYPTION_KEY can be rotated by
putting the new key first and keeping the old one after it until `rotate` has re-encrypted.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# Decrypted secrets kept in memory per process (one or two per store).
MAX_CACHED_SECRETS = 4096


class SecretUnreadable(RuntimeError):
    """Stored ciphertext no configured key can open (ENCRYPTION_KEY changed without rotation)."""


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        self._plaintexts: dict[str, str] = {}

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        cached = self._plaintexts.get(ciphertext)
        if cached is not None:
            return cached
        try:
            plaintext = self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "a stored secret cannot be decrypted: keep the old key in ENCRYPTION_KEY "
                "(after the new one) until secrets are re-encrypted"
            ) from None
        # Webhook secrets are checked on every delivery; Fernet's HMAC + AES per request is
        # avoidable work. Bounded: a process knows a handful of stores' secrets.
        if len(self._plaintexts) >= MAX_CACHED_SECRETS:
            self._plaintexts.clear()
        self._plaintexts[ciphertext] = plaintext
        return plaintext

    def rotate(self, ciphertext: str) -> str:
        return self._fernet.rotate(ciphertext.encode()).decode()
