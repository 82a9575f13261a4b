import contextvars
import json
import uuid

import requests
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.forms.fields import InvalidJSONInput
from django.http import Http404, HttpResponse, HttpResponseBadRequest, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from apps.core.errors import DomainError
from apps.core.limits import RUNBOOK_MAX_STEPS
from apps.core.links import external_link
from apps.core.parsers import JsonBodyError, parse_json_bytes
from apps.core.permissions import admin_permission_required
from apps.incidents.admin import IncidentAdmin
from apps.incidents.models import Incident, IncidentStatus
from apps.incidents.selectors import incident_get, incident_number_from_search
from apps.pagerduty.models import Channel, PagerDutyConnection
from apps.pagerduty.webhooks import INCIDENT_EVENT_TYPES
from apps.runbooks import dryrun, run_display, services, templating
from apps.runbooks.admin_approvals import IncidentApprovalAdminMixin, RunApprovalAdminMixin
from apps.runbooks.describe import when_text
from apps.runbooks.executors import all_actions, stored_inputs
from apps.runbooks.executors.control import is_control
from apps.runbooks.models import (
    FINISHED,
    PagerDutyIncidentLink,
    Runbook,
    RunbookRun,
    Step,
    StepRun,
    StepRunExchange,
)
from apps.runbooks.selectors import step_run_exchanges
from apps.runbooks.timeline import incident_pagerduty_refresh, incident_timeline, timeline_markdown
from apps.runbooks.validation import (
    StepDraft,
    runbook_warnings,
    validate_pagerduty_variables,
    validate_steps,
    validate_trigger,
)
from apps.runbooks.versions import (
    runbook_version_ensure,
    runbook_version_get,
    runbook_version_latest,
    version_yaml,
    versions_diff,
)

try:
    from apps.oncall.models import OncallEscalationPolicy, OncallService, OncallUser
except ImportError:  # without imported on-call data the editor offers mapped services only
    OncallEscalationPolicy = OncallService = OncallUser = None

DRY_RUN_PERMISSION = "runbooks.dry_run_runbook"
VIEW_INCIDENT_PERMISSION = "incidents.view_incident"
CHANGE_INCIDENT_PERMISSION = "incidents.change_incident"
RUN_PERMISSION = "runbooks.run_runbook"
VERSIONS_PERMISSION = "runbooks.view_runbookversion"

# Enough for a datalist to be useful while typing; beyond that people search PagerDuty by name.
_IMPORTED_LIMIT = 500

STATUS_CHOICES = [(s, s) for s in IncidentStatus.values]
SEVERITY_CHOICES = [(n, f"SEV{n}") for n in range(5)]


class CommaListField(forms.CharField):
    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        return [part.strip() for part in (value or "").split(",") if part.strip()]


def _variables_help() -> str:
    activity = format_html_join(
        "",
        "<li><code>{{{{Activity.{}}}}}</code> — {}</li>",
        ((n, d) for n, (d, _) in templating.ACTIVITY_FIELDS.items()),
    )
    return format_html(
        "A JSON object of field → Mustache template. Variables: <ul>{}"
        "<li><code>{{{{pagerduty.incident_id}}}}</code> — linked PagerDuty incident</li>"
        "<li><code>{{{{steps.&lt;key&gt;.&lt;output&gt;}}}}</code> — outputs of earlier steps</li></ul>"
        "Fields per action: {}",
        activity,
        format_html_join("", "<br><b>{}</b>: {}", ((a.name, ", ".join(a.field_names)) for a in all_actions())),
    )


class StepInputsWidget(forms.Textarea):
    """The `with:` block as JSON — still what the form submits, so StepFormSet validates it as
    before. The editor script hides it and keeps it in sync with one labelled input per field."""

    def __init__(self, attrs=None):
        super().__init__(
            attrs={"rows": 8, "cols": 90, "class": "rb-inputs-json", "style": "font-family: monospace", **(attrs or {})}
        )


def _action_choices() -> list:
    grouped: dict[str, list] = {}
    for action in sorted(all_actions(), key=lambda a: is_control(a.name)):
        grouped.setdefault(action.category, []).append((action.name, action.label))
    return [("", "— choose an action —"), *grouped.items()]


class PrettyJSONField(forms.JSONField):
    def to_python(self, value):
        # Parsed with the API's bounds (depth, duplicate keys, NaN): Python's own parser raises
        # RecursionError — a 500 — on JSON a few thousand levels deep.
        if self.disabled or value in self.empty_values or isinstance(value, (list, dict, int, float)):
            return super().to_python(value)
        try:
            parse_json_bytes(str(value).encode("utf-8", "surrogatepass"))
        except JsonBodyError as exc:
            message = str(exc).replace("JSON parse error - ", "Not valid JSON: ")
            raise forms.ValidationError(message, code="invalid") from None
        return super().to_python(value)

    def bound_data(self, data, initial):
        # Re-displaying a refused value parses it again; the same bounds apply.
        if not self.disabled and isinstance(data, str):
            try:
                parse_json_bytes(data.encode("utf-8", "surrogatepass"))
            except JsonBodyError:
                return InvalidJSONInput(data)
        return super().bound_data(data, initial)

    def prepare_value(self, value):
        if isinstance(value, InvalidJSONInput):
            return value
        # Dumped once, here: a pre-dumped string would be encoded a second time into a JSON string.
        return json.dumps(value, indent=2, ensure_ascii=False)


class StepForm(forms.ModelForm):
    action = forms.ChoiceField(choices=[])
    inputs = PrettyJSONField(required=False, widget=StepInputsWidget())

    class Meta:
        model = Step
        fields = ["position", "key", "name", "action", "connection", "inputs", "on_failure"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = _action_choices()
        self.fields["inputs"].label = "Fields"
        self.fields["inputs"].help_text = _variables_help()

    def clean(self):
        cleaned = super().clean()
        if is_control(cleaned.get("action") or ""):
            cleaned["connection"] = ""  # control steps name no connection
        return cleaned

    def clean_inputs(self):
        value = self.cleaned_data.get("inputs") or {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Expected a JSON object: field → template")
        return stored_inputs(value)


class StepFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        forms_by_key, drafts = {}, []
        live = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        for form in sorted(live, key=lambda f: f.cleaned_data.get("position") or 0):
            data = form.cleaned_data
            if not data.get("key") or not data.get("action"):
                continue
            forms_by_key.setdefault(data["key"], form)
            drafts.append(StepDraft(data["key"], data["action"], data.get("inputs") or {}, data.get("on_failure")))
        runbook_name = getattr(self.instance, "slug", "") or "new runbook"
        per_field: dict[forms.BaseForm, dict] = {}
        on = getattr(self.instance, "trigger_on", "") or ""
        found = validate_pagerduty_variables(runbook=runbook_name, on=on, steps=drafts)
        for problem in [*found, *validate_steps(runbook=runbook_name, steps=drafts)]:
            form = forms_by_key.get(problem.step)
            if form is None:
                raise forms.ValidationError(str(problem))
            if problem.field == "action":
                form.add_error("action", problem.message)
            elif problem.field:
                form.add_error("inputs", f"{problem.field}: {problem.message}")
                per_field.setdefault(form, {}).setdefault(problem.field, []).append(problem.message)
            else:
                form.add_error(None, problem.message)
        # The editor script puts each message on its own field input after a failed save.
        for form, problems in per_field.items():
            form.fields["inputs"].widget.attrs["data-problems"] = json.dumps(problems, ensure_ascii=False)


class StepInline(admin.StackedInline):
    model = Step
    form = StepForm
    formset = StepFormSet
    extra = 0
    ordering = ["position"]
    fieldsets = [(None, {"fields": [("key", "name"), ("action", "connection", "on_failure"), "inputs", "position"]})]


class RunbookForm(forms.ModelForm):
    trigger_to = forms.MultipleChoiceField(choices=STATUS_CHOICES, required=False, widget=forms.CheckboxSelectMultiple)
    trigger_from = forms.MultipleChoiceField(
        choices=STATUS_CHOICES, required=False, widget=forms.CheckboxSelectMultiple
    )
    trigger_events = forms.MultipleChoiceField(
        choices=[(e, e) for e in INCIDENT_EVENT_TYPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="For on: pagerduty_event — which PagerDuty events; none ticked = any. "
        "Steps may then use {{PagerDuty.*}} (agent, status, note…).",
    )
    condition_severity = forms.TypedMultipleChoiceField(
        choices=SEVERITY_CHOICES, coerce=int, required=False, widget=forms.CheckboxSelectMultiple
    )
    condition_services = CommaListField(required=False, help_text="Comma-separated; empty = any service")
    condition_environments = CommaListField(required=False, help_text="Comma-separated; empty = any environment")
    version_comment = forms.CharField(
        required=False,
        max_length=300,
        label="Change note",
        help_text="Optional: recorded on the new version when this save changes the runbook.",
    )

    class Meta:
        model = Runbook
        fields = [
            "slug",
            "name",
            "description",
            "enabled",
            "trigger_on",
            "trigger_to",
            "trigger_from",
            "trigger_events",
            "condition_severity",
            "condition_services",
            "condition_environments",
        ]

    def clean(self):
        data = super().clean()
        for problem in validate_trigger(
            runbook=data.get("slug", ""),
            on=data.get("trigger_on"),
            to=data.get("trigger_to") or [],
            from_=data.get("trigger_from") or [],
            events=data.get("trigger_events") or [],
        ):
            self.add_error(None, problem.message)
        return data


# --- authoring helpers (metadata for the editor, JSON answers) -------------------------------------


def _incident_label(incident: Incident) -> str:
    return f"{incident.short_id} · SEV{incident.severity} · {incident.status} — {incident.title}"


def _recent_incidents(limit: int = 50) -> list[Incident]:
    return list(Incident.objects.order_by("-created_at")[:limit])


def authoring_metadata() -> dict:
    """Everything the step editor shows: actions and their fields, variables, connections with
    their mapped services, and incidents to preview with."""
    actions = [
        {
            "name": a.name,
            "label": a.label,
            "category": a.category,
            "description": a.description,
            "fields": [
                {
                    "name": f.name,
                    "label": f.label,
                    "help": f.help,
                    "required": f.required,
                    "default": f.default,
                    "choices": list(f.choices),
                    "example": f.example,
                    "kind": f.kind,
                    "ids": f.ids,
                }
                for f in a.fields
            ],
            "outputs": a.outputs,
            "control": is_control(a.name),
        }
        # The PagerDuty actions first, control steps after them, in the chooser.
        for a in sorted(all_actions(), key=lambda a: is_control(a.name))
    ]
    connections = [
        {
            "name": c.name,
            "from_email": c.from_email,
            "api_url": c.api_url,
            "services": _service_options(c),
            "responders": _responder_options(c),
        }
        for c in PagerDutyConnection.objects.prefetch_related("service_mappings").order_by("name")
    ]
    sample = dryrun.sample_incident()
    return {
        "actions": actions,
        "variables": {
            "Activity": [
                {"name": f"Activity.{name}", "description": description, "example": ex}
                for name, (description, ex) in templating.ACTIVITY_FIELDS.items()
            ],
            "PagerDuty": [
                {"name": f"pagerduty.{name}", "description": description, "example": ex}
                for name, (description, ex) in templating.PAGERDUTY_FIELDS.items()
            ]
            + [
                {"name": f"PagerDuty.{name}", "description": f"{description} (on: pagerduty_event)", "example": ex}
                for name, (description, ex) in templating.PAGERDUTY_EVENT_FIELDS.items()
            ],
        },
        "connections": connections,
        # Names and URLs only: a channel's routing key never leaves the server.
        "channels": [{"name": c.name, "events_url": c.events_url} for c in Channel.objects.order_by("name")],
        "sample": {"value": "sample", "label": f"Sample incident — {_incident_label(sample)}"},
        "incidents": [{"value": str(i.pk), "label": _incident_label(i)} for i in _recent_incidents()],
    }


def _imported(model, connection) -> list:
    if model is None:
        return []
    return list(
        model.objects.filter(connection=connection, deleted_upstream_at__isnull=True).order_by("name")[:_IMPORTED_LIMIT]
    )


def _service_options(connection: PagerDutyConnection) -> list[dict]:
    """Mapped services first (what an empty field resolves to), then services imported from PagerDuty."""
    options, seen = [], set()
    for mapping in connection.service_mappings.all():
        label = f"mapped from {mapping.service}" if mapping.service else "default service mapping"
        options.append({"id": mapping.pagerduty_service_id, "label": label})
        seen.add(mapping.pagerduty_service_id)
    for service in _imported(OncallService, connection):
        if service.pagerduty_id not in seen:
            options.append({"id": service.pagerduty_id, "label": f"{service} (imported)"})
    return options


def _responder_options(connection: PagerDutyConnection) -> list[dict]:
    policies = [
        {"id": p.pagerduty_id, "label": f"escalation policy: {p}"}
        for p in _imported(OncallEscalationPolicy, connection)
    ]
    users = [{"id": u.pagerduty_id, "label": f"user: {u} <{u.email}>"} for u in _imported(OncallUser, connection)]
    return policies + users


def _json_error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"message": message}, status=status)


def _draft_steps(payload) -> list[dryrun.StepSource]:
    steps = payload.get("steps") if isinstance(payload, dict) else None
    if not isinstance(steps, list):
        raise DomainError('Expected {"steps": [...], "incident": "<uuid>" or "sample": true}')
    if len(steps) > RUNBOOK_MAX_STEPS:
        raise DomainError(f"{len(steps)} steps; a runbook has at most {RUNBOOK_MAX_STEPS}")
    drafts = []
    for index, item in enumerate(steps, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("inputs", {}), dict):
            raise DomainError(f"Step {index}: expected an object with key, action, connection and inputs")
        drafts.append(
            dryrun.StepSource(
                key=str(item.get("key") or ""),
                action=str(item.get("action") or ""),
                connection=str(item.get("connection") or "default"),
                inputs=stored_inputs(item.get("inputs") or {}),
                on_failure=str(item.get("on_failure") or "stop"),
                name=str(item.get("name") or ""),
            )
        )
    return drafts


def _incident_choice(value) -> Incident:
    """`sample` or an incident id, as both editor and dry-run page send it."""
    if value in (None, "", "sample", True):
        return dryrun.sample_incident()
    try:
        incident = Incident.objects.filter(pk=uuid.UUID(str(value))).first()
    except ValueError:
        incident = None
    if incident is None:
        raise DomainError(f"No incident with id {value!r}", field="incident")
    return incident


def _body_bytes(body) -> str:
    """The body exactly as the engine's HTTP library puts it on the wire."""
    if body is None:
        return ""
    prepared = requests.Request("POST", "http://body.invalid/", json=body).prepare()
    raw = prepared.body
    return raw.decode() if isinstance(raw, bytes) else raw


@admin.register(Runbook)
class RunbookAdmin(admin.ModelAdmin):
    form = RunbookForm
    change_form_template = "admin/runbooks/runbook/change_form.html"
    list_display = ["slug", "name", "enabled", "runs_when", "updated_at"]
    list_filter = ["enabled", "trigger_on"]
    search_fields = ["slug", "name", "description"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [StepInline]
    readonly_fields = ["versions_summary"]
    fieldsets = [
        (None, {"fields": ["slug", "name", "description", "enabled"]}),
        ("Trigger", {"fields": ["trigger_on", "trigger_to", "trigger_from", "trigger_events"]}),
        (
            "Conditions (all must hold)",
            {"fields": ["condition_severity", "condition_services", "condition_environments"]},
        ),
    ]

    @admin.display(description="Runs when")
    def runs_when(self, obj):
        return when_text(obj)

    class Media:
        css = {"all": ["runbooks/editor.css"]}
        js = ["runbooks/editor.js"]

    def get_fieldsets(self, request, obj=None):
        versions = ["version_comment", "versions_summary"] if obj is not None else ["version_comment"]
        return [*self.fieldsets, ("Versions", {"fields": versions})]

    @admin.display(description="Saved versions")
    def versions_summary(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        versions = list(obj.versions.select_related("created_by").order_by("-number")[:5])
        if not versions:
            return "No version yet: the next save records version 1."
        rows = format_html_join(
            "",
            "<tr><td><a href='{}'>v{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    reverse("admin:runbooks_runbook_version", args=[obj.pk, v.number]),
                    v.number,
                    date_format(v.created_at, "DATETIME_FORMAT"),
                    v.created_by or "—",
                    v.comment or "",
                    format_html(
                        "<a href='{}?a={}&amp;b={}'>diff with v{}</a>",
                        reverse("admin:runbooks_runbook_versions", args=[obj.pk]),
                        v.number - 1,
                        v.number,
                        v.number - 1,
                    )
                    if v.number > 1
                    else "",
                )
                for v in versions
            ),
        )
        return format_html(
            "<table class='rb-versions'><tr><th>Version</th><th>Saved</th><th>By</th><th>Note</th><th></th></tr>{}"
            "</table><p><a href='{}'>All versions and diffs →</a></p>",
            rows,
            reverse("admin:runbooks_runbook_versions", args=[obj.pk]),
        )

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # After the inlines: the version must hold the steps as saved, not as they were.
        comment = form.cleaned_data.get("version_comment") or (
            "Edited in the admin" if change else "Created in the admin"
        )
        version, created = runbook_version_ensure(runbook=form.instance, user=request.user, comment=comment)
        if created:
            self.message_user(request, f"Saved as version {version.number}.", messages.INFO)
        steps = [StepDraft(s.key, s.action, s.inputs, s.on_failure) for s in form.instance.steps.all()]
        for warning in runbook_warnings(runbook=form.instance.slug, steps=steps):
            self.message_user(request, f"Warning: step {warning.step!r} {warning.message}", messages.WARNING)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["may_dry_run"] = request.user.has_perm(DRY_RUN_PERMISSION)
        context["may_run"] = request.user.has_perm(RUN_PERMISSION)
        context["runbook_editor_config"] = {
            "actionsUrl": reverse("admin:runbooks_runbook_authoring_actions"),
            "previewUrl": reverse("admin:runbooks_runbook_authoring_preview"),
        }
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    # --- extra pages ---------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "authoring/actions.json", view(self.authoring_actions_view), name="runbooks_runbook_authoring_actions"
            ),
            path("authoring/preview/", view(self.authoring_preview_view), name="runbooks_runbook_authoring_preview"),
            path("<path:object_id>/dry-run/", view(self.dry_run_view), name="runbooks_runbook_dry_run"),
            path("<path:object_id>/run/", view(self.run_view), name="runbooks_runbook_run"),
            path("<path:object_id>/versions/", view(self.versions_view), name="runbooks_runbook_versions"),
            path("<path:object_id>/versions/<int:number>/", view(self.version_view), name="runbooks_runbook_version"),
            *super().get_urls(),
        ]

    def authoring_actions_view(self, request):
        if not self.has_view_or_change_permission(request):
            return _json_error("You may not view runbooks", 403)
        return JsonResponse(authoring_metadata())

    def authoring_preview_view(self, request):
        # The editor previews drafts while someone writes a runbook: for those who may write one.
        if not (self.has_add_permission(request) or self.has_change_permission(request)):
            return _json_error("You may not edit runbooks", 403)
        if request.method != "POST":
            return _json_error("POST the draft steps as JSON", 405)
        try:
            payload = parse_json_bytes(request.body or b"{}")
        except JsonBodyError as exc:
            where = f"{exc.field}: " if exc.field else ""
            return _json_error(f"Not JSON: {where}{exc}", exc.status_code)
        try:
            steps = _draft_steps(payload)
            incident = _incident_choice(payload.get("incident") or ("sample" if payload.get("sample") else ""))
        except DomainError as exc:
            return _json_error(str(exc), 400)
        results = dryrun.steps_preview(steps=steps, incident=incident)
        return JsonResponse(
            {
                "incident": {"sample": dryrun.is_sample(incident), "label": _incident_label(incident)},
                "steps": [{k: v for k, v in r.items() if k != "field_errors"} for r in results],
            }
        )

    def _runbook_or_404(self, request, object_id) -> Runbook:
        runbook = self.get_object(request, unquote(object_id))
        if runbook is None:
            raise Http404(f"No runbook with id {object_id!r}")
        return runbook

    @admin_permission_required(DRY_RUN_PERMISSION)
    def dry_run_view(self, request, object_id):
        runbook = self._runbook_or_404(request, object_id)
        choice = request.GET.get("incident")
        results, error, incident = None, "", None
        if choice is not None:
            try:
                incident = _incident_choice(choice)
                results = dryrun.runbook_dry_run(
                    runbook=runbook,
                    incident=None if dryrun.is_sample(incident) else incident,
                    sample=dryrun.is_sample(incident),
                )
            except DomainError as exc:
                error = str(exc)
        for result in results or []:
            request_ = result.get("request") or {}
            result["body_pretty"] = json.dumps(request_.get("body"), indent=2, ensure_ascii=False)
            result["body_bytes"] = _body_bytes(request_.get("body"))
            result["placeholder_values"] = sorted({p["value"] for p in result["placeholders"]})
        version = runbook_version_latest(runbook=runbook)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": runbook,
            "title": f"Dry run: {runbook.name}",
            "runbook": runbook,
            "version": version,
            "sample": dryrun.sample_incident(),
            "sample_label": _incident_label(dryrun.sample_incident()),
            "incidents": [(str(i.pk), _incident_label(i)) for i in _recent_incidents()],
            "choice": choice or "sample",
            "incident": incident,
            "incident_label": _incident_label(incident) if incident is not None else "",
            "is_sample": incident is not None and dryrun.is_sample(incident),
            "results": results,
            "error": error,
        }
        return TemplateResponse(request, "admin/runbooks/runbook/dry_run.html", context)

    @admin_permission_required(VERSIONS_PERMISSION)
    def versions_view(self, request, object_id):
        runbook = self._runbook_or_404(request, object_id)
        versions = list(runbook.versions.select_related("created_by").order_by("-number"))
        diff, error, older, newer = [], "", None, None
        if len(versions) >= 2 or request.GET.get("a"):
            try:
                newer = runbook_version_get(runbook=runbook, number=request.GET.get("b") or versions[0].number)
                older = runbook_version_get(runbook=runbook, number=request.GET.get("a") or max(newer.number - 1, 1))
                diff = versions_diff(older=older, newer=newer)
            except DomainError as exc:
                error = str(exc)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": runbook,
            "title": f"Versions: {runbook.name}",
            "runbook": runbook,
            "versions": versions,
            "older": older,
            "newer": newer,
            "diff": diff,
            "error": error,
        }
        return TemplateResponse(request, "admin/runbooks/runbook/versions.html", context)

    @admin_permission_required(VERSIONS_PERMISSION)
    def version_view(self, request, object_id, number):
        runbook = self._runbook_or_404(request, object_id)
        try:
            version = runbook_version_get(runbook=runbook, number=number)
        except DomainError as exc:
            raise Http404(str(exc)) from None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": runbook,
            "title": f"{runbook.name} — version {version.number}",
            "runbook": runbook,
            "version": version,
            "yaml": version_yaml(version),
        }
        return TemplateResponse(request, "admin/runbooks/runbook/version.html", context)

    @admin_permission_required(RUN_PERMISSION)
    def run_view(self, request, object_id):
        """Run this runbook now on an incident (the API's POST runbooks/{slug}/run/)."""
        runbook = self._runbook_or_404(request, object_id)
        form = ManualRunForm(request.POST or None)
        status = 200
        if request.method == "POST":
            if form.is_valid():
                try:
                    event = services.runbook_run_manually(
                        runbook_id=runbook.pk,
                        incident_id=form.cleaned_data["incident"].pk,
                        actor=f"admin:{request.user.get_username()}",
                    )
                except DomainError as exc:
                    form.add_error(None, str(exc))
                else:
                    self.message_user(
                        request, f"{runbook} will run on {event.incident.short_id}: see its runs.", messages.SUCCESS
                    )
                    return redirect(
                        f"{reverse('admin:runbooks_runbookrun_changelist')}?incident__id__exact={event.incident_id}"
                    )
            status = 400
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": runbook,
            "title": f"Run now: {runbook.name}",
            "runbook": runbook,
            "form": form,
        }
        return TemplateResponse(request, "admin/runbooks/runbook/run.html", context, status=status)


class ManualRunForm(forms.Form):
    incident = forms.ModelChoiceField(
        queryset=Incident.objects.order_by("-created_at"),
        help_text="The run is recorded on this incident's timeline and in the audit log.",
    )


class ReadOnlyInline(admin.StackedInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class StepRunInline(ReadOnlyInline):
    model = StepRun
    fields = [
        ("key", "action", "status_label", "attempts"),
        ("started", "finished", "took"),
        "error",
        "rendered_pretty",
        "request_pretty",
        "response_pretty",
        "outputs_pretty",
        "exchanges_table",
    ]
    readonly_fields = [
        "key",
        "action",
        "status_label",
        "attempts",
        "started",
        "finished",
        "took",
        "error",
        "rendered_pretty",
        "request_pretty",
        "response_pretty",
        "outputs_pretty",
        "exchanges_table",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("exchanges")

    @admin.display(description="Status")
    def status_label(self, obj):
        return run_display.status_badge(obj.status)

    @admin.display(description="Started")
    def started(self, obj):
        return run_display.when(obj.started_at)

    @admin.display(description="Finished")
    def finished(self, obj):
        return run_display.when(obj.finished_at)

    @admin.display(description="Took")
    def took(self, obj):
        return run_display.duration(obj.started_at, obj.finished_at, status=obj.status)

    @admin.display(description="Rendered fields")
    def rendered_pretty(self, obj):
        return run_display.json_details(obj.rendered, summary=f"{len(obj.rendered)} fields", key=f"{obj.pk}-rendered")

    @admin.display(description="Request (secrets redacted)")
    def request_pretty(self, obj):
        sent = bool(step_run_exchanges(step_run=obj)["requests"])
        summary = run_display.request_summary(obj.request, sent=sent)
        return run_display.json_details(obj.request, summary=summary, key=f"{obj.pk}-request")

    @admin.display(description="Response (to this request)")
    def response_pretty(self, obj):
        summary = run_display.response_summary(obj.response, outputs=obj.outputs or {})
        return run_display.json_details(obj.response, summary=summary, key=f"{obj.pk}-response")

    @admin.display(description="Outputs")
    def outputs_pretty(self, obj):
        summary = ", ".join(f"{k}={v}" for k, v in list((obj.outputs or {}).items())[:3]) or "none"
        return run_display.json_details(obj.outputs, summary=summary[:160], key=f"{obj.pk}-outputs")

    @admin.display(description="HTTP exchanges")
    def exchanges_table(self, obj):
        return run_display.exchanges_tables(obj)


class PagerDutyLinkInline(admin.TabularInline):
    model = PagerDutyIncidentLink
    extra = 0
    can_delete = False
    fields = [
        "pagerduty_incident_id",
        "incident_number",
        "pagerduty_link",
        "service_id",
        "status",
        "urgency",
        "priority",
        "assignee_names",
        "escalation_level",
        "last_event_type",
        "last_event_at",
        "mirrored_at",
    ]
    readonly_fields = fields
    verbose_name_plural = "PagerDuty incidents (as PagerDuty last said)"

    @admin.display(description="Assignees")
    def assignee_names(self, obj):
        return ", ".join(a.get("summary") or a.get("id", "") for a in obj.assignees or []) or "—"

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="PagerDuty")
    def pagerduty_link(self, obj):
        return external_link(obj.html_url)


RERUN_PERMISSION = "runbooks.rerun_runbookrun"
# Display methods get only the object; the page's request (for what its buttons offer) rides here,
# per request, since the ModelAdmin instance is shared by every thread.
_current_request: contextvars.ContextVar = contextvars.ContextVar("runbooks_admin_request", default=None)
RERUN_LABELS = {
    services.RerunVersion.RECORDED: "Re-run from the failed step with the recorded version",
    services.RerunVersion.CURRENT: "Re-run from the failed step with the current version",
}


def _live_attrs(*, url: str, runs: list, regions: str):
    """The element runs.js watches: where to ask, the state drawn, the regions to swap."""
    return format_html(
        '<div data-rb-live="{}" data-rb-signature="{}" data-rb-active="{}" data-rb-live-regions="{}" hidden></div>',
        url,
        run_display.live_signature(runs),
        "true" if run_display.any_active(runs) else "false",
        regions,
    )


@admin.register(RunbookRun)
class RunbookRunAdmin(RunApprovalAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "runbook",
        "version_label",
        "incident",
        "event",
        "status_label",
        "took",
        "executions",
        "created",
    ]
    list_filter = ["status", "runbook"]
    search_fields = ["runbook__slug", "incident__title"]
    readonly_fields = ["overview", "runbook", "incident", "event"]
    fields = readonly_fields
    inlines = [StepRunInline]
    actions = ["rerun_from_failed", "rerun_from_failed_current"]

    class Media:
        css = {"all": ["runbooks/runs.css"]}
        js = ["runbooks/runs.js"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("runbook", "runbook_version", "incident", "event")

    def get_search_results(self, request, queryset, search_term):
        # People search by the id they read on a page: INC-12 finds that incident's runs.
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        number = incident_number_from_search(search_term)
        if number is not None:
            found |= queryset.filter(incident__number=number)
        return found, may_have_duplicates

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Run records are the account of what was sent to PagerDuty: kept unless the deployment
        # says otherwise (RUN_RECORDS_DELETABLE). Deleting a runbook or an incident that has runs
        # is refused for the same reason (the admin names the runs); disable a runbook instead.
        return settings.RUN_RECORDS_DELETABLE and super().has_delete_permission(request, obj)

    def has_rerun_permission(self, request):
        return request.user.has_perm(RERUN_PERMISSION)

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj):
        return run_display.status_badge(obj.status)

    @admin.display(description="Version", ordering="runbook_version__number")
    def version_label(self, obj):
        return f"v{obj.runbook_version.number}" if obj.runbook_version_id else "—"

    @admin.display(description="Took")
    def took(self, obj):
        return run_display.duration(obj.started_at, obj.finished_at, status=obj.status)

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj):
        return run_display.when(obj.created_at)

    @admin.display(description="Run")
    def overview(self, obj):
        """Status, version, times and the re-run choices at the top of the page; also what the
        live refresh watches and swaps while the run is in progress."""
        runs = list(RunbookRun.objects.filter(pk=obj.pk).prefetch_related("step_runs"))
        current = runbook_version_latest(runbook=obj.runbook)
        version = obj.runbook_version
        version_text = (
            format_html(
                '<a href="{}">v{}</a>',
                reverse("admin:runbooks_runbook_version", args=[obj.runbook_id, version.number]),
                version.number,
            )
            if version
            else "—"
        )
        if version and current and current.number != version.number:
            version_text = format_html(
                '{} · the runbook is now at <a href="{}">v{}</a> (<a href="{}">what changed</a>)',
                version_text,
                reverse("admin:runbooks_runbook_version", args=[obj.runbook_id, current.number]),
                current.number,
                reverse("admin:runbooks_runbook_versions", args=[obj.runbook_id])
                + f"?a={version.number}&b={current.number}",
            )
        buttons = ""
        request = _current_request.get()
        if request is not None and self.has_rerun_permission(request) and run_rerun_possible(obj):
            rerun_url = reverse("admin:runbooks_runbookrun_rerun", args=[obj.pk])
            buttons = format_html(
                '<div class="rb-run-actions"><a class="button" id="rb-rerun-recorded" href="{}?version=recorded">{} '
                '(v{})</a><a class="button" id="rb-rerun-current" href="{}?version=current">{} (v{})</a></div>',
                rerun_url,
                RERUN_LABELS["recorded"],
                version.number if version else "?",
                rerun_url,
                RERUN_LABELS["current"],
                current.number if current else "?",
            )
        return format_html(
            '<div id="rb-run-overview" class="rb-run-overview">{}<dl>'
            '<dt>Status</dt><dd id="rb-run-status">{}</dd><dt>Runbook version</dt><dd id="rb-run-version">{}</dd>'
            "<dt>Created</dt><dd>{}</dd><dt>Started</dt><dd>{}</dd><dt>Finished</dt><dd>{}</dd>"
            "<dt>Took</dt><dd>{}</dd><dt>Executions</dt><dd>{}</dd><dt>Error</dt><dd id='rb-run-error'>{}</dd>"
            "</dl>{}{}</div>",
            _live_attrs(
                url=reverse("admin:runbooks_runbookrun_live") + f"?run={obj.pk}",
                runs=runs,
                regions="rb-run-overview step_runs-group",
            ),
            run_display.status_badge(obj.status),
            version_text,
            run_display.when(obj.created_at),
            run_display.when(obj.started_at),
            run_display.when(obj.finished_at),
            run_display.duration(obj.started_at, obj.finished_at, status=obj.status),
            obj.executions,
            obj.error or "—",
            buttons,
            mark_safe('<p class="rb-live-note">This page updates itself while the run is in progress.</p>')
            if run_display.any_active(runs)
            else "",
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The overview shows re-run buttons only to those who may use them.
        token = _current_request.set(request)
        try:
            response = super().change_view(request, object_id, form_url, extra_context)
            # Rendered here, while the request is known: a TemplateResponse renders lazily.
            return response.render() if hasattr(response, "render") else response
        finally:
            _current_request.reset(token)

    def _rerun_selected(self, request, queryset, version):
        for run in queryset:
            try:
                services.run_rerun_from_failed(run_id=run.pk, version=version)
                self.message_user(request, f"Run {run.pk}: {RERUN_LABELS[version].lower()}", messages.SUCCESS)
            except DomainError as exc:
                self.message_user(request, f"Run {run.pk}: {exc}", messages.WARNING)

    @admin.action(description=RERUN_LABELS["recorded"], permissions=["rerun"])
    def rerun_from_failed(self, request, queryset):
        self._rerun_selected(request, queryset, services.RerunVersion.RECORDED)

    @admin.action(description=RERUN_LABELS["current"], permissions=["rerun"])
    def rerun_from_failed_current(self, request, queryset):
        self._rerun_selected(request, queryset, services.RerunVersion.CURRENT)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("live/", view(self.live_view), name="runbooks_runbookrun_live"),
            path("<path:object_id>/rerun/", view(self.rerun_view), name="runbooks_runbookrun_rerun"),
            *super().get_urls(),
        ]

    def live_view(self, request):
        """Where runs.js asks whether a run (or an incident's runs) changed: statuses only."""
        if not self.has_view_permission(request):
            return _json_error("You may not view runs", 403)
        runs = RunbookRun.objects.prefetch_related("step_runs").order_by("created_at")
        if "run" in request.GET:
            try:
                runs = runs.filter(pk=int(request.GET["run"]))
            except ValueError:
                return _json_error("run must be a run id (a number)", 400)
        elif "incident" in request.GET:
            try:
                incident = incident_get(ref=request.GET["incident"])
            except DomainError as exc:
                return _json_error(str(exc), exc.status_code)
            runs = runs.filter(incident=incident)
        else:
            return _json_error("Give ?run=<id> or ?incident=<id>", 400)
        runs = list(runs[:LIVE_RUNS_MAX])
        return JsonResponse(
            {
                "signature": run_display.live_signature(runs),
                "active": run_display.any_active(runs),
                "runs": [{"id": run.pk, "status": run.status} for run in runs],
            }
        )

    @admin_permission_required(RERUN_PERMISSION)
    def rerun_view(self, request, object_id):
        """Confirm, then re-run: says which version's steps will run and from which step."""
        run = self.get_object(request, unquote(object_id))
        if run is None:
            raise Http404(f"No run with id {object_id!r}")
        version = request.POST.get("version") or request.GET.get("version") or services.RerunVersion.RECORDED
        if version not in services.RerunVersion.CHOICES:
            return HttpResponseBadRequest(f"version must be recorded or current, not {version[:40]!r}")
        error = ""
        if request.method == "POST":
            try:
                services.run_rerun_from_failed(run_id=run.pk, version=version)
            except DomainError as exc:
                error = str(exc)
            else:
                self.message_user(request, f"Run {run.pk}: {RERUN_LABELS[version].lower()}.", messages.SUCCESS)
                return redirect(reverse("admin:runbooks_runbookrun_change", args=[run.pk]))
        current = runbook_version_latest(runbook=run.runbook)
        first_failed = run_first_failed(run)
        if version == services.RerunVersion.CURRENT:
            steps = [(step.key, step.name, step.action) for step in run.runbook.steps.order_by("position", "id")]
        else:
            steps = [(s.key, s.name, s.action) for s in run.step_runs.order_by("position")]
        succeeded = set(run.step_runs.filter(status="succeeded").values_list("key", flat=True))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": run,
            "title": RERUN_LABELS[version],
            "run": run,
            "version": version,
            "recorded": run.runbook_version,
            "current": current,
            "first_failed": first_failed,
            "steps": [(key, name, action, key in succeeded) for key, name, action in steps],
            "possible": run_rerun_possible(run),
            "error": error,
            "label": RERUN_LABELS[version],
        }
        return TemplateResponse(request, "admin/runbooks/runbookrun/rerun.html", context, status=400 if error else 200)


LIVE_RUNS_MAX = 200


def run_first_failed(run):
    return run.step_runs.filter(status__in=["failed", "cancelled"]).order_by("position").first()


def run_rerun_possible(run) -> bool:
    return run.status in FINISHED and run_first_failed(run) is not None


@admin.register(StepRunExchange)
class StepRunExchangeAdmin(admin.ModelAdmin):
    list_display = ["id", "step_run", "method", "url", "status", "attempt", "duration_ms", "created_at"]
    list_filter = ["status", "method"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return settings.RUN_RECORDS_DELETABLE and super().has_delete_permission(request, obj)


class RunInline(admin.TabularInline):
    model = RunbookRun
    extra = 0
    can_delete = False
    fields = ["runbook", "event", "status_label", "error", "created", "took"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="Status")
    def status_label(self, obj):
        return run_display.status_badge(obj.status)

    @admin.display(description="Created")
    def created(self, obj):
        return run_display.when(obj.created_at)

    @admin.display(description="Took")
    def took(self, obj):
        return run_display.duration(obj.started_at, obj.finished_at, status=obj.status)


# Incidents show their runs and PagerDuty links. The incidents app cannot know about runbooks
# (dependencies point one way), so runbooks extends the incident admin instead.
admin.site.unregister(Incident)


@admin.register(Incident)
class IncidentWithRunsAdmin(IncidentApprovalAdminMixin, IncidentAdmin):
    inlines = [*IncidentAdmin.inlines, PagerDutyLinkInline, RunInline]
    readonly_fields = [*IncidentAdmin.readonly_fields, "runs_panel", "timeline_panel"]

    class Media:
        css = {"all": ["runbooks/runs.css"]}
        js = ["runbooks/runs.js"]

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        panels = ("runs_panel", "timeline_panel")
        fields = [f for f in fields if f not in panels]
        return [*fields, *panels] if obj is not None else fields

    @admin.display(description="Timeline and PagerDuty")
    def timeline_panel(self, obj):
        """The timeline page, and re-reading PagerDuty's state of each linked incident now."""
        if obj is None or obj.pk is None:
            return "—"
        parts = [
            format_html(
                '<a class="button" id="rb-incident-timeline" href="{}">Timeline</a> '
                '<a href="{}?format=markdown">Markdown (post-mortem draft)</a>',
                reverse("admin:incidents_incident_timeline", args=[obj.pk]),
                reverse("admin:incidents_incident_timeline", args=[obj.pk]),
            )
        ]
        request = _current_request.get()
        if (
            request is not None
            and request.user.has_perm(CHANGE_INCIDENT_PERMISSION)
            and PagerDutyIncidentLink.objects.filter(incident=obj).exists()
        ):
            # Inside the change form: formaction posts the form's CSRF token to the refresh view.
            parts.append(
                format_html(
                    ' <button type="submit" class="button" id="rb-refresh-pagerduty" formaction="{}" '
                    'formmethod="post" formnovalidate name="_refresh_pagerduty">Refresh from PagerDuty</button>',
                    reverse("admin:incidents_incident_refresh_pagerduty", args=[obj.pk]),
                )
            )
        return format_html("<div>{}{}</div>", parts[0], parts[1] if len(parts) > 1 else "")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        token = _current_request.set(request)
        try:
            response = super().change_view(request, object_id, form_url, extra_context)
            # Rendered here, while the request is known: a TemplateResponse renders lazily.
            return response.render() if hasattr(response, "render") else response
        finally:
            _current_request.reset(token)

    @admin.display(description="Runbook runs")
    def runs_panel(self, obj):
        """The runs the incident's last change started, live while they are in progress, and the
        way to run any enabled runbook by hand."""
        if obj is None or obj.pk is None:
            return "—"
        last = obj.events.order_by("-created_at", "-id").first()
        runs = list(
            RunbookRun.objects.filter(event=last)
            .select_related("runbook", "runbook_version")
            .prefetch_related("step_runs")
            if last is not None
            else []
        )
        watched = list(RunbookRun.objects.filter(incident=obj).prefetch_related("step_runs"))
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:runbooks_runbookrun_change", args=[run.pk]),
                    run.runbook,
                    f"v{run.runbook_version.number}" if run.runbook_version_id else "—",
                    run_display.status_badge(run.status),
                    run_display.duration(run.started_at, run.finished_at, status=run.status),
                    run.error[:200],
                )
                for run in runs
            ),
        )
        if last is None:
            heading = "No change recorded yet."
        else:
            heading = format_html("Runs started by the last change ({}, {}):", last, run_display.when(last.created_at))
        table = (
            format_html(
                "<table class='rb-incident-runs'><tr><th>Runbook</th><th>Version</th><th>Status</th><th>Took</th>"
                "<th>Error</th></tr>{}</table>",
                rows,
            )
            if runs
            else format_html("<p>{}</p>", "None: no enabled runbook matched it." if last is not None else "")
        )
        request = _current_request.get()
        run_link = ""
        if request is not None and request.user.has_perm(RUN_PERMISSION):
            run_link = format_html(
                '<p><a class="button" id="rb-run-a-runbook" href="{}">Run a runbook…</a></p>',
                reverse("admin:incidents_incident_run_runbook", args=[obj.pk]),
            )
        return format_html(
            '<div id="rb-incident-runs">{}<p>{}</p>{}{}</div>',
            _live_attrs(
                url=reverse("admin:runbooks_runbookrun_live") + f"?incident={obj.pk}",
                runs=watched,
                regions="rb-incident-runs runbook_runs-group",
            ),
            heading,
            table,
            run_link,
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/run-runbook/", view(self.run_runbook_view), name="incidents_incident_run_runbook"),
            path("<path:object_id>/timeline/", view(self.timeline_view), name="incidents_incident_timeline"),
            path(
                "<path:object_id>/refresh-pagerduty/",
                view(self.refresh_pagerduty_view),
                name="incidents_incident_refresh_pagerduty",
            ),
            *super().get_urls(),
        ]

    @admin_permission_required(VIEW_INCIDENT_PERMISSION)
    def timeline_view(self, request, object_id):
        """The incident's timeline (as GET /api/v1/incidents/{id}/timeline/), PagerDuty's log read live."""
        incident = self.get_object(request, unquote(object_id))
        if incident is None:
            raise Http404(f"No incident with id {object_id[:60]!r}")
        timeline = incident_timeline(incident=incident)
        if request.GET.get("format") == "markdown":
            return HttpResponse(timeline_markdown(timeline), content_type="text/markdown; charset=utf-8")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": incident,
            "title": f"Timeline of {incident.short_id}",
            "incident": incident,
            "timeline": timeline,
        }
        return TemplateResponse(request, "admin/incidents/incident/timeline.html", context)

    @admin_permission_required(CHANGE_INCIDENT_PERMISSION)
    def refresh_pagerduty_view(self, request, object_id):
        """Re-read every linked PagerDuty incident now (POST only: it writes the mirror)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        incident = self.get_object(request, unquote(object_id))
        if incident is None:
            raise Http404(f"No incident with id {object_id[:60]!r}")
        said = incident_pagerduty_refresh(incident=incident)
        failed = any("could not" in line or "not read" in line for line in said)
        self.message_user(
            request,
            " ".join(said) or "No PagerDuty incident is linked.",
            messages.WARNING if failed else messages.SUCCESS,
        )
        return redirect(reverse("admin:incidents_incident_change", args=[incident.pk]))

    @admin_permission_required(RUN_PERMISSION)
    def run_runbook_view(self, request, object_id):
        """Any enabled runbook on this incident: choose, see the dry run, then confirm."""
        incident = self.get_object(request, unquote(object_id))
        if incident is None:
            raise Http404(f"No incident with id {object_id!r}")
        runbooks = list(Runbook.objects.filter(enabled=True).order_by("name"))
        slug = request.POST.get("runbook") or request.GET.get("runbook") or ""
        runbook = next((rb for rb in runbooks if rb.slug == slug), None)
        error, results = "", None
        if slug and runbook is None:
            error = f"No enabled runbook {slug[:60]!r}"
        if request.method == "POST" and runbook is not None:
            try:
                services.runbook_run_manually(
                    runbook_id=runbook.pk, incident_id=incident.pk, actor=f"admin:{request.user.get_username()}"
                )
            except DomainError as exc:
                error = str(exc)
            else:
                self.message_user(request, f"{runbook} will run on {incident.short_id}.", messages.SUCCESS)
                return redirect(reverse("admin:incidents_incident_change", args=[incident.pk]))
        if runbook is not None and not error:
            try:
                results = dryrun.runbook_dry_run(runbook=runbook, incident=incident, sample=False)
            except DomainError as exc:
                error = str(exc)
            for result in results or []:
                request_ = result.get("request") or {}
                result["body_pretty"] = json.dumps(request_.get("body"), indent=2, ensure_ascii=False)
        version = runbook_version_latest(runbook=runbook) if runbook is not None else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": incident,
            "title": f"Run a runbook on {incident.short_id}",
            "incident": incident,
            "runbooks": runbooks,
            "runbook": runbook,
            "version": version,
            "results": results,
            "error": error,
            "may_confirm": runbook is not None and results is not None and not error,
        }
        status = 400 if error else 200
        return TemplateResponse(request, "admin/incidents/incident/run_runbook.html", context, status=status)
