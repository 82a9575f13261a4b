from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operating the service: /healthz, Prometheus metrics at /metrics, the worker heartbeat."""

    name = "apps.ops"
    label = "ops"

    def ready(self):
        from django.db.models.signals import post_save

        from apps.ops import receivers
        from apps.runbooks.models import StepRun

        post_save.connect(receivers.observe_step, sender=StepRun, dispatch_uid="ops-step-duration")
