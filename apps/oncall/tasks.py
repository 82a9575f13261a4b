"""Thin Celery tasks: ids in, services do the work; a duplicate or late delivery does nothing twice.

When a service says a step must wait (a retry due later, or a lease another worker holds), the task
delivers itself again after that long; the beat's `sync_recover` catches whatever message got lost.
"""

import logging

from celery import shared_task
from django.db import transaction

from apps.oncall import services
from apps.oncall.models import SyncRun

logger = logging.getLogger(__name__)


def _again(task, request, sync_run_id: int, run) -> bool:
    wait = services.sync_run_wait_seconds(run=run)
    if wait is None:
        return False
    if request.is_eager:
        # No delayed delivery in eager mode (tests, CELERY_TASK_ALWAYS_EAGER): the sweep takes it up.
        return True
    task.apply_async((sync_run_id,), countdown=max(1, round(wait)))
    return True


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def sync_plan(self, sync_run_id: int) -> str | None:
    run = services.sync_run_plan(sync_run_id=sync_run_id)
    if _again(sync_plan, self.request, sync_run_id, run):
        return "waiting"
    if run is None:
        return None
    if run.status == SyncRun.Status.PLANNED and run.options.get("auto_apply"):
        # Periodic re-syncs apply their own plan straight away (never with delete_missing).
        run, queued = services.sync_run_request_apply(sync_run_id=run.pk, delete_missing=False)
        if queued:
            run = services.sync_run_apply(sync_run_id=run.pk)
            if _again(sync_apply, self.request, run.pk, run):
                return "waiting"
    return run.status


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def sync_apply(self, sync_run_id: int) -> str | None:
    run = services.sync_run_apply(sync_run_id=sync_run_id)
    if _again(sync_apply, self.request, sync_run_id, run):
        return "waiting"
    return run.status if run else None


@shared_task
def sync_recover() -> dict:
    """Beat: deliver again the runs whose message was lost or whose worker died."""
    found = services.sync_runs_recover()
    for pk in found["plan"]:
        sync_plan.delay(pk)
    for pk in found["apply"]:
        sync_apply.delay(pk)
    return found


@shared_task
def sync_periodic() -> list[int]:
    runs = services.sync_periodic_runs()
    for run in runs:
        transaction.on_commit(lambda pk=run.pk: sync_plan.delay(pk))
    logger.info("on-call periodic sync: %d connection(s) queued", len(runs))
    return [run.pk for run in runs]
