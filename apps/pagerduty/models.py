from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from apps.core.encryption import EncryptedTextField, UnreadableSecret
from apps.core.models import TimeStampedModel
from apps.pagerduty.validators import (
    DESTINATION_FIELDS,
    destination_change_problems,
    normalize_url,
    validate_api_key,
    validate_pagerduty_url,
)

DEFAULT_API_URL = "https://api.pagerduty.com"
DEFAULT_EVENTS_URL = "https://events.pagerduty.com"
# The Events API host that goes with each REST API host; anything else (the local stand-in, a proxy)
# serves both on the same host.
EVENTS_URL_FOR_API_URL = {
    "https://api.pagerduty.com": DEFAULT_EVENTS_URL,
    "https://api.eu.pagerduty.com": "https://events.eu.pagerduty.com",
}


def events_url_for(api_url: str) -> str:
    """The events_url a connection gets when only its api_url is given."""
    api_url = normalize_url(api_url) or DEFAULT_API_URL
    return EVENTS_URL_FOR_API_URL.get(api_url.lower(), api_url)


pagerduty_id_validator = RegexValidator(r"^P[A-Z0-9]{5,}$", "A PagerDuty id looks like P1234AB")


class Urgency(models.TextChoices):
    HIGH = "high"
    LOW = "low"


class PagerDutyConnection(TimeStampedModel):
    name = models.SlugField(
        max_length=100, unique=True, help_text="Runbook steps refer to the connection by this name."
    )
    # Write-only: forms and serializers never render it; see apps.core.encryption.
    api_key = EncryptedTextField(
        validators=[validate_api_key],
        help_text="REST API key (account or user token). Encrypted at rest, never shown.",
    )
    from_email = models.EmailField(
        help_text="Email of a PagerDuty user, sent as the From header on writes when a step does not set one."
    )
    api_url = models.URLField(
        default=DEFAULT_API_URL,
        validators=[validate_pagerduty_url],
        help_text="EU accounts: https://api.eu.pagerduty.com. Changing it needs the API key again.",
    )
    events_url = models.URLField(
        default=DEFAULT_EVENTS_URL,
        validators=[validate_pagerduty_url],
        help_text="EU accounts: https://events.eu.pagerduty.com. Changing it needs the API key again.",
    )
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

    # A stored key is only ever sent where it was entered for (validators.destination_change_problems).
    _api_key_entered = False

    def enter_api_key(self, api_key: str) -> None:
        """Set a key a person just gave: the only way a changed api_url/events_url is accepted."""
        self.api_key = api_key
        self._api_key_entered = True

    def clean(self):
        super().clean()
        for field in DESTINATION_FIELDS:
            setattr(self, field, normalize_url(getattr(self, field)))
        # Compared with the row, not with what this instance was loaded with: the database says
        # where the stored key was entered for, whatever happened to this object since.
        stored = type(self)._base_manager.filter(pk=self.pk).values(*DESTINATION_FIELDS).first() if self.pk else None
        if stored is None:
            return  # a new connection: its key is entered with it
        problems = destination_change_problems(
            stored=stored,
            current={f: getattr(self, f) for f in DESTINATION_FIELDS},
            key_entered=self._api_key_entered,
        )
        if problems:
            raise ValidationError(problems)

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        self._api_key_entered = False

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key)

    @property
    def api_key_unreadable(self) -> bool:
        return isinstance(self.__dict__.get("api_key"), UnreadableSecret)


class ServiceMapping(models.Model):
    """Our Activity.service → PagerDuty service id; the row with an empty service is the default."""

    connection = models.ForeignKey(PagerDutyConnection, on_delete=models.CASCADE, related_name="service_mappings")
    service = models.CharField(max_length=100, blank=True, help_text="Activity.service; leave empty for the default.")
    pagerduty_service_id = models.CharField(
        max_length=20, validators=[pagerduty_id_validator], verbose_name="PagerDuty service id"
    )

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
