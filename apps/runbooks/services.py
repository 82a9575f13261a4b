"""The runbook engine: start runs for incident events, execute their steps, re-run them.

Idempotency, in order of defence:
1. one RunbookRun per (runbook, event) — a unique constraint, so re-dispatching starts nothing;
2. a lease on the run — two deliveries of the same message never execute it at once;
3. per step, a status written *before* the request — a step found `running` was interrupted, and
   its action reconciles with PagerDuty (look up by incident key) instead of sending blindly;
4. the PagerDuty incident link and incident_key dedup — a re-run reuses the open incident.
"""

import contextlib
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
from apps.core.limits import STORED_BODY_MAX_CHARS
from apps.core.queueing import enqueue
from apps.core.redaction import redact_data, redact_headers
from apps.core.sql import (
    CompiledUpdate,
    hold_prefetched,
    insert_and_update,
    insert_with_children,
    prepared_for_insert,
    update_row,
)
from apps.core.validators import storable_json
from apps.incidents.models import IncidentEvent
from apps.incidents.services import incident_trigger_runbook
from apps.pagerduty.client import PagerDutySession
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
from apps.runbooks.models import (
    FINISHED,
    OnFailure,
    Runbook,
    RunbookRun,
    RunStatus,
    StepRun,
    StepRunExchange,
)
from apps.runbooks.resolvers import LiveResolver
from apps.runbooks.selectors import (
    event_for_dispatch,
    exchange_is_own,
    runbooks_matching_event,
    step_run_exchanges,
    step_run_response,
    template_context_for_run,
)
from apps.runbooks.signals import step_ended
from apps.runbooks.versions import (
    LOADED_FROM_YAML,
    runbook_version_ensure,
    runbook_version_for_run,
    runbook_versions_forget,
)

logger = logging.getLogger(__name__)
RUN_SWEEP = "the recovery sweep queues the pending run once the broker is back (RUN_RECOVERY_PENDING_AFTER_SECONDS)"


# --- starting runs -------------------------------------------------------------------------------


def event_dispatch(*, event_id: int) -> RunbookRun | None:
    """What the dispatch task does: start the event's runs and execute the first one right here,
    so the common case (one matching runbook) is one broker round trip, not two. Further runs are
    queued for other workers. Returns the run executed here, if any.

    A redelivered message (the worker died while executing) creates nothing, and carries on with
    the event's first unfinished run under the usual lease: still leased by the dead worker, it is
    queued for when the lease expires, as a redelivered execute_run would be retried."""
    created = runs_create_for_event(event_id=event_id, queue_from=1)
    if created:
        run = created[0]
    else:
        run = (
            RunbookRun.objects.filter(event_id=event_id, status__in=[RunStatus.PENDING, RunStatus.RUNNING])
            .order_by("pk")
            .first()
        )
        if run is None:
            return None
    try:
        return run_execute(run_id=run.pk, run=run if created else None)
    except LeaseHeld as held:
        enqueue(tasks.execute_run, run.pk, countdown=held.seconds_left + 1, recovery=RUN_SWEEP)
        return None


def runs_create_for_event(*, event_id: int, queue_from: int = 0) -> list[RunbookRun]:
    """Start one run per matching runbook. Safe to call any number of times for the same event.

    Every created run from the `queue_from`-th on is queued for a worker; those before it are the
    caller's to execute right away: they are created already leased to it (`lease_token`), as a
    claim would have left them, so nobody else takes them while the lease lasts, and a caller that
    dies leaves them to the recovery sweep once it expires (event_dispatch executes the first)."""
    # With whether the incident has any PagerDuty link: a run executed right away on an incident
    # that has none need not look for one before paging (_Execution.unlinked).
    event = event_for_dispatch(event_id=event_id)
    if event is None:
        return []
    created = []
    stamped = event.dispatched_at is not None
    for runbook in runbooks_matching_event(event=event):
        try:
            # The first run's statement stamps the event too: no statement of its own, and never a
            # run without it.
            run, step_runs = _run_create(
                runbook=runbook, event=event, leased=len(created) < queue_from, stamp=not stamped
            )
            stamped = True
        except IntegrityError:
            if RunbookRun.objects.filter(runbook=runbook, event=event).exists():
                continue  # this (runbook, event) already has its run
            # Not a duplicate: a version this process remembered is gone (a restored database).
            # The event stays undispatched, so the recovery sweep starts its runs again.
            runbook_versions_forget()
            raise
        if not run.lease_token:
            transaction.on_commit(lambda run_id=run.pk: enqueue(tasks.execute_run, run_id, recovery=RUN_SWEEP))
        elif all(step_run.pk for step_run in step_runs):
            # Executed by the caller: it starts from the rows just written instead of reading them
            # back, held as prefetch_related would hold them.
            hold_prefetched(run, "step_runs", step_runs)
        created.append(run)
    if not stamped:
        _stamp_dispatched(event)
    return created


_UNDISPATCHED = CompiledUpdate(
    lambda pk: IncidentEvent.objects.filter(pk=pk, dispatched_at__isnull=True), -(2**62) + 32
)


def _stamp_dispatched(event: IncidentEvent) -> None:
    _UNDISPATCHED.update(event.pk, dispatched_at=timezone.now())


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
    return _run_create(runbook=runbook, event=event)[0]


def _run_create(
    *, runbook: Runbook, event: IncidentEvent, leased: bool = False, stamp: bool = False
) -> tuple[RunbookRun, list[StepRun]]:
    """The run and its steps, written together (one statement on PostgreSQL); `stamp`: the event
    marked dispatched in the same statement."""
    # The steps as matched (prefetched with the runbook), so the run and its version describe the
    # same runbook even if it is being edited right now.
    steps = sorted(runbook.steps.all(), key=lambda step: (step.position, step.pk))
    version_id = runbook_version_for_run(runbook=runbook, steps=steps)
    run = RunbookRun(runbook=runbook, runbook_version_id=version_id, incident=event.incident, event=event)
    if leased:
        # Exactly what _claim writes, in the same INSERT.
        run.status, run.lease_token, run.lease_expires_at = RunStatus.RUNNING, uuid.uuid4().hex, _lease_until()
        run.executions, run.started_at = 1, timezone.now()
    step_runs = [_step_run_of(step, position) for position, step in enumerate(steps)]
    then = _UNDISPATCHED.statement(event.pk, dispatched_at=timezone.now()) if stamp else None
    insert_with_children(run, step_runs, link="run", then=then)
    for step_run in step_runs:
        step_run.run = run
    return run, step_runs


def _step_run_of(step, position: int, **fields) -> StepRun:
    """A step run holding a snapshot of the step: editing the runbook later never changes it."""
    return StepRun(
        step=step,
        position=position,
        key=step.key,
        name=step.name,
        action=step.action,
        connection=step.connection,
        inputs=step.inputs,
        on_failure=step.on_failure,
        **fields,
    )


# --- executing runs ------------------------------------------------------------------------------


class LeaseHeld(Exception):
    """Another worker is executing this run right now."""

    def __init__(self, seconds_left: float):
        self.seconds_left = seconds_left
        super().__init__(f"run is leased for another {seconds_left:.0f}s")


def _lease_until():
    return timezone.now() + timedelta(seconds=settings.RUNBOOK_RUN_LEASE_SECONDS)


def _claim(run_id, token: str):
    """Take the run if nobody holds it; returns the lease's expiry, or None."""
    now = timezone.now()
    until = _lease_until()
    claimable = Q(status=RunStatus.PENDING) | Q(status=RunStatus.RUNNING, lease_expires_at__lt=now)
    claimable |= Q(status=RunStatus.RUNNING, lease_expires_at__isnull=True)
    claimed = RunbookRun.objects.filter(claimable, pk=run_id).update(
        status=RunStatus.RUNNING,
        lease_token=token,
        lease_expires_at=until,
        executions=F("executions") + 1,
        started_at=now,
    )
    return until if claimed else None


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


# The run, while this execution's lease on it holds.
_LEASED = CompiledUpdate(
    lambda pk, token: RunbookRun.objects.filter(pk=pk, lease_token=token), -(2**62) + 31, "\x00lease token\x00"
)


class _Lease:
    """The run's lease as this execution holds it.

    Renewed only when less than half of it would be left, not before every step: while a lease
    has time left nobody can take the run over (a claim needs it expired), so renewing it sooner
    would only cost a write. A lease found taken over when renewing stops the execution."""

    def __init__(self, run_id, token: str, expires_at):
        self.run_id, self.token, self.expires_at = run_id, token, expires_at

    def keep(self, *, extra_seconds: float = 0) -> bool:
        now = timezone.now()
        lease = settings.RUNBOOK_RUN_LEASE_SECONDS
        if self.expires_at >= now + timedelta(seconds=extra_seconds + lease / 2):
            return True
        until = now + timedelta(seconds=lease + extra_seconds)
        if not _LEASED.update(self.run_id, self.token, lease_expires_at=until):
            return False
        self.expires_at = until
        return True

    def sleep(self, seconds: float) -> None:
        """A step waiting out a 429, a backoff or the rate budget keeps its lease, so nobody takes the run over meanwhile."""
        self.keep(extra_seconds=seconds)
        _sleep(seconds)


class _Session(PagerDutySession):
    """A session that calls `before_send` before each request leaves: the step writes its
    previous attempt first (_StepRecord)."""

    before_send = None

    def request(self, *args, **kwargs):
        if self.before_send is not None:
            self.before_send()
        return super().request(*args, **kwargs)


class _Execution:
    """One execution of a run: what its steps share instead of reading it again for each step —
    the run and its steps as loaded, the lease, the connections and Events API channels by name,
    one HTTP session per connection or channel (kept alive between the steps), the resolver's cache."""

    def __init__(self, run: RunbookRun, step_runs: list[StepRun], lease: _Lease, *, unlinked: bool = False):
        self.run, self.step_runs, self.lease = run, step_runs, lease
        self.unlinked = unlinked
        self.cache: dict = {}
        self._connections: dict = {}
        self._channels: dict = {}
        self._sessions: dict = {}

    def connection(self, name: str):
        if name not in self._connections:
            self._connections[name] = connection_get(name=name, with_mappings=True)
        return self._connections[name]

    def channel(self, name: str):
        if name not in self._channels:
            self._channels[name] = channel_get(name=name)
        return self._channels[name]

    def take_unlinked(self) -> bool:
        """StepContext.unlinked for the step about to send: true at most once, for the first such
        step of an execution that started from an incident read without links; any step may make one."""
        unlinked, self.unlinked = self.unlinked, False
        return unlinked

    def session(self, name: str) -> "_Session":
        if name not in self._sessions:
            self._sessions[name] = _Session()
        return self._sessions[name]

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()


def run_execute(*, run_id, run: RunbookRun | None = None) -> RunbookRun | None:
    """Execute a run's unfinished steps in order. Returns None if there was nothing to do.

    `run`: a run its creator made already leased to itself (runs_create_for_event), executed from
    the rows as written, without claiming or reading it back. Raises LeaseHeld when another worker
    holds the run, so the caller can try again later.
    """
    if run is None:
        token = uuid.uuid4().hex
        until = _claim(run_id, token)
        if until is None:
            current = RunbookRun.objects.filter(pk=run_id).first()
            if current is None or current.status in FINISHED or current.status == RunStatus.WAITING:
                return None  # a waiting run is resumed by apps.runbooks.waits, never by a message
            left = (current.lease_expires_at - timezone.now()).total_seconds() if current.lease_expires_at else 0
            raise LeaseHeld(max(left, 0))
        run = RunbookRun.objects.select_related("incident", "runbook", "event").get(pk=run_id)
    else:
        token, until = run.lease_token, run.lease_expires_at
    execution = _Execution(
        run,
        sorted(run.step_runs.all(), key=lambda s: s.position),
        _Lease(run.pk, token, until),
        # Read by runs_create_for_event with the event, a moment ago; a claimed run was not.
        unlinked=getattr(run.event, "incident_linked", None) is False,
    )
    try:
        stopped_by = None
        for step_run in execution.step_runs:
            if step_run.status in FINISHED:
                if step_run.status == RunStatus.FAILED and step_run.on_failure == OnFailure.STOP:
                    stopped_by = step_run
                    break
                continue
            if not execution.lease.keep():
                logger.warning("run %s: lease lost to another worker; stopping here", run.pk)
                return run
            _execute_step(execution, step_run)
            if step_run.status == RunStatus.WAITING:
                return RunbookRun.objects.get(pk=run.pk)  # parked: this worker is free
            if step_run.status == RunStatus.FAILED and step_run.on_failure == OnFailure.STOP:
                stopped_by = step_run
                break
    finally:
        execution.close()
    return _finish(execution, stopped_by=stopped_by)


def _finish(execution: _Execution, *, stopped_by: StepRun | None) -> RunbookRun:
    run = execution.run
    if stopped_by is not None:
        error = f"Not run: step {stopped_by.key!r} failed (on_failure: stop)"
        run.step_runs.filter(status=RunStatus.PENDING).update(status=RunStatus.CANCELLED, error=error)
        for step_run in execution.step_runs:
            if step_run.status == RunStatus.PENDING:
                step_run.status, step_run.error = RunStatus.CANCELLED, error
    statuses = {step_run.status for step_run in execution.step_runs}
    status = RunStatus.FAILED if RunStatus.FAILED in statuses else RunStatus.SUCCEEDED
    error = f"Step {stopped_by.key!r} failed: {stopped_by.error}" if stopped_by else ""
    if not stopped_by and status == RunStatus.FAILED:
        error = "One or more steps failed (on_failure: continue)"
    values = {
        "status": status,
        "finished_at": timezone.now(),
        "error": error,
        "lease_token": "",
        "lease_expires_at": None,
    }
    if _LEASED.update(run.pk, execution.lease.token, **values):
        for name, value in values.items():
            setattr(run, name, value)
    else:
        run.refresh_from_db()  # taken over meanwhile: the other execution's record stands
    return run


class _StepRecord:
    """What one execution of a step writes, one statement per change: the `running` mark (with
    the rendered fields and the planned request), then the end; and every HTTP attempt.

    An attempt is written with the step's next write, in the same statement (apps.core.sql:
    the exchange INSERTed and the step UPDATEd, its attempt count included): the running mark for
    a look-up made while planning, the end for the step's last request. It never waits longer: an
    attempt still unwritten is written before the step's next request leaves and before any wait
    (a backoff, a 429, the rate budget). A worker killed between an answer and that write leaves
    the step as a kill during the request does: `running`, settled by reconcile(), which asks
    PagerDuty when it finds no answer recorded."""

    def __init__(self, step_run: StepRun):
        self.step_run = step_run
        self.last = None  # this execution's last answer to the step's own request, as the step shows it
        self._unwritten: StepRunExchange | None = None
        self._unwritten_is_own = False

    def store_exchange(self, exchange) -> None:
        self.flush()
        self._unwritten = prepared_for_insert(StepRunExchange(step_run=self.step_run, **exchange.as_dict()))
        # Look-ups are not attempts, and their answers are not the step's (a 404 from GET /users/…
        # beside "POST /incidents" told people the wrong story): only the step's own request counts.
        self._unwritten_is_own = exchange_is_own(exchange=exchange, request=self.step_run.request)
        if self._unwritten_is_own:
            self.step_run.attempts += 1
            # Cut as the exchange's own column cuts it, so the step shows what the exchange row holds.
            body = storable_json(exchange.response_body, max_chars=STORED_BODY_MAX_CHARS)
            self.last = {"status": exchange.status, "body": body, "error": exchange.error}

    def flush(self) -> None:
        if self._unwritten is not None:
            self.write()

    def sleeping(self, sleep):
        def sleep_after_writing(seconds: float) -> None:
            self.flush()
            sleep(seconds)

        return sleep_after_writing

    def write(self, **values) -> None:
        for name, value in values.items():
            setattr(self.step_run, name, value)
        exchange, self._unwritten = self._unwritten, None
        if exchange is None:
            update_row(StepRun, self.step_run.pk, **values)
        else:
            if self._unwritten_is_own:
                values = {**values, "attempts": F("attempts") + 1}
            insert_and_update(exchange, StepRun, self.step_run.pk, values)

    def mark_running(self, *, rendered: dict, request: dict) -> None:
        """Written, and committed, just before the step's write: from here on a dead worker leaves the
        step `running`, and the next execution reconciles with PagerDuty instead of sending blindly.
        Look-ups before this point are repeated freely."""
        self.write(
            status=RunStatus.RUNNING,
            error="",
            started_at=self.step_run.started_at or timezone.now(),
            finished_at=None,
            rendered=rendered,
            request=request,
        )

    def end(self, status: str, *, error: str = "", outputs: dict | None = None, rendered: dict | None = None) -> None:
        values = {"status": status, "error": error, "finished_at": timezone.now()}
        if outputs is not None:
            values["outputs"] = outputs
        if rendered is not None:
            values["rendered"] = rendered  # the step ended before it was marked running
        if self.last is not None:
            values["response"] = self.last
        elif self.step_run.attempts:
            # Nothing sent by this execution (adopted, or failed before sending): show the earlier
            # answer to the step's own request. (An attempt still unwritten is a look-up: it is not read.)
            own = step_run_exchanges(step_run=self.step_run, exchanges=list(self.step_run.exchanges.all()))
            values["response"] = step_run_response(requests=own["requests"])
        else:
            values["response"] = {}  # the step sent no request of its own: no answer to show
        self.write(**values)
        step_ended.send(sender=StepRun, step_run=self.step_run)


def _execute_step(execution: _Execution, step_run: StepRun) -> None:
    # Found `running`: a previous execution died during this step's write (it may have happened).
    recovering = step_run.status == RunStatus.RUNNING
    record = _StepRecord(step_run)
    unsaved: dict = {}  # the rendered fields, until the running mark (or the end) writes them
    try:
        outputs = _perform_step(execution, step_run, record, recovering=recovering, unsaved=unsaved)
    except StepWaiting:
        pass  # parked by waits.step_wait (the rendered fields with it); resumed by apps.runbooks.waits
    except StepSkipped as exc:
        record.end(RunStatus.SKIPPED, error=str(exc), **unsaved)
    except (StepFailed, templating.TemplateError, DomainError, PagerDutyError) as exc:
        record.end(RunStatus.FAILED, error=str(exc), **unsaved)
    except OperationalError:
        with contextlib.suppress(OperationalError):
            record.flush()  # the last answer, if the database still takes it
        raise  # the database is unwell: let the task retry rather than record a false failure
    except Exception as exc:  # a bug must fail one step visibly, not wedge the run
        logger.exception("run %s step %s: unexpected error", execution.run.pk, step_run.key)
        record.end(RunStatus.FAILED, error=f"Internal error: {type(exc).__name__}: {exc}", **unsaved)
    except BaseException:
        # The worker is being stopped (SystemExit, KeyboardInterrupt): an answer it holds is still
        # written, so the next execution adopts it instead of asking PagerDuty. (A SIGKILL writes
        # nothing: reconcile() asks.)
        with contextlib.suppress(Exception):
            record.flush()
        raise
    else:
        # `unsaved` still holds the rendered fields when the step ended without a running mark
        # (a control step that finished at once).
        record.end(RunStatus.SUCCEEDED, outputs=outputs, **unsaved)


def _perform_step(
    execution: _Execution, step_run: StepRun, record: _StepRecord, *, recovering: bool, unsaved: dict
) -> dict:
    run = execution.run
    spec = get_action(step_run.action)
    fields = spec.with_defaults(step_run.inputs)
    context = template_context_for_run(run=run, step_runs=execution.step_runs, templates=fields.values())
    rendered = templating.render_fields(fields, context)
    unsaved["rendered"] = redact_data(rendered)
    if is_control(step_run.action):
        # No request, so no running mark: the step parks (writing the rendered fields the wait
        # is decided by), or ends at once and the end writes them.
        return waits.step_wait(
            run=run,
            step_run=step_run,
            spec=spec,
            rendered=rendered,
            token=execution.lease.token,
            stored_rendered=unsaved["rendered"],
        )
    previous_exchanges = list(step_run.exchanges.all()) if recovering else []
    if spec.target == TARGET_CHANNEL:
        # Events name a channel (its routing key is the credential), never a connection.
        channel = execution.channel((rendered.get("channel") or "").strip())
        session = execution.session(f"channel:{channel.name}")
        session.before_send = record.flush
        client = channel_client(
            channel=channel,
            on_exchange=record.store_exchange,
            sleep=record.sleeping(execution.lease.sleep),
            session=session,
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
            unlinked=execution.take_unlinked(),
        )
    else:
        name = step_run.connection or "default"
        connection = execution.connection(name)
        session = execution.session(f"connection:{name}")
        session.before_send = record.flush
        client = connection_client(
            connection=connection,
            on_exchange=record.store_exchange,
            sleep=record.sleeping(execution.lease.sleep),
            session=session,
        )
        ctx = StepContext(
            incident=run.incident,
            rendered=rendered,
            resolver=LiveResolver(incident=run.incident, connection=connection, client=client, cache=execution.cache),
            default_from=connection.from_email,
            connection=connection,
            client=client,
            recovering=recovering,
            step_run=step_run,
            previous_exchanges=previous_exchanges,
            unlinked=execution.take_unlinked(),
        )
    action = spec.implementation
    planned = action.plan(ctx)
    request = {
        "method": planned.method,
        "url": client.api_url.rstrip("/") + planned.path,
        "headers": redact_headers(client.request_headers(True, planned.from_email)),
        "body": redact_data(planned.body),
    }
    if planned.notes:
        request["notes"] = list(planned.notes)
    record.mark_running(rendered=unsaved.pop("rendered"), request=request)
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
            _step_run_of(step, position, run=run).save(force_insert=True)
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
