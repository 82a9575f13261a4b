from django.apps import AppConfig


class RunbooksConfig(AppConfig):
    name = "apps.runbooks"
    label = "runbooks"

    def ready(self):
        from apps.incidents.signals import incident_event_committed
        from apps.runbooks import receivers

        incident_event_committed.connect(receivers.enqueue_dispatch, dispatch_uid="runbooks.enqueue_dispatch")
