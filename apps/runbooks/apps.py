from django.apps import AppConfig


class RunbooksConfig(AppConfig):
    name = "apps.runbooks"
    label = "runbooks"

    def ready(self):
        from apps.audit.services import audit_register
        from apps.incidents.signals import incident_event_committed
        from apps.pagerduty.signals import webhook_event_received
        from apps.runbooks import mirror, receivers
        from apps.runbooks.models import Runbook, Step

        incident_event_committed.connect(receivers.enqueue_dispatch, dispatch_uid="runbooks.enqueue_dispatch")
        webhook_event_received.connect(mirror.webhook_mirror, dispatch_uid="runbooks.webhook_mirror")
        incident_event_committed.connect(receivers.resume_waits, dispatch_uid="runbooks.resume_waits")
        audit_register(Runbook, exclude_fields=["created_at", "updated_at"])
        audit_register(Step)
