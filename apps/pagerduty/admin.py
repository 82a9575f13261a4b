from django import forms
from django.contrib import admin, messages
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils.html import format_html

from apps.core.limits import PAGERDUTY_API_KEY_MAX
from apps.pagerduty.models import PagerDutyConnection, ServiceMapping, UrgencyMapping
from apps.pagerduty.services import connection_test


class PagerDutyConnectionForm(forms.ModelForm):
    # Not a model field of the form: the stored key is never loaded into it, so it cannot be rendered.
    new_api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        max_length=PAGERDUTY_API_KEY_MAX,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="REST API key. Write-only: it is encrypted and never shown again. Leave empty to keep the current key.",
    )

    class Meta:
        model = PagerDutyConnection
        fields = ["name", "from_email", "api_url", "events_url", "subdomain"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.fields["new_api_key"].required = True
            self.fields["new_api_key"].help_text = "REST API key. Encrypted at rest and never shown after saving."
        else:
            self.fields["name"].disabled = True  # steps refer to connections by name

    def save(self, commit=True):
        if self.cleaned_data.get("new_api_key"):
            self.instance.api_key = self.cleaned_data["new_api_key"]
        return super().save(commit=commit)


class ServiceMappingInline(admin.TabularInline):
    model = ServiceMapping
    extra = 1


@admin.register(PagerDutyConnection)
class PagerDutyConnectionAdmin(admin.ModelAdmin):
    form = PagerDutyConnectionForm
    list_display = ["name", "api_url", "from_email", "key_status", "test_status", "last_tested_at"]
    readonly_fields = ["key_status", "last_tested_at", "last_test_ok", "last_test_message"]
    inlines = [ServiceMappingInline]
    change_form_template = "admin/pagerduty/pagerdutyconnection/change_form.html"

    def get_fields(self, request, obj=None):
        fields = ["name", "new_api_key", "from_email", "api_url", "events_url", "subdomain"]
        return fields + (["key_status", "last_tested_at", "last_test_ok", "last_test_message"] if obj else [])

    @admin.display(description="API key")
    def key_status(self, obj):
        return "stored (encrypted)" if obj and obj.has_api_key else "missing"

    @admin.display(description="Last test")
    def test_status(self, obj):
        if obj.last_test_ok is None:
            return "never tested"
        return format_html("{}", "ok" if obj.last_test_ok else f"failed: {obj.last_test_message}")

    def get_urls(self):
        return [
            path(
                "<int:pk>/test/",
                self.admin_site.admin_view(self.test_view),
                name="pagerduty_pagerdutyconnection_test",
            ),
            *super().get_urls(),
        ]

    def test_view(self, request, pk):
        connection = get_object_or_404(PagerDutyConnection, pk=pk)
        if request.method != "POST" or not self.has_change_permission(request, connection):
            messages.error(request, "Testing a connection needs a POST by someone allowed to change it.")
        else:
            ok, message = connection_test(connection=connection)
            messages.add_message(request, messages.SUCCESS if ok else messages.ERROR, message)
        return redirect(reverse("admin:pagerduty_pagerdutyconnection_change", args=[pk]))


@admin.register(UrgencyMapping)
class UrgencyMappingAdmin(admin.ModelAdmin):
    list_display = ["severity", "urgency"]
