from django.dispatch import Signal

# Sent by the worker processing a stored webhook, inside the transaction that marks it processed,
# with `delivery` (a locked WebhookDelivery). Receivers return a short outcome string or None.
# The runbooks app listens (it owns the incident links); pagerduty must not import runbooks.
webhook_event_received = Signal()
