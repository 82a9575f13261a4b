"""Secrets at rest: Fernet (AES-128-CBC + HMAC) with MultiFernet so keys can be rotated.

FIELD_ENCRYPTION_KEY holds comma-separated keys, newest first; values encrypted under an older
key still decrypt, and `secrets_rotate` (command `rotate_secrets`) re-encrypts them under the newest.

Plaintext and ciphertext are told apart by type, never by looking at the value: whatever Python code
assigns to an EncryptedTextField is plaintext and is encrypted on save — even a value that happens to
begin with the cipher prefix. Only the field itself makes a `Ciphertext`: when it reads serialized data
(`loaddata`) or rotates a stored value. A stored value that no configured key decrypts is read as an
`UnreadableSecret` so that pages listing it still render and say what is wrong.
"""

import logging
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models
from django.db.models import ExpressionWrapper, F

from apps.core.redaction import register_secret

logger = logging.getLogger(__name__)
PREFIX = "fernet:"
UNREADABLE_REASON = (
    "cannot be decrypted with any FIELD_ENCRYPTION_KEY (the key changed without keeping the old one, "
    "or the stored value is damaged); enter it again"
)


@lru_cache(maxsize=4)
def _fernets(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    try:
        fernets = [Fernet(key.strip().encode()) for key in keys]
    except ValueError as exc:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be url-safe base64 of 32 bytes "
            "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        ) from exc
    if not fernets:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY is empty")
    return MultiFernet(fernets), fernets[0]


def fernet() -> MultiFernet:
    return _fernets(tuple(settings.FIELD_ENCRYPTION_KEYS))[0]


def _newest() -> Fernet:
    return _fernets(tuple(settings.FIELD_ENCRYPTION_KEYS))[1]


class EncryptedSecret(str):
    """A decrypted secret. Its repr never shows the value, so tracebacks and debug pages don't either."""

    def __repr__(self) -> str:
        return "EncryptedSecret('***')"


class Ciphertext(str):
    """A value as stored: `fernet:<token>`. Saved as it is, never encrypted a second time."""


class UnreadableSecret(str):
    """A stored value no configured key decrypts. Empty as a string; saving keeps the stored value untouched."""

    def __new__(cls, stored: str):
        instance = super().__new__(cls, "")
        instance.stored = stored
        return instance

    def __repr__(self) -> str:
        return "UnreadableSecret()"


def encrypt(plaintext: str) -> Ciphertext:
    return Ciphertext(PREFIX + fernet().encrypt(str(plaintext).encode()).decode())


def _token(ciphertext: str) -> bytes:
    if not ciphertext.startswith(PREFIX):
        raise ValueError("value is not an encrypted secret")
    return ciphertext[len(PREFIX) :].encode()


def decrypt(ciphertext: str) -> str:
    token = _token(ciphertext)
    try:
        return fernet().decrypt(token).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "A stored secret cannot be decrypted: FIELD_ENCRYPTION_KEY changed without keeping the old key"
        ) from exc


def rotate(ciphertext: str) -> Ciphertext:
    """The same secret under the newest key. Raises InvalidToken when no configured key decrypts it."""
    return Ciphertext(PREFIX + fernet().rotate(_token(ciphertext)).decode())


def is_current(ciphertext: str) -> bool:
    """Already encrypted under the newest key (nothing to rotate)."""
    try:
        _newest().decrypt(_token(ciphertext))
        return True
    except (InvalidToken, ValueError):
        return False


class EncryptedTextField(models.TextField):
    """Stores ciphertext; Python sees the plaintext, registered for log redaction on first read."""

    description = "Text encrypted at rest (Fernet)"

    def from_db_value(self, value, expression, connection):
        if value in (None, ""):
            return value
        try:
            plaintext = decrypt(value)
        except (ImproperlyConfigured, ValueError, UnicodeDecodeError):
            logger.error("%s.%s: a stored secret %s", self.model._meta.label, self.name, UNREADABLE_REASON)
            return UnreadableSecret(value)
        register_secret(plaintext)
        return EncryptedSecret(plaintext)

    def to_python(self, value):
        """Serialized text → Python. Only deserializers (`loaddata`) reach this: `clean()` below skips it.

        dumpdata writes ciphertext, so a prefixed value must decrypt under a configured key; a
        hand-written fixture may give plaintext instead, which is encrypted when saved."""
        if value is None or isinstance(value, (EncryptedSecret, Ciphertext, UnreadableSecret)):
            return value
        value = str(value)
        if value.startswith(PREFIX):
            try:
                fernet().decrypt(_token(value))
            except InvalidToken:
                raise ValidationError(
                    f"{self.name}: this encrypted value cannot be decrypted with FIELD_ENCRYPTION_KEY; "
                    "load it with the key it was dumped with"
                ) from None
            return Ciphertext(value)
        return value

    def clean(self, value, model_instance):
        # What sits on an instance is plaintext (or an already-stored value): validate it as it is,
        # never run it through to_python, which would take a prefixed plaintext for ciphertext.
        if isinstance(value, (Ciphertext, UnreadableSecret)):
            return value
        self.validate(value, model_instance)
        self.run_validators(value)
        return value

    def get_prep_value(self, value):
        # Not TextField.get_prep_value: that calls to_python, which reads serialized text.
        value = models.Field.get_prep_value(self, value)
        if isinstance(value, UnreadableSecret):
            return value.stored
        if value is None or value == "":
            return value
        if isinstance(value, Ciphertext):
            return str(value)
        register_secret(value)
        return str(encrypt(value))

    def value_to_string(self, obj):
        """dumpdata: the ciphertext, never the plaintext."""
        return self.get_prep_value(self.value_from_object(obj))


# --- rotation ----------------------------------------------------------------------------------


def encrypted_fields() -> list[tuple[type[models.Model], EncryptedTextField]]:
    """Every EncryptedTextField of every installed model, found through the app registry, so fields
    added later are rotated without anyone remembering to list them."""
    return [
        (model, field)
        for model in apps.get_models()
        for field in model._meta.local_concrete_fields
        if isinstance(field, EncryptedTextField)
    ]


def secrets_rotate(*, dry_run: bool = False, batch_size: int = 500) -> list[dict]:
    """Re-encrypt every stored secret under the newest FIELD_ENCRYPTION_KEY; one report row per field.

    Each value is swapped only if it is still the one read (compare-and-set), so a key changed in the
    admin meanwhile is never overwritten with the old one. Values no key decrypts are listed, untouched."""
    report = []
    for model, field in encrypted_fields():
        row = {"field": f"{model._meta.label}.{field.name}", "rotated": 0, "current": 0, "changed": 0, "unreadable": []}
        manager = model._base_manager
        stored_values = (
            manager.exclude(**{f"{field.attname}__isnull": True})
            # The raw column: a plain TextField output skips this field's decrypting converter.
            .annotate(_stored=ExpressionWrapper(F(field.attname), output_field=models.TextField()))
            .values_list("pk", "_stored")
            .order_by("pk")
        )
        for pk, stored in stored_values.iterator(chunk_size=batch_size):
            if not stored:
                continue
            if is_current(stored):
                row["current"] += 1
                continue
            try:
                rotated = rotate(stored)
            except (InvalidToken, ValueError):
                row["unreadable"].append(pk)
                continue
            if dry_run:
                row["rotated"] += 1
                continue
            swapped = manager.filter(pk=pk, **{field.attname: Ciphertext(stored)}).update(**{field.attname: rotated})
            row["rotated" if swapped else "changed"] += 1
        report.append(row)
    return report
