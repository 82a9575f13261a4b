"""The audit log: who changed what and when, kept by django-auditlog, never holding a secret.

Two ways in:
- `audit_register(Model, ...)` in an app's `ready()`: every create, change and delete of that model
  is recorded with a field-level diff. Encrypted fields are always masked: the entry says a key
  was set or replaced, never what it was.
- `audit_record(target=..., event=...)` from a service, for things that are not a row changing on
  its own: a manual run, a re-run, an approval. The person is taken from the current request.
"""

from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.contrib.contenttypes.models import ContentType
from django.db import models

from apps.core.encryption import EncryptedTextField
from apps.core.redaction import redact_data

SECRET_SET = "(secret set)"
SECRET_EMPTY = "(empty)"


def secret_mask(value: str) -> str:
    """auditlog's default mask keeps half of the value; a secret keeps none of it."""
    return SECRET_EMPTY if value in ("", "None") else SECRET_SET


def audit_register(model: type[models.Model], **options) -> None:
    secret_fields = [f.name for f in model._meta.get_fields() if isinstance(f, EncryptedTextField)]
    options["mask_fields"] = sorted({*options.get("mask_fields", []), *secret_fields})
    options["mask_callable"] = "apps.audit.services.secret_mask"
    if options.get("serialize_data"):
        raise ValueError("serialize_data would copy every field, secrets included, into the audit log")
    auditlog.register(model, **options)


def audit_record(
    *, target: models.Model, event: str, changes: dict | None = None, details: dict | None = None, actor=None
) -> LogEntry:
    """One entry for something a person did to `target` (e.g. event="runbook.run")."""
    pk = target.pk
    return LogEntry.objects.create(
        content_type=ContentType.objects.get_for_model(target),
        object_pk=str(pk),
        object_id=pk if isinstance(pk, int) else None,
        object_repr=str(target)[:1000],
        action=LogEntry.Action.UPDATE,
        changes=redact_data(changes or {}),
        additional_data=redact_data({**(details or {}), "event": event}),
        actor=actor,
    )
