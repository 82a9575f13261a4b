"""The Events API v2 actions: trigger, acknowledge and resolve an alert through a channel.

They name a `channel` (routing key + events URL), never a connection. Bodies come from
apps.pagerduty.payloads (pure); the routing key is added by the client, so a planned request — what
the dry run shows and the run records — carries it only redacted.

Sending an event again is safe: PagerDuty groups events by dedup key, so a repeated trigger adds an
alert to the open incident instead of paging again, and acknowledge/resolve are idempotent. That is
why a trigger without a `dedup_key` gets one derived from the channel and the summary: the same
summary gives the same key in every run, and a retry or re-run never opens a second incident.
"""

from apps.core.redaction import REDACTED
from apps.pagerduty import payloads
from apps.pagerduty.services import default_event_source, event_dedup_key
from apps.runbooks.executors.base import (
    TARGET_CHANNEL,
    Action,
    ActionSpec,
    FieldSpec,
    PlannedRequest,
    StepContext,
    StepFailed,
    register,
)

CATEGORY = "On-Call › PagerDuty Events"
ENQUEUE_PATH = "/v2/enqueue"
# Bounds on the structured fields (DESIGN.md: custom_details is a mapping, links a list).
CUSTOM_DETAILS_MAX = 50
LINKS_MAX = 20

CHANNEL = FieldSpec(
    "channel",
    "Channel",
    "Name of an Events API channel (routing key and events URL, set up by a PagerDuty admin).",
    required=True,
    example="monitoring",
)
DEDUP_KEY = FieldSpec(
    "dedup_key",
    "Dedup key",
    "The alert to acknowledge or resolve: usually the dedup_key output of the trigger step.",
    required=True,
    example="{{steps.alert.dedup_key}}",
)


def _text(ctx: StepContext, name: str) -> str:
    value = ctx.rendered.get(name)
    return value.strip() if isinstance(value, str) else ""


def _dedup_key(value: str) -> str:
    if len(value) > payloads.DEDUP_KEY_MAX_CHARS:
        raise StepFailed(
            f"dedup_key is {len(value):,} characters long; PagerDuty takes at most {payloads.DEDUP_KEY_MAX_CHARS}",
            field="dedup_key",
        )
    return value


def _planned(event: dict) -> PlannedRequest:
    # The routing key is the client's to add; the plan shows where it goes, never what it is.
    return PlannedRequest("POST", ENQUEUE_PATH, {"routing_key": REDACTED, **event}, "")


def _send(ctx: StepContext, planned: PlannedRequest) -> dict:
    event = {k: v for k, v in planned.body.items() if k != "routing_key"}
    return ctx.client.enqueue(event)


_STATUS_AFTER = {"trigger": "triggered", "acknowledge": "acknowledged", "resolve": "resolved"}


def _outputs(planned: PlannedRequest, answer: dict, **extra) -> dict:
    return {
        "dedup_key": answer["dedup_key"],  # PagerDuty's word; the client refuses an answer without it
        "status": _STATUS_AFTER[planned.body["event_action"]],
        "message": answer.get("message", ""),
        **extra,
    }


class TriggerEvent(Action):
    def plan(self, ctx: StepContext) -> PlannedRequest:
        channel = ctx.channel
        written = _text(ctx, "summary")
        if not written:
            raise StepFailed("summary is required but rendered empty", field="summary")
        full = f"{channel.summary_prefix}{written}"
        summary, cut = payloads.capped_summary(full)
        severity = _text(ctx, "severity") or payloads.event_severity_for(ctx.incident.severity)
        if severity not in payloads.EVENT_SEVERITIES:
            raise StepFailed(
                f"severity rendered {severity!r}; PagerDuty takes {', '.join(payloads.EVENT_SEVERITIES)}",
                field="severity",
            )
        # Derived from the whole summary, so two long summaries that differ after the cut stay apart.
        dedup_key = _dedup_key(_text(ctx, "dedup_key") or event_dedup_key(channel_name=channel.name, summary=full))
        details = {name: value for name, value in (ctx.rendered.get("custom_details") or {}).items()}
        # Always the way back from PagerDuty to this incident (DESIGN.md).
        details["incident_url"] = ctx.incident.url
        links = []
        for index, link in enumerate(ctx.rendered.get("links") or [], start=1):
            href = (link.get("href") or "").strip()
            if not href:
                raise StepFailed(f"links[{index}].href rendered empty; every link needs an href", field="links")
            links.append({"href": href, "text": (link.get("text") or "").strip() or href})
        planned = _planned(
            payloads.event_payload(
                action="trigger",
                dedup_key=dedup_key,
                summary=summary,
                source=_text(ctx, "source") or channel.default_source or default_event_source(),
                severity=severity,
                component=_text(ctx, "component"),
                group=_text(ctx, "group"),
                event_class=_text(ctx, "class"),
                custom_details=details,
                links=links,
            )
        )
        if cut:
            planned.notes.append(
                f"summary cut from {len(full):,} to PagerDuty's {payloads.SUMMARY_MAX_CHARS:,} characters "
                "(the dedup key is derived from the whole summary)"
            )
        return planned

    def execute(self, ctx: StepContext, planned: PlannedRequest) -> dict:
        answer = _send(ctx, planned)
        return _outputs(planned, answer, summary_truncated=bool(planned.notes))

    def reconcile(self, ctx: StepContext, planned: PlannedRequest) -> dict | None:
        return None  # a repeated trigger with the same dedup key groups into the same alert


class UpdateEvent(Action):
    """acknowledge_event / resolve_event: only the dedup key travels (PagerDuty ignores a payload)."""

    def __init__(self, action: str):
        self.action = action

    def plan(self, ctx: StepContext) -> PlannedRequest:
        dedup_key = _text(ctx, "dedup_key")
        if not dedup_key:
            raise StepFailed(
                "dedup_key is required but rendered empty; use the trigger step's {{steps.<key>.dedup_key}}",
                field="dedup_key",
            )
        return _planned(payloads.event_payload(action=self.action, dedup_key=_dedup_key(dedup_key)))

    def execute(self, ctx: StepContext, planned: PlannedRequest) -> dict:
        return _outputs(planned, _send(ctx, planned))

    def reconcile(self, ctx: StepContext, planned: PlannedRequest) -> dict | None:
        return None  # acknowledging or resolving twice changes nothing


OUTPUTS = {
    "dedup_key": "The alert's dedup key (for a later acknowledge_event or resolve_event)",
    "status": "What PagerDuty accepted the event as: triggered, acknowledged or resolved",
    "message": "PagerDuty's answer, e.g. Event processed",
}

register(
    ActionSpec(
        name="pagerduty.trigger_event",
        label="Trigger PagerDuty Alert (Events API v2)",
        category=CATEGORY,
        description="Sends a trigger event through a channel (POST {events}/v2/enqueue); events with the same "
        "dedup key group into one alert.",
        fields=(
            CHANNEL,
            FieldSpec(
                "summary",
                "Summary",
                "The alert's title in PagerDuty (the channel's prefix is put first; at most 1,024 characters).",
                required=True,
                default="SEV{{Activity.severity}}: {{Activity.title}}",
            ),
            FieldSpec(
                "severity",
                "Severity",
                "Empty: from the incident's SEV (0 critical, 1 error, 2 warning, 3–4 info).",
                choices=("", *payloads.EVENT_SEVERITIES),
            ),
            FieldSpec(
                "source",
                "Source",
                "The affected system. Empty: the channel's default source, else the host of SITE_URL.",
                example="{{Activity.service}}",
            ),
            FieldSpec("component", "Component", "Optional: the part of the source that is affected.", example="db"),
            FieldSpec("group", "Group", "Optional: a logical grouping of sources.", example="{{Activity.environment}}"),
            FieldSpec("class", "Class", "Optional: the kind of problem.", example="latency"),
            FieldSpec(
                "dedup_key",
                "Dedup key",
                "Empty: derived from the channel and the summary, the same in every run.",
                example="ai-sre-{{Activity.id}}",
            ),
            FieldSpec(
                "custom_details",
                "Custom details",
                "A mapping of name → template shown on the alert; incident_url (Activity.url) is always added.",
                kind="mapping",
                example='{"environment": "{{Activity.environment}}"}',
            ),
            FieldSpec(
                "links",
                "Links",
                "A list of {href, text} templates shown on the alert.",
                kind="links",
                example='[{"href": "{{Activity.url}}", "text": "{{Activity.short_id}}"}]',
            ),
        ),
        outputs={**OUTPUTS, "summary_truncated": "true when the summary was cut to 1,024 characters"},
        implementation=TriggerEvent(),
        target=TARGET_CHANNEL,
    )
)

for _action, _label in (("acknowledge", "Acknowledge"), ("resolve", "Resolve")):
    register(
        ActionSpec(
            name=f"pagerduty.{_action}_event",
            label=f"{_label} PagerDuty Alert (Events API v2)",
            category=CATEGORY,
            description=f"Sends a {_action} event for a dedup key through a channel (POST {{events}}/v2/enqueue); "
            "PagerDuty accepts one for an unknown key and drops it.",
            fields=(CHANNEL, DEDUP_KEY),
            outputs=OUTPUTS,
            implementation=UpdateEvent(_action),
            target=TARGET_CHANNEL,
        )
    )
