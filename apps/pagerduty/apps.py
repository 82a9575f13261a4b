from django.apps import AppConfig


class PagerDutyConfig(AppConfig):
    name = "apps.pagerduty"
    label = "pagerduty"
    verbose_name = "PagerDuty"
