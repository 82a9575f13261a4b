"""Waiting runs: control steps park a run, and these services resume it.

A run whose control step waits has status `waiting`, no lease and no message in the queue: no
worker is busy and the recovery sweep leaves it alone (it only takes up pending runs and expired
leases). Exactly one of these ends the wait, and only once, because each is a conditional UPDATE
of the step from `waiting` under a lock on the run row:

- a decision on an approval (`approval_decide`, from the admin or the API);
- the incident's own status change (`waits_resume_for_event`, from the incident event signal);
- the deadline (`waits_sweep`, a beat task), which also resumes a status wait whose change was
  missed (a crash between commit and signal).

The step is then finished (succeeded, or failed with the reason), the run goes back to `pending`
and `execute_run` is queued after commit; the engine carries on after the finished step exactly as
after any other. A redelivered message or a re-run never decides a step again: a decided step is
no longer `waiting`, and a re-run only resets failed steps, which then wait afresh.
"""

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.errors import Conflict, DomainError
from apps.core.queueing import enqueue
from apps.core.sql import CompiledQuery
from apps.incidents.models import Incident, IncidentEventKind
from apps.runbooks import tasks
from apps.runbooks.executors import StepContext, StepFailed
from apps.runbooks.executors.control import APPROVAL, WAIT_FOR_STATUS, StepWaiting, parse_statuses
from apps.runbooks.models import RunbookRun, RunStatus, StepRun
from apps.runbooks.signals import step_ended

logger = logging.getLogger(__name__)
RESUME_SWEEP = "the recovery sweep queues the pending run once the broker is back (RUN_RECOVERY_PENDING_AFTER_SECONDS)"
COMMENT_MAX = 2000
SWEEP_BATCH = 500


class NotAnApprover(DomainError):
    status_code = 403


class AlreadyDecided(Conflict):
    def __init__(self, message: str, *, decision: dict):
        super().__init__(message)
        self.decision = decision


# --- parking a run -------------------------------------------------------------------------------


def step_wait(*, run: RunbookRun, step_run: StepRun, spec, rendered: dict, token: str, stored_rendered: dict) -> dict:
    """Start a control step. Returns its outputs when it can finish at once; otherwise parks the
    step and the run (`waiting`, lease released) in one transaction and raises StepWaiting.

    `stored_rendered`: the rendered fields as the step row keeps them (redacted), written with the
    park; the decision and the sweep read them there."""
    # A control step's plan reads only its rendered fields; the incident is read locked, below.
    ctx = StepContext(incident=None, rendered=rendered, resolver=None)
    plan = spec.implementation.plan(ctx)
    now = timezone.now()
    with transaction.atomic():
        # Locked like incident_update locks it: a status change commits wholly before or after this.
        ctx.incident = Incident.objects.select_for_update().get(pk=run.incident_id)
        try:
            return spec.implementation.execute(ctx, plan)
        except StepWaiting:
            pass
        StepRun.objects.filter(pk=step_run.pk).update(
            status=RunStatus.WAITING,
            started_at=now,
            finished_at=None,
            error="",
            outputs={},
            wait_until=now + timedelta(minutes=plan.timeout_minutes),
            rendered=stored_rendered,
        )
        parked = RunbookRun.objects.filter(pk=run.pk, lease_token=token).update(
            status=RunStatus.WAITING, lease_token="", lease_expires_at=None, updated_at=now
        )
        if not parked:
            # The lease went to another worker: it will reach this step itself.
            transaction.set_rollback(True)
    step_run.status, step_run.rendered = RunStatus.WAITING, stored_rendered
    raise StepWaiting


# --- ending a wait -------------------------------------------------------------------------------


def _end_wait(*, step_run: StepRun, status: str, outputs: dict, error: str = "") -> bool:
    """Finish a waiting step and hand the run back to the engine. False if it was not waiting."""
    now = timezone.now()
    ended = StepRun.objects.filter(pk=step_run.pk, status=RunStatus.WAITING).update(
        status=status, outputs=outputs, error=error, finished_at=now, wait_until=None
    )
    if not ended:
        return False
    step_run.status, step_run.outputs, step_run.error, step_run.finished_at = status, outputs, error, now
    step_ended.send(sender=StepRun, step_run=step_run)
    RunbookRun.objects.filter(pk=step_run.run_id, status=RunStatus.WAITING).update(
        status=RunStatus.PENDING, updated_at=now
    )
    run_id = step_run.run_id
    transaction.on_commit(lambda: enqueue(tasks.execute_run, run_id, recovery=RESUME_SWEEP))
    return True


def _decision(step_run: StepRun) -> dict:
    outputs = step_run.outputs or {}
    return {
        "step": step_run.key,
        "status": step_run.status,
        **{name: outputs.get(name, "") for name in ("decision", "decided_by", "decided_at", "comment")},
    }


def may_approve(*, user, step_run: StepRun) -> bool:
    """Superusers, and members of the step's approvers group (who also need the approve permission)."""
    if user.is_superuser:
        return True
    group = (step_run.rendered or {}).get("approvers") or "Responders"
    return user.has_perm("runbooks.approve_runbookrun") and user.groups.filter(name=group).exists()


@transaction.atomic
def approval_decide(*, run_id, user, approve: bool, comment: str = "") -> RunbookRun:
    """Approve or reject the approval a run waits for; one decision however many arrive at once.

    Raises NotAnApprover (403) outside the approvers group, AlreadyDecided (409, with the decision)
    when the run's approval was decided already, Conflict (409) when it waits for no approval."""
    comment = (comment or "").strip()
    if len(comment) > COMMENT_MAX:
        raise DomainError(f"comment is longer than {COMMENT_MAX} characters", field="comment")
    if "\x00" in comment:
        raise DomainError("comment must not contain NUL characters", field="comment")
    # Every decision on this run queues behind this lock: the second one sees the first's result.
    run = RunbookRun.objects.select_for_update().select_related("incident").get(pk=run_id)
    approvals = run.step_runs.filter(action=APPROVAL)
    step_run = approvals.filter(status=RunStatus.WAITING).first()
    if step_run is None:
        decided = (
            approvals.filter(status__in=[RunStatus.SUCCEEDED, RunStatus.FAILED])
            .exclude(outputs={})
            .order_by("-position")
            .first()
        )
        if decided is not None and (decided.outputs or {}).get("decision"):
            if not may_approve(user=user, step_run=decided):
                raise NotAnApprover(_refusal(decided))
            decision = _decision(decided)
            raise AlreadyDecided(
                f"Step {decided.key!r} was already decided: {decision['decision']}"
                + (f" by {decision['decided_by']}" if decision["decided_by"] else ""),
                decision=decision,
            )
        raise Conflict(f"Run {run.pk} is {run.status} and waits for no approval")
    if not may_approve(user=user, step_run=step_run):
        raise NotAnApprover(_refusal(step_run))
    now = timezone.now()
    username = user.get_username()
    outputs = {
        "decision": "approved" if approve else "rejected",
        "decided_by": username,
        "decided_at": now.isoformat().replace("+00:00", "Z"),
        "comment": comment,
    }
    if approve:
        _end_wait(step_run=step_run, status=RunStatus.SUCCEEDED, outputs=outputs)
    else:
        reason = f"Rejected by {username}" + (f": {comment}" if comment else " (no comment)")
        _end_wait(step_run=step_run, status=RunStatus.FAILED, outputs=outputs, error=reason)
    audit_record(
        target=run,
        event="run.approve" if approve else "run.reject",
        changes={"status": [RunStatus.WAITING, RunStatus.PENDING]},
        details={"step": step_run.key, "comment": comment, "incident_short_id": run.incident.short_id},
        actor=user,
    )
    run.refresh_from_db()
    return run


def _refusal(step_run: StepRun) -> str:
    group = (step_run.rendered or {}).get("approvers") or "Responders"
    return f"Only members of the group {group!r} may decide step {step_run.key!r}"


_WAITING_ON_EVENT = CompiledQuery(
    lambda _shape, event_id: StepRun.objects.filter(
        status=RunStatus.WAITING,
        action=WAIT_FOR_STATUS,
        run__incident__events__pk=event_id,
        run__incident__events__kind=IncidentEventKind.STATUS_CHANGED,
    ).values_list("pk", "run__incident__events__to_status")[:SWEEP_BATCH],
    -(2**62) + 61,  # never an event's key: stands for it in the compiled statement
)


def waits_resume_for_event(*, event_id) -> int:
    """An incident changed status: end the waits of its runs that wanted this status."""
    # One query on every status change (the waiting-steps index keeps it small), compiled once per
    # connection; nothing else unless a run of this incident waits.
    waiting = _WAITING_ON_EVENT.rows(None, int(event_id))
    return sum(_resume_on_status(step_run_id=pk, status=status) for pk, status in waiting)


@transaction.atomic
def _resume_on_status(*, step_run_id, status: str) -> bool:
    step_run = StepRun.objects.filter(pk=step_run_id, status=RunStatus.WAITING).first()
    if step_run is None:
        return False
    RunbookRun.objects.select_for_update().filter(pk=step_run.run_id).first()
    try:
        wanted = parse_statuses((step_run.rendered or {}).get("statuses", ""))
    except StepFailed:
        return False  # checked before it waited; an edited row is left to its timeout
    if status not in wanted:
        return False
    return _end_wait(step_run=step_run, status=RunStatus.SUCCEEDED, outputs={"status": status, "timed_out": False})


def waits_sweep(*, now=None) -> dict:
    """Time out waits past their deadline (`on_timeout`), and resume status waits whose incident
    already has a wanted status (its change was committed but its signal lost)."""
    now = now or timezone.now()
    expired = list(
        StepRun.objects.filter(status=RunStatus.WAITING, wait_until__lt=now).values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    timed_out = sum(_time_out(step_run_id=pk, now=now) for pk in expired)
    # Oldest first, and only rows still waiting on a status: ended waits and approvals keep their
    # rows, and would otherwise fill the batch while a run still waits.
    missed = (
        StepRun.objects.filter(status=RunStatus.WAITING, action=WAIT_FOR_STATUS)
        .order_by("pk")
        .values_list("pk", "run__incident__status")[:SWEEP_BATCH]
    )
    resumed = sum(_resume_on_status(step_run_id=pk, status=status) for pk, status in missed)
    return {"timed_out": timed_out, "resumed": resumed}


@transaction.atomic
def _time_out(*, step_run_id, now) -> bool:
    step_run = StepRun.objects.filter(pk=step_run_id, status=RunStatus.WAITING).first()
    if step_run is None:
        return False
    run = RunbookRun.objects.select_for_update().select_related("incident").get(pk=step_run.run_id)
    rendered = step_run.rendered or {}
    fail = rendered.get("on_timeout", "fail") != "continue"
    minutes = rendered.get("timeout_minutes", "")
    if step_run.action == APPROVAL:
        outputs = {
            "decision": "timed_out",
            "decided_by": "",
            "decided_at": now.isoformat().replace("+00:00", "Z"),
            "comment": "",
        }
        error = f"No decision by {rendered.get('approvers') or 'Responders'} within {minutes} min (on_timeout: fail)"
    else:
        outputs = {"status": "", "timed_out": True}
        error = f"The incident did not reach {rendered.get('statuses', '')} within {minutes} min (on_timeout: fail)"
    ended = _end_wait(
        step_run=step_run,
        status=RunStatus.FAILED if fail else RunStatus.SUCCEEDED,
        outputs=outputs,
        error=error if fail else "",
    )
    if ended and step_run.action == APPROVAL:
        audit_record(
            target=run,
            event="run.approval_timed_out",
            changes={"status": [RunStatus.WAITING, RunStatus.PENDING]},
            details={"step": step_run.key, "on_timeout": "fail" if fail else "continue"},
        )
    return ended
