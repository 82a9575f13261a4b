import logging

from apps.core.queueing import enqueue
from apps.runbooks import tasks, waits

logger = logging.getLogger(__name__)

SWEEP = "the recovery sweep dispatches the event once the broker is back (RUN_RECOVERY_INTERVAL)"


def enqueue_dispatch(sender, event_id, **kwargs):
    # Sent from on_commit, so the event row is visible to the worker that picks this up. The change
    # is committed: a broker that cannot take the message must not turn it into an error.
    enqueue(tasks.dispatch_incident_event, event_id, recovery=SWEEP)


def resume_waits(sender, event_id, **kwargs):
    # The status change itself resumes the runs waiting for it (no polling). Runs after commit, in
    # whatever process made the change; the change stands even if this fails, and the wait sweep
    # (sweep_waits) resumes the run on its next pass.
    try:
        waits.waits_resume_for_event(event_id=event_id)
    except Exception:
        logger.exception("resuming runs waiting on incident event %s failed; the wait sweep will", event_id)
