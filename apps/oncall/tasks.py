"""Thin Celery tasks: ids in, services do the work; a duplicate or late delivery does nothing."""

import logging

from celery import shared_task
from django.db import transaction

from apps.oncall import services
from apps.oncall.models import SyncRun

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def sync_plan(sync_run_id: int) -> str | None:
    run = services.sync_run_plan(sync_run_id=sync_run_id)
    if run is None:
        return None
    if run.status == SyncRun.Status.PLANNED and run.options.get("auto_apply"):
        # Periodic re-syncs apply their own plan straight away (never with delete_missing).
        run, queued = services.sync_run_request_apply(sync_run_id=run.pk, delete_missing=False)
        if queued:
            run = services.sync_run_apply(sync_run_id=run.pk)
    return run.status


@shared_task(acks_late=True, reject_on_worker_lost=True)
def sync_apply(sync_run_id: int) -> str | None:
    run = services.sync_run_apply(sync_run_id=sync_run_id)
    return run.status if run else None


@shared_task
def sync_periodic() -> list[int]:
    runs = services.sync_periodic_runs()
    for run in runs:
        transaction.on_commit(lambda pk=run.pk: sync_plan.delay(pk))
    logger.info("on-call periodic sync: %d connection(s) queued", len(runs))
    return [run.pk for run in runs]
