"""The runbook engine: start runs for incident events, execute their steps, re-run them.

Idempotency, in order of defence:
1. one RunbookRun per (runbook, event) — a unique constraint, so re-dispatching starts nothing;
2. a lease on the run — two deliveries of the same message never execute it at once;
3. per step, a status written *before* the request — a step found `running` was interrupted, and
   its action reconciles with PagerDuty (look up by incident key) instead of sending blindly;
4. the PagerDuty incident link and incident_key dedup — a re-run reuses the open incident.
"""

import logging
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.errors import Conflict, DomainError
from apps.core.queueing import enqueue
from apps.core.redaction import redact_data, redact_headers
from apps.incidents.models import IncidentEvent
from apps.incidents.services import incident_trigger_runbook
from apps.pagerduty.errors import PagerDutyError
from apps.pagerduty.selectors import channel_get, connection_get
from apps.pagerduty.services import channel_client, connection_client
from apps.runbooks import tasks, templating, waits
from apps.runbooks.executors import (
    TARGET_CHANNEL,
    StepContext,
    StepFailed,
    StepSkipped,
    get_action,
    outcome_unknown_message,
    stored_inputs,
    uses_channel,
)
from apps.runbooks.executors.control import StepWaiting, is_control
from apps.runbooks.models import FINISHED, OnFailure, Runbook, RunbookRun, RunStatus, StepRun, StepRunExchange
from apps.runbooks.resolvers import LiveResolver
from apps.runbooks.selectors import (
    exchange_is_own,
    runbooks_matching_event,
    step_run_exchanges,
    step_run_response,
    template_context_for_run,
)
from apps.runbooks.versions import LOADED_FROM_YAML, runbook_version_ensure

logger = logging.getLogger(__name__)
RUN_SWEEP = "the recovery sweep queues the pending run once the broker is back (RUN_RECOVERY_PENDING_AFTER_SECONDS)"


# --- starting runs -------------------------------------------------------------------------------


def runs_create_for_event(*, event_id: int) -> list[RunbookRun]:
    """Start one run per matching runbook. Safe to call any number of times for the same event."""
    event = IncidentEvent.objects.select_related("incident").filter(pk=event_id).first()
    if event is None:
        return []
    created = []
    for runbook in runbooks_matching_event(event=event):
        try:
            with transaction.atomic():
                run = run_create(runbook=runbook, event=event)
        except IntegrityError:
            continue  # this (runbook, event) already has its run
        created.append(run)
        transaction.on_commit(lambda run_id=run.pk: enqueue(tasks.execute_run, run_id, recovery=RUN_SWEEP))
    IncidentEvent.objects.filter(pk=event.pk, dispatched_at__isnull=True).update(dispatched_at=timezone.now())
    return created


@transaction.atomic
def runbook_run_manually(*, runbook_id, incident_id, actor: str = "") -> IncidentEvent:
    """A person asked to run this runbook on an incident now: recorded on the incident's timeline
    and in the audit log; the worker starts the run. A disabled runbook is refused."""
    runbook = Runbook.objects.select_for_update().get(pk=runbook_id)
    if not runbook.enabled:
        raise DomainError(f"Runbook {runbook.slug!r} is disabled; enable it before running it.", field="runbook")
    event = incident_trigger_runbook(incident_id=incident_id, runbook_slug=runbook.slug, actor=actor)
    audit_record(
        target=runbook,
        event="runbook.run",
        details={
            "incident": str(event.incident_id),
            "incident_short_id": event.incident.short_id,
            "incident_event": event.pk,
        },
    )
    return event


def run_create(*, runbook: Runbook, event: IncidentEvent) -> RunbookRun:
    # Normally the latest saved version; written here only if the runbook changed by a path that
    # records none (shell, data migration), so every run names exactly what it executed.
    version, _ = runbook_version_ensure(runbook=runbook, comment="Recorded when a run started")
    run = RunbookRun.objects.create(runbook=runbook, runbook_version=version, incident=event.incident, event=event)
    StepRun.objects.bulk_create(
        [
            StepRun(
                run=run,
                step=step,
                position=index,
                key=step.key,
                name=step.name,
                action=step.action,
                connection=step.connection,
                inputs=step.inputs,
                on_failure=step.on_failure,
            )
            for index, step in enumerate(runbook.steps.order_by("position", "id"))
        ]
    )
    return run


# --- executing runs ------------------------------------------------------------------------------


class LeaseHeld(Exception):
    """Another worker is executing this run right now."""

    def __init__(self, seconds_left: float):
        self.seconds_left = seconds_left
        super().__init__(f"run is leased for another {seconds_left:.0f}s")


def _lease_until():
    return timezone.now() + timedelta(seconds=settings.RUNBOOK_RUN_LEASE_SECONDS)


def _claim(run_id, token: str) -> bool:
    now = timezone.now()
    claimable = Q(status=RunStatus.PENDING) | Q(status=RunStatus.RUNNING, lease_expires_at__lt=now)
    claimable |= Q(status=RunStatus.RUNNING, lease_expires_at__isnull=True)
    return bool(
        RunbookRun.objects.filter(claimable, pk=run_id).update(
            status=RunStatus.RUNNING,
            lease_token=token,
            lease_expires_at=_lease_until(),
            executions=F("executions") + 1,
            started_at=now,
        )
    )


def _renew(run_id, token: str, *, extra_seconds: float = 0) -> bool:
    until = _lease_until() + timedelta(seconds=extra_seconds)
    return bool(RunbookRun.objects.filter(pk=run_id, lease_token=token).update(lease_expires_at=until))


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _lease_keeping_sleep(run_id, token: str):
    """A step waiting out a 429 or a backoff keeps its lease, so nobody takes the run over meanwhile."""

    def sleep(seconds: float) -> None:
        _renew(run_id, token, extra_seconds=seconds)
        _sleep(seconds)

    return sleep


def run_execute(*, run_id) -> RunbookRun | None:
    """Execute a run's unfinished steps in order. Returns None if there was nothing to do.

    Raises LeaseHeld when another worker holds the run, so the caller can try again later.
    """
    token = uuid.uuid4().hex
    if not _claim(run_id, token):
        run = RunbookRun.objects.filter(pk=run_id).first()
        if run is None or run.status in FINISHED or run.status == RunStatus.WAITING:
            return None  # a waiting run is resumed by apps.runbooks.waits, never by a message
        seconds_left = (run.lease_expires_at - timezone.now()).total_seconds() if run.lease_expires_at else 0
        raise LeaseHeld(max(seconds_left, 0))
    run = RunbookRun.objects.select_related("incident", "runbook").get(pk=run_id)
    cache: dict = {}
    stopped_by = None
    for step_run in run.step_runs.order_by("position"):
        if step_run.status in FINISHED:
            if step_run.status == RunStatus.FAILED and step_run.on_failure == OnFailure.STOP:
                stopped_by = step_run
                break
            continue
        if not _renew(run.pk, token):
            logger.warning("run %s: lease lost to another worker; stopping here", run.pk)
            return run
        _execute_step(run=run, step_run=step_run, cache=cache, token=token)
        if step_run.status == RunStatus.WAITING:
            return RunbookRun.objects.get(pk=run.pk)  # parked: this worker is free
        if step_run.status == RunStatus.FAILED and step_run.on_failure == OnFailure.STOP:
            stopped_by = step_run
            break
    return _finish(run=run, token=token, stopped_by=stopped_by)


def _finish(*, run: RunbookRun, token: str, stopped_by: StepRun | None) -> RunbookRun:
    if stopped_by is not None:
        run.step_runs.filter(status=RunStatus.PENDING).update(
            status=RunStatus.CANCELLED, error=f"Not run: step {stopped_by.key!r} failed (on_failure: stop)"
        )
    statuses = set(run.step_runs.values_list("status", flat=True))
    status = RunStatus.FAILED if RunStatus.FAILED in statuses else RunStatus.SUCCEEDED
    error = f"Step {stopped_by.key!r} failed: {stopped_by.error}" if stopped_by else ""
    if not stopped_by and status == RunStatus.FAILED:
        error = "One or more steps failed (on_failure: continue)"
    RunbookRun.objects.filter(pk=run.pk, lease_token=token).update(
        status=status, finished_at=timezone.now(), error=error, lease_token="", lease_expires_at=None
    )
    run.refresh_from_db()
    return run


def _store_exchange(step_run: StepRun):
    def store(exchange):
        StepRunExchange.objects.create(step_run=step_run, **exchange.as_dict())
        # Look-ups are not attempts: only a send of the step's own request counts.
        if exchange_is_own(exchange=exchange, request=step_run.request):
            StepRun.objects.filter(pk=step_run.pk).update(attempts=F("attempts") + 1)

    return store


def _execute_step(*, run: RunbookRun, step_run: StepRun, cache: dict, token: str) -> None:
    # Found `running`: a previous execution died during this step's write (it may have happened).
    recovering = step_run.status == RunStatus.RUNNING
    try:
        outputs = _perform_step(run=run, step_run=step_run, cache=cache, recovering=recovering, token=token)
    except StepWaiting:
        pass  # parked by waits.step_wait; resumed later
    except StepSkipped as exc:
        _end_step(step_run, RunStatus.SKIPPED, error=str(exc))
    except (StepFailed, templating.TemplateError, DomainError, PagerDutyError) as exc:
        _end_step(step_run, RunStatus.FAILED, error=str(exc))
    except OperationalError:
        raise  # the database is unwell: let the task retry rather than record a false failure
    except Exception as exc:  # a bug must fail one step visibly, not wedge the run
        logger.exception("run %s step %s: unexpected error", run.pk, step_run.key)
        _end_step(step_run, RunStatus.FAILED, error=f"Internal error: {type(exc).__name__}: {exc}")
    else:
        step_run.outputs = outputs
        _end_step(step_run, RunStatus.SUCCEEDED)


def _mark_running(step_run: StepRun) -> None:
    """Written, and committed, just before the step's write: from here on a dead worker leaves the
    step `running`, and the next execution reconciles with PagerDuty instead of sending blindly.
    Look-ups before this point are repeated freely."""
    step_run.status = RunStatus.RUNNING
    step_run.error = ""
    step_run.started_at = step_run.started_at or timezone.now()
    step_run.finished_at = None
    step_run.save(update_fields=["status", "error", "started_at", "finished_at"])


def _end_step(step_run: StepRun, status: str, *, error: str = "") -> None:
    # The response is the answer to the step's own request, never a look-up's (a 404 from
    # GET /users/… beside "POST /incidents" told people the wrong story).
    own = step_run_exchanges(step_run=step_run, exchanges=list(step_run.exchanges.all()))["requests"]
    step_run.response = step_run_response(requests=own)
    step_run.attempts = len(own)
    step_run.status = status
    step_run.error = error
    step_run.finished_at = timezone.now()
    step_run.save()


def _perform_step(*, run: RunbookRun, step_run: StepRun, cache: dict, recovering: bool, token: str) -> dict:
    spec = get_action(step_run.action)
    context = template_context_for_run(run=run)
    rendered = templating.render_fields(spec.with_defaults(step_run.inputs), context)
    step_run.rendered = redact_data(rendered)
    step_run.save(update_fields=["rendered"])
    if is_control(step_run.action):
        return waits.step_wait(run=run, step_run=step_run, spec=spec, rendered=rendered, token=token)
    previous_exchanges = list(step_run.exchanges.all()) if recovering else []
    if spec.target == TARGET_CHANNEL:
        # Events name a channel (its routing key is the credential), never a connection.
        channel = channel_get(name=(rendered.get("channel") or "").strip())
        client = channel_client(
            channel=channel, on_exchange=_store_exchange(step_run), sleep=_lease_keeping_sleep(run.pk, token)
        )
        ctx = StepContext(
            incident=run.incident,
            rendered=rendered,
            resolver=None,
            client=client,
            channel=channel,
            recovering=recovering,
            step_run=step_run,
            previous_exchanges=previous_exchanges,
        )
    else:
        connection = connection_get(name=step_run.connection or "default")
        client = connection_client(
            connection=connection, on_exchange=_store_exchange(step_run), sleep=_lease_keeping_sleep(run.pk, token)
        )
        ctx = StepContext(
            incident=run.incident,
            rendered=rendered,
            resolver=LiveResolver(incident=run.incident, connection=connection, client=client, cache=cache),
            default_from=connection.from_email,
            connection=connection,
            client=client,
            recovering=recovering,
            step_run=step_run,
            previous_exchanges=previous_exchanges,
        )
    action = spec.implementation
    planned = action.plan(ctx)
    step_run.request = {
        "method": planned.method,
        "url": client.api_url.rstrip("/") + planned.path,
        "headers": redact_headers(client.request_headers(True, planned.from_email)),
        "body": redact_data(planned.body),
    }
    if planned.notes:
        step_run.request["notes"] = list(planned.notes)
    step_run.save(update_fields=["request"])
    _mark_running(step_run)
    if recovering:
        try:
            adopted = action.reconcile(ctx, planned)
        except PagerDutyError as exc:
            raise StepFailed(outcome_unknown_message(planned, f"looking it up failed: {exc}")) from exc
        if adopted is not None:
            return adopted
    return action.execute(ctx, planned)


# --- re-running and recovery ---------------------------------------------------------------------


class RerunVersion:
    """Which runbook a re-run executes. RECORDED, the default, is what re-runs always did."""

    RECORDED = "recorded"  # the steps as the run recorded them (the version it started with)
    CURRENT = "current"  # the runbook as saved now: a fix saved since the failure is used
    CHOICES = (RECORDED, CURRENT)


@transaction.atomic
def run_rerun_from_failed(*, run_id, version: str = RerunVersion.RECORDED) -> RunbookRun:
    """Reset the failed step and everything after it; steps that succeeded keep their outputs.

    With `version="current"` the steps still to run are taken from the runbook as saved now (by
    key), steps added since are appended in the new order, steps removed since are skipped, and
    the run then names the current version."""
    if version not in RerunVersion.CHOICES:
        raise DomainError(
            f"version must be one of {', '.join(RerunVersion.CHOICES)}, not {str(version)[:40]!r}", field="version"
        )
    run = (
        RunbookRun.objects.select_for_update(of=("self",)).select_related("runbook_version", "incident").get(pk=run_id)
    )
    if run.status not in FINISHED:
        raise Conflict(f"Run is {run.status}; only a finished run can be re-run")
    first_failed = run.step_runs.filter(status__in=[RunStatus.FAILED, RunStatus.CANCELLED]).order_by("position").first()
    if first_failed is None:
        raise Conflict("Nothing to re-run: no step failed")
    changes = {}
    if version == RerunVersion.CURRENT:
        current, _ = runbook_version_ensure(runbook=run.runbook, comment="Recorded when a run was re-run")
        _step_runs_take_current(run=run)
        if current.pk != run.runbook_version_id:
            recorded = run.runbook_version.number if run.runbook_version_id else None
            changes["runbook_version"] = [recorded, current.number]
            run.runbook_version = current
    else:
        run.step_runs.filter(position__gte=first_failed.position).exclude(status=RunStatus.SUCCEEDED).update(
            status=RunStatus.PENDING, error="", finished_at=None, started_at=None
        )
    previous = run.status
    run.status, run.error, run.finished_at = RunStatus.PENDING, "", None
    run.save(update_fields=["status", "error", "finished_at", "runbook_version"])
    audit_record(
        target=run,
        event="run.rerun",
        changes={"status": [previous, run.status], **changes},
        details={
            "from_step": first_failed.key,
            "incident_short_id": run.incident.short_id,
            "version": version,
            "runbook_version": run.runbook_version.number if run.runbook_version_id else None,
        },
    )
    transaction.on_commit(lambda: enqueue(tasks.execute_run, run.pk, recovery=RUN_SWEEP))
    return run


def _step_runs_take_current(*, run: RunbookRun) -> None:
    """Point the run's step runs that did not succeed at the runbook's current steps, pending.
    Succeeded steps are kept as they ran (never repeated: their outputs feed later steps); a step
    removed from the runbook since is skipped with a note, so a later re-run cannot bring it back."""
    existing = {step_run.key: step_run for step_run in run.step_runs.all()}
    steps = list(run.runbook.steps.order_by("position", "id"))
    keys = {step.key for step in steps}
    for position, step in enumerate(steps):
        step_run = existing.get(step.key)
        if step_run is None:
            StepRun.objects.create(
                run=run,
                step=step,
                position=position,
                key=step.key,
                name=step.name,
                action=step.action,
                connection=step.connection,
                inputs=step.inputs,
                on_failure=step.on_failure,
            )
            continue
        step_run.position = position
        fields = ["position"]
        if step_run.status != RunStatus.SUCCEEDED:
            step_run.step, step_run.name, step_run.action = step, step.name, step.action
            step_run.connection, step_run.inputs, step_run.on_failure = step.connection, step.inputs, step.on_failure
            step_run.status, step_run.error = RunStatus.PENDING, ""
            step_run.started_at = step_run.finished_at = None
            fields += ["step", "name", "action", "connection", "inputs", "on_failure"]
            fields += ["status", "error", "started_at", "finished_at"]
        step_run.save(update_fields=fields)
    removed = [step_run for key, step_run in existing.items() if key not in keys]
    for offset, step_run in enumerate(sorted(removed, key=lambda sr: sr.position)):
        step_run.position = len(steps) + offset
        fields = ["position"]
        if step_run.status != RunStatus.SUCCEEDED:
            step_run.status, step_run.error = RunStatus.SKIPPED, "Not in the current version of the runbook"
            step_run.started_at = step_run.finished_at = None
            fields += ["status", "error", "started_at", "finished_at"]
        step_run.save(update_fields=fields)


def runs_recover_stalled(*, pending_after_seconds: int | None = None, max_age_hours: int = 24) -> dict:
    """Re-enqueue work whose message was lost: undispatched events, unclaimed runs, expired leases.

    Events and pending runs younger than `pending_after_seconds` (RUN_RECOVERY_PENDING_AFTER_SECONDS)
    are left alone: their message may still be in the queue. Re-enqueuing one that is not lost
    only costs a message, since runs are unique per event and leased.
    """
    if pending_after_seconds is None:
        pending_after_seconds = settings.RUN_RECOVERY_PENDING_AFTER_SECONDS
    now = timezone.now()
    horizon = now - timedelta(hours=max_age_hours)
    stale = now - timedelta(seconds=pending_after_seconds)
    events = list(
        IncidentEvent.objects.filter(
            dispatched_at__isnull=True, created_at__lt=stale, created_at__gt=horizon
        ).values_list("pk", flat=True)[:500]
    )
    runs = list(
        RunbookRun.objects.filter(created_at__gt=horizon)
        .filter(
            Q(status=RunStatus.PENDING, updated_at__lt=stale) | Q(status=RunStatus.RUNNING, lease_expires_at__lt=now)
        )
        .values_list("pk", flat=True)[:500]
    )
    for event_id in events:
        tasks.dispatch_incident_event.delay(event_id)
    for run_id in runs:
        tasks.execute_run.delay(run_id)
    return {"events": len(events), "runs": len(runs)}


# --- runbooks as code ----------------------------------------------------------------------------


@transaction.atomic
def runbook_upsert_from_spec(*, spec: dict, user=None, comment: str = LOADED_FROM_YAML) -> tuple[Runbook, bool]:
    """Create or update a runbook by slug from a validated spec; steps are matched by key and
    updated in place, so run history keeps pointing at the same Step rows. A new version is
    recorded only when the result differs from the latest one."""
    trigger = spec.get("trigger") or {}
    conditions = spec.get("conditions") or {}

    def as_list(value):
        return [] if value is None else value if isinstance(value, list) else [value]

    runbook, created = Runbook.objects.select_for_update().get_or_create(slug=spec["slug"])
    runbook.name = spec["name"]
    runbook.description = spec.get("description") or ""
    runbook.enabled = spec.get("enabled", True)
    runbook.trigger_on = trigger["on"]
    runbook.trigger_to = as_list(trigger.get("to"))
    runbook.trigger_from = as_list(trigger.get("from"))
    runbook.trigger_events = as_list(trigger.get("events"))
    runbook.condition_severity = as_list(conditions.get("severity"))
    runbook.condition_services = as_list(conditions.get("services"))
    runbook.condition_environments = as_list(conditions.get("environments"))
    runbook.save()
    existing = {step.key: step for step in runbook.steps.all()}
    keys = [step["key"] for step in spec.get("steps") or []]
    runbook.steps.exclude(key__in=keys).delete()
    for position, item in enumerate(spec.get("steps") or []):
        step = existing.get(item["key"]) or runbook.steps.model(runbook=runbook, key=item["key"])
        step.position = position
        step.name = item.get("name") or ""
        step.action = item["action"]
        no_connection = uses_channel(item["action"]) or is_control(item["action"])
        step.connection = "" if no_connection else item.get("connection") or "default"
        step.inputs = stored_inputs(item.get("with") or {})
        step.on_failure = item.get("on_failure", OnFailure.STOP)
        step.save()
    runbook_version_ensure(runbook=runbook, user=user, comment=comment)
    return runbook, created
