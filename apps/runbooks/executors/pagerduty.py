"""The PagerDuty actions. Request bodies come from apps.pagerduty.payloads (pure); this module
decides what to send, and how to read PagerDuty's answer without ever paging twice."""

import re
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from apps.core.sql import upsert
from apps.pagerduty import payloads
from apps.pagerduty.client import is_dedup_conflict
from apps.pagerduty.errors import PagerDutyBadRequest, PagerDutyError
from apps.runbooks import mirror
from apps.runbooks.executors.base import (
    Action,
    ActionSpec,
    FieldSpec,
    PlannedRequest,
    StepContext,
    StepFailed,
    StepSkipped,
    outcome_unknown_message,
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
    ids="one",
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


def _outcome_unknown(planned: PlannedRequest, exc: PagerDutyError) -> StepFailed:
    cause = f"looking it up failed: {exc.__cause__}" if exc.__cause__ else ""
    return StepFailed(f"{outcome_unknown_message(planned, cause)}; last answer: {exc}")


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


_LINK_UPDATED_ON_CONFLICT = [
    "incident_number",
    "html_url",
    "incident_key",
    "service_id",
    "status",
    "created_by",
    "updated_at",
]


def _save_link(ctx: StepContext, pd_incident: dict, *, service_id: str, incident_key: str) -> PagerDutyIncidentLink:
    link = PagerDutyIncidentLink(
        incident=ctx.incident,
        connection=ctx.connection,
        pagerduty_incident_id=pd_incident["id"],
        incident_number=pd_incident.get("incident_number"),
        html_url=pd_incident.get("html_url") or "",
        incident_key=incident_key or pd_incident.get("incident_key") or "",
        service_id=(pd_incident.get("service") or {}).get("id") or service_id,
        status=pd_incident.get("status") or "triggered",
        created_by=ctx.step_run,
    )
    # Insert, or update the link a re-run or an adopted incident already made: one statement
    # (INSERT … ON CONFLICT DO UPDATE) where update_or_create takes six with its transaction.
    upsert(
        link, unique_fields=["incident", "connection", "pagerduty_incident_id"], update_fields=_LINK_UPDATED_ON_CONFLICT
    )
    mirror.link_created(link=link, step_run=ctx.step_run)
    return link


# --- pagerduty.create_incident -----------------------------------------------------------------


class CreateIncident(Action):
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
        key, service_id = self._key(planned)
        link = None
        if not ctx.unlinked:
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
        # Only PagerDuty knows whether it is still open (a responder may have resolved it there):
        # a resolved one is not reused, a new incident pages. Unknown (PagerDuty unreachable): the
        # create below is deduplicated by PagerDuty on the key if it is still open.
        if link is not None and mirror.link_current_status(link=link, client=ctx.client) in (
            "triggered",
            "acknowledged",
        ):
            return _link_outputs(link, deduplicated=True)
        found = []

        def look_up():
            # An attempt may have opened it although its answer was lost: PagerDuty knows by key.
            incidents = ctx.client.find_open_incidents(
                incident_key=key, service_id=service_id, max_attempts=ctx.client.retry.lookup_attempts
            )
            if not incidents:
                return None
            found.append(incidents[0])
            return {"incident": incidents[0]}

        try:
            created = ctx.client.create_incident(planned.body, from_email=planned.from_email, verify=look_up)
        except PagerDutyError as exc:
            if exc.outcome_unknown:
                raise _outcome_unknown(planned, exc) from exc
            if not is_dedup_conflict(exc):
                raise
            adopted = self.reconcile(ctx, planned)
            if adopted is None:
                raise StepFailed(
                    f"PagerDuty refused a duplicate of incident_key {key!r} but lists no open incident with that "
                    "key on the service (it may have been resolved in between); re-run the step to create a new one"
                ) from exc
            return adopted
        link = _save_link(ctx, created, service_id=service_id, incident_key=key)
        return _link_outputs(link, deduplicated=bool(found))

    def reconcile(self, ctx: StepContext, planned: PlannedRequest) -> dict | None:
        key, service_id = self._key(planned)
        found = ctx.client.find_open_incidents(
            incident_key=key, service_id=service_id, max_attempts=ctx.client.retry.lookup_attempts
        )
        if not found:
            return None
        link = _save_link(ctx, found[0], service_id=service_id, incident_key=key)
        return _link_outputs(link, deduplicated=True)

    @staticmethod
    def _key(planned: PlannedRequest) -> tuple[str, str]:
        incident = planned.body["incident"]
        return incident["incident_key"], incident["service"]["id"]


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
                ids="one",
            ),
            FieldSpec(
                "responder_id",
                "Responder (user or escalation policy)",
                "Optional. A user id or email is assigned directly; an escalation policy id is used as such.",
                example="PEP5678",
                ids="one",
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
            FieldSpec("priority_id", "Priority id", "Optional PagerDuty priority id.", example="PPRIO01", ids="one"),
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


class AddResponder(Action):
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
        incident_id = planned.path.split("/")[2]
        if mirror.resolved_by_pagerduty(pagerduty_incident_id=incident_id):
            raise StepFailed(
                f"PagerDuty incident {incident_id} is resolved (PagerDuty said so): responders asked to join it would "
                "not be paged. Create a new PagerDuty incident first (pagerduty.create_incident)",
                field="incident_id",
            )
        adopted = []

        def look_up():
            request = self._find_sent(ctx, planned)
            if request is None:
                return None
            adopted.append(request)
            return {"responder_request": request}

        try:
            answer = ctx.client.create_responder_request(
                planned.path.split("/")[2], planned.body, from_email=planned.from_email, verify=look_up
            )
        except PagerDutyError as exc:
            if exc.outcome_unknown:
                raise _outcome_unknown(planned, exc) from exc
            raise
        return self._outputs(planned, answer or {}, deduplicated=bool(adopted))

    def reconcile(self, ctx: StepContext, planned: PlannedRequest) -> dict | None:
        answered = [e for e in ctx.previous_exchanges if e.method == "POST" and e.url.endswith("/responder_requests")]
        if answered and answered[-1].status and 200 <= answered[-1].status < 300:
            return self._outputs(planned, answered[-1].response_body or {}, deduplicated=True)
        request = self._find_sent(ctx, planned)
        if request is None:
            return None
        return self._outputs(planned, {"responder_request": request}, deduplicated=True)

    def _find_sent(self, ctx: StepContext, planned: PlannedRequest) -> dict | None:
        """The responder request this step sent, as PagerDuty lists it on the incident, or None.

        PagerDuty keeps every responder request on the incident (`responder_requests`): ours is the
        one with our requester, message and targets, made no earlier than this step started (less
        a margin for the two clocks). An identical request by someone else in that window would be
        taken for ours: the responders were asked either way, which is what the step is for.
        """
        incident = ctx.client.get_incident(planned.path.split("/")[2], max_attempts=ctx.client.retry.lookup_attempts)
        made = incident.get("responder_requests")
        if made is None:
            raise StepFailed(
                outcome_unknown_message(
                    planned, "PagerDuty lists no responder_requests on the incident, so whether it was sent is unknown"
                )
            )
        since = (ctx.step_run.started_at if ctx.step_run else None) or timezone.now()
        since -= CLOCK_MARGIN
        wanted = {t["responder_request_target"]["id"] for t in planned.body["responder_request_targets"]}
        for request in reversed(made):
            targets = {
                (t.get("responder_request_target") or t).get("id")
                for t in request.get("responder_request_targets") or []
                if isinstance(t, dict)
            }
            if (
                (request.get("requester") or {}).get("id") == planned.body["requester_id"]
                and request.get("message") == planned.body["message"]
                and wanted <= targets
                and _not_before(request.get("requested_at"), since)
            ):
                return request
        return None

    def _outputs(self, planned: PlannedRequest, answer: dict, *, deduplicated: bool = False) -> dict:
        request = answer.get("responder_request") or {}
        return {
            "incident_id": planned.path.split("/")[2],
            "requester_id": planned.body["requester_id"],
            "responder_ids": [t["responder_request_target"]["id"] for t in planned.body["responder_request_targets"]],
            "responder_request_id": request.get("id", ""),
            "deduplicated": deduplicated,
        }


# PagerDuty stamps requests with its own clock: allow for a difference with ours.
CLOCK_MARGIN = timedelta(minutes=2)


def _not_before(stamp, since: datetime) -> bool:
    try:
        made = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        # An unreadable time is taken as recent: adopting a request wrongly is better than paging twice.
        return True
    return (made if made.tzinfo else made.replace(tzinfo=UTC)) >= since


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
                ids="many",
            ),
            RESPONDER_TYPE,
            FieldSpec(
                "requester_id",
                "Requester",
                "PagerDuty user id or email of who is asking. Empty: the From user.",
                example="{{Activity.owner}}",
                ids="one",
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
            "deduplicated": "true when an earlier attempt's request was found on the incident and not sent again",
        },
        implementation=AddResponder(),
    )
)


# --- pagerduty.resolve_incident ----------------------------------------------------------------


class ResolveIncident(Action):
    def plan(self, ctx: StepContext) -> PlannedRequest:
        incident_id = _incident_id(ctx)
        if not incident_id:
            raise StepSkipped(f"No PagerDuty incident is linked to {ctx.incident.short_id}: nothing to resolve")
        body = payloads.resolve_incident_payload(resolution=(ctx.rendered.get("resolution") or "").strip())
        return PlannedRequest("PUT", f"/incidents/{incident_id}", body, _from_email(ctx))

    def execute(self, ctx: StepContext, planned: PlannedRequest) -> dict:
        incident_id = planned.path.split("/")[2]
        link = mirror.link_of(incident_id=ctx.incident.pk, pagerduty_incident_id=incident_id)
        if link is not None and link.status == "resolved":
            # PagerDuty said so (its webhook, a read, or its answer to our own resolve), and a resolved
            # PagerDuty incident never reopens: nothing to send, and no echo to wait for.
            return {"incident_id": incident_id, "status": "resolved", "already_resolved": True}
        if link is not None:
            mirror.link_mark_sent(link=link, status="resolved", step_run=ctx.step_run)
        already = False

        def look_up():
            # Resolving is idempotent, but a resolve whose answers all failed may still have landed.
            incident = ctx.client.get_incident(incident_id, max_attempts=ctx.client.retry.lookup_attempts)
            return {"incident": incident} if incident.get("status") == "resolved" else None

        try:
            resolved = ctx.client.update_incident(
                incident_id, planned.body, from_email=planned.from_email, verify=look_up
            )
            status = resolved.get("status", "resolved")
        except PagerDutyBadRequest as exc:
            # Resolving twice (a retry, a re-run) is the outcome we wanted, not a failure.
            if "already resolved" not in str(exc).lower():
                raise
            already, status = True, "resolved"
        mirror.links_set_status(incident_id=ctx.incident.pk, pagerduty_incident_id=incident_id, status=status)
        return {"incident_id": incident_id, "status": status, "already_resolved": already}

    def reconcile(self, ctx: StepContext, planned: PlannedRequest) -> dict | None:
        return None  # resolving again is harmless: PagerDuty answers "already resolved"


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
