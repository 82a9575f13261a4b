"""On-call sync: create a SyncRun, plan it (read-only, talks to PagerDuty), apply it (writes, no HTTP).

Views, the command, the admin and tasks call these; none of them enqueue work themselves, so the
callers decide how (Celery after commit, or inline on the command line).

A worker owns a run it plans or applies for ONCALL_SYNC_LEASE_SECONDS, renewed as it works (and as it
waits out PagerDuty's rate limit). A second delivery of the same message finds the lease held and
waits; once it lapses (the worker died) the next delivery, or the recovery sweep, starts the step
again. Planning only reads and writes its plan once, if nobody wrote one first; applying compares
every record with its row, so a repeated or resumed apply writes nothing twice.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.db.models import Q
from django.utils import timezone

from apps.core.errors import DomainError
from apps.oncall.applying import PlanApplier
from apps.oncall.importer import RESOURCE_TYPES, FetchOptions, Importer
from apps.oncall.models import SyncRun
from apps.oncall.planning import plan_build
from apps.oncall.records import iso as rec_iso
from apps.pagerduty.client import PagerDutyClient
from apps.pagerduty.errors import PagerDutyError
from apps.pagerduty.models import PagerDutyConnection
from apps.pagerduty.services import connection_client

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_DAYS = 14
MAX_WINDOW_DAYS = 90
PLANNING_PROGRESS_EVERY_SECONDS = 1.0
# PagerDuty failing for longer than the client's retries (an outage, a long 429): plan again later,
# this many times in all, after these delays.
PLAN_MAX_ATTEMPTS = 4
PLAN_RETRY_DELAYS = (30, 120, 300)
# Transient database trouble during an apply (a failover, a dropped connection): apply again as is.
APPLY_MAX_ATTEMPTS = 3
APPLY_RETRY_DELAY = 30
# A queued or planning run nobody has touched for this long lost its message: the sweep sends another.
LOST_MESSAGE_AFTER = timedelta(minutes=2)
# A run planning this long ago and still not planned is given up on.
GIVE_UP_AFTER = timedelta(days=1)
_PD_ID = re.compile(r"^P[A-Z0-9]{5,}$")


def sync_options_clean(
    *,
    resources=None,
    team_ids=(),
    query: str = "",
    team_roles: bool = False,
    window_days: int | None = None,
    auto_apply: bool = False,
) -> dict:
    """Validated, JSON-ready options; bad input raises DomainError naming the field."""
    resources = list(resources) if resources is not None else list(RESOURCE_TYPES)
    unknown = [r for r in resources if r not in RESOURCE_TYPES]
    if unknown:
        raise DomainError(
            f"Unknown resource type(s): {', '.join(unknown)}. Choose from {', '.join(RESOURCE_TYPES)}.",
            field="resources",
        )
    if not resources:
        raise DomainError("Choose at least one kind of object to import.", field="resources")
    team_ids = [t.strip() for t in team_ids if t and t.strip()]
    bad = [t for t in team_ids if not _PD_ID.match(t)]
    if bad:
        raise DomainError(f"Not PagerDuty team ids: {', '.join(bad)} (they look like PTEAM01).", field="team_ids")
    query = (query or "").strip()
    if len(query) > 100:
        raise DomainError("The name filter is at most 100 characters.", field="query")
    window_days = DEFAULT_WINDOW_DAYS if window_days is None else window_days
    if not isinstance(window_days, int) or not 1 <= window_days <= MAX_WINDOW_DAYS:
        raise DomainError(f"The schedule window is 1 to {MAX_WINDOW_DAYS} days.", field="window_days")
    return {
        "resources": [r for r in RESOURCE_TYPES if r in resources],
        "team_ids": sorted(set(team_ids)),
        "query": query,
        "team_roles": bool(team_roles),
        "window_days": window_days,
        "auto_apply": bool(auto_apply),
    }


def sync_window(*, now: datetime, window_days: int) -> tuple[datetime, datetime]:
    """From the start of today (UTC): re-syncs on the same day render the same window, so they diff clean."""
    since = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return since, since + timedelta(days=window_days)


def sync_run_create(
    *,
    connection: PagerDutyConnection,
    options: dict,
    created_by=None,
    trigger: str = SyncRun.Trigger.WIZARD,
) -> SyncRun:
    options = sync_options_clean(**options)
    return SyncRun.objects.create(
        connection=connection, options=options, created_by=created_by, trigger=trigger, status=SyncRun.Status.PLANNING
    )


def _fail(run: SyncRun, message: str) -> SyncRun:
    run.status = SyncRun.Status.FAILED
    run.error = message
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "error", "finished_at", "updated_at"])
    return run


def _lease() -> timedelta:
    return timedelta(seconds=settings.ONCALL_SYNC_LEASE_SECONDS)


def _held(run: SyncRun, now: datetime) -> bool:
    """Another worker is on it: it showed a sign of life within the lease."""
    return run.heartbeat_at is not None and run.heartbeat_at > now - _lease()


def _heartbeat_sleep(run_pk: int):
    """The client's sleep (backoff, rate-limit waits) in slices that renew the lease now and then.

    The shared rate budget makes many short waits on a big account; the lease is written at most
    every quarter lease, not once per wait.
    """
    every = max(1.0, settings.ONCALL_SYNC_LEASE_SECONDS / 4)
    last = [time.monotonic()]

    def sleep(seconds: float) -> None:
        remaining = seconds
        while remaining > 0:
            chunk = min(remaining, every)
            time.sleep(chunk)
            remaining -= chunk
            if time.monotonic() - last[0] >= every:
                last[0] = time.monotonic()
                SyncRun.objects.filter(pk=run_pk).update(heartbeat_at=timezone.now())

    return sleep


def sync_run_plan(
    *, sync_run_id: int, client: PagerDutyClient | None = None, now: datetime | None = None
) -> SyncRun | None:
    """Fetch from PagerDuty and store the plan. Read-only towards our on-call tables.

    Does nothing when the run is planned already, when another worker holds it, or before its next
    attempt is due (see `sync_run_wait_seconds`). A plan interrupted by a dead worker is made again
    from the start: fetching only reads, so nothing is duplicated.
    """
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().select_related("connection").filter(pk=sync_run_id).first()
        if run is None or run.status != SyncRun.Status.PLANNING or run.plan is not None:
            return run
        claimed_at = timezone.now()
        if _held(run, claimed_at) or (run.next_attempt_at and run.next_attempt_at > claimed_at):
            return run
        if run.started_at and run.plan_attempts and not run.next_attempt_at:
            logger.warning("on-call sync %s: planning again; the worker planning it went silent", run.pk)
        run.started_at = run.started_at or claimed_at
        run.heartbeat_at = claimed_at
        run.plan_attempts += 1
        run.next_attempt_at = None
        run.save(update_fields=["started_at", "heartbeat_at", "plan_attempts", "next_attempt_at", "updated_at"])
    now = now or timezone.now()
    options = run.options
    since, until = sync_window(now=now, window_days=options.get("window_days", DEFAULT_WINDOW_DAYS))
    fetch = FetchOptions(
        resources=tuple(options["resources"]),
        since=since,
        until=until,
        team_ids=tuple(options.get("team_ids") or ()),
        query=options.get("query") or "",
        team_roles=bool(options.get("team_roles")),
    )
    last_write = [0.0]
    progress: dict = {"phase": "fetching", "resources": {}}

    def on_progress(resource: str, done: int, total: int | None) -> None:
        progress["resources"][resource] = {"done": done, "total": total}
        if time.monotonic() - last_write[0] >= PLANNING_PROGRESS_EVERY_SECONDS:
            last_write[0] = time.monotonic()
            SyncRun.objects.filter(pk=run.pk).update(progress=progress, heartbeat_at=timezone.now())

    try:
        # Inside the try: a connection whose URL is no longer allowed fails the run with the reason.
        client = client or connection_client(connection=run.connection, sleep=_heartbeat_sleep(run.pk))
        snapshot = Importer(client, on_progress=on_progress).fetch(fetch)
        plan = plan_build(connection=run.connection, snapshot=snapshot, now=now)
    except PagerDutyError as exc:
        logger.warning("on-call sync %s: planning failed: %s", run.pk, exc)
        if exc.retryable and run.plan_attempts < PLAN_MAX_ATTEMPTS:
            return _plan_later(run, exc, progress)
        return _fail(run, f"Fetching from PagerDuty failed: {exc}")
    except Exception as exc:
        # E.g. a payload we cannot read: the run must end "failed" with the reason, not stay "planning".
        logger.exception("on-call sync %s: planning failed", run.pk)
        return _fail(run, f"Planning failed: {type(exc).__name__}: {exc}")
    planned_at = timezone.now()
    done = {"phase": "planned", "resources": progress["resources"]}
    # Written once: if another worker took over and finished first, its plan stands and ours is dropped.
    written = SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.PLANNING, plan__isnull=True).update(
        plan=plan, status=SyncRun.Status.PLANNED, planned_at=planned_at, progress=done, error="", heartbeat_at=None
    )
    if not written:
        logger.warning("on-call sync %s: another worker stored the plan first; dropping this one", run.pk)
    run.refresh_from_db()
    return run


def _plan_later(run: SyncRun, exc: PagerDutyError, progress: dict) -> SyncRun:
    delay = PLAN_RETRY_DELAYS[min(run.plan_attempts, len(PLAN_RETRY_DELAYS)) - 1]
    run.next_attempt_at = timezone.now() + timedelta(seconds=delay)
    run.heartbeat_at = None
    run.error = (
        f"Attempt {run.plan_attempts} of {PLAN_MAX_ATTEMPTS}: PagerDuty kept failing ({exc}); "
        f"planning again at {run.next_attempt_at:%H:%M:%S} UTC."
    )
    run.progress = {"phase": "waiting", "resources": progress["resources"]}
    run.save(update_fields=["next_attempt_at", "heartbeat_at", "error", "progress", "updated_at"])
    return run


def sync_run_wait_seconds(*, run: SyncRun | None, now: datetime | None = None) -> float | None:
    """When to deliver this run's task again, in seconds; None when no task has anything left to do for it.

    "Later" means a retry that is due later, or a lease another worker still holds; once the lease
    lapses without news, the next delivery takes the step over.
    """
    if run is None:
        return None
    step_open = run.status in (SyncRun.Status.QUEUED, SyncRun.Status.APPLYING) or (
        run.status == SyncRun.Status.PLANNING and run.plan is None
    )
    if not step_open:
        return None
    now = now or timezone.now()
    if run.next_attempt_at and run.next_attempt_at > now:
        return (run.next_attempt_at - now).total_seconds()
    if _held(run, now):
        return (run.heartbeat_at + _lease() - now).total_seconds() + 1
    return None


def sync_run_request_apply(*, sync_run_id: int, delete_missing: bool = False) -> tuple[SyncRun, bool]:
    """Mark a planned run for applying. (run, True) the first time; (run, False) if it was already asked."""
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().filter(pk=sync_run_id).first()
        if run is None:
            raise DomainError(f"No sync run {sync_run_id}.", field="sync_run")
        if run.status != SyncRun.Status.PLANNED:
            # Already queued, applying or done: a second confirm (double click, replayed POST) is a no-op.
            return run, False
        run.status = SyncRun.Status.QUEUED
        run.delete_missing = bool(delete_missing)
        run.apply_requested_at = timezone.now()
        run.progress = {
            "phase": "queued",
            "resources": {r: {"done": 0, "total": len(recs)} for r, recs in (run.plan.get("records") or {}).items()},
        }
        run.save(update_fields=["status", "delete_missing", "apply_requested_at", "progress", "updated_at"])
    return run, True


class _ProgressWriter:
    """Per-page progress while a type's transaction is open.

    Rows written inside that transaction are invisible to the page that polls them until it commits,
    so on PostgreSQL progress goes through a second, autocommitting connection. SQLite has one writer
    at a time (the transaction holds the lock), so there progress shows at each type's commit.
    """

    def __init__(self, run: SyncRun):
        self.run = run
        self.side = None
        # Inside a caller's transaction the run row may be locked by it: the side connection would wait forever.
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            self.side = connections.create_connection(DEFAULT_DB_ALIAS)

    def write(self, progress: dict) -> None:
        now = timezone.now()
        if self.side is not None:
            table = connection.ops.quote_name(SyncRun._meta.db_table)
            try:
                with self.side.cursor() as cursor:
                    cursor.execute("SET lock_timeout = '2s'")
                    cursor.execute(
                        f"UPDATE {table} SET progress = %s, heartbeat_at = %s WHERE id = %s",
                        [json.dumps(progress), now, self.run.pk],
                    )
                return
            except DatabaseError as exc:
                # Progress is a courtesy; the apply must not fail for it. Fall back to the main connection.
                logger.warning("on-call sync %s: progress via a second connection failed: %s", self.run.pk, exc)
                self.close()
        SyncRun.objects.filter(pk=self.run.pk).update(progress=progress, heartbeat_at=now)

    def close(self) -> None:
        side, self.side = self.side, None
        if side is not None:
            side.close()


def _superseded_by(run: SyncRun) -> SyncRun | None:
    """A plan made after this one and already applied: applying this one now would undo it."""
    if run.planned_at is None:
        return None
    return (
        SyncRun.objects.filter(
            connection_id=run.connection_id, status=SyncRun.Status.APPLIED, planned_at__gt=run.planned_at
        )
        .exclude(pk=run.pk)
        .defer("plan", "report")
        .order_by("-planned_at")
        .first()
    )


def _superseded_message(newer: SyncRun) -> str:
    return (
        f"Sync #{newer.pk}, planned later ({newer.planned_at:%Y-%m-%d %H:%M} UTC), has been applied since: applying "
        "this older plan would undo it. Plan again."
    )


def sync_run_apply(*, sync_run_id: int, now: datetime | None = None) -> SyncRun | None:
    """Apply a queued run's plan (or take over one whose worker went silent). Anything else returns at once."""
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().select_related("connection").filter(pk=sync_run_id).first()
        if run is None:
            return None
        claimed_at = timezone.now()
        stale = run.status == SyncRun.Status.APPLYING and not _held(run, claimed_at)
        due = run.status == SyncRun.Status.QUEUED and not (run.next_attempt_at and run.next_attempt_at > claimed_at)
        if not (due or stale):
            return run
        if stale:
            logger.warning("on-call sync %s: taking over an apply whose worker went silent", run.pk)
        run.status = SyncRun.Status.APPLYING
        run.heartbeat_at = claimed_at
        run.started_at = run.started_at or claimed_at
        run.apply_attempts += 1
        run.next_attempt_at = None
        run.save(
            update_fields=["status", "heartbeat_at", "started_at", "apply_attempts", "next_attempt_at", "updated_at"]
        )
    if not run.plan:
        return _fail(run, "This sync run has no plan to apply.")
    newer = _superseded_by(run)
    if newer is not None:
        return _fail(run, _superseded_message(newer))
    progress = {"phase": "applying", "resources": dict(run.progress.get("resources") or {})}
    writer = _ProgressWriter(run)

    def on_page(resource: str, done: int, total: int) -> None:
        progress["resources"][resource] = {"done": done, "total": total}
        writer.write(progress)

    applier = PlanApplier(connection=run.connection, plan=run.plan, delete_missing=run.delete_missing, now=now)
    started = time.monotonic()
    try:
        result = applier.apply(progress=on_page)
    except (OperationalError, InterfaceError) as exc:
        # The database went away mid-apply (failover, dropped connection). Types applied before stay
        # committed; the same plan is applied again shortly and writes only what is still missing.
        logger.exception("on-call sync %s: apply interrupted by the database", run.pk)
        writer.close()
        if not connection.in_atomic_block:
            # Reconnect for the bookkeeping below rather than reuse a connection that just broke.
            connection.close_if_unusable_or_obsolete()
        if run.apply_attempts < APPLY_MAX_ATTEMPTS:
            return _apply_later(run, exc, progress)
        return _failed_apply(run, exc, progress)
    except Exception as exc:
        # Types applied before the failure stay committed; the run says where it stopped.
        logger.exception("on-call sync %s: apply failed", run.pk)
        return _failed_apply(run, exc, progress)
    finally:
        writer.close()
    run.report = {
        **(run.report or {}),
        **result,
        "applied_at": timezone.now().isoformat(),
        "apply_seconds": round(time.monotonic() - started, 3),
        "delete_missing": run.delete_missing,
        "warnings": run.plan.get("warnings") or [],
        "fetch": run.plan.get("fetch") or {},
    }
    run.progress = {**progress, "phase": "applied"}
    run.status = SyncRun.Status.APPLIED
    run.finished_at = timezone.now()
    run.save(update_fields=["report", "progress", "status", "finished_at", "updated_at"])
    return run


def _apply_later(run: SyncRun, exc: Exception, progress: dict) -> SyncRun:
    run.status = SyncRun.Status.QUEUED
    run.next_attempt_at = timezone.now() + timedelta(seconds=APPLY_RETRY_DELAY)
    run.heartbeat_at = None
    run.error = (
        f"Attempt {run.apply_attempts} of {APPLY_MAX_ATTEMPTS} was interrupted by the database ({exc}); "
        f"applying the same plan again at {run.next_attempt_at:%H:%M:%S} UTC."
    )
    run.progress = {**progress, "phase": "waiting"}
    run.save(update_fields=["status", "next_attempt_at", "heartbeat_at", "error", "progress", "updated_at"])
    return run


def _failed_apply(run: SyncRun, exc: Exception, progress: dict) -> SyncRun:
    run.progress = {**progress, "phase": "failed"}
    run.save(update_fields=["progress", "updated_at"])
    return _fail(run, f"Applying failed: {type(exc).__name__}: {exc}")


def sync_run_retry_apply(*, sync_run_id: int) -> SyncRun:
    """Queue a failed apply again, with the plan it had: applying compares each record with its row, so
    what the failed attempt committed is not written twice."""
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().filter(pk=sync_run_id).first()
        if run is None:
            raise DomainError(f"No sync run {sync_run_id}.", field="sync_run")
        if run.status != SyncRun.Status.FAILED or not run.plan or run.apply_requested_at is None:
            raise DomainError(
                f"Sync #{run.pk} is {run.get_status_display()}: only an apply that failed can be retried "
                "(a plan that failed is planned again instead).",
                field="sync_run",
            )
        newer = _superseded_by(run)
        if newer is not None:
            raise DomainError(_superseded_message(newer), field="sync_run")
        failures = [
            *(run.report or {}).get("failed_attempts", []),
            {"at": rec_iso(run.finished_at), "error": run.error},
        ]
        run.report = {**(run.report or {}), "failed_attempts": failures}
        run.status = SyncRun.Status.QUEUED
        run.error = ""
        run.finished_at = None
        run.next_attempt_at = None
        run.heartbeat_at = None
        run.progress = {**(run.progress or {}), "phase": "queued"}
        run.save(
            update_fields=[
                "report",
                "status",
                "error",
                "finished_at",
                "next_attempt_at",
                "heartbeat_at",
                "progress",
                "updated_at",
            ]
        )
    return run


def sync_runs_recover(*, now: datetime | None = None) -> dict[str, list[int]]:
    """Runs whose message was lost or whose worker died: {"plan": [ids], "apply": [ids]} to deliver again.

    Runs still planning a day after they were created are failed instead (nobody is waiting any more).
    """
    now = now or timezone.now()
    not_held = Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lte=now - _lease())
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    planning = SyncRun.objects.filter(status=SyncRun.Status.PLANNING, plan__isnull=True).filter(not_held, due)
    for run in planning.filter(created_at__lt=now - GIVE_UP_AFTER):
        _fail(run, "Planning never finished (the worker stopped and no retry succeeded within a day).")
    plan_ids = list(
        planning.filter(created_at__gte=now - GIVE_UP_AFTER, updated_at__lte=now - LOST_MESSAGE_AFTER).values_list(
            "pk", flat=True
        )
    )
    queued = SyncRun.objects.filter(status=SyncRun.Status.QUEUED, updated_at__lte=now - LOST_MESSAGE_AFTER).filter(
        not_held, due
    )
    applying = SyncRun.objects.filter(status=SyncRun.Status.APPLYING).filter(not_held)
    apply_ids = sorted({*queued.values_list("pk", flat=True), *applying.values_list("pk", flat=True)})
    if plan_ids or apply_ids:
        logger.warning("on-call sync recovery: planning %s again, applying %s again", plan_ids, apply_ids)
    return {"plan": plan_ids, "apply": apply_ids}


def sync_periodic_runs() -> list[SyncRun]:
    """One new run per connection that has been synced before, with that sync's options; never deletes."""
    busy = set(
        SyncRun.objects.filter(
            status__in=[SyncRun.Status.PLANNING, SyncRun.Status.QUEUED, SyncRun.Status.APPLYING]
        ).values_list("connection_id", flat=True)
    )
    runs = []
    synced = (
        SyncRun.objects.filter(status=SyncRun.Status.APPLIED)
        .exclude(connection_id__in=busy)
        .values_list("connection_id", flat=True)
        .distinct()
    )
    for connection_id in list(synced):
        last = (
            SyncRun.objects.filter(connection_id=connection_id, status=SyncRun.Status.APPLIED)
            .defer("plan", "report")
            .select_related("connection")
            .latest("created_at")
        )
        options = {**last.options, "auto_apply": True}
        runs.append(sync_run_create(connection=last.connection, options=options, trigger=SyncRun.Trigger.PERIODIC))
    return runs
