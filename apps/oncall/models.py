"""On-call data imported from PagerDuty, keyed by (connection, PagerDuty id).

Synced fields are overwritten by every apply; `local_alias` and `notes` belong to us and no sync
ever writes them. Cross-references keep the PagerDuty id next to the foreign key: a filtered
import may bring a layer whose user was not imported, and the id lets a later import link it.
"""

from django.conf import settings
from django.core.validators import MaxLengthValidator
from django.db import models

from apps.core import limits
from apps.core.models import TimeStampedModel
from apps.core.validators import NoNulValidator
from apps.pagerduty.models import PagerDutyConnection


class PagerDutyObject(TimeStampedModel):
    connection = models.ForeignKey(PagerDutyConnection, on_delete=models.CASCADE, related_name="+")
    pagerduty_id = models.CharField(max_length=32, verbose_name="PagerDuty id")
    name = models.CharField(max_length=255)
    html_url = models.URLField(max_length=500, blank=True)
    local_alias = models.CharField(
        max_length=255, blank=True, help_text="Our own name for it. Kept as is by every sync."
    )
    notes = models.TextField(
        blank=True,
        help_text="Local notes. Kept as is by every sync.",
        validators=[MaxLengthValidator(limits.ONCALL_NOTES_MAX), NoNulValidator()],
    )
    synced_at = models.DateTimeField(null=True, blank=True)
    deleted_upstream_at = models.DateTimeField(
        null=True, blank=True, help_text="Set when a sync no longer found it in PagerDuty."
    )

    class Meta:
        abstract = True
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "pagerduty_id"], name="%(app_label)s_%(class)s_uniq_pd")
        ]

    def __str__(self) -> str:
        return self.local_alias or self.name or self.pagerduty_id


class OncallTeam(PagerDutyObject):
    description = models.TextField(blank=True)

    class Meta(PagerDutyObject.Meta):
        verbose_name = "team"


class OncallUser(PagerDutyObject):
    email = models.CharField(max_length=254, blank=True, db_index=True)
    time_zone = models.CharField(max_length=64, blank=True)
    role = models.CharField(max_length=32, blank=True)
    job_title = models.CharField(max_length=255, blank=True)
    contact_methods = models.JSONField(
        default=list,
        blank=True,
        help_text="As PagerDuty has them: [{id, type, label, address}], imported with the user.",
    )

    class Meta(PagerDutyObject.Meta):
        verbose_name = "user"


class TeamMembership(models.Model):
    """A user's membership of a team; `role` is only known when roles were imported."""

    user = models.ForeignKey(OncallUser, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(OncallTeam, on_delete=models.SET_NULL, null=True, blank=True, related_name="memberships")
    team_pagerduty_id = models.CharField(max_length=32, verbose_name="team PagerDuty id")
    role = models.CharField(max_length=32, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team_pagerduty_id"], name="oncall_membership_uniq")]
        ordering = ["team_pagerduty_id"]

    def __str__(self) -> str:
        return f"{self.user} in {self.team or self.team_pagerduty_id}"


class OncallSchedule(PagerDutyObject):
    class Kind(models.TextChoices):
        CLASSIC = "schedule", "classic (layers)"
        V3 = "schedule_v3", "v3 (shift-based)"

    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CLASSIC)
    description = models.TextField(blank=True)
    time_zone = models.CharField(max_length=64, blank=True)
    team_ids = models.JSONField(default=list, blank=True, help_text="PagerDuty ids of the schedule's teams.")
    rendered_since = models.DateTimeField(null=True, blank=True)
    rendered_until = models.DateTimeField(null=True, blank=True)
    rotations = models.JSONField(
        default=list,
        blank=True,
        help_text="v3 schedules: rotations and their repeating events as PagerDuty defines them (no layers).",
    )

    class Meta(PagerDutyObject.Meta):
        verbose_name = "schedule"
        permissions = [("override_oncallschedule", "Can create on-call overrides")]


class ScheduleLayer(models.Model):
    schedule = models.ForeignKey(OncallSchedule, on_delete=models.CASCADE, related_name="layers")
    pagerduty_id = models.CharField(max_length=32, verbose_name="PagerDuty id")
    position = models.PositiveIntegerField()
    name = models.CharField(max_length=255, blank=True)
    start = models.DateTimeField()
    end = models.DateTimeField(null=True, blank=True)
    rotation_virtual_start = models.DateTimeField()
    rotation_turn_length_seconds = models.PositiveIntegerField()
    restrictions = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["schedule", "pagerduty_id"], name="oncall_layer_uniq")]
        ordering = ["schedule", "position"]

    def __str__(self) -> str:
        return self.name or self.pagerduty_id


class ScheduleLayerMember(models.Model):
    layer = models.ForeignKey(ScheduleLayer, on_delete=models.CASCADE, related_name="members")
    position = models.PositiveIntegerField()
    user = models.ForeignKey(OncallUser, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    user_pagerduty_id = models.CharField(max_length=32, verbose_name="user PagerDuty id")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["layer", "position"], name="oncall_layer_member_uniq")]
        ordering = ["layer", "position"]

    def __str__(self) -> str:
        return str(self.user or self.user_pagerduty_id)


class ScheduleEntry(models.Model):
    """One shift of the rendered final schedule (or of the overrides) inside the synced window."""

    class Kind(models.TextChoices):
        FINAL = "final"
        OVERRIDE = "override"

    schedule = models.ForeignKey(OncallSchedule, on_delete=models.CASCADE, related_name="entries")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    start = models.DateTimeField()
    end = models.DateTimeField()
    user = models.ForeignKey(OncallUser, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    user_pagerduty_id = models.CharField(max_length=32, verbose_name="user PagerDuty id")

    class Meta:
        indexes = [models.Index(fields=["schedule", "kind", "start"], name="oncall_entry_lookup")]
        ordering = ["schedule", "kind", "start"]
        verbose_name_plural = "schedule entries"

    def __str__(self) -> str:
        return f"{self.user or self.user_pagerduty_id} {self.start:%Y-%m-%d %H:%M}–{self.end:%Y-%m-%d %H:%M}"


class OncallEscalationPolicy(PagerDutyObject):
    description = models.TextField(blank=True)
    num_loops = models.PositiveIntegerField(default=0)
    on_call_handoff_notifications = models.CharField(max_length=32, blank=True)
    team_ids = models.JSONField(default=list, blank=True, help_text="PagerDuty ids of the policy's teams.")

    class Meta(PagerDutyObject.Meta):
        verbose_name = "escalation policy"
        verbose_name_plural = "escalation policies"


class EscalationRule(models.Model):
    policy = models.ForeignKey(OncallEscalationPolicy, on_delete=models.CASCADE, related_name="rules")
    pagerduty_id = models.CharField(max_length=32, verbose_name="PagerDuty id")
    position = models.PositiveIntegerField()
    escalation_delay_in_minutes = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["policy", "pagerduty_id"], name="oncall_rule_uniq")]
        ordering = ["policy", "position"]

    def __str__(self) -> str:
        return f"level {self.position + 1} after {self.escalation_delay_in_minutes} min"


class EscalationTarget(models.Model):
    class Type(models.TextChoices):
        USER = "user_reference", "user"
        SCHEDULE = "schedule_reference", "schedule"
        SCHEDULE_V3 = "schedule_v3_reference", "schedule (v3)"

    rule = models.ForeignKey(EscalationRule, on_delete=models.CASCADE, related_name="targets")
    position = models.PositiveIntegerField()
    target_type = models.CharField(max_length=32, choices=Type.choices)
    target_pagerduty_id = models.CharField(max_length=32, verbose_name="target PagerDuty id")
    user = models.ForeignKey(OncallUser, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    schedule = models.ForeignKey(OncallSchedule, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rule", "position"], name="oncall_target_uniq")]
        ordering = ["rule", "position"]

    def __str__(self) -> str:
        return f"{self.get_target_type_display()} {self.user or self.schedule or self.target_pagerduty_id}"


class OncallService(PagerDutyObject):
    description = models.TextField(blank=True)
    status = models.CharField(max_length=32, blank=True)
    escalation_policy = models.ForeignKey(
        OncallEscalationPolicy, on_delete=models.SET_NULL, null=True, blank=True, related_name="services"
    )
    escalation_policy_pagerduty_id = models.CharField(
        max_length=32, blank=True, verbose_name="escalation policy PagerDuty id"
    )
    team_ids = models.JSONField(default=list, blank=True, help_text="PagerDuty ids of the service's teams.")

    class Meta(PagerDutyObject.Meta):
        verbose_name = "service"


class SyncRun(TimeStampedModel):
    """One import: the options chosen, the plan computed from them, and what applying it did."""

    class Status(models.TextChoices):
        PLANNING = "planning"
        PLANNED = "planned"
        QUEUED = "queued"
        APPLYING = "applying"
        APPLIED = "applied"
        FAILED = "failed"

    class Trigger(models.TextChoices):
        WIZARD = "wizard"
        COMMAND = "command"
        PERIODIC = "periodic"

    connection = models.ForeignKey(PagerDutyConnection, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PLANNING, db_index=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.WIZARD)
    options = models.JSONField(default=dict, blank=True)
    plan = models.JSONField(null=True, blank=True)
    delete_missing = models.BooleanField(default=False)
    progress = models.JSONField(default=dict, blank=True)
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    planned_at = models.DateTimeField(null=True, blank=True)
    apply_requested_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Planning that PagerDuty interrupted (5xx, 429 beyond the client's retries) is tried again later.
    plan_attempts = models.PositiveSmallIntegerField(default=0)
    apply_attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "sync run"
        permissions = [
            ("plan_syncrun", "Can plan an on-call sync from PagerDuty"),
            ("apply_syncrun", "Can apply an on-call sync plan"),
        ]

    def __str__(self) -> str:
        return f"Sync #{self.pk} of {self.connection} ({self.status})"


class Sync(SyncRun):
    """No data of its own: gives the admin the entry "On-call → Sync from PagerDuty" at /admin/oncall/sync/."""

    class Meta:
        proxy = True
        verbose_name = "Sync from PagerDuty"
        verbose_name_plural = "Sync from PagerDuty"
        default_permissions = ()
