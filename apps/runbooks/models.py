from django.conf import settings
from django.core.validators import MaxLengthValidator, RegexValidator, slug_re
from django.db import models

from apps.core import limits
from apps.core.fields import StoredBodyField
from apps.core.models import TimeStampedModel
from apps.core.validators import JsonListValidator, NoNulValidator
from apps.incidents.models import Incident, IncidentEvent, IncidentStatus
from apps.pagerduty.models import PagerDutyConnection


class TriggerOn(models.TextChoices):
    CREATED = "created"
    STATUS_CHANGED = "status_changed"
    SEVERITY_CHANGED = "severity_changed"
    MANUAL = "manual"
    PAGERDUTY_EVENT = "pagerduty_event", "PagerDuty event"


class OnFailure(models.TextChoices):
    STOP = "stop"
    CONTINUE = "continue"


class RunStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    # A control step (approval, wait for status) holds the run: no worker, no lease, until it is resumed.
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


FINISHED = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.CANCELLED}

step_key_validator = RegexValidator(
    r"^[a-z][a-z0-9_]*$", "Lower-case letters, digits and underscores, starting with a letter (used as steps.<key>)"
)


def slug_problem(slug) -> str | None:
    """Why `slug` cannot name a runbook (it also names the exported file), or None."""
    if not isinstance(slug, str):
        return f"slug must be text, not {type(slug).__name__}"
    if len(slug) > limits.RUNBOOK_SLUG_MAX:
        return f"slug is {len(slug)} characters long; the limit is {limits.RUNBOOK_SLUG_MAX}"
    if not slug_re.match(slug):
        return f"slug {slug[:60]!r} may contain only letters, digits, hyphens and underscores"
    return None


class Runbook(TimeStampedModel):
    slug = models.SlugField(max_length=limits.RUNBOOK_SLUG_MAX, unique=True)
    name = models.CharField(max_length=limits.RUNBOOK_NAME_MAX, validators=[NoNulValidator()])
    description = models.TextField(
        blank=True, validators=[MaxLengthValidator(limits.RUNBOOK_DESCRIPTION_MAX), NoNulValidator()]
    )
    enabled = models.BooleanField(default=True)
    trigger_on = models.CharField(max_length=20, choices=TriggerOn.choices, default=TriggerOn.STATUS_CHANGED)
    # Empty list = any. Status lists apply to status_changed only.
    trigger_to = models.JSONField(default=list, blank=True, help_text="Statuses the incident changes to")
    trigger_from = models.JSONField(default=list, blank=True, help_text="Statuses the incident changes from")
    # on: pagerduty_event — which PagerDuty event types (incident.acknowledged…); empty = any.
    trigger_events = models.JSONField(
        default=list, blank=True, help_text="PagerDuty event types (on: pagerduty_event); empty = any"
    )
    condition_severity = models.JSONField(default=list, blank=True, help_text="Severities 0–4; empty = any")
    condition_services = models.JSONField(
        default=list,
        blank=True,
        help_text="Activity.service values; empty = any",
        validators=[JsonListValidator(limits.CONDITION_LIST_MAX), NoNulValidator()],
    )
    condition_environments = models.JSONField(
        default=list,
        blank=True,
        help_text="Environments; empty = any",
        validators=[JsonListValidator(limits.CONDITION_LIST_MAX), NoNulValidator()],
    )

    class Meta:
        ordering = ["slug"]
        permissions = [
            ("run_runbook", "Can run a runbook manually"),
            ("dry_run_runbook", "Can dry-run a runbook"),
        ]

    def __str__(self) -> str:
        return self.name or self.slug


class Step(models.Model):
    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField(default=0)
    key = models.CharField(max_length=50, validators=[step_key_validator])
    name = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=100)
    # By name, so runbooks-as-code stay portable between environments.
    connection = models.CharField(max_length=100, default="default", blank=True)
    inputs = models.JSONField(
        default=dict,
        blank=True,
        help_text="Field → Mustache template (the `with:` block)",
        validators=[NoNulValidator()],
    )
    on_failure = models.CharField(max_length=10, choices=OnFailure.choices, default=OnFailure.STOP)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["runbook", "key"], name="uniq_step_key_per_runbook")]

    def __str__(self) -> str:
        return f"{self.key} ({self.action})"


class RunbookVersion(models.Model):
    """A snapshot of a runbook as saved, in the runbooks-as-code shape (loader.runbook_to_spec)."""

    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    comment = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["runbook", "-number"]
        constraints = [models.UniqueConstraint(fields=["runbook", "number"], name="uniq_runbook_version_number")]

    def __str__(self) -> str:
        return f"{self.runbook.slug} v{self.number}"


class RunbookRun(TimeStampedModel):
    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE, related_name="runs")
    # The version this run executed; null only for runs created before versions existed.
    runbook_version = models.ForeignKey(
        RunbookVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="runbook_runs")
    event = models.ForeignKey(IncidentEvent, on_delete=models.CASCADE, related_name="runbook_runs")
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.PENDING, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    # How many times execution started (1 + re-runs + takeovers after a crash).
    executions = models.PositiveIntegerField(default=0)
    # Lease: the worker executing the run holds it until lease_expires_at (renewed between steps).
    lease_token = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("rerun_runbookrun", "Can re-run a run from its failed step"),
            ("approve_runbookrun", "Can approve or reject a waiting run"),
        ]
        constraints = [
            # One run per (runbook, event): a redelivered message or a re-dispatch starts nothing twice.
            models.UniqueConstraint(fields=["runbook", "event"], name="uniq_run_per_runbook_event"),
        ]

    def __str__(self) -> str:
        return f"{self.runbook.slug} on {self.incident.short_id} ({self.status})"


class StepRun(models.Model):
    run = models.ForeignKey(RunbookRun, on_delete=models.CASCADE, related_name="step_runs")
    step = models.ForeignKey(Step, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # Snapshot of the step when the run was created: editing the runbook never changes a run.
    position = models.PositiveIntegerField()
    key = models.CharField(max_length=50)
    name = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=100)
    connection = models.CharField(max_length=100, blank=True)
    inputs = models.JSONField(default=dict, blank=True)
    on_failure = models.CharField(max_length=10, choices=OnFailure.choices, default=OnFailure.STOP)

    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.PENDING)
    rendered = models.JSONField(default=dict, blank=True)
    request = models.JSONField(default=dict, blank=True, help_text="Last request sent (secrets redacted)")
    # {"status", "body", "error"} of the last exchange, whose body is already cut to
    # STORED_BODY_MAX_CHARS; the bound here only stops anything else from growing it.
    response = StoredBodyField(default=dict, blank=True, max_chars=2 * limits.STORED_BODY_MAX_CHARS)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    wait_until = models.DateTimeField(
        null=True, blank=True, help_text="When a waiting control step times out (the wait sweep ends it then)"
    )

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="uniq_step_run_key")]
        indexes = [
            # Few steps wait at any time among all the steps ever run: the status change hook and
            # the wait sweep find them through this small index, not by scanning every step run.
            models.Index(fields=["wait_until"], name="steprun_waiting_idx", condition=models.Q(status="waiting")),
        ]

    def __str__(self) -> str:
        return f"{self.key}: {self.status}"

    @property
    def duration_ms(self) -> int | None:
        if self.started_at and self.finished_at:
            return int((self.finished_at - self.started_at).total_seconds() * 1000)
        return None


class StepRunExchange(models.Model):
    """Every HTTP attempt a step made, in order, as PagerDuty saw it (secrets redacted)."""

    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="exchanges")
    method = models.CharField(max_length=10)
    url = models.TextField()
    request_headers = models.JSONField(default=dict)
    # Bodies are cut beyond STORED_BODY_MAX_CHARS with a visible marker, never kept whole.
    request_body = StoredBodyField(null=True, blank=True)
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict)
    response_body = StoredBodyField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    attempt = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.method} {self.url} → {self.status or self.error}"


class PagerDutyIncidentLink(TimeStampedModel):
    """Which PagerDuty incident belongs to which of our incidents, so later steps need no pasted id."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="pagerduty_links")
    connection = models.ForeignKey(PagerDutyConnection, on_delete=models.SET_NULL, null=True, related_name="+")
    pagerduty_incident_id = models.CharField(max_length=32, verbose_name="PagerDuty incident id")
    incident_number = models.PositiveIntegerField(null=True, blank=True)
    html_url = models.URLField(blank=True, max_length=500)
    incident_key = models.CharField(max_length=255, blank=True)
    service_id = models.CharField(max_length=32, blank=True)
    status = models.CharField(max_length=20, default="triggered")
    created_by = models.ForeignKey(StepRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # PagerDuty's side, mirrored from its webhooks (apps.runbooks.mirror) or read with GET /incidents/{id}.
    urgency = models.CharField(max_length=10, blank=True)
    priority = models.CharField(max_length=100, blank=True)
    assignees = models.JSONField(default=list, blank=True, help_text="[{id, summary}] as PagerDuty last said")
    escalation_level = models.PositiveSmallIntegerField(null=True, blank=True)
    last_event_type = models.CharField(max_length=100, blank=True)
    # When the newest event applied happened in PagerDuty: an older one arriving later changes nothing.
    last_event_at = models.DateTimeField(null=True, blank=True)
    # When PagerDuty last told us its state (a webhook or a read); null: only our own writes set it.
    mirrored_at = models.DateTimeField(null=True, blank=True)
    # Our last change, so its echo (the webhook PagerDuty sends back) is recognised and fires nothing.
    sent_status = models.CharField(max_length=20, blank=True)
    sent_by = models.ForeignKey(StepRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "PagerDuty incident link"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["incident", "connection", "pagerduty_incident_id"], name="uniq_pagerduty_link"
            )
        ]

    def __str__(self) -> str:
        return f"{self.incident.short_id} ↔ PagerDuty {self.pagerduty_incident_id}"

    @property
    def is_open(self) -> bool:
        return self.status in ("triggered", "acknowledged")


ACTIVE_INCIDENT_STATUSES = [s for s in IncidentStatus.values if s != IncidentStatus.RESOLVED]
