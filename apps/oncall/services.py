"""On-call sync: create a SyncRun, plan it (read-only, talks to PagerDuty), apply it (writes, no HTTP).

Views, the command, the admin and tasks call these; none of them enqueue work themselves, so the
callers decide how (Celery after commit, or inline on the command line).
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.utils import timezone

from apps.core.errors import DomainError
from apps.oncall.applying import PlanApplier
from apps.oncall.importer import RESOURCE_TYPES, FetchOptions, Importer
from apps.oncall.models import SyncRun
from apps.oncall.planning import plan_build
from apps.pagerduty.client import PagerDutyClient
from apps.pagerduty.errors import PagerDutyError
from apps.pagerduty.models import PagerDutyConnection
from apps.pagerduty.services import connection_client

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_DAYS = 14
MAX_WINDOW_DAYS = 90
# A run still "applying" with no heartbeat for this long lost its worker; a redelivery may take it over.
APPLY_STALE_AFTER = timedelta(minutes=10)
PLANNING_PROGRESS_EVERY_SECONDS = 1.0
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


def sync_run_plan(
    *, sync_run_id: int, client: PagerDutyClient | None = None, now: datetime | None = None
) -> SyncRun | None:
    """Fetch from PagerDuty and store the plan. Read-only towards our on-call tables."""
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().select_related("connection").filter(pk=sync_run_id).first()
        if run is None or run.status != SyncRun.Status.PLANNING or run.plan is not None:
            return run
        run.started_at = timezone.now()
        run.save(update_fields=["started_at", "updated_at"])
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
        client = client or connection_client(connection=run.connection)
        snapshot = Importer(client, on_progress=on_progress).fetch(fetch)
        plan = plan_build(connection=run.connection, snapshot=snapshot, now=now)
    except PagerDutyError as exc:
        logger.warning("on-call sync %s: planning failed: %s", run.pk, exc)
        return _fail(run, f"Fetching from PagerDuty failed: {exc}")
    except Exception as exc:
        # E.g. a payload we cannot read: the run must end "failed" with the reason, not stay "planning".
        logger.exception("on-call sync %s: planning failed", run.pk)
        return _fail(run, f"Planning failed: {type(exc).__name__}: {exc}")
    run.plan = plan
    run.status = SyncRun.Status.PLANNED
    run.planned_at = timezone.now()
    run.progress = {"phase": "planned", "resources": progress["resources"]}
    run.save(update_fields=["plan", "status", "planned_at", "progress", "updated_at"])
    return run


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


def sync_run_apply(*, sync_run_id: int, now: datetime | None = None) -> SyncRun | None:
    """Apply a queued run's plan. Any other state returns at once: deliveries after the first do nothing."""
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().select_related("connection").filter(pk=sync_run_id).first()
        if run is None:
            return None
        stale = (
            run.status == SyncRun.Status.APPLYING
            and run.heartbeat_at is not None
            and run.heartbeat_at < timezone.now() - APPLY_STALE_AFTER
        )
        if run.status != SyncRun.Status.QUEUED and not stale:
            return run
        if stale:
            logger.warning("on-call sync %s: taking over an apply whose worker went silent", run.pk)
        run.status = SyncRun.Status.APPLYING
        run.heartbeat_at = timezone.now()
        run.started_at = run.started_at or run.heartbeat_at
        run.save(update_fields=["status", "heartbeat_at", "started_at", "updated_at"])
    if not run.plan:
        return _fail(run, "This sync run has no plan to apply.")
    progress = {"phase": "applying", "resources": dict(run.progress.get("resources") or {})}
    writer = _ProgressWriter(run)

    def on_page(resource: str, done: int, total: int) -> None:
        progress["resources"][resource] = {"done": done, "total": total}
        writer.write(progress)

    applier = PlanApplier(connection=run.connection, plan=run.plan, delete_missing=run.delete_missing, now=now)
    started = time.monotonic()
    try:
        result = applier.apply(progress=on_page)
    except Exception as exc:
        # Types applied before the failure stay committed; the run says where it stopped.
        logger.exception("on-call sync %s: apply failed", run.pk)
        run.progress = {**progress, "phase": "failed"}
        run.save(update_fields=["progress", "updated_at"])
        return _fail(run, f"Applying failed: {exc}")
    finally:
        writer.close()
    run.report = {
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
