from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operating the service: /healthz, Prometheus metrics at /metrics, the worker heartbeat."""

    name = "apps.ops"
    label = "ops"

    def ready(self):
        from apps.ops import receivers
        from apps.runbooks.signals import step_ended

        step_ended.connect(receivers.observe_step, dispatch_uid="ops-step-duration")
