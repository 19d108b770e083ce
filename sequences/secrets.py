"""Encryption at rest for platform and WhatsApp secrets (invariant 7).

MultiFernet: the first key encrypts, every key decrypts, so ENCRYPTION_KEY can be rotated by
putting the new key first and keeping the old one after it until `rotate` has re-encrypted.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretUnreadable(RuntimeError):
    """Stored ciphertext no configured key can open (ENCRYPTION_KEY changed without rotation)."""


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "a stored secret cannot be decrypted: keep the old key in ENCRYPTION_KEY "
                "(after the new one) until secrets are re-encrypted"
            ) from None

    def rotate(self, ciphertext: str) -> str:
        return self._fernet.rotate(ciphertext.encode()).decode()
