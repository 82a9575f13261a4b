from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from apps.core.errors import DomainError
from apps.incidents import services
from apps.incidents.models import Incident, IncidentEvent
from apps.incidents.selectors import incident_number_from_search


class IncidentEventInline(admin.TabularInline):
    model = IncidentEvent
    extra = 0
    can_delete = False
    fields = [
        "created_at",
        "kind",
        "from_status",
        "to_status",
        "from_severity",
        "to_severity",
        "actor",
        "pagerduty_event_type",
        "pagerduty_said",
    ]
    readonly_fields = fields

    @admin.display(description="PagerDuty said")
    def pagerduty_said(self, obj):
        details = obj.details or {}
        said = [details.get("status", ""), details.get("note", "")]
        if details.get("echo_of_step"):
            said.append(f"(echo of our step {details['echo_of_step'].get('step', '')})")
        if details.get("superseded"):
            said.append("(older than the state shown; not applied)")
        return " ".join(part for part in said if part)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = ["short_id", "title", "severity_label", "status", "service", "environment", "owner", "created_at"]
    list_filter = ["status", "severity", "environment", "service"]
    search_fields = ["title", "summary", "service", "owner", "number"]
    readonly_fields = ["short_id", "created_at", "updated_at", "resolved_at"]
    fields = [
        "short_id",
        "title",
        "summary",
        ("severity", "status"),
        ("service", "environment"),
        "owner",
        ("created_at", "updated_at", "resolved_at"),
    ]
    inlines = [IncidentEventInline]

    def get_search_results(self, request, queryset, search_term):
        # The short id people read on a page (INC-12) finds its incident; "number" alone needs "12".
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        number = incident_number_from_search(search_term)
        if number is not None:
            found |= queryset.filter(number=number)
        return found, may_have_duplicates

    def save_model(self, request, obj, form, change):
        # Through the services, so a status or severity change is an event that fires runbooks.
        actor = f"admin:{request.user.get_username()}"
        data = {name: form.cleaned_data[name] for name in form.changed_data if name in form.cleaned_data}
        try:
            if change:
                updated = services.incident_update(incident_id=obj.pk, actor=actor, **data)
            else:
                updated = services.incident_create(actor=actor, **form.cleaned_data)
        except (DomainError, ValidationError) as exc:
            messages.error(request, str(exc))
            raise
        obj.pk, obj.number = updated.pk, updated.number
        obj._state.adding = False
