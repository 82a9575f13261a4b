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


# --- changing an incident, notes, overrides --------------------------------------------------------


def update_incident_payload(**changes) -> dict:
    """`PUT /incidents/{id}`: the incident reference with only the fields being changed."""
    return {"incident": {"type": "incident_reference", **changes}}


def assignments(user_ids: list[str]) -> list[dict]:
    return [{"assignee": reference(user_id, USER)} for user_id in user_ids]


def note_payload(*, content: str) -> dict:
    return {"note": {"content": content}}


def overrides_payload(*, start: str, end: str, user_id: str) -> dict:
    # One override per request: its per-override status is then the step's outcome.
    return {"overrides": [{"start": start, "end": end, "user": reference(user_id, USER), "time_zone": "UTC"}]}


# --- Events API v2 -----------------------------------------------------------------------------

SUMMARY_MAX_CHARS = 1024
DEDUP_KEY_MAX_CHARS = 255
EVENT_SEVERITIES = ("critical", "error", "warning", "info")
# SEV0 critical, SEV1 error, SEV2 warning, SEV3–4 info.
SEVERITY_FOR_SEV = {0: "critical", 1: "error", 2: "warning", 3: "info", 4: "info"}


def event_severity_for(severity: int) -> str:
    return SEVERITY_FOR_SEV.get(severity, "info")


def capped_summary(summary: str) -> tuple[str, bool]:
    """(summary, cut): PagerDuty refuses a summary over 1,024 characters; the cut is marked."""
    if len(summary) <= SUMMARY_MAX_CHARS:
        return summary, False
    return summary[: SUMMARY_MAX_CHARS - 1] + "…", True


def event_payload(
    *,
    action: str,
    dedup_key: str,
    summary: str = "",
    source: str = "",
    severity: str = "",
    component: str = "",
    group: str = "",
    event_class: str = "",
    custom_details: dict | None = None,
    links: list[dict] | None = None,
) -> dict:
    """An Events API v2 event without its routing key (the client adds its own). Acknowledge and
    resolve carry only the dedup key: PagerDuty ignores a payload on them."""
    event: dict = {"event_action": action, "dedup_key": dedup_key}
    if action != "trigger":
        return event
    payload: dict = {"summary": summary, "source": source, "severity": severity}
    for name, value in (("component", component), ("group", group), ("class", event_class)):
        if value:
            payload[name] = value
    if custom_details:
        payload["custom_details"] = dict(custom_details)
    event["payload"] = payload
    if links:
        event["links"] = [{"href": link["href"], "text": link.get("text") or link["href"]} for link in links]
    return event


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
