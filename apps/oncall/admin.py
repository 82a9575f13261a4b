"""On-call admin: imported data (synced fields read-only, local fields editable), sync runs, the
sync wizard at /admin/oncall/sync/ and "who is on call now"."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from apps.core.query_params import ascii_integer
from apps.oncall import selectors
from apps.oncall.importer import RESOURCE_TYPES
from apps.oncall.models import (
    EscalationRule,
    OncallEscalationPolicy,
    OncallSchedule,
    OncallService,
    OncallTeam,
    OncallUser,
    ScheduleLayer,
    Sync,
    SyncRun,
    TeamMembership,
)
from apps.oncall.wizard import SyncWizardView, progress_rows

SYNC_PERMISSION = "oncall.add_syncrun"
CHANGELISTS = {
    "teams": "admin:oncall_oncallteam_changelist",
    "users": "admin:oncall_oncalluser_changelist",
    "schedules": "admin:oncall_oncallschedule_changelist",
    "escalation_policies": "admin:oncall_oncallescalationpolicy_changelist",
    "services": "admin:oncall_oncallservice_changelist",
}
SYNCED_COMMON = ["connection", "pagerduty_id", "name", "html_link", "synced_at", "deleted_upstream_at"]


def _render_oncall(entries) -> str:
    if not entries:
        return "nobody"
    return format_html_join(
        "",
        "<div>{}{} <span class='quiet'>{}</span></div>",
        (
            (
                f"L{e.escalation_level}: " if e.escalation_level else "",
                e.user or e.user_pagerduty_id,
                f"until {e.end:%Y-%m-%d %H:%M} UTC" if e.end else ("via " + str(e.schedule) if e.schedule else ""),
            )
            for e in entries
        ),
    )


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ImportedAdmin(admin.ModelAdmin):
    """Synced fields are PagerDuty's: shown, never edited here (the next sync would overwrite them)."""

    synced_fields: list[str] = []
    list_filter = ["connection", ("deleted_upstream_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "pagerduty_id", "local_alias"]

    def get_fields(self, request, obj=None):
        return [*SYNCED_COMMON, *self.synced_fields, *self.extra_readonly, "local_alias", "notes"]

    extra_readonly: list[str] = []

    def get_readonly_fields(self, request, obj=None):
        return [*SYNCED_COMMON, *self.synced_fields, *self.extra_readonly]

    def has_add_permission(self, request):
        return False

    @admin.display(description="PagerDuty")
    def html_link(self, obj):
        return (
            format_html('<a href="{0}" rel="noopener" target="_blank">{0}</a>', obj.html_url) if obj.html_url else "—"
        )


class MembershipByUserInline(ReadOnlyInline):
    model = TeamMembership
    fk_name = "user"
    fields = ["team", "team_pagerduty_id", "role"]
    readonly_fields = fields


class MembershipByTeamInline(ReadOnlyInline):
    model = TeamMembership
    fk_name = "team"
    fields = ["user", "role"]
    readonly_fields = fields


@admin.register(OncallTeam)
class OncallTeamAdmin(ImportedAdmin):
    list_display = ["name", "pagerduty_id", "local_alias", "connection", "deleted_upstream_at"]
    synced_fields = ["description"]
    inlines = [MembershipByTeamInline]


@admin.register(OncallUser)
class OncallUserAdmin(ImportedAdmin):
    list_display = ["name", "email", "role", "time_zone", "pagerduty_id", "connection", "deleted_upstream_at"]
    list_filter = [*ImportedAdmin.list_filter, "role"]
    search_fields = [*ImportedAdmin.search_fields, "email"]
    synced_fields = ["email", "time_zone", "role", "job_title"]
    inlines = [MembershipByUserInline]


class LayerInline(ReadOnlyInline):
    model = ScheduleLayer
    fields = ["position", "name", "rotation", "members_list", "restrictions", "start", "end"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("members__user")

    @admin.display(description="rotation")
    def rotation(self, obj):
        hours = obj.rotation_turn_length_seconds / 3600
        return f"{hours:g} h turns from {obj.rotation_virtual_start:%Y-%m-%d %H:%M} UTC"

    @admin.display(description="users, in order")
    def members_list(self, obj):
        return ", ".join(str(m.user or m.user_pagerduty_id) for m in obj.members.all())


@admin.register(OncallSchedule)
class OncallScheduleAdmin(ImportedAdmin):
    list_display = ["name", "time_zone", "pagerduty_id", "connection", "rendered_until", "deleted_upstream_at"]
    synced_fields = ["description", "time_zone", "team_ids", "rendered_since", "rendered_until"]
    extra_readonly = ["on_call_now"]
    inlines = [LayerInline]

    @admin.display(description="On call now")
    def on_call_now(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        note = selectors.oncall_window_note(schedule=obj)
        return note or _render_oncall(selectors.oncall_now(schedule=obj))

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "oncall_now_url": reverse("admin:oncall_now")}
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        return [path("now/", self.admin_site.admin_view(self.now_view), name="oncall_now"), *super().get_urls()]

    def now_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        at = timezone.now()
        connection_id = request.GET.get("connection", "")
        schedules = OncallSchedule.objects.filter(deleted_upstream_at__isnull=True).select_related("connection")
        policies = OncallEscalationPolicy.objects.filter(deleted_upstream_at__isnull=True).select_related("connection")
        if ascii_integer(connection_id) is not None:
            schedules, policies = (
                schedules.filter(connection_id=ascii_integer(connection_id)),
                policies.filter(connection_id=ascii_integer(connection_id)),
            )
        query = request.GET.get("q", "").strip()
        if query:
            schedules, policies = schedules.filter(name__icontains=query), policies.filter(name__icontains=query)
        schedules, policies = list(schedules.order_by("name")[:500]), list(policies.order_by("name")[:500])
        by_schedule = selectors.oncall_now_for_schedules(schedules=schedules, at=at)
        by_policy = selectors.oncall_now_for_policies(policies=policies, at=at)
        context = {
            **self.admin_site.each_context(request),
            "title": "Who is on call now",
            "opts": self.model._meta,
            "at": at,
            "query": query,
            "schedules": [(s, by_schedule[s.pk], selectors.oncall_window_note(schedule=s, at=at)) for s in schedules],
            "policies": [(p, by_policy[p.pk]) for p in policies],
        }
        return TemplateResponse(request, "admin/oncall/oncall_now.html", context)


class RuleInline(ReadOnlyInline):
    model = EscalationRule
    fields = ["position", "escalation_delay_in_minutes", "targets_list"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("targets__user", "targets__schedule")

    @admin.display(description="targets")
    def targets_list(self, obj):
        return ", ".join(str(t) for t in obj.targets.all())


class ServiceInline(ReadOnlyInline):
    model = OncallService
    fk_name = "escalation_policy"
    fields = ["name", "pagerduty_id", "status"]
    readonly_fields = fields


@admin.register(OncallEscalationPolicy)
class OncallEscalationPolicyAdmin(ImportedAdmin):
    list_display = ["name", "num_loops", "pagerduty_id", "connection", "deleted_upstream_at"]
    synced_fields = ["description", "num_loops", "on_call_handoff_notifications", "team_ids"]
    extra_readonly = ["on_call_now"]
    inlines = [RuleInline, ServiceInline]

    @admin.display(description="On call now")
    def on_call_now(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        return _render_oncall(selectors.oncall_now(escalation_policy=obj))


@admin.register(OncallService)
class OncallServiceAdmin(ImportedAdmin):
    list_display = ["name", "status", "escalation_policy", "pagerduty_id", "connection", "deleted_upstream_at"]
    list_filter = [*ImportedAdmin.list_filter, "status"]
    synced_fields = ["description", "status", "escalation_policy", "escalation_policy_pagerduty_id", "team_ids"]


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = ["__str__", "connection", "status", "trigger", "summary", "created_by", "created_at"]
    list_filter = ["status", "trigger", "connection"]
    change_list_template = "admin/oncall/syncrun/change_list.html"

    def get_queryset(self, request):
        # The plan can be megabytes: the list never loads it.
        return super().get_queryset(request).defer("plan").select_related("connection", "created_by")

    @admin.display(description="applied")
    def summary(self, obj):
        resources = (obj.report or {}).get("resources") or {}
        parts = [
            f"{r['label']}: +{r['created']} ~{r['updated']}" for key in RESOURCE_TYPES if (r := resources.get(key))
        ]
        return "; ".join(parts) or "—"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # A run is read on its own page (progress, plan, report), not in a model form.
        run_pk = ascii_integer(str(object_id))
        if run_pk is None:
            raise PermissionDenied
        return HttpResponseRedirect(reverse("admin:oncall_sync_run", args=[run_pk]))


@admin.register(Sync)
class SyncAdmin(admin.ModelAdmin):
    """The wizard and the run pages, under /admin/oncall/sync/; shown to whoever may add sync runs."""

    def has_module_permission(self, request):
        return request.user.has_perm(SYNC_PERMISSION)

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(SYNC_PERMISSION)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def _guard(self, view):
        def guarded(request, *args, **kwargs):
            if not request.user.has_perm(SYNC_PERMISSION):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return self.admin_site.admin_view(guarded)

    def get_urls(self):
        wizard = SyncWizardView.as_view(model_admin=self)
        return [
            path("", self._guard(wizard), name="oncall_sync_changelist"),
            path("<int:pk>/", self._guard(self.run_view), name="oncall_sync_run"),
            path("<int:pk>/progress/", self._guard(self.progress_view), name="oncall_sync_progress"),
        ]

    def run_view(self, request, pk):
        run = get_object_or_404(SyncRun.objects.select_related("connection", "created_by"), pk=pk)
        links = {key: f"{reverse(name)}?connection__id__exact={run.connection_id}" for key, name in CHANGELISTS.items()}
        report = run.report or {}
        rows = [
            {**report["resources"][key], "url": links[key]}
            for key in RESOURCE_TYPES
            if key in (report.get("resources") or {})
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Sync #{run.pk} from PagerDuty",
            "opts": self.model._meta,
            "run": run,
            "report": report,
            "report_rows": rows,
            "warnings": (run.plan or {}).get("warnings") or [],
            "fetch": (run.plan or {}).get("fetch") or {},
            "progress_rows": progress_rows(run),
            "active": run.status in (SyncRun.Status.PLANNING, SyncRun.Status.QUEUED, SyncRun.Status.APPLYING),
            "progress_url": reverse("admin:oncall_sync_progress", args=[run.pk]),
            "wizard_url": reverse("admin:oncall_sync_changelist"),
        }
        return TemplateResponse(request, "admin/oncall/sync/run.html", context)

    def progress_view(self, request, pk):
        run = SyncRun.objects.filter(pk=pk).only("status", "progress", "error").first()
        if run is None:
            return JsonResponse({"message": f"No sync run {pk}."}, status=404)
        return JsonResponse(
            {
                "status": run.status,
                "done": run.status not in (SyncRun.Status.PLANNING, SyncRun.Status.QUEUED, SyncRun.Status.APPLYING),
                "phase": (run.progress or {}).get("phase", ""),
                "resources": progress_rows(run),
                "error": run.error,
            }
        )
