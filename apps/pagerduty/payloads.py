"""Pure builders of PagerDuty request bodies: no I/O, testable on their own, shared by the
executor and the dry run so both produce the same bytes."""

from apps.pagerduty.models import Urgency

DEFAULT_URGENCY = {0: Urgency.HIGH, 1: Urgency.HIGH, 2: Urgency.LOW, 3: Urgency.LOW, 4: Urgency.LOW}

USER = "user_reference"
ESCALATION_POLICY = "escalation_policy_reference"


def urgency_for_severity(severity: int, overrides: dict[int, str] | None = None) -> str:
    overrides = overrides or {}
    return str(overrides.get(severity, DEFAULT_URGENCY.get(severity, Urgency.LOW)))


def reference(object_id: str, ref_type: str) -> dict:
    return {"id": object_id, "type": ref_type}


def incident_details(*, summary: str, url: str) -> str:
    return "\n\n".join(part for part in (summary, url) if part)


def create_incident_payload(
    *,
    title: str,
    service_id: str,
    urgency: str,
    incident_key: str,
    details: str = "",
    responder: tuple[str, str] | None = None,
    priority_id: str = "",
) -> dict:
    incident = {
        "type": "incident",
        "title": title,
        "service": reference(service_id, "service_reference"),
        "urgency": urgency,
        "incident_key": incident_key,
    }
    if details:
        incident["body"] = {"type": "incident_body", "details": details}
    if responder:
        responder_id, responder_type = responder
        # PagerDuty takes either an escalation policy or direct assignments, never both.
        if responder_type == ESCALATION_POLICY:
            incident["escalation_policy"] = reference(responder_id, ESCALATION_POLICY)
        else:
            incident["assignments"] = [{"assignee": reference(responder_id, USER)}]
    if priority_id:
        incident["priority"] = reference(priority_id, "priority_reference")
    return {"incident": incident}


def responder_request_payload(*, requester_id: str, message: str, targets: list[tuple[str, str]]) -> dict:
    return {
        "requester_id": requester_id,
        "message": message,
        # The live API takes each target wrapped, although the schema in the spec shows it flat.
        "responder_request_targets": [
            {"responder_request_target": reference(target_id, target_type)} for target_id, target_type in targets
        ],
    }


def resolve_incident_payload(*, resolution: str = "") -> dict:
    incident = {"type": "incident_reference", "status": "resolved"}
    if resolution:
        incident["resolution"] = resolution
    return {"incident": incident}


def webhook_subscription_payload(
    *, url: str, events: list[str], filter_type: str, filter_id: str = "", description: str = ""
) -> dict:
    """POST /webhook_subscriptions: v3 HTTP delivery of `events` to `url`, for the account, a
    service or a team."""
    filter_ = {"type": filter_type}
    if filter_id:
        filter_["id"] = filter_id
    return {
        "webhook_subscription": {
            "type": "webhook_subscription",
            "delivery_method": {"type": "http_delivery_method", "url": url},
            "description": description,
            "events": list(events),
            "filter": filter_,
        }
    }
