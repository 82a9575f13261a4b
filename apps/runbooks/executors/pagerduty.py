"""The PagerDuty actions. Request bodies come from apps.pagerduty.payloads (pure); this module
decides what to send, and how to read PagerDuty's answer without ever paging twice."""

import re

from apps.pagerduty import payloads
from apps.pagerduty.client import is_dedup_conflict
from apps.pagerduty.errors import PagerDutyBadRequest, PagerDutyError
from apps.runbooks.executors.base import (
    ActionSpec,
    FieldSpec,
    PlannedRequest,
    StepContext,
    StepFailed,
    StepSkipped,
    register,
)
from apps.runbooks.models import PagerDutyIncidentLink

CATEGORY = "On-Call › PagerDuty"
FROM = FieldSpec(
    "from",
    "From (email)",
    "Email of a PagerDuty user, sent as the From header. Empty: the connection's default From email.",
    example="{{Activity.owner}}",
)
RESPONDER_TYPE = FieldSpec(
    "responder_type",
    "Responder type",
    "user or escalation_policy. Empty: an email is a user; an id is looked up.",
    choices=("", "user", "escalation_policy"),
)
LINKED_INCIDENT = FieldSpec(
    "incident_id",
    "PagerDuty incident id",
    "Empty: the PagerDuty incident linked to this incident (created by an earlier step or run).",
    default="{{pagerduty.incident_id}}",
    example="{{steps.page.incident_id}}",
)


def _required(ctx: StepContext, name: str) -> str:
    value = (ctx.rendered.get(name) or "").strip()
    if not value:
        raise StepFailed(f"{name} is required but rendered empty", field=name)
    return value


def _from_email(ctx: StepContext) -> str:
    sender = (ctx.rendered.get("from") or "").strip() or ctx.default_from
    if not sender:
        raise StepFailed(
            "from rendered empty and the connection has no default From email; PagerDuty requires one on writes",
            field="from",
        )
    return sender


def _incident_id(ctx: StepContext) -> str:
    return (ctx.rendered.get("incident_id") or "").strip() or ctx.resolver.linked_incident_id()


def _link_outputs(link: PagerDutyIncidentLink, *, deduplicated: bool) -> dict:
    return {
        "incident_id": link.pagerduty_incident_id,
        "incident_number": link.incident_number,
        "html_url": link.html_url,
        "incident_key": link.incident_key,
        "service_id": link.service_id,
        "status": link.status,
        "deduplicated": deduplicated,
    }


def _save_link(ctx: StepContext, pd_incident: dict, *, service_id: str, incident_key: str) -> PagerDutyIncidentLink:
    link, _ = PagerDutyIncidentLink.objects.update_or_create(
        incident=ctx.incident,
        connection=ctx.connection,
        pagerduty_incident_id=pd_incident["id"],
        defaults={
            "incident_number": pd_incident.get("incident_number"),
            "html_url": pd_incident.get("html_url") or "",
            "incident_key": incident_key or pd_incident.get("incident_key") or "",
            "service_id": (pd_incident.get("service") or {}).get("id") or service_id,
            "status": pd_incident.get("status") or "triggered",
            "created_by": ctx.step_run,
        },
    )
    return link


# --- pagerduty.create_incident -----------------------------------------------------------------


class CreateIncident:
    def plan(self, ctx: StepContext) -> PlannedRequest:
        title = _required(ctx, "title")
        responder_id = (ctx.rendered.get("responder_id") or "").strip()
        responder = None
        if responder_id:
            responder = ctx.resolver.responder(
                responder_id, field="responder_id", explicit_type=ctx.rendered.get("responder_type", "")
            )
        body = payloads.create_incident_payload(
            title=title,
            service_id=ctx.resolver.service_id((ctx.rendered.get("service_id") or "").strip()),
            urgency=ctx.resolver.urgency((ctx.rendered.get("urgency") or "").strip()),
            incident_key=_required(ctx, "incident_key"),
            details=payloads.incident_details(
                summary=(ctx.rendered.get("summary") or "").strip(),
                url=(ctx.rendered.get("url") or "").strip(),
            ),
            responder=responder,
            priority_id=(ctx.rendered.get("priority_id") or "").strip(),
        )
        return PlannedRequest("POST", "/incidents", body, _from_email(ctx))

    def execute(self, ctx: StepContext, planned: PlannedRequest) -> dict:
        incident = planned.body["incident"]
        key, service_id = incident["incident_key"], incident["service"]["id"]
        link = (
            PagerDutyIncidentLink.objects.filter(
                incident=ctx.incident,
                connection=ctx.connection,
                incident_key=key,
                service_id=service_id,
                status__in=["triggered", "acknowledged"],
            )
            .order_by("-created_at")
            .first()
        )
        if link is not None:
            return _link_outputs(link, deduplicated=True)
        if ctx.recovering:
            # An earlier execution may have created it and died before recording the answer.
            adopted = self._adopt(ctx, key, service_id)
            if adopted is not None:
                return adopted
        try:
            created = ctx.client.create_incident(planned.body, from_email=planned.from_email)
        except PagerDutyError as exc:
            if not is_dedup_conflict(exc):
                raise
            adopted = self._adopt(ctx, key, service_id)
            if adopted is None:
                raise StepFailed(
                    f"PagerDuty refused a duplicate of incident_key {key!r} but lists no open incident with that "
                    "key on the service (it may have been resolved in between); re-run the step to create a new one"
                ) from exc
            return adopted
        link = _save_link(ctx, created, service_id=service_id, incident_key=key)
        return _link_outputs(link, deduplicated=False)

    def _adopt(self, ctx: StepContext, key: str, service_id: str) -> dict | None:
        found = ctx.client.find_open_incidents(incident_key=key, service_id=service_id)
        if not found:
            return None
        link = _save_link(ctx, found[0], service_id=service_id, incident_key=key)
        return _link_outputs(link, deduplicated=True)


register(
    ActionSpec(
        name="pagerduty.create_incident",
        label="Create PagerDuty Incident",
        category=CATEGORY,
        description="Opens a PagerDuty incident (POST /incidents), deduplicated by incident key.",
        fields=(
            FROM,
            FieldSpec(
                "title",
                "Title",
                "Incident title shown to responders.",
                required=True,
                default="SEV{{Activity.severity}}: {{Activity.title}}",
            ),
            FieldSpec(
                "summary",
                "Summary",
                "Goes into the incident body with the URL.",
                default="{{Activity.summary}}",
            ),
            FieldSpec("url", "URL", "Link back to this incident.", default="{{Activity.url}}"),
            FieldSpec(
                "service_id",
                "PagerDuty service id",
                "Empty: the service mapped to Activity.service, else the connection's default mapping.",
                example="P1234AB",
            ),
            FieldSpec(
                "responder_id",
                "Responder (user or escalation policy)",
                "Optional. A user id or email is assigned directly; an escalation policy id is used as such.",
                example="PEP5678",
            ),
            RESPONDER_TYPE,
            FieldSpec(
                "urgency",
                "Urgency",
                "high or low. Empty: from the severity (SEV0/1 high, SEV2–4 low).",
                choices=("", "high", "low"),
            ),
            FieldSpec(
                "incident_key",
                "Incident key",
                "Deduplication key: PagerDuty keeps one open incident per key and service.",
                required=True,
                default="ai-sre-{{Activity.id}}",
            ),
            FieldSpec("priority_id", "Priority id", "Optional PagerDuty priority id.", example="PPRIO01"),
        ),
        outputs={
            "incident_id": "PagerDuty incident id",
            "incident_number": "PagerDuty incident number",
            "html_url": "Link to the PagerDuty incident",
            "incident_key": "Deduplication key used",
            "service_id": "PagerDuty service id",
            "status": "PagerDuty status when last seen",
            "deduplicated": "true when an open incident was reused instead of created",
        },
        implementation=CreateIncident(),
    )
)


# --- pagerduty.add_responder -------------------------------------------------------------------

_SPLIT = re.compile(r"[,\s]+")


class AddResponder:
    def plan(self, ctx: StepContext) -> PlannedRequest:
        incident_id = _incident_id(ctx)
        if not incident_id:
            raise StepFailed(
                "No PagerDuty incident: incident_id rendered empty and none is linked to "
                f"{ctx.incident.short_id}; add a create_incident step first or set incident_id",
                field="incident_id",
            )
        sender = _from_email(ctx)
        explicit_type = ctx.rendered.get("responder_type", "")
        targets = [
            ctx.resolver.responder(value, field="responder_id", explicit_type=explicit_type)
            for value in _SPLIT.split(_required(ctx, "responder_id"))
            if value
        ]
        requester = (ctx.rendered.get("requester_id") or "").strip() or sender
        body = payloads.responder_request_payload(
            requester_id=ctx.resolver.user_id(requester, field="requester_id"),
            message=_required(ctx, "message"),
            targets=targets,
        )
        return PlannedRequest("POST", f"/incidents/{incident_id}/responder_requests", body, sender)

    def execute(self, ctx: StepContext, planned: PlannedRequest) -> dict:
        if ctx.recovering:
            answered = [
                e for e in ctx.previous_exchanges if e.method == "POST" and e.url.endswith("/responder_requests")
            ]
            if answered and answered[-1].status and 200 <= answered[-1].status < 300:
                return self._outputs(planned, answered[-1].response_body or {})
            # A responder request has no dedup key: re-sending could page the responder twice.
            raise StepFailed(
                "Outcome unknown: an earlier attempt at this step was interrupted (worker stopped) and may "
                "have reached PagerDuty. Not re-sent, to avoid paging twice; check the PagerDuty incident, "
                "then re-run from this step if the responder was not added"
            )
        answer = ctx.client.create_responder_request(
            planned.path.split("/")[2], planned.body, from_email=planned.from_email
        )
        return self._outputs(planned, answer or {})

    def _outputs(self, planned: PlannedRequest, answer: dict) -> dict:
        request = answer.get("responder_request") or {}
        return {
            "incident_id": planned.path.split("/")[2],
            "requester_id": planned.body["requester_id"],
            "responder_ids": [t["responder_request_target"]["id"] for t in planned.body["responder_request_targets"]],
            "responder_request_id": request.get("id", ""),
        }


register(
    ActionSpec(
        name="pagerduty.add_responder",
        label="Add Responder to PagerDuty Incident",
        category=CATEGORY,
        description="Asks more responders to join (POST /incidents/{id}/responder_requests).",
        fields=(
            FROM,
            LINKED_INCIDENT,
            FieldSpec(
                "responder_id",
                "Responder(s)",
                "User ids, user emails or escalation policy ids, comma-separated.",
                required=True,
                example="PEP5678",
            ),
            RESPONDER_TYPE,
            FieldSpec(
                "requester_id",
                "Requester",
                "PagerDuty user id or email of who is asking. Empty: the From user.",
                example="{{Activity.owner}}",
            ),
            FieldSpec(
                "message",
                "Message",
                "Shown to the responders.",
                required=True,
                default="Please join {{Activity.short_id}} (SEV{{Activity.severity}}): {{Activity.title}}",
            ),
        ),
        outputs={
            "incident_id": "PagerDuty incident id",
            "requester_id": "PagerDuty user id of the requester",
            "responder_ids": "Ids of the responders requested",
            "responder_request_id": "Id of the responder request, when PagerDuty returns one",
        },
        implementation=AddResponder(),
    )
)


# --- pagerduty.resolve_incident ----------------------------------------------------------------


class ResolveIncident:
    def plan(self, ctx: StepContext) -> PlannedRequest:
        incident_id = _incident_id(ctx)
        if not incident_id:
            raise StepSkipped(f"No PagerDuty incident is linked to {ctx.incident.short_id}: nothing to resolve")
        body = payloads.resolve_incident_payload(resolution=(ctx.rendered.get("resolution") or "").strip())
        return PlannedRequest("PUT", f"/incidents/{incident_id}", body, _from_email(ctx))

    def execute(self, ctx: StepContext, planned: PlannedRequest) -> dict:
        incident_id = planned.path.split("/")[2]
        already = False
        try:
            resolved = ctx.client.update_incident(incident_id, planned.body, from_email=planned.from_email)
            status = resolved.get("status", "resolved")
        except PagerDutyBadRequest as exc:
            # Resolving twice (a retry, a re-run) is the outcome we wanted, not a failure.
            if "already resolved" not in str(exc).lower():
                raise
            already, status = True, "resolved"
        PagerDutyIncidentLink.objects.filter(incident=ctx.incident, pagerduty_incident_id=incident_id).update(
            status=status
        )
        return {"incident_id": incident_id, "status": status, "already_resolved": already}


register(
    ActionSpec(
        name="pagerduty.resolve_incident",
        label="Resolve PagerDuty Incident",
        category=CATEGORY,
        description="Resolves the PagerDuty incident (PUT /incidents/{id}); skipped when none is linked.",
        fields=(
            FROM,
            LINKED_INCIDENT,
            FieldSpec(
                "resolution",
                "Resolution note",
                "Optional text recorded on the PagerDuty incident.",
                default="Resolved in {{Activity.short_id}}: {{Activity.title}}",
            ),
        ),
        outputs={
            "incident_id": "PagerDuty incident id",
            "status": "PagerDuty status after the call",
            "already_resolved": "true when PagerDuty said it was already resolved",
        },
        implementation=ResolveIncident(),
    )
)
