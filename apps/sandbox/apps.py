from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """The local PagerDuty stand-in (demo and tests). Production code never imports it."""

    name = "apps.sandbox"
    label = "sandbox"
    verbose_name = "PagerDuty stand-in"
