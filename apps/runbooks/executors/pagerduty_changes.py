"""The PagerDuty actions that change an existing incident, add notes and create schedule overrides.

Each retry is safe in its own way. Setting a state (acknowledged, urgency, priority, assignees) is
idempotent: an attempt whose answer was lost is sent again, and PagerDuty's incident is read before
giving up. Escalating notifies people each time, and a note or an override has no dedup key: those
are never repeated blindly — a note or an override is looked up first (GET …/notes, GET
…/overrides); an escalation, which PagerDuty's incident does not show, ends "outcome unknown".
"""

from django.utils import timezone

from apps.core.errors import DomainError
from apps.oncall.overrides import (
    iso,
    override_result,
    override_window,
    parse_time,
    schedule_override_create,
    schedule_override_find,
)
from apps.oncall.selectors import oncall_schedule_is_v3
from apps.pagerduty import payloads
from apps.pagerduty.errors import PagerDutyError
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
from apps.runbooks.executors.pagerduty import (
    _SPLIT,
    CATEGORY,
    CLOCK_MARGIN,
    FROM,
    LINKED_INCIDENT,
    _from_email,
    _incident_id,
    _not_before,
    _outcome_unknown,
    _required,
)
from apps.runbooks.models import PagerDutyIncidentLink

# PagerDuty's own cap on a note's content.
NOTE_MAX_CHARS = 25_000
# Assignees of one reassignment: a bound on the look-ups one step may make.
MAX_ASSIGNEES = 25
# PagerDuty escalation policies have at most 20 rules.
MAX_ESCALATION_LEVEL = 20

INCIDENT_OUTPUTS = {"incident_id": "PagerDuty incident id", "status": "PagerDuty status after the call"}


def _linked_incident(ctx: StepContext) -> str:
    incident_id = _incident_id(ctx)
    if not incident_id:
        raise StepFailed(
            "No PagerDuty incident: incident_id rendered empty and none is linked to "
            f"{ctx.incident.short_id}; add a create_incident step first or set incident_id",
            field="incident_id",
        )
    return incident_id


def _incident_of(planned: PlannedRequest) -> str:
    return planned.path.split("/")[2]


def _answered(ctx: StepContext, method: str, suffix: str):
    """The success answer an interrupted earlier execution of this step received, if it was stored."""
    for exchange in reversed(ctx.previous_exchanges):
        same = exchange.method == method and exchange.url.split("?")[0].endswith(suffix)
        if same and exchange.status and 200 <= exchange.status < 300:
            return exchange.response_body
    return None


def _literal(value) -> bool:
    """A field written as plain text (no template tag), so it can be judged when the runbook is saved."""
    return bool(value) and "{{" not in str(value)


class IncidentChange(Action):
    """PUT /incidents/{id} with one change. Subclasses say what to send and how to see it landed."""

    # Whether an attempt whose answer was lost may be sent again without looking (see module doc).
    idempotent = True

    def changes(self, ctx: StepContext) -> dict:
        raise NotImplementedError

    def holds(self, incident: dict, changes: dict) -> bool:
        """Does PagerDuty's incident show this change? False when it cannot be seen."""
        raise NotImplementedError

    def outputs(self, incident: dict, changes: dict) -> dict:
        return {}

    def plan(self, ctx: StepContext) -> PlannedRequest:
        incident_id = _linked_incident(ctx)
        changes = self.changes(ctx)
        return PlannedRequest(
            "PUT", f"/incidents/{incident_id}", payloads.update_incident_payload(**changes), _from_email(ctx)
        )

    def execute(self, ctx: StepContext, planned: PlannedRequest) -> dict:
        incident_id = _incident_of(planned)
        changes = {k: v for k, v in planned.body["incident"].items() if k != "type"}

        def look_up():
            incident = ctx.client.get_incident(incident_id, max_attempts=ctx.client.retry.lookup_attempts)
            return {"incident": incident} if self.holds(incident, changes) else None

        try:
            incident = ctx.client.update_incident(
                incident_id,
                planned.body,
                from_email=planned.from_email,
                verify=look_up if self.idempotent else None,
                retry_ambiguous=self.idempotent,
            )
        except PagerDutyError as exc:
            if exc.outcome_unknown:
                raise _outcome_unknown(planned, exc) from exc
            raise
        return self._finish(ctx, incident_id, incident, changes)

    def _finish(self, ctx: StepContext, incident_id: str, incident: dict, changes: dict) -> dict:
        status = incident.get("status") or ""
        if status:
            PagerDutyIncidentLink.objects.filter(incident=ctx.incident, pagerduty_incident_id=incident_id).update(
                status=status
            )
        return {"incident_id": incident_id, "status": status, **self.outputs(incident, changes)}

    def reconcile(self, ctx: StepContext, planned: PlannedRequest) -> dict | None:
        answered = _answered(ctx, "PUT", planned.path)
        changes = {k: v for k, v in planned.body["incident"].items() if k != "type"}
        if isinstance(answered, dict) and isinstance(answered.get("incident"), dict):
            return self._finish(ctx, _incident_of(planned), answered["incident"], changes)
        if self.idempotent:
            return None  # setting the same state again is harmless
        raise StepFailed(outcome_unknown_message(planned, "PagerDuty's incident does not show its escalation level"))


# --- pagerduty.acknowledge_incident --------------------------------------------------------------


class AcknowledgeIncident(IncidentChange):
    def changes(self, ctx: StepContext) -> dict:
        return {"status": "acknowledged"}

    def holds(self, incident: dict, changes: dict) -> bool:
        return incident.get("status") == "acknowledged"

    def execute(self, ctx: StepContext, planned: PlannedRequest) -> dict:
        # Acknowledging a resolved incident would reopen it (PagerDuty's rule): read it first.
        incident_id = _incident_of(planned)
        incident = ctx.client.get_incident(incident_id)
        if incident.get("status") == "resolved":
            PagerDutyIncidentLink.objects.filter(incident=ctx.incident, pagerduty_incident_id=incident_id).update(
                status="resolved"
            )
            raise StepSkipped(f"PagerDuty incident {incident_id} is already resolved; acknowledging would reopen it")
        if incident.get("status") == "acknowledged":
            return {**self._finish(ctx, incident_id, incident, {}), "already_acknowledged": True}
        return {**super().execute(ctx, planned), "already_acknowledged": False}


register(
    ActionSpec(
        name="pagerduty.acknowledge_incident",
        label="Acknowledge PagerDuty Incident",
        category=CATEGORY,
        description="Acknowledges the PagerDuty incident (PUT /incidents/{id}, status acknowledged); "
        "skipped when it is already resolved (acknowledging would reopen it).",
        fields=(FROM, LINKED_INCIDENT),
        outputs={
            **INCIDENT_OUTPUTS,
            "already_acknowledged": "true when it was acknowledged already and nothing was sent",
        },
        implementation=AcknowledgeIncident(),
    )
)


# --- pagerduty.reassign_incident -----------------------------------------------------------------


class ReassignIncident(IncidentChange):
    def changes(self, ctx: StepContext) -> dict:
        assignees = [v for v in _SPLIT.split((ctx.rendered.get("assignee_ids") or "").strip()) if v]
        policy = (ctx.rendered.get("escalation_policy_id") or "").strip()
        if assignees and policy:
            raise StepFailed(
                "Set assignee_ids or escalation_policy_id, not both: PagerDuty assigns to users or to a policy",
                field="escalation_policy_id",
            )
        if policy:
            if "@" in policy or not policy.isalnum():
                raise StepFailed(
                    f"escalation_policy_id must be a PagerDuty id, not {policy!r}", field="escalation_policy_id"
                )
            return {"escalation_policy": payloads.reference(policy, payloads.ESCALATION_POLICY)}
        if not assignees:
            raise StepFailed(
                "assignee_ids or escalation_policy_id is required; both rendered empty", field="assignee_ids"
            )
        if len(assignees) > MAX_ASSIGNEES:
            raise StepFailed(f"at most {MAX_ASSIGNEES} assignees, not {len(assignees)}", field="assignee_ids")
        user_ids = list(dict.fromkeys(ctx.resolver.user_id(v, field="assignee_ids") for v in assignees))
        return {"assignments": payloads.assignments(user_ids)}

    def literal_problems(self, inputs: dict) -> list[tuple[str, str]]:
        if _literal(inputs.get("assignee_ids")) and _literal(inputs.get("escalation_policy_id")):
            return [("escalation_policy_id", "set assignee_ids or escalation_policy_id, not both")]
        if not inputs.get("assignee_ids") and not inputs.get("escalation_policy_id"):
            return [("assignee_ids", "assignee_ids or escalation_policy_id is required")]
        return []

    def holds(self, incident: dict, changes: dict) -> bool:
        if "escalation_policy" in changes:
            return (incident.get("escalation_policy") or {}).get("id") == changes["escalation_policy"]["id"]
        wanted = {a["assignee"]["id"] for a in changes["assignments"]}
        held = {(a.get("assignee") or {}).get("id") for a in incident.get("assignments") or []}
        return wanted == held

    def outputs(self, incident: dict, changes: dict) -> dict:
        return {
            "assignee_ids": [
                (a.get("assignee") or {}).get("id") for a in incident.get("assignments") or [] if a.get("assignee")
            ],
            "escalation_policy_id": (incident.get("escalation_policy") or {}).get("id", ""),
        }


register(
    ActionSpec(
        name="pagerduty.reassign_incident",
        label="Reassign PagerDuty Incident",
        category=CATEGORY,
        description="Reassigns the PagerDuty incident to users or to an escalation policy (PUT /incidents/{id}).",
        fields=(
            FROM,
            LINKED_INCIDENT,
            FieldSpec(
                "assignee_ids",
                "Assignees",
                "User ids or emails, comma-separated (mixed is fine). Leave empty to use an escalation policy.",
                example="{{Activity.owner}}, PUSER01",
            ),
            FieldSpec(
                "escalation_policy_id",
                "Escalation policy id",
                "Assign to this escalation policy instead of users.",
                example="PEP5678",
            ),
        ),
        outputs={
            **INCIDENT_OUTPUTS,
            "assignee_ids": "PagerDuty user ids assigned after the call",
            "escalation_policy_id": "The incident's escalation policy after the call",
        },
        implementation=ReassignIncident(),
    )
)


# --- pagerduty.escalate_incident -----------------------------------------------------------------


class EscalateIncident(IncidentChange):
    idempotent = False  # every escalation notifies the level's responders

    def changes(self, ctx: StepContext) -> dict:
        text = _required(ctx, "escalation_level")
        if not text.isdigit() or not 1 <= int(text) <= MAX_ESCALATION_LEVEL:
            raise StepFailed(
                f"escalation_level must be a whole number from 1 to {MAX_ESCALATION_LEVEL}, not {text!r}",
                field="escalation_level",
            )
        return {"escalation_level": int(text)}

    def literal_problems(self, inputs: dict) -> list[tuple[str, str]]:
        level = str(inputs.get("escalation_level") or "").strip()
        if _literal(level) and not (level.isdigit() and 1 <= int(level) <= MAX_ESCALATION_LEVEL):
            return [("escalation_level", f"must be a whole number from 1 to {MAX_ESCALATION_LEVEL}, not {level!r}")]
        return []

    def holds(self, incident: dict, changes: dict) -> bool:
        return False

    def outputs(self, incident: dict, changes: dict) -> dict:
        return {"escalation_level": changes.get("escalation_level")}


register(
    ActionSpec(
        name="pagerduty.escalate_incident",
        label="Escalate PagerDuty Incident",
        category=CATEGORY,
        description="Escalates the PagerDuty incident to a level of its escalation policy (PUT /incidents/{id}). "
        "Never re-sent after a lost answer: an escalation notifies people every time.",
        fields=(
            FROM,
            LINKED_INCIDENT,
            FieldSpec(
                "escalation_level",
                "Escalation level",
                "Level of the escalation policy to escalate to (a whole number, 1 is the first rule).",
                required=True,
                default="2",
            ),
        ),
        outputs={**INCIDENT_OUTPUTS, "escalation_level": "The level escalated to"},
        implementation=EscalateIncident(),
    )
)


# --- pagerduty.set_urgency -----------------------------------------------------------------------


class SetUrgency(IncidentChange):
    def changes(self, ctx: StepContext) -> dict:
        return {"urgency": ctx.resolver.urgency((ctx.rendered.get("urgency") or "").strip())}

    def holds(self, incident: dict, changes: dict) -> bool:
        return incident.get("urgency") == changes["urgency"]

    def outputs(self, incident: dict, changes: dict) -> dict:
        return {"urgency": incident.get("urgency") or changes["urgency"]}


register(
    ActionSpec(
        name="pagerduty.set_urgency",
        label="Set PagerDuty Incident Urgency",
        category=CATEGORY,
        description="Changes the PagerDuty incident's urgency (PUT /incidents/{id}).",
        fields=(
            FROM,
            LINKED_INCIDENT,
            FieldSpec(
                "urgency",
                "Urgency",
                "high or low. Empty: from the severity (SEV0/1 high, SEV2–4 low), e.g. after a severity change.",
                choices=("", "high", "low"),
            ),
        ),
        outputs={**INCIDENT_OUTPUTS, "urgency": "The urgency after the call"},
        implementation=SetUrgency(),
    )
)


# --- pagerduty.set_priority ----------------------------------------------------------------------


class SetPriority(IncidentChange):
    def changes(self, ctx: StepContext) -> dict:
        priority = ctx.resolver.priority_id(_required(ctx, "priority"), field="priority")
        return {"priority": payloads.reference(priority, "priority_reference")}

    def holds(self, incident: dict, changes: dict) -> bool:
        return (incident.get("priority") or {}).get("id") == changes["priority"]["id"]

    def outputs(self, incident: dict, changes: dict) -> dict:
        priority = incident.get("priority") or {}
        return {
            "priority_id": priority.get("id") or changes["priority"]["id"],
            "priority_name": priority.get("name") or priority.get("summary") or "",
        }


register(
    ActionSpec(
        name="pagerduty.set_priority",
        label="Set PagerDuty Incident Priority",
        category=CATEGORY,
        description="Sets the PagerDuty incident's priority (PUT /incidents/{id}); names are looked up with "
        "GET /priorities once per run.",
        fields=(
            FROM,
            LINKED_INCIDENT,
            FieldSpec(
                "priority",
                "Priority",
                "A priority name as the account defines it (P1, P2…) or a priority id.",
                required=True,
                example="P{{Activity.severity}}",
            ),
        ),
        outputs={
            **INCIDENT_OUTPUTS,
            "priority_id": "PagerDuty priority id set",
            "priority_name": "Its name, when PagerDuty returns it",
        },
        implementation=SetPriority(),
    )
)


# --- pagerduty.add_note --------------------------------------------------------------------------


class AddNote(Action):
    def plan(self, ctx: StepContext) -> PlannedRequest:
        incident_id = _linked_incident(ctx)
        content = _required(ctx, "content")
        if len(content) > NOTE_MAX_CHARS:
            raise StepFailed(
                f"content is {len(content)} characters; PagerDuty takes at most {NOTE_MAX_CHARS}", field="content"
            )
        return PlannedRequest(
            "POST", f"/incidents/{incident_id}/notes", payloads.note_payload(content=content), _from_email(ctx)
        )

    def execute(self, ctx: StepContext, planned: PlannedRequest) -> dict:
        adopted = []

        def look_up():
            note = self._find_sent(ctx, planned)
            if note is None:
                return None
            adopted.append(note)
            return {"note": note}

        try:
            note = ctx.client.create_incident_note(
                _incident_of(planned), planned.body, from_email=planned.from_email, verify=look_up
            )
        except PagerDutyError as exc:
            if exc.outcome_unknown:
                raise _outcome_unknown(planned, exc) from exc
            raise
        return self._outputs(planned, note, deduplicated=bool(adopted))

    def reconcile(self, ctx: StepContext, planned: PlannedRequest) -> dict | None:
        answered = _answered(ctx, "POST", planned.path)
        if isinstance(answered, dict) and isinstance(answered.get("note"), dict):
            return self._outputs(planned, answered["note"], deduplicated=True)
        note = self._find_sent(ctx, planned)
        return None if note is None else self._outputs(planned, note, deduplicated=True)

    def _find_sent(self, ctx: StepContext, planned: PlannedRequest) -> dict | None:
        """The note this step sent, as PagerDuty lists it: same content, made since the step started
        (less a margin for the two clocks). The same text added by someone else in that window is
        taken for ours: the incident carries the note either way, and never twice."""
        notes = ctx.client.list_incident_notes(_incident_of(planned), max_attempts=ctx.client.retry.lookup_attempts)
        since = ((ctx.step_run.started_at if ctx.step_run else None) or timezone.now()) - CLOCK_MARGIN
        content = planned.body["note"]["content"]
        for note in reversed(notes):
            if note.get("content") == content and _not_before(note.get("created_at"), since):
                return note
        return None

    def _outputs(self, planned: PlannedRequest, note: dict, *, deduplicated: bool) -> dict:
        return {"incident_id": _incident_of(planned), "note_id": note.get("id", ""), "deduplicated": deduplicated}


register(
    ActionSpec(
        name="pagerduty.add_note",
        label="Add Note to PagerDuty Incident",
        category=CATEGORY,
        description="Adds a note to the PagerDuty incident (POST /incidents/{id}/notes); after a lost answer the "
        "incident's notes are read before anything is sent again, so a note never appears twice.",
        fields=(
            FROM,
            LINKED_INCIDENT,
            FieldSpec(
                "content",
                "Note",
                f"The note's text (at most {NOTE_MAX_CHARS} characters).",
                required=True,
                default="{{Activity.short_id}} is {{Activity.status}}: {{Activity.url}}",
            ),
        ),
        outputs={
            "incident_id": "PagerDuty incident id",
            "note_id": "Id of the note",
            "deduplicated": "true when an earlier attempt's note was found on the incident and not sent again",
        },
        implementation=AddNote(),
    )
)


# --- pagerduty.create_override -------------------------------------------------------------------


class CreateOverride(Action):
    def literal_problems(self, inputs: dict) -> list[tuple[str, str]]:
        start, end = str(inputs.get("start") or ""), str(inputs.get("end") or "")
        if not (_literal(start) and _literal(end)):
            return []
        try:
            override_window(start=start, end=end, now=timezone.now())
        except DomainError as exc:
            return [(exc.field or "start", str(exc).removeprefix(f"{exc.field}: "))]
        return []

    def plan(self, ctx: StepContext) -> PlannedRequest:
        schedule_id = ctx.resolver.schedule_id(_required(ctx, "schedule_id"), field="schedule_id")
        if oncall_schedule_is_v3(connection=ctx.connection, pagerduty_id=schedule_id):
            raise StepFailed(
                f"schedule_id: {schedule_id} is a v3 (shift-based) schedule; this action creates overrides on "
                "classic (layered) schedules only",
                field="schedule_id",
            )
        user_id = ctx.resolver.user_id(_required(ctx, "user_id"), field="user_id")
        # `now` is the step's own start, so a recovered step plans the window it first sent.
        now = (ctx.step_run.started_at if ctx.step_run is not None else None) or timezone.now()
        try:
            start, end = override_window(start=ctx.rendered.get("start", ""), end=ctx.rendered.get("end", ""), now=now)
        except DomainError as exc:
            raise StepFailed(str(exc), field=exc.field) from exc
        body = payloads.overrides_payload(start=iso(start), end=iso(end), user_id=user_id)
        return PlannedRequest("POST", f"/schedules/{schedule_id}/overrides", body, _from_email(ctx))

    @staticmethod
    def _request(planned: PlannedRequest) -> tuple[str, str, object, object]:
        sent = planned.body["overrides"][0]
        return planned.path.split("/")[2], sent["user"]["id"], parse_time(sent["start"]), parse_time(sent["end"])

    def execute(self, ctx: StepContext, planned: PlannedRequest) -> dict:
        schedule_id, user_id, start, end = self._request(planned)
        try:
            override, adopted = schedule_override_create(
                client=ctx.client,
                schedule_id=schedule_id,
                user_id=user_id,
                start=start,
                end=end,
                from_email=planned.from_email,
            )
        except PagerDutyError as exc:
            if exc.outcome_unknown:
                raise _outcome_unknown(planned, exc) from exc
            raise
        return self._outputs(planned, override, deduplicated=adopted)

    def reconcile(self, ctx: StepContext, planned: PlannedRequest) -> dict | None:
        answered = _answered(ctx, "POST", planned.path)
        if isinstance(answered, list):
            return self._outputs(planned, override_result(answered), deduplicated=True)
        schedule_id, user_id, start, end = self._request(planned)
        found = schedule_override_find(
            client=ctx.client, schedule_id=schedule_id, user_id=user_id, start=start, end=end
        )
        return None if found is None else self._outputs(planned, found, deduplicated=True)

    def _outputs(self, planned: PlannedRequest, override: dict, *, deduplicated: bool) -> dict:
        sent = planned.body["overrides"][0]
        return {
            "override_id": override.get("id", ""),
            "schedule_id": planned.path.split("/")[2],
            "user_id": (override.get("user") or {}).get("id") or sent["user"]["id"],
            "start": override.get("start") or sent["start"],
            "end": override.get("end") or sent["end"],
            "deduplicated": deduplicated,
        }


register(
    ActionSpec(
        name="pagerduty.create_override",
        label="Create PagerDuty Schedule Override",
        category=CATEGORY,
        description="Puts someone on call on a schedule for a while (POST /schedules/{id}/overrides, time_zone UTC); "
        "after a lost answer the schedule's overrides are read before anything is sent again.",
        fields=(
            FROM,
            FieldSpec(
                "schedule_id",
                "Schedule",
                "A PagerDuty schedule id, or the name of an imported schedule.",
                required=True,
                example="Primary on-call",
            ),
            FieldSpec(
                "user_id",
                "User",
                "PagerDuty user id or email of who goes on call.",
                required=True,
                example="{{Activity.owner}}",
            ),
            FieldSpec(
                "start",
                "Start",
                "ISO 8601 with an offset (2026-03-01T18:00:00+01:00), now, or now+<n>m|h|d.",
                required=True,
                default="now",
            ),
            FieldSpec(
                "end",
                "End",
                "ISO 8601 with an offset, now+<n>m|h|d, or +<n>m|h|d after start.",
                required=True,
                default="+12h",
            ),
        ),
        outputs={
            "override_id": "PagerDuty override id",
            "schedule_id": "PagerDuty schedule id",
            "user_id": "PagerDuty user id on call",
            "start": "Start as PagerDuty holds it",
            "end": "End as PagerDuty holds it",
            "deduplicated": "true when an earlier attempt's override was found on the schedule and not sent again",
        },
        implementation=CreateOverride(),
    )
)
