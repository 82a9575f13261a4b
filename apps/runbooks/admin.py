import json

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from apps.core.errors import DomainError
from apps.incidents.admin import IncidentAdmin
from apps.incidents.models import Incident, IncidentStatus
from apps.runbooks import services, templating
from apps.runbooks.executors import all_actions
from apps.runbooks.models import (
    PagerDutyIncidentLink,
    Runbook,
    RunbookRun,
    Step,
    StepRun,
    StepRunExchange,
)
from apps.runbooks.validation import StepDraft, validate_steps, validate_trigger

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


class StepForm(forms.ModelForm):
    action = forms.ChoiceField(choices=[])
    inputs = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 90, "style": "font-family: monospace"}),
        encoder=None,
    )

    class Meta:
        model = Step
        fields = ["position", "key", "name", "action", "connection", "inputs", "on_failure"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = [(a.name, f"{a.category} → {a.label}") for a in all_actions()]
        self.fields["inputs"].help_text = _variables_help()
        if self.instance.pk and self.instance.inputs:
            self.initial["inputs"] = json.dumps(self.instance.inputs, indent=2, ensure_ascii=False)

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
        for problem in validate_steps(runbook=runbook_name, steps=drafts):
            form = forms_by_key.get(problem.step)
            message = f"{problem.field}: {problem.message}" if problem.field else problem.message
            if form is not None:
                form.add_error("inputs" if problem.field and problem.field != "action" else None, message)
            else:
                raise forms.ValidationError(str(problem))


class StepInline(admin.StackedInline):
    model = Step
    form = StepForm
    formset = StepFormSet
    extra = 0
    ordering = ["position"]


class RunbookForm(forms.ModelForm):
    trigger_to = forms.MultipleChoiceField(choices=STATUS_CHOICES, required=False, widget=forms.CheckboxSelectMultiple)
    trigger_from = forms.MultipleChoiceField(
        choices=STATUS_CHOICES, required=False, widget=forms.CheckboxSelectMultiple
    )
    condition_severity = forms.TypedMultipleChoiceField(
        choices=SEVERITY_CHOICES, coerce=int, required=False, widget=forms.CheckboxSelectMultiple
    )
    condition_services = CommaListField(required=False, help_text="Comma-separated; empty = any service")
    condition_environments = CommaListField(required=False, help_text="Comma-separated; empty = any environment")

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
        ):
            self.add_error(None, problem.message)
        return data


@admin.register(Runbook)
class RunbookAdmin(admin.ModelAdmin):
    form = RunbookForm
    list_display = ["slug", "name", "enabled", "trigger_on", "trigger_to", "condition_severity", "updated_at"]
    list_filter = ["enabled", "trigger_on"]
    search_fields = ["slug", "name", "description"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [StepInline]
    fieldsets = [
        (None, {"fields": ["slug", "name", "description", "enabled"]}),
        ("Trigger", {"fields": ["trigger_on", "trigger_to", "trigger_from"]}),
        (
            "Conditions (all must hold)",
            {"fields": ["condition_severity", "condition_services", "condition_environments"]},
        ),
    ]


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
    fields = ["pagerduty_incident_id", "incident_number", "html_url", "incident_key", "service_id", "status"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(RunbookRun)
class RunbookRunAdmin(admin.ModelAdmin):
    list_display = ["id", "runbook", "incident", "event", "status", "executions", "created_at", "finished_at"]
    list_filter = ["status", "runbook"]
    search_fields = ["runbook__slug", "incident__title"]
    readonly_fields = [
        "runbook",
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

    @admin.action(description="Re-run from the failed step", permissions=["view"])
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
