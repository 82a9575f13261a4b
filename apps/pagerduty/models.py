from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from apps.core.encryption import EncryptedTextField, UnreadableSecret
from apps.core.fields import StoredBodyField
from apps.core.models import TimeStampedModel
from apps.pagerduty.validators import (
    DESTINATION_FIELDS,
    destination_change_problems,
    normalize_url,
    validate_api_key,
    validate_pagerduty_url,
    validate_routing_key,
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
    # Webhooks in (apps.pagerduty.webhooks). Both secrets are write-only; the previous one is kept
    # while a rotation is under way, since PagerDuty then signs with either.
    webhook_secret = EncryptedTextField(
        blank=True, help_text="Signing secret of the webhook subscription. Encrypted at rest, never shown."
    )
    webhook_secret_previous = EncryptedTextField(
        blank=True, help_text="The secret being rotated out, still accepted until cleared."
    )
    webhook_subscription_id = models.CharField(
        max_length=32, blank=True, help_text="PagerDuty's id of the webhook subscription this service made."
    )
    pagerduty_resolve_resolves_incident = models.BooleanField(
        "PagerDuty resolve resolves our incident",
        default=False,
        help_text="When a linked PagerDuty incident is resolved in PagerDuty, set our incident to Resolved.",
    )

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

    @property
    def webhook_secrets(self) -> list[str]:
        """The secrets a webhook signature may be made with: current first, then the one rotated out."""
        found = [self.webhook_secret, self.webhook_secret_previous]
        return [s for s in found if s and not isinstance(s, UnreadableSecret)]


class WebhookDelivery(models.Model):
    """One webhook PagerDuty delivered, stored before it is answered and processed on a worker.

    Unique per (connection, X-Webhook-Id): PagerDuty sends the same id with every retry, so a
    redelivery finds its row and changes nothing."""

    connection = models.ForeignKey(PagerDutyConnection, on_delete=models.CASCADE, related_name="webhook_deliveries")
    webhook_id = models.CharField(max_length=100)
    event_id = models.CharField(max_length=100, blank=True)
    event_type = models.CharField(max_length=100, blank=True, db_index=True)
    resource_type = models.CharField(max_length=50, blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    pagerduty_incident_id = models.CharField("PagerDuty incident id", max_length=32, blank=True, db_index=True)
    payload = StoredBodyField(default=dict)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    outcome = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-received_at"]
        verbose_name = "PagerDuty webhook delivery"
        verbose_name_plural = "PagerDuty webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["connection", "webhook_id"], name="uniq_webhook_delivery"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type or 'webhook'} {self.pagerduty_incident_id} ({self.webhook_id})"

    @property
    def event(self) -> dict:
        event = (self.payload or {}).get("event") if isinstance(self.payload, dict) else None
        return event if isinstance(event, dict) else {}


class Channel(TimeStampedModel):
    """An Events API v2 destination: a service's integration (routing) key and where to send events.

    Events steps name a channel, never a connection: the routing key is the only credential, and it
    goes in the request body, so it gets the same care as an API key (encrypted, write-only, only
    sent to the events_url it was entered for)."""

    name = models.SlugField(
        max_length=100, unique=True, help_text="Event steps refer to the channel by this name (`channel:`)."
    )
    # Write-only: forms and serializers never render it; see apps.core.encryption.
    routing_key = EncryptedTextField(
        validators=[validate_routing_key],
        help_text="Events API v2 integration key (32 characters). Encrypted at rest, never shown.",
    )
    events_url = models.URLField(
        default=DEFAULT_EVENTS_URL,
        validators=[validate_pagerduty_url],
        help_text="EU accounts: https://events.eu.pagerduty.com. Changing it needs the routing key again.",
    )
    summary_prefix = models.CharField(
        max_length=100, blank=True, help_text='Put before every event summary, e.g. "[checkout] ".'
    )
    default_source = models.CharField(
        max_length=255,
        blank=True,
        help_text="payload.source when a step sets none. Empty: the host of SITE_URL.",
    )
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_message = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "Events API channel"
        permissions = [("test_channel", "Can test an Events API channel (sends a trigger and a resolve)")]

    def __str__(self) -> str:
        return self.name

    _routing_key_entered = False

    def enter_routing_key(self, routing_key: str) -> None:
        """Set a key a person just gave: the only way a changed events_url is accepted."""
        self.routing_key = routing_key
        self._routing_key_entered = True

    def clean(self):
        super().clean()
        self.events_url = normalize_url(self.events_url)
        stored = type(self)._base_manager.filter(pk=self.pk).values("events_url").first() if self.pk else None
        if stored is None:
            return
        problems = destination_change_problems(
            stored=stored,
            current={"events_url": self.events_url},
            key_entered=self._routing_key_entered,
            fields=("events_url",),
            key_label="routing key (routing_key)",
        )
        if problems:
            raise ValidationError(problems)

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        self._routing_key_entered = False

    @property
    def has_routing_key(self) -> bool:
        return bool(self.routing_key)

    @property
    def routing_key_unreadable(self) -> bool:
        return isinstance(self.__dict__.get("routing_key"), UnreadableSecret)


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
