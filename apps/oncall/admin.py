"""On-call admin: imported data (synced fields read-only, local fields editable), sync runs, the
sync wizard at /admin/oncall/sync/ and "who is on call now" (imported, and live from PagerDuty)."""

from datetime import UTC, datetime
from functools import reduce
from operator import or_
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from apps.core.errors import DomainError
from apps.core.links import external_link
from apps.core.permissions import admin_permission_required
from apps.core.query_params import ascii_integer
from apps.oncall import selectors, services, tasks
from apps.oncall.importer import RESOURCE_TYPES
from apps.oncall.live import oncall_live_fetch
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
from apps.oncall.overrides import oncall_override_create
from apps.oncall.wizard import SyncWizardView, progress_rows
from apps.pagerduty.errors import PagerDutyError
from apps.pagerduty.models import PagerDutyConnection

PLAN_PERMISSION = "oncall.plan_syncrun"
OVERRIDE_PERMISSION = "oncall.override_oncallschedule"
OVERRIDES_SHOWN = 50
VIEW_RUN_PERMISSION = "oncall.view_syncrun"
APPLY_PERMISSION = "oncall.apply_syncrun"
CHANGELISTS = {
    "teams": "admin:oncall_oncallteam_changelist",
    "users": "admin:oncall_oncalluser_changelist",
    "schedules": "admin:oncall_oncallschedule_changelist",
    "escalation_policies": "admin:oncall_oncallescalationpolicy_changelist",
    "services": "admin:oncall_oncallservice_changelist",
}
SYNCED_COMMON = ["connection", "pagerduty_id", "name", "html_link", "synced_at", "deleted_upstream_at"]
VIEW_ONCALL = ("oncall.view_oncallschedule", "oncall.view_oncallescalationpolicy")
RELATED_PREVIEW = 10
RELATED_PAGE = 50


GAP_STYLE = "color: #ba2121; font-weight: bold"


def _render_oncall(entries) -> str:
    if not entries:
        # Nobody on call is a coverage gap: said so, in the colour the who-is-on-call page uses.
        return format_html('<span class="oncall-gap" style="{}">gap: nobody on call</span>', GAP_STYLE)
    return format_html_join(
        "",
        "<div>{}{}{} <span class='quiet'>{}</span></div>",
        (
            (
                f"L{e.escalation_level}: " if e.escalation_level else "",
                e.user or e.user_pagerduty_id,
                " (override)" if e.override else "",
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
        return external_link(obj.html_url)


class MembershipByUserInline(ReadOnlyInline):
    model = TeamMembership
    fk_name = "user"
    fields = ["team", "team_pagerduty_id", "role"]
    readonly_fields = fields


class RelatedListsAdmin(ImportedAdmin):
    """Related rows that can run into thousands, shown read-only with no form fields at all.

    An inline formset posts hidden fields for every row, so a team of 2,000 members could not even be
    saved (DATA_UPLOAD_MAX_NUMBER_FIELDS). Instead the change page shows the first rows and links to a
    paged, searchable list at <id>/related/<name>/.
    """

    # name → (title, column headers, search fields)
    related_lists: dict[str, tuple[str, list[str], list[str]]] = {}

    def related_queryset(self, name: str, obj):
        raise NotImplementedError("subclasses say what each related list holds")

    def related_row(self, name: str, row) -> list:
        raise NotImplementedError("subclasses say how a related row is shown")

    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        view = self.admin_site.admin_view(self.related_view)
        return [
            path("<path:object_id>/related/<slug:name>/", view, name="{}_{}_related".format(*info)),
            *super().get_urls(),
        ]

    def related_url(self, obj, name: str) -> str:
        info = self.model._meta.app_label, self.model._meta.model_name
        return reverse("admin:{}_{}_related".format(*info), args=[obj.pk, name])

    def related_view(self, request, object_id, name):
        if not self.has_view_permission(request):
            raise PermissionDenied
        if name not in self.related_lists:
            raise Http404
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        title, headers, search = self.related_lists[name]
        rows = self.related_queryset(name, obj)
        query = request.GET.get("q", "").strip()[:100]
        if query:
            rows = rows.filter(reduce(or_, (Q(**{f"{f}__icontains": query}) for f in search)))
        page = Paginator(rows, RELATED_PAGE).get_page(request.GET.get("page"))
        info = self.model._meta.app_label, self.model._meta.model_name
        context = {
            **self.admin_site.each_context(request),
            "title": f"{title} of {obj}",
            "opts": self.model._meta,
            "original": obj,
            "change_url": reverse("admin:{}_{}_change".format(*info), args=[obj.pk]),
            "headers": headers,
            "rows": [self.related_row(name, row) for row in page],
            "page": page,
            "query": query,
        }
        return TemplateResponse(request, "admin/oncall/related_list.html", context)

    def related_preview(self, obj, name: str) -> str:
        if obj is None or obj.pk is None:
            return "—"
        title, headers, _search = self.related_lists[name]
        rows = self.related_queryset(name, obj)
        total = rows.count()
        head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
        body = format_html_join(
            "",
            "<tr>{}</tr>",
            (
                (format_html_join("", "<td>{}</td>", ((c,) for c in self.related_row(name, row))),)
                for row in rows[:RELATED_PREVIEW]
            ),
        )
        more = "search them" if total <= RELATED_PREVIEW else f"all {total:,}, paged and searchable"
        return format_html(
            '<p>{} {}. <a href="{}">{}</a></p><table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
            f"{total:,}",
            title.lower(),
            self.related_url(obj, name),
            more.capitalize(),
            head,
            body,
        )


def _user_link(user, fallback: str):
    if user is None:
        return fallback
    return format_html('<a href="{}">{}</a>', reverse("admin:oncall_oncalluser_change", args=[user.pk]), user)


@admin.register(OncallTeam)
class OncallTeamAdmin(RelatedListsAdmin):
    list_display = ["name", "pagerduty_id", "local_alias", "connection", "deleted_upstream_at"]
    synced_fields = ["description"]
    extra_readonly = ["members"]
    related_lists = {
        "members": (
            "Members",
            ["Name", "Email", "Role", "PagerDuty id"],
            ["user__name", "user__email", "user__pagerduty_id", "role"],
        )
    }

    def related_queryset(self, name, obj):
        return (
            TeamMembership.objects.filter(
                Q(team=obj) | Q(team__isnull=True, team_pagerduty_id=obj.pagerduty_id, user__connection=obj.connection)
            )
            .select_related("user")
            .order_by("user__name", "user__pagerduty_id")
        )

    def related_row(self, name, row):
        return [_user_link(row.user, row.user_id), row.user.email or "—", row.role or "—", row.user.pagerduty_id]

    @admin.display(description="Members")
    def members(self, obj):
        return self.related_preview(obj, "members")


def _contact_methods(methods) -> str:
    if not methods:
        return "—"
    return format_html_join(
        "",
        "<div>{}: {}{}</div>",
        ((m["type"], m["label"], f" — {m['address']}" if m["address"] else "") for m in methods),
    )


@admin.register(OncallUser)
class OncallUserAdmin(ImportedAdmin):
    list_display = ["name", "email", "role", "time_zone", "pagerduty_id", "connection", "deleted_upstream_at"]
    list_filter = [*ImportedAdmin.list_filter, "role"]
    search_fields = [*ImportedAdmin.search_fields, "email"]
    synced_fields = ["email", "time_zone", "role", "job_title"]
    extra_readonly = ["contact_methods_list"]
    inlines = [MembershipByUserInline]

    @admin.display(description="Contact methods")
    def contact_methods_list(self, obj):
        return _contact_methods(obj.contact_methods if obj else None)


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
    list_display = ["name", "kind", "time_zone", "pagerduty_id", "connection", "rendered_until", "deleted_upstream_at"]
    list_filter = [*ImportedAdmin.list_filter, "kind"]
    synced_fields = ["kind", "description", "time_zone", "team_ids", "rendered_since", "rendered_until"]
    extra_readonly = ["on_call_now", "overrides_list", "rotations_list"]
    inlines = [LayerInline]
    change_form_template = "admin/oncall/oncallschedule/change_form.html"

    @admin.display(description="Rotations (v3)")
    def rotations_list(self, obj):
        if obj is None or obj.kind != OncallSchedule.Kind.V3:
            return "— (a classic schedule: see its layers below)"
        intro = format_html(
            "<p class='help'>A v3 (shift-based) schedule has no layers: PagerDuty defines it as rotations of "
            "repeating events (RFC 5545 rules), kept here as PagerDuty sends them and not re-computed. Who is on "
            "call comes from PagerDuty's own computed shifts, imported for the synced window.</p>"
        )
        events = format_html_join(
            "",
            "<div><strong>{}</strong>: {} – {} ({}), {}; {} from {}{}</div>",
            (
                (
                    e["name"] or rotation["id"],
                    e["start_time"]["date_time"],
                    e["end_time"]["date_time"],
                    e["start_time"]["time_zone"],
                    ", ".join(e["recurrence"]),
                    e["assignment"]["type"].replace("_", " "),
                    ", ".join(m or "(empty)" for m in e["assignment"]["members"]),
                    f" until {e['effective_until']}" if e["effective_until"] else "",
                )
                for rotation in obj.rotations or []
                for e in rotation["events"]
            ),
        )
        return format_html("{}{}", intro, events or "no rotations")

    @admin.display(description="On call now")
    def on_call_now(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        note = selectors.oncall_window_note(schedule=obj)
        return note or _render_oncall(selectors.oncall_now(schedule=obj))

    @admin.display(description="Overrides")
    def overrides_list(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        upcoming = list(selectors.oncall_overrides_upcoming(schedule=obj)[:OVERRIDES_SHOWN])
        if not upcoming:
            return "none current or upcoming in the synced window"
        return format_html_join(
            "",
            "<div>{} – {} UTC: {}</div>",
            (
                (
                    e.start.strftime("%Y-%m-%d %H:%M"),
                    e.end.strftime("%Y-%m-%d %H:%M"),
                    _user_link(e.user, e.user_pagerduty_id),
                )
                for e in upcoming
            ),
        )

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "oncall_now_url": reverse("admin:oncall_now")}
        return super().changelist_view(request, extra_context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["may_override"] = request.user.has_perm(OVERRIDE_PERMISSION)
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def get_urls(self):
        return [
            path("now/", self.admin_site.admin_view(self.now_view), name="oncall_now"),
            path(
                "<path:object_id>/override/",
                self.admin_site.admin_view(self.override_view),
                name="oncall_oncallschedule_override",
            ),
            *super().get_urls(),
        ]

    @admin_permission_required(OVERRIDE_PERMISSION)
    def override_view(self, request, object_id):
        """Put someone on call on this schedule for a while (POST /schedules/{id}/overrides)."""
        schedule = get_object_or_404(
            OncallSchedule.objects.select_related("connection"), pk=ascii_integer(unquote(object_id)) or 0
        )
        form = {
            "user": request.POST.get("user", ""),
            "start": request.POST.get("start", "now"),
            "end": request.POST.get("end", "+12h"),
        }
        error, field, status = "", "", 200
        if request.method == "POST":
            try:
                override, adopted = oncall_override_create(
                    schedule=schedule, user=form["user"], start=form["start"], end=form["end"]
                )
            except DomainError as exc:
                error, field, status = str(exc), exc.field or "", 400
            except PagerDutyError as exc:
                error, status = f"PagerDuty: {exc}", 502
            else:
                messages.success(
                    request,
                    f"Override {override.get('id')} created on {schedule}: {override.get('start')} – "
                    f"{override.get('end')}{' (found after a lost answer, not sent twice)' if adopted else ''}. "
                    "The imported schedule shows it after the next sync; who is on call now (live) shows it at once.",
                )
                return HttpResponseRedirect(reverse("admin:oncall_oncallschedule_change", args=[schedule.pk]))
        elif request.method != "GET":
            return HttpResponseNotAllowed(["GET", "POST"])
        users = OncallUser.objects.filter(connection=schedule.connection, deleted_upstream_at__isnull=True)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Create an override on {schedule}",
            "opts": self.model._meta,
            "original": schedule,
            "form": form,
            "error": error,
            "error_field": field,
            "users": list(users.exclude(email="").order_by("name").values_list("name", "email")[:500]),
            "upcoming": list(selectors.oncall_overrides_upcoming(schedule=schedule)[:OVERRIDES_SHOWN]),
            "live_url": reverse("admin:oncall_now")
            + "?"
            + urlencode({"live": "1", "connection": schedule.connection_id, "q": schedule.name}),
        }
        return TemplateResponse(request, "admin/oncall/oncallschedule/override.html", context, status=status)

    def now_view(self, request):
        if not request.user.has_perms(VIEW_ONCALL):
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
        empty_levels = selectors.oncall_empty_levels(policies=policies, by_policy=by_policy, at=at)
        connections = list(PagerDutyConnection.objects.order_by("name"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Who is on call now",
            "opts": self.model._meta,
            "at": at,
            "query": query,
            "schedules": [(s, by_schedule[s.pk], selectors.oncall_window_note(schedule=s, at=at)) for s in schedules],
            "policies": [(p, by_policy[p.pk], empty_levels.get(p.pk, [])) for p in policies],
            "connections": connections,
            "connection_id": connection_id,
            "live": None,
            "live_since": request.GET.get("since", ""),
            "live_until": request.GET.get("until", ""),
        }
        if request.GET.get("live"):
            context["live"] = self._live(request, connections, connection_id, query, schedules, policies)
        return TemplateResponse(request, "admin/oncall/oncall_now.html", context)

    def _live(self, request, connections, connection_id, query, schedules, policies):
        """Ask PagerDuty: for the schedules and policies the search shows, or the whole account."""
        connection = next((c for c in connections if str(c.pk) == connection_id), None)
        if connection is None and len(connections) == 1:
            connection = connections[0]
        if connection is None:
            messages.error(request, "Choose a connection to ask PagerDuty.")
            return None
        # PagerDuty ANDs the two filters (and a schedule filter leaves out people a policy names directly):
        # ask about the policies the search found, else its schedules.
        policy_ids = [p.pagerduty_id for p in policies if p.connection_id == connection.pk] if query else []
        schedule_ids = (
            [] if policy_ids or not query else [s.pagerduty_id for s in schedules if s.connection_id == connection.pk]
        )
        try:
            since = _admin_time(request.GET.get("since"), "since")
            until = _admin_time(request.GET.get("until"), "until")
            return oncall_live_fetch(
                connection=connection,
                since=since,
                until=until,
                schedule_ids=schedule_ids,
                escalation_policy_ids=policy_ids,
            )
        except DomainError as exc:
            messages.error(request, f"{exc.field + ': ' if exc.field else ''}{exc}")
        except PagerDutyError as exc:
            messages.error(request, f"PagerDuty did not answer: {exc}")
        return None


def _admin_time(raw: str | None, field: str) -> datetime | None:
    """A datetime-local input, read as UTC (the page says so)."""
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise DomainError("Give a date and time, e.g. 2026-11-23T09:00.", field=field) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class RuleInline(ReadOnlyInline):
    model = EscalationRule
    fields = ["position", "escalation_delay_in_minutes", "targets_list"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("targets__user", "targets__schedule")

    @admin.display(description="targets")
    def targets_list(self, obj):
        return ", ".join(str(t) for t in obj.targets.all())


@admin.register(OncallEscalationPolicy)
class OncallEscalationPolicyAdmin(RelatedListsAdmin):
    list_display = ["name", "num_loops", "pagerduty_id", "connection", "deleted_upstream_at"]
    synced_fields = ["description", "num_loops", "on_call_handoff_notifications", "team_ids"]
    extra_readonly = ["on_call_now", "services_list"]
    inlines = [RuleInline]
    related_lists = {"services": ("Services", ["Name", "PagerDuty id", "Status"], ["name", "pagerduty_id", "status"])}

    def related_queryset(self, name, obj):
        return OncallService.objects.filter(escalation_policy=obj).order_by("name", "pk")

    def related_row(self, name, row):
        link = format_html('<a href="{}">{}</a>', reverse("admin:oncall_oncallservice_change", args=[row.pk]), row)
        return [link, row.pagerduty_id, row.status or "—"]

    @admin.display(description="Services")
    def services_list(self, obj):
        return self.related_preview(obj, "services")

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
        if request.method == "POST" or not self.has_view_permission(request) or run_pk is None:
            raise PermissionDenied
        return HttpResponseRedirect(reverse("admin:oncall_sync_run", args=[run_pk]))


@admin.register(Sync)
class SyncAdmin(admin.ModelAdmin):
    """The wizard and the run pages, under /admin/oncall/sync/; the wizard is for whoever may plan a
    sync (applying one needs oncall.apply_syncrun too), a run's page for whoever may see sync runs."""

    def has_module_permission(self, request):
        return request.user.has_perm(PLAN_PERMISSION)

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(PLAN_PERMISSION)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def _guard(self, view, permission):
        def guarded(request, *args, **kwargs):
            if not request.user.has_perm(permission):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return self.admin_site.admin_view(guarded)

    def get_urls(self):
        wizard = SyncWizardView.as_view(model_admin=self)
        return [
            path("", self._guard(wizard, PLAN_PERMISSION), name="oncall_sync_changelist"),
            path("<int:pk>/", self._guard(self.run_view, VIEW_RUN_PERMISSION), name="oncall_sync_run"),
            path(
                "<int:pk>/progress/",
                self._guard(self.progress_view, VIEW_RUN_PERMISSION),
                name="oncall_sync_progress",
            ),
            path("<int:pk>/retry/", self._guard(self.retry_view, APPLY_PERMISSION), name="oncall_sync_retry"),
        ]

    def retry_view(self, request, pk):
        """POST: apply a failed run's plan again, as it is."""
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:oncall_sync_run", args=[pk]))
        try:
            run = services.sync_run_retry_apply(sync_run_id=pk)
        except DomainError as exc:
            messages.error(request, str(exc))
        else:
            transaction.on_commit(lambda: tasks.sync_apply.delay(run.pk))
            messages.success(request, f"Sync #{run.pk} is being applied again, with the plan it had.")
        return HttpResponseRedirect(reverse("admin:oncall_sync_run", args=[pk]))

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
            "can_retry": run.status == SyncRun.Status.FAILED and bool(run.apply_requested_at),
            "retry_url": reverse("admin:oncall_sync_retry", args=[run.pk]),
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


# On the admin index and the On-call app page: who is on call now (the live part lists each
# person's next shift and contact methods).
admin.site.register_link("oncall", "Who is on call now", "admin:oncall_now", VIEW_ONCALL)
