from django.dispatch import Signal

# Sent after the transaction that recorded an IncidentEvent commits, with `event_id`.
# The runbooks app listens; incidents must not import runbooks (dependencies point one way).
incident_event_committed = Signal()
