from django.core.validators import RegexValidator
from django.db import models

from apps.core.encryption import EncryptedTextField
from apps.core.models import TimeStampedModel

DEFAULT_API_URL = "https://api.pagerduty.com"
DEFAULT_EVENTS_URL = "https://events.pagerduty.com"

pagerduty_id_validator = RegexValidator(r"^P[A-Z0-9]{5,}$", "A PagerDuty id looks like P1234AB")


class Urgency(models.TextChoices):
    HIGH = "high"
    LOW = "low"


class PagerDutyConnection(TimeStampedModel):
    name = models.SlugField(
        max_length=100, unique=True, help_text="Runbook steps refer to the connection by this name."
    )
    # Write-only: forms and serializers never render it; see apps.core.encryption.
    api_key = EncryptedTextField(help_text="REST API key (account or user token). Encrypted at rest, never shown.")
    from_email = models.EmailField(
        help_text="Email of a PagerDuty user, sent as the From header on writes when a step does not set one."
    )
    api_url = models.URLField(default=DEFAULT_API_URL, help_text="EU accounts: https://api.eu.pagerduty.com")
    events_url = models.URLField(default=DEFAULT_EVENTS_URL, help_text="EU accounts: https://events.eu.pagerduty.com")
    subdomain = models.CharField(max_length=100, blank=True, help_text="your-company in your-company.pagerduty.com")
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_message = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "PagerDuty connection"
        permissions = [
            ("test_pagerdutyconnection", "Can test a PagerDuty connection"),
            ("manage_webhooks_pagerdutyconnection", "Can manage a connection's webhook subscriptions"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key)


class ServiceMapping(models.Model):
    """Our Activity.service → PagerDuty service id; the row with an empty service is the default."""

    connection = models.ForeignKey(PagerDutyConnection, on_delete=models.CASCADE, related_name="service_mappings")
    service = models.CharField(max_length=100, blank=True, help_text="Activity.service; leave empty for the default.")
    pagerduty_service_id = models.CharField(max_length=20, validators=[pagerduty_id_validator])

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "service"], name="uniq_service_mapping")]
        ordering = ["connection", "service"]

    def __str__(self) -> str:
        return f"{self.service or '(default)'} → {self.pagerduty_service_id}"


class UrgencyMapping(models.Model):
    """Overrides of the default severity → urgency map (SEV0/1 high, SEV2–4 low)."""

    severity = models.PositiveSmallIntegerField(unique=True, choices=[(n, f"SEV{n}") for n in range(5)])
    urgency = models.CharField(max_length=4, choices=Urgency.choices)

    class Meta:
        ordering = ["severity"]

    def __str__(self) -> str:
        return f"SEV{self.severity} → {self.urgency}"
