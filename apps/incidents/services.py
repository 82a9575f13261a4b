import uuid

from django.db import router, transaction
from django.db.models import F
from django.utils import timezone

from apps.core.errors import DomainError
from apps.core.query_params import ascii_integer
from apps.core.sql import CompiledQuery, insert_row, update_all_columns
from apps.incidents.models import (
    Incident,
    IncidentCounter,
    IncidentEvent,
    IncidentEventKind,
    IncidentStatus,
    Severity,
)
from apps.incidents.signals import incident_event_committed

_STATUS_BY_LOWER = {choice.lower(): choice for choice in IncidentStatus.values}


def parse_status(value) -> str:
    status = _STATUS_BY_LOWER.get(str(value).strip().lower())
    if status is None:
        raise DomainError(
            f"Unknown status {value!r}; expected one of {', '.join(IncidentStatus.values)}", field="status"
        )
    return status


def parse_severity(value) -> int:
    text = str(value).strip().upper().removeprefix("SEV")
    if ascii_integer(text, max_digits=2) not in Severity.values:
        raise DomainError(f"Unknown severity {value!r}; expected 0–4 or SEV0–SEV4", field="severity")
    return int(text)


def _record_event(*, incident: Incident, actor: str, **fields) -> IncidentEvent:
    event = IncidentEvent(incident=incident, actor=actor or "", **fields)
    insert_row(event)
    transaction.on_commit(lambda: incident_event_committed.send(sender=IncidentEvent, event_id=event.pk))
    return event


def _next_number() -> int:
    counter, _ = IncidentCounter.objects.select_for_update().get_or_create(pk=1)
    IncidentCounter.objects.filter(pk=counter.pk).update(last_number=F("last_number") + 1)
    counter.refresh_from_db()
    return counter.last_number


@transaction.atomic
def incident_create(
    *,
    title: str,
    summary: str = "",
    severity=Severity.SEV2,
    status=IncidentStatus.DETECTED,
    service: str = "",
    environment: str = "",
    owner: str = "",
    actor: str = "",
) -> Incident:
    if not title or not title.strip():
        raise DomainError("An incident needs a title", field="title")
    status = parse_status(status)
    incident = Incident(
        number=_next_number(),
        title=title.strip(),
        summary=summary or "",
        severity=parse_severity(severity),
        status=status,
        service=service or "",
        environment=environment or "",
        owner=owner or "",
    )
    if status == IncidentStatus.RESOLVED:
        incident.resolved_at = timezone.now()
    incident.full_clean()
    incident.save()
    _record_event(
        incident=incident,
        actor=actor,
        kind=IncidentEventKind.CREATED,
        to_status=incident.status,
        to_severity=incident.severity,
    )
    return incident


# The incident a change locks: read on every status change, so compiled once per connection.
_INCIDENT_FIELDS = [field.attname for field in Incident._meta.concrete_fields]
_LOCKED = CompiledQuery(
    lambda _shape, pk: Incident.objects.select_for_update().filter(pk=pk).order_by().values_list(*_INCIDENT_FIELDS),
    uuid.UUID("00000000-0000-4000-8000-0000000011c0"),  # never an incident's key: stands for it
)


def _locked(incident_id) -> Incident:
    # A key that is no UUID raises ValidationError, as .get(pk=…) does.
    found = _LOCKED.rows(None, Incident._meta.pk.to_python(incident_id))
    if not found:
        raise Incident.DoesNotExist("Incident matching query does not exist.")
    return Incident.from_db(router.db_for_read(Incident), _INCIDENT_FIELDS, found[0])


@transaction.atomic
def incident_update(*, incident_id, status=None, severity=None, actor: str = "", **fields) -> Incident:
    """Change an incident; a new status or severity becomes a timeline event that fires runbooks.

    The row is locked so two concurrent changes each see the other's result and record an
    accurate from→to; a change to the value it already has records nothing (and fires nothing).
    """
    incident = _locked(incident_id)
    events = []
    if status is not None:
        new_status = parse_status(status)
        if new_status != incident.status:
            events.append(
                {"kind": IncidentEventKind.STATUS_CHANGED, "from_status": incident.status, "to_status": new_status}
            )
            incident.status = new_status
            incident.resolved_at = timezone.now() if new_status == IncidentStatus.RESOLVED else None
    if severity is not None:
        new_severity = parse_severity(severity)
        if new_severity != incident.severity:
            events.append(
                {
                    "kind": IncidentEventKind.SEVERITY_CHANGED,
                    "from_severity": incident.severity,
                    "to_severity": new_severity,
                }
            )
            incident.severity = new_severity
    for name, value in fields.items():
        if name not in {"title", "summary", "service", "environment", "owner"}:
            raise DomainError(f"{name} cannot be changed", field=name)
        setattr(incident, name, value if value is not None else "")
    # The one unique field, the number, is never changed here: checking it again would be a query
    # per change (every status change through the API) that cannot fail.
    incident.full_clean(validate_unique=False)
    update_all_columns(incident)
    for event in events:
        # Every event carries the incident's state after the change: runbook conditions match on it.
        _record_event(
            incident=incident, actor=actor, **{"to_status": incident.status, "to_severity": incident.severity, **event}
        )
    return incident


@transaction.atomic
def incident_trigger_runbook(*, incident_id, runbook_slug: str, actor: str = "") -> IncidentEvent:
    """A person asked for a `manual` runbook on this incident: recorded on the timeline like any change."""
    incident = Incident.objects.select_for_update().get(pk=incident_id)
    return _record_event(
        incident=incident,
        actor=actor,
        kind=IncidentEventKind.MANUAL,
        runbook_slug=runbook_slug,
        to_status=incident.status,
        to_severity=incident.severity,
    )


def incident_record_pagerduty_event(
    *, incident: Incident, event_type: str, actor: str, details: dict, fires: bool = True
) -> IncidentEvent:
    """Something happened to a linked PagerDuty incident: a timeline entry with its agent.

    `fires=False` (an echo of our own change, an event older than what we already know) records it
    as already dispatched, so no runbook ever starts from it."""
    fields = {
        "kind": IncidentEventKind.PAGERDUTY_EVENT,
        "pagerduty_event_type": event_type[:100],
        "details": details,
        "to_status": incident.status,
        "to_severity": incident.severity,
    }
    if fires:
        return _record_event(incident=incident, actor=actor[:255], **fields)
    return IncidentEvent.objects.create(incident=incident, actor=actor[:255], dispatched_at=timezone.now(), **fields)
