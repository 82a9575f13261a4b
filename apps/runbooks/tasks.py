"""Thin Celery tasks: ids in, services do the work, duplicates and stale deliveries are no-ops."""

import logging

from celery import shared_task

from apps.runbooks import services, waits

logger = logging.getLogger(__name__)


# Executes the event's first run in place (one broker hop), so a pool process killed mid-step must
# have its message delivered again, exactly like execute_run's.
@shared_task(acks_late=True, reject_on_worker_lost=True)
def dispatch_incident_event(event_id: int) -> str | None:
    run = services.event_dispatch(event_id=event_id)
    return run.status if run else None


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=20)
def execute_run(self, run_id: int) -> str | None:
    try:
        run = services.run_execute(run_id=run_id)
    except services.LeaseHeld as held:
        # Another delivery is executing it; look again when its lease would have expired.
        raise self.retry(countdown=held.seconds_left + 1) from None
    return run.status if run else None


@shared_task
def recover_stalled_runs(pending_after_seconds: int | None = None) -> dict:
    return services.runs_recover_stalled(pending_after_seconds=pending_after_seconds)


@shared_task
def sweep_waits() -> dict:
    return waits.waits_sweep()
