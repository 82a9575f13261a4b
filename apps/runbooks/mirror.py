"""PagerDuty's side of our incidents: its webhooks mirrored onto the incident links, each event
on our incident's timeline, and what a step must know before it trusts a link.

The links live here (runbooks owns PagerDutyIncidentLink), so the pagerduty app hands each stored
webhook over through its `webhook_event_received` signal, inside the transaction that marks the
delivery processed.
"""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import router
from django.utils import timezone

from apps.core.sql import CompiledQuery, CompiledUpdate, update_row
from apps.incidents.models import IncidentStatus
from apps.incidents.services import incident_record_pagerduty_event, incident_update
from apps.pagerduty.errors import PagerDutyError
from apps.pagerduty.models import WebhookDelivery
from apps.pagerduty.webhooks import NO_LINK, webhooks_replay_unlinked
from apps.runbooks.models import PagerDutyIncidentLink, StepRun

# The status each event type leaves the PagerDuty incident in, when its data does not say.
STATUS_AFTER = {
    "incident.triggered": "triggered",
    "incident.acknowledged": "acknowledged",
    "incident.unacknowledged": "triggered",
    "incident.resolved": "resolved",
    "incident.reopened": "triggered",
}
# PagerDuty stamps events with its own clock: allow for a difference with ours.
CLOCK_MARGIN = timedelta(minutes=2)
# Our change is echoed within seconds; an equal change much later is someone else's.
ECHO_WINDOW = timedelta(hours=1)


def _ref(value) -> dict:
    return value if isinstance(value, dict) else {}


def _summary(value) -> str:
    value = _ref(value)
    return str(value.get("summary") or value.get("name") or value.get("email") or value.get("id") or "")[:255]


def incident_state(data: dict) -> dict:
    """The mirrored fields from a PagerDuty incident object (a webhook's data, GET /incidents/{id})."""
    assignees = []
    for item in (data.get("assignments") or data.get("assignees") or [])[:50]:
        assignee = _ref(item).get("assignee", item)
        if isinstance(assignee, dict) and assignee.get("id"):
            assignees.append({"id": str(assignee["id"])[:32], "summary": _summary(assignee)})
    level = data.get("escalation_level")
    state = {
        "urgency": str(data.get("urgency") or "")[:10],
        "priority": _summary(data.get("priority"))[:100],
        "assignees": assignees,
    }
    if data.get("status"):
        state["status"] = str(data["status"])[:20]
    if isinstance(level, int) and 0 <= level < 1000:
        state["escalation_level"] = level
    return state


def event_details(delivery: WebhookDelivery) -> dict:
    """What the timeline keeps of an event (also the `PagerDuty.*` variables of a runbook)."""
    event = delivery.event
    data = _ref(event.get("data"))
    agent = _ref(event.get("agent"))
    incident = data if delivery.resource_type == "incident" else _ref(data.get("incident"))
    details = {
        "event_type": delivery.event_type,
        "occurred_at": delivery.occurred_at.isoformat() if delivery.occurred_at else "",
        "agent": _summary(agent),
        "agent_id": str(agent.get("id") or "")[:32],
        "agent_type": str(agent.get("type") or "")[:50],
        "incident_id": delivery.pagerduty_incident_id,
        "incident_number": incident.get("number") if isinstance(incident.get("number"), int) else None,
        "status": str(incident.get("status") or STATUS_AFTER.get(delivery.event_type, ""))[:20],
        "urgency": str(incident.get("urgency") or "")[:10],
        "priority": _summary(incident.get("priority"))[:100],
        "note": "",
        "webhook_id": delivery.webhook_id,
    }
    if delivery.event_type == "incident.annotated":
        details["note"] = str(data.get("content") or "")[:2000]
    elif delivery.event_type.startswith("incident.responder."):
        details["note"] = str(data.get("message") or "")[:2000]
        details["responder"] = _summary(data.get("user"))
        details["responder_state"] = str(data.get("state") or "")[:50]
    elif delivery.event_type == "incident.status_update_published":
        details["note"] = str(data.get("message") or "")[:2000]
    return details


def _echo_of(link: PagerDutyIncidentLink, delivery: WebhookDelivery) -> StepRun | None:
    """The step of ours whose change this event reports back, or None."""
    status = STATUS_AFTER.get(delivery.event_type)
    if not status or link.sent_status != status or link.sent_at is None:
        return None
    occurred = delivery.occurred_at or delivery.received_at
    if not (link.sent_at - CLOCK_MARGIN <= occurred <= link.sent_at + ECHO_WINDOW):
        return None
    return link.sent_by


def webhook_mirror(sender, *, delivery: WebhookDelivery, **kwargs) -> str:
    """Apply one PagerDuty event to every link of that PagerDuty incident (signal receiver)."""
    if not delivery.pagerduty_incident_id:
        return "no PagerDuty incident in the event"
    links = list(
        PagerDutyIncidentLink.objects.select_for_update()
        .select_related("incident", "connection")
        .filter(connection=delivery.connection, pagerduty_incident_id=delivery.pagerduty_incident_id)
        .order_by("pk")
    )
    if not links:
        return NO_LINK
    outcomes = [_apply(link, delivery) for link in links]
    return "; ".join(outcomes)


def _apply(link: PagerDutyIncidentLink, delivery: WebhookDelivery) -> str:
    occurred = delivery.occurred_at or delivery.received_at
    newer = link.last_event_at is None or occurred >= link.last_event_at
    echo = _echo_of(link, delivery)
    details = event_details(delivery)
    if echo is not None:
        details["echo_of_step"] = {"run": echo.run_id, "step": echo.key}
    if newer:
        data = _ref(delivery.event.get("data"))
        state = incident_state(data) if delivery.resource_type == "incident" else {}
        if "status" not in state and delivery.event_type in STATUS_AFTER:
            state["status"] = STATUS_AFTER[delivery.event_type]
        for name, value in state.items():
            setattr(link, name, value)
        link.last_event_type = delivery.event_type[:100]
        link.last_event_at = occurred
        link.mirrored_at = timezone.now()
        if echo is not None:
            link.sent_status = ""  # matched once: the same change later is someone else's
        link.save()
    else:
        details["superseded"] = True  # older than what the link already shows: recorded, not applied
    incident_record_pagerduty_event(
        incident=link.incident,
        event_type=delivery.event_type,
        actor=details["agent"] or "PagerDuty",
        details=details,
        fires=newer and echo is None,
    )
    outcome = f"{link.incident.short_id}: " + ("echo of our step" if echo else "applied" if newer else "older, kept")
    if (
        newer
        and echo is None
        and delivery.event_type == "incident.resolved"
        and link.connection is not None
        and link.connection.pagerduty_resolve_resolves_incident
        and link.incident.status != IncidentStatus.RESOLVED
        and not _other_open_links(link)
    ):
        incident_update(
            incident_id=link.incident_id,
            status=IncidentStatus.RESOLVED,
            actor=f"PagerDuty: {details['agent'] or 'resolved'}"[:255],
        )
        outcome += ", resolved our incident"
    return outcome


def _other_open_links(link: PagerDutyIncidentLink) -> bool:
    # Several PagerDuty incidents for one of ours: ours is over when the last of them is.
    return (
        PagerDutyIncidentLink.objects.filter(incident=link.incident, status__in=["triggered", "acknowledged"])
        .exclude(pk=link.pk)
        .exists()
    )


# --- what steps know before they trust a link ----------------------------------------------------


def link_mark_sent(*, link: PagerDutyIncidentLink, status: str, step_run: StepRun | None) -> None:
    """Written before our request: its webhook can arrive before PagerDuty's answer to us."""
    update_row(PagerDutyIncidentLink, link.pk, sent_status=status, sent_by=step_run, sent_at=timezone.now())


# The link and its PagerDuty incident, as the steps that act on a linked incident name them; the
# link a step just made, while no request was marked on it. Compiled once per connection
# (apps.core.sql): the steps read and write them once or twice a step.
_LINK_FIELDS = [field.attname for field in PagerDutyIncidentLink._meta.concrete_fields]
_INCIDENT_PLACEHOLDER = uuid.UUID("00000000-0000-4000-8000-00000000111c")
_PD_INCIDENT_PLACEHOLDER = "\x00pagerduty incident\x00"
_LINK = CompiledQuery(
    lambda _shape, incident_id, pd_incident_id: (
        PagerDutyIncidentLink.objects.filter(incident_id=incident_id, pagerduty_incident_id=pd_incident_id)
        .order_by("-created_at")  # as .first() took it, by the model's ordering
        .values_list(*_LINK_FIELDS)[:1]
    ),
    _INCIDENT_PLACEHOLDER,
    _PD_INCIDENT_PLACEHOLDER,
)
_LINKS_OF = CompiledUpdate(
    lambda incident_id, pd_incident_id: PagerDutyIncidentLink.objects.filter(
        incident_id=incident_id, pagerduty_incident_id=pd_incident_id
    ),
    _INCIDENT_PLACEHOLDER,
    _PD_INCIDENT_PLACEHOLDER,
)
_RESOLVED_BY_PAGERDUTY = CompiledQuery(
    lambda _shape, pd_incident_id: (
        PagerDutyIncidentLink.objects.filter(
            pagerduty_incident_id=pd_incident_id, mirrored_at__isnull=False, status="resolved"
        )
        .order_by()
        .values_list("pk")[:1]
    ),
    _PD_INCIDENT_PLACEHOLDER,
)
_UNSENT = CompiledUpdate(lambda pk: PagerDutyIncidentLink.objects.filter(pk=pk, sent_at__isnull=True), -(2**62) + 41)


def link_of(*, incident_id, pagerduty_incident_id: str) -> PagerDutyIncidentLink | None:
    """Our incident's link to that PagerDuty incident (the newest, should there be several)."""
    found = _LINK.rows(None, incident_id, pagerduty_incident_id)
    if not found:
        return None
    return PagerDutyIncidentLink.from_db(router.db_for_read(PagerDutyIncidentLink), _LINK_FIELDS, found[0])


def links_set_status(*, incident_id, pagerduty_incident_id: str, status: str) -> int:
    return _LINKS_OF.update(incident_id, pagerduty_incident_id, status=status)


def resolved_by_pagerduty(*, pagerduty_incident_id: str) -> bool:
    """PagerDuty said (its webhook or a read) that this incident is resolved, on any link to it."""
    return bool(_RESOLVED_BY_PAGERDUTY.rows(None, pagerduty_incident_id))


def link_created(*, link: PagerDutyIncidentLink, step_run: StepRun | None) -> None:
    """A link was just made by a step: its incident.triggered is that step's echo, and events that
    came before the link are applied now."""
    started = (step_run.started_at if step_run else None) or timezone.now()
    _UNSENT.update(link.pk, sent_status="triggered", sent_by=step_run, sent_at=started)
    if link.connection is not None:
        webhooks_replay_unlinked(connection=link.connection, pagerduty_incident_id=link.pagerduty_incident_id)


def link_is_fresh(link: PagerDutyIncidentLink) -> bool:
    """PagerDuty told us its state recently enough to act on without asking again."""
    if link.mirrored_at is None:
        return False
    return timezone.now() - link.mirrored_at <= timedelta(seconds=settings.PAGERDUTY_MIRROR_FRESH_SECONDS)


def link_refresh(*, link: PagerDutyIncidentLink, client) -> PagerDutyIncidentLink:
    """Ask PagerDuty (GET /incidents/{id}) and keep what it says. Raises PagerDutyError."""
    incident = client.get_incident(link.pagerduty_incident_id, max_attempts=client.retry.lookup_attempts)
    state = incident_state(incident)
    state["mirrored_at"] = timezone.now()
    PagerDutyIncidentLink.objects.filter(pk=link.pk).update(**state)
    for name, value in state.items():
        setattr(link, name, value)
    return link


def link_current_status(*, link: PagerDutyIncidentLink, client) -> str | None:
    """PagerDuty's status of a linked incident: the mirror when it came from PagerDuty and is
    fresh (or says resolved, which only a webhook can undo), else a read. None when PagerDuty
    cannot be asked: the caller falls back on what PagerDuty itself refuses (dedup by key)."""
    if link.mirrored_at is not None and (link.status == "resolved" or link_is_fresh(link)):
        return link.status
    try:
        return link_refresh(link=link, client=client).status
    except PagerDutyError:
        return None
