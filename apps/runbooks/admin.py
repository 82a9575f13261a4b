import json
import uuid

import requests
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.forms.fields import InvalidJSONInput
from django.http import Http404, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join

from apps.core.errors import DomainError
from apps.core.limits import RUNBOOK_MAX_STEPS
from apps.core.links import external_link
from apps.core.parsers import JsonBodyError, parse_json_bytes
from apps.core.permissions import admin_permission_required
from apps.incidents.admin import IncidentAdmin
from apps.incidents.models import Incident, IncidentStatus
from apps.pagerduty.models import PagerDutyConnection
from apps.pagerduty.webhooks import INCIDENT_EVENT_TYPES
from apps.runbooks import dryrun, services, templating
from apps.runbooks.executors import all_actions
from apps.runbooks.models import (
    PagerDutyIncidentLink,
    Runbook,
    RunbookRun,
    Step,
    StepRun,
    StepRunExchange,
)
from apps.runbooks.validation import StepDraft, validate_pagerduty_variables, validate_steps, validate_trigger
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
    for action in all_actions():
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

    def clean_inputs(self):
        value = self.cleaned_data.get("inputs") or {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Expected a JSON object: field → template")
        return {name: "" if v is None else str(v) for name, v in value.items()}


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
                }
                for f in a.fields
            ],
            "outputs": a.outputs,
        }
        for a in all_actions()
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
                inputs={str(k): "" if v is None else str(v) for k, v in (item.get("inputs") or {}).items()},
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
    list_display = ["slug", "name", "enabled", "trigger_on", "trigger_to", "condition_severity", "updated_at"]
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


def _pretty(value) -> str:
    return format_html("<pre style='white-space:pre-wrap'>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


class StepRunInline(ReadOnlyInline):
    model = StepRun
    fields = [
        ("key", "action", "status", "attempts"),
        ("started_at", "finished_at"),
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
        "status",
        "attempts",
        "started_at",
        "finished_at",
        "error",
        "rendered_pretty",
        "request_pretty",
        "response_pretty",
        "outputs_pretty",
        "exchanges_table",
    ]

    @admin.display(description="Rendered fields")
    def rendered_pretty(self, obj):
        return _pretty(obj.rendered)

    @admin.display(description="Request (secrets redacted)")
    def request_pretty(self, obj):
        return _pretty(obj.request)

    @admin.display(description="Response")
    def response_pretty(self, obj):
        return _pretty(obj.response)

    @admin.display(description="Outputs")
    def outputs_pretty(self, obj):
        return _pretty(obj.outputs)

    @admin.display(description="Every HTTP attempt")
    def exchanges_table(self, obj):
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{} ms</td><td>{}</td></tr>",
            (
                (e.attempt, e.method, e.url, e.status or "—", e.duration_ms, e.error or _short(e.response_body))
                for e in obj.exchanges.all()
            ),
        )
        return format_html(
            "<table><tr><th>#</th><th>Request</th><th>Status</th><th>Time</th><th>Answer</th></tr>{}</table>", rows
        )


def _short(body) -> str:
    text = json.dumps(body, ensure_ascii=False) if body is not None else ""
    return text if len(text) < 300 else text[:300] + "…"


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


@admin.register(RunbookRun)
class RunbookRunAdmin(admin.ModelAdmin):
    list_display = ["id", "runbook", "incident", "event", "status", "executions", "created_at", "finished_at"]
    list_filter = ["status", "runbook"]
    search_fields = ["runbook__slug", "incident__title"]
    readonly_fields = [
        "runbook",
        "runbook_version",
        "incident",
        "event",
        "status",
        "error",
        "executions",
        "created_at",
        "started_at",
        "finished_at",
    ]
    fields = readonly_fields
    inlines = [StepRunInline]
    actions = ["rerun_from_failed"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_rerun_permission(self, request):
        return request.user.has_perm("runbooks.rerun_runbookrun")

    @admin.action(description="Re-run from the failed step", permissions=["rerun"])
    def rerun_from_failed(self, request, queryset):
        for run in queryset:
            try:
                services.run_rerun_from_failed(run_id=run.pk)
                self.message_user(request, f"Run {run.pk}: re-running from the failed step", messages.SUCCESS)
            except DomainError as exc:
                self.message_user(request, f"Run {run.pk}: {exc}", messages.WARNING)


@admin.register(StepRunExchange)
class StepRunExchangeAdmin(admin.ModelAdmin):
    list_display = ["id", "step_run", "method", "url", "status", "attempt", "duration_ms", "created_at"]
    list_filter = ["status", "method"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RunInline(admin.TabularInline):
    model = RunbookRun
    extra = 0
    can_delete = False
    fields = ["runbook", "event", "status", "error", "created_at", "finished_at"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


# Incidents show their runs and PagerDuty links. The incidents app cannot know about runbooks
# (dependencies point one way), so runbooks extends the incident admin instead.
admin.site.unregister(Incident)


@admin.register(Incident)
class IncidentWithRunsAdmin(IncidentAdmin):
    inlines = [*IncidentAdmin.inlines, PagerDutyLinkInline, RunInline]
