import uuid

from django.conf import settings
from django.core.validators import MaxLengthValidator
from django.db import models
from django.urls import reverse

from apps.core import limits
from apps.core.validators import NoNulValidator


class IncidentStatus(models.TextChoices):
    DETECTED = "Detected"
    INVESTIGATING = "Investigating"
    IDENTIFIED = "Identified"
    MONITORING = "Monitoring"
    RESOLVED = "Resolved"


class Severity(models.IntegerChoices):
    SEV0 = 0, "SEV0"
    SEV1 = 1, "SEV1"
    SEV2 = 2, "SEV2"
    SEV3 = 3, "SEV3"
    SEV4 = 4, "SEV4"


class IncidentCounter(models.Model):
    """One row holding the last short-id number; locked to hand out INC-n without gaps or races."""

    last_number = models.PositiveIntegerField(default=0)


class Incident(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    number = models.PositiveIntegerField(unique=True, editable=False)
    title = models.CharField(max_length=limits.INCIDENT_TITLE_MAX, validators=[NoNulValidator()])
    summary = models.TextField(
        blank=True, validators=[MaxLengthValidator(limits.INCIDENT_SUMMARY_MAX), NoNulValidator()]
    )
    severity = models.PositiveSmallIntegerField(choices=Severity.choices, default=Severity.SEV2)
    status = models.CharField(max_length=20, choices=IncidentStatus.choices, default=IncidentStatus.DETECTED)
    service = models.CharField(
        max_length=limits.INCIDENT_SERVICE_MAX, blank=True, db_index=True, validators=[NoNulValidator()]
    )
    environment = models.CharField(
        max_length=limits.INCIDENT_ENVIRONMENT_MAX, blank=True, db_index=True, validators=[NoNulValidator()]
    )
    owner = models.EmailField(max_length=limits.INCIDENT_OWNER_MAX, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.short_id} {self.title}"

    @property
    def short_id(self) -> str:
        return f"INC-{self.number}"

    @property
    def severity_label(self) -> str:
        return f"SEV{self.severity}"

    @property
    def url(self) -> str:
        return settings.SITE_URL + reverse("admin:incidents_incident_change", args=[self.pk])


class IncidentEventKind(models.TextChoices):
    CREATED = "created"
    STATUS_CHANGED = "status_changed"
    SEVERITY_CHANGED = "severity_changed"
    MANUAL = "manual"
    PAGERDUTY_EVENT = "pagerduty_event"


class IncidentEvent(models.Model):
    """One entry of the incident timeline; runbooks are matched against these."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=20, choices=IncidentEventKind.choices)
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20, blank=True)
    from_severity = models.PositiveSmallIntegerField(null=True, blank=True)
    to_severity = models.PositiveSmallIntegerField(null=True, blank=True)
    actor = models.CharField(max_length=255, blank=True)
    # For manual events: which runbook the person asked to run.
    runbook_slug = models.SlugField(max_length=100, blank=True)
    # For PagerDuty events: its type (incident.acknowledged…) and what it said (agent, status, note…).
    pagerduty_event_type = models.CharField("PagerDuty event type", max_length=100, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Set once runbooks have been matched; an event left unset (broker down at commit) is re-dispatched.
    dispatched_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        if self.kind == IncidentEventKind.STATUS_CHANGED:
            return f"{self.from_status} → {self.to_status}"
        if self.kind == IncidentEventKind.PAGERDUTY_EVENT:
            return f"PagerDuty {self.pagerduty_event_type}"
        if self.kind == IncidentEventKind.SEVERITY_CHANGED:
            return f"SEV{self.from_severity} → SEV{self.to_severity}"
        return self.kind
