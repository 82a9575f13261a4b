"""Control steps: `runbook.approval` and `runbook.wait_for_status`.

They follow the action shape (fields, outputs, `plan()`, `execute()`), so the editor, validation,
dry run and engine treat them like any step; they send nothing to PagerDuty and name no connection.
`plan()` checks the rendered fields and says what the step would wait for; `execute()` either
finishes at once (the incident already has the status) or raises `StepWaiting`: the engine then
parks the run (`waiting`, no worker, no lease) and `apps.runbooks.waits` resumes it later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import Group

from apps.incidents.models import IncidentStatus
from apps.runbooks.executors.base import Action, ActionSpec, FieldSpec, StepContext, StepFailed, register

APPROVAL = "runbook.approval"
WAIT_FOR_STATUS = "runbook.wait_for_status"
CATEGORY = "Control"
DEFAULT_APPROVERS = "Responders"
# A wait longer than a week is a forgotten run, not a plan.
TIMEOUT_MAX_MINUTES = 7 * 24 * 60
ON_TIMEOUT = ("fail", "continue")
APPROVAL_MESSAGE_MAX = 2000


class StepWaiting(Exception):
    """The step cannot finish now: the run waits until something resumes it (or it times out)."""


@dataclass
class WaitPlan:
    kind: str
    timeout_minutes: int
    on_timeout: str
    approvers: str = ""
    message: str = ""
    statuses: list[str] = field(default_factory=list)

    def describe(self) -> str:
        then = "fail" if self.on_timeout == "fail" else "continue"
        if self.kind == APPROVAL:
            what = f"would wait for approval by {self.approvers}"
        else:
            what = f"would wait for status {', '.join(self.statuses)}"
        return f"{what} (at most {self.timeout_minutes} min, then {then})"


def _timeout_minutes(value: str) -> int:
    text = (value or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise StepFailed(
            f"timeout_minutes must be a whole number of minutes, not {text[:40]!r}", field="timeout_minutes"
        )
    minutes = int(text)
    if not 1 <= minutes <= TIMEOUT_MAX_MINUTES:
        raise StepFailed(f"timeout_minutes must be between 1 and {TIMEOUT_MAX_MINUTES}", field="timeout_minutes")
    return minutes


def _on_timeout(value: str) -> str:
    text = (value or "").strip()
    if text not in ON_TIMEOUT:
        raise StepFailed(f"on_timeout must be fail or continue, not {text[:40]!r}", field="on_timeout")
    return text


_STATUS_BY_LOWER = {status.lower(): status for status in IncidentStatus.values}


def parse_statuses(value: str) -> list[str]:
    """`Monitoring, Resolved` → ["Monitoring", "Resolved"] (any case, spaces trimmed, no repeats)."""
    text = (value or "").strip()
    if len(text) > 500:
        raise StepFailed("statuses is longer than 500 characters", field="statuses")
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise StepFailed(
            f"statuses is required: one or more of {', '.join(IncidentStatus.values)}, comma-separated",
            field="statuses",
        )
    statuses = []
    for name in names:
        status = _STATUS_BY_LOWER.get(name.lower())
        if status is None:
            raise StepFailed(
                f"statuses: unknown status {name[:40]!r} (expected {', '.join(IncidentStatus.values)})",
                field="statuses",
            )
        if status not in statuses:
            statuses.append(status)
    return statuses


def _literal(inputs: dict, name: str) -> str | None:
    """A field's value when it has no template tag (so it can be checked when the runbook is saved)."""
    value = inputs.get(name)
    if value is None or "{{" in str(value):
        return None
    return str(value)


class ControlStep(Action):
    kind = ""

    def check_literals(self, inputs: dict) -> list[tuple[str, str]]:
        """Save-time problems of fields written without templates: (field, message)."""
        problems = []
        for name, parse in (("timeout_minutes", _timeout_minutes), ("on_timeout", _on_timeout)):
            value = _literal(inputs, name)
            if value is not None:
                try:
                    parse(value)
                except StepFailed as exc:
                    problems.append((name, str(exc)))
        return problems

    def _common(self, ctx: StepContext) -> dict:
        return {
            "kind": self.kind,
            "timeout_minutes": _timeout_minutes(ctx.rendered.get("timeout_minutes", "")),
            "on_timeout": _on_timeout(ctx.rendered.get("on_timeout", "")),
        }

    def reconcile(self, ctx, planned):
        return None  # nothing was sent anywhere


class Approval(ControlStep):
    kind = APPROVAL

    def plan(self, ctx: StepContext) -> WaitPlan:
        approvers = (ctx.rendered.get("approvers") or "").strip() or DEFAULT_APPROVERS
        if len(approvers) > 150:
            raise StepFailed("approvers must name one group (at most 150 characters)", field="approvers")
        if not Group.objects.filter(name=approvers).exists():
            raise StepFailed(f"there is no group named {approvers!r}, so nobody could approve", field="approvers")
        message = (ctx.rendered.get("message") or "").strip()
        if len(message) > APPROVAL_MESSAGE_MAX:
            raise StepFailed(f"message is longer than {APPROVAL_MESSAGE_MAX} characters", field="message")
        return WaitPlan(**self._common(ctx), approvers=approvers, message=message)

    def execute(self, ctx: StepContext, planned: WaitPlan) -> dict:
        raise StepWaiting(planned.describe())


class WaitForStatus(ControlStep):
    kind = WAIT_FOR_STATUS

    def check_literals(self, inputs: dict) -> list[tuple[str, str]]:
        problems = super().check_literals(inputs)
        value = _literal(inputs, "statuses")
        if value is not None:
            try:
                parse_statuses(value)
            except StepFailed as exc:
                problems.append(("statuses", str(exc)))
        return problems

    def plan(self, ctx: StepContext) -> WaitPlan:
        return WaitPlan(**self._common(ctx), statuses=parse_statuses(ctx.rendered.get("statuses", "")))

    def execute(self, ctx: StepContext, planned: WaitPlan) -> dict:
        # The caller holds the incident row locked, so a status change cannot slip in between this
        # check and the run being parked (that change's resume would find nothing to resume).
        if ctx.incident.status in planned.statuses:
            return {"status": ctx.incident.status, "timed_out": False}
        raise StepWaiting(planned.describe())


def is_control(action: str) -> bool:
    return action in (APPROVAL, WAIT_FOR_STATUS)


TIMEOUT_HELP = f"Whole minutes, 1–{TIMEOUT_MAX_MINUTES}."
ON_TIMEOUT_HELP = "When the time is up: fail the step, or continue the run."

register(
    ActionSpec(
        name=APPROVAL,
        label="Wait for approval",
        category=CATEGORY,
        description=(
            "Pauses the run, holding no worker, until a member of the approvers group approves or rejects it "
            "(admin, or POST /api/v1/runs/{id}/approve/ or reject/). Reject fails the step with the comment."
        ),
        fields=(
            FieldSpec(
                "message",
                "Message",
                "What the approvers are asked, shown beside the approve and reject buttons.",
                example="Page the on-call for {{Activity.short_id}}?",
            ),
            FieldSpec(
                "approvers",
                "Approvers (group)",
                "The group whose members may decide (superusers always may).",
                default=DEFAULT_APPROVERS,
            ),
            FieldSpec("timeout_minutes", "Timeout (minutes)", TIMEOUT_HELP, default="30"),
            FieldSpec("on_timeout", "On timeout", ON_TIMEOUT_HELP, default="fail", choices=ON_TIMEOUT),
        ),
        outputs={
            "decision": "approved, rejected or timed_out",
            "decided_by": "Username of the person who decided (empty on timeout)",
            "decided_at": "When it was decided (ISO 8601 UTC)",
            "comment": "The approver's comment",
        },
        implementation=Approval(),
    )
)

register(
    ActionSpec(
        name=WAIT_FOR_STATUS,
        label="Wait for incident status",
        category=CATEGORY,
        description=(
            "Pauses the run, holding no worker, until the incident reaches one of the statuses (resumed by the "
            "status change itself) — so one runbook can page, wait for Monitoring, then resolve."
        ),
        fields=(
            FieldSpec(
                "statuses",
                "Statuses",
                f"Comma-separated: {', '.join(IncidentStatus.values)}. The step ends when the incident reaches one.",
                required=True,
                example="Monitoring, Resolved",
            ),
            FieldSpec("timeout_minutes", "Timeout (minutes)", TIMEOUT_HELP, default="60"),
            FieldSpec("on_timeout", "On timeout", ON_TIMEOUT_HELP, default="fail", choices=ON_TIMEOUT),
        ),
        outputs={
            "status": "The status the incident reached (empty on timeout)",
            "timed_out": "true when the time ran out first",
        },
        implementation=WaitForStatus(),
    )
)
