from apps.core.queueing import enqueue
from apps.runbooks import tasks

SWEEP = "the recovery sweep dispatches the event once the broker is back (RUN_RECOVERY_INTERVAL)"


def enqueue_dispatch(sender, event_id, **kwargs):
    # Sent from on_commit, so the event row is visible to the worker that picks this up. The change
    # is committed: a broker that cannot take the message must not turn it into an error.
    enqueue(tasks.dispatch_incident_event, event_id, recovery=SWEEP)
