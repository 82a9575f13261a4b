from apps.runbooks import tasks


def enqueue_dispatch(sender, event_id, **kwargs):
    # Sent from on_commit, so the event row is visible to the worker that picks this up.
    tasks.dispatch_incident_event.delay(event_id)
