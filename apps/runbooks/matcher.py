"""Does a runbook fire for an incident event? Pure: no queries, testable with unsaved objects."""

from apps.incidents.models import Incident, IncidentEvent, IncidentEventKind
from apps.runbooks.models import Runbook, TriggerOn

_KIND_FOR_TRIGGER = {
    TriggerOn.CREATED: IncidentEventKind.CREATED,
    TriggerOn.STATUS_CHANGED: IncidentEventKind.STATUS_CHANGED,
    TriggerOn.SEVERITY_CHANGED: IncidentEventKind.SEVERITY_CHANGED,
    TriggerOn.PAGERDUTY_EVENT: IncidentEventKind.PAGERDUTY_EVENT,
}


def triggers_for(kind: str) -> list[str]:
    """The trigger_on values a runbook needs for an event of `kind` to be able to match (not manual)."""
    return [trigger for trigger, event_kind in _KIND_FOR_TRIGGER.items() if event_kind == kind]


def runbook_matches(runbook: Runbook, event: IncidentEvent, incident: Incident) -> bool:
    if event.kind == IncidentEventKind.MANUAL:
        # Asked for by name: the person chose it, triggers and conditions do not apply.
        return event.runbook_slug == runbook.slug
    if not runbook.enabled or _KIND_FOR_TRIGGER.get(runbook.trigger_on) != event.kind:
        return False
    if (
        event.kind == IncidentEventKind.PAGERDUTY_EVENT
        and runbook.trigger_events
        and event.pagerduty_event_type not in runbook.trigger_events
    ):
        return False
    if event.kind == IncidentEventKind.STATUS_CHANGED:
        if runbook.trigger_to and event.to_status not in runbook.trigger_to:
            return False
        if runbook.trigger_from and event.from_status not in runbook.trigger_from:
            return False
    severity = event.to_severity if event.to_severity is not None else incident.severity
    if runbook.condition_severity and severity not in runbook.condition_severity:
        return False
    if runbook.condition_services and incident.service not in runbook.condition_services:
        return False
    return not (runbook.condition_environments and incident.environment not in runbook.condition_environments)
