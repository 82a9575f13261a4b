"""Secrets at rest: Fernet (AES-128-CBC + HMAC) with MultiFernet so keys can be rotated.

FIELD_ENCRYPTION_KEY holds comma-separated keys, newest first; values encrypted under an older
key still decrypt, and `rotate` re-encrypts them under the newest.
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from apps.core.redaction import register_secret

PREFIX = "fernet:"


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.strip().encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be url-safe base64 of 32 bytes "
            "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        ) from exc


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return PREFIX + fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    if not ciphertext.startswith(PREFIX):
        raise ValueError("value is not an encrypted secret")
    try:
        return fernet().decrypt(ciphertext[len(PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "A stored secret cannot be decrypted: FIELD_ENCRYPTION_KEY changed without keeping the old key"
        ) from exc


def rotate(ciphertext: str) -> str:
    return PREFIX + fernet().rotate(ciphertext[len(PREFIX) :].encode()).decode()


class EncryptedSecret(str):
    """A decrypted secret. Its repr never shows the value, so tracebacks and debug pages don't either."""

    def __repr__(self) -> str:
        return "EncryptedSecret('***')"


class EncryptedTextField(models.TextField):
    """Stores ciphertext; Python sees the plaintext, registered for log redaction on first read."""

    def from_db_value(self, value, expression, connection):
        if value in (None, ""):
            return value
        plaintext = decrypt(value)
        register_secret(plaintext)
        return EncryptedSecret(plaintext)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value in (None, ""):
            return value
        if value.startswith(PREFIX):
            return value
        register_secret(value)
        return encrypt(value)
