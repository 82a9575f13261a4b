from django.apps import AppConfig


class PagerDutyConfig(AppConfig):
    name = "apps.pagerduty"
    label = "pagerduty"
    verbose_name = "PagerDuty"

    def ready(self):
        from apps.audit.services import audit_register
        from apps.pagerduty.models import Channel, PagerDutyConnection, ServiceMapping, UrgencyMapping

        # The API key is masked by audit_register (an encrypted field): a change is recorded, never the key.
        audit_register(PagerDutyConnection, exclude_fields=["created_at", "updated_at"])
        audit_register(ServiceMapping)
        audit_register(UrgencyMapping)
        # The routing key likewise: masked as an encrypted field.
        audit_register(Channel, exclude_fields=["created_at", "updated_at", "last_tested_at", "last_test_ok"])
