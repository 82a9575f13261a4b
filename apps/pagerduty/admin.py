from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from apps.core.errors import DomainError
from apps.core.limits import PAGERDUTY_API_KEY_MAX
from apps.core.permissions import admin_permission_required
from apps.pagerduty.errors import PagerDutyError
from apps.pagerduty.models import Channel, PagerDutyConnection, ServiceMapping, UrgencyMapping
from apps.pagerduty.services import channel_test, connection_test
from apps.pagerduty.subscriptions import SECRET_MAX, URL_MAX, connection_delete, webhook_subscribe
from apps.pagerduty.validators import validate_api_key, validate_routing_key

TEST_PERMISSION = "pagerduty.test_pagerdutyconnection"
WEBHOOKS_PERMISSION = "pagerduty.manage_webhooks_pagerdutyconnection"


class PagerDutyConnectionForm(forms.ModelForm):
    # Not a model field of the form: the stored key is never loaded into it, so it cannot be rendered.
    new_api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        max_length=PAGERDUTY_API_KEY_MAX,
        validators=[validate_api_key],
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=(
            "REST API key. Write-only: it is encrypted and never shown again. Leave empty to keep the current key; "
            "changing the API or events URL needs the key again."
        ),
    )

    new_webhook_secret = forms.CharField(
        label="Webhook secret",
        required=False,
        strip=True,
        max_length=SECRET_MAX,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=(
            "Signing secret of a webhook subscription made in PagerDuty's UI. Write-only; the current one is kept as "
            "the previous secret (still accepted) until the next change. Subscribing from here stores it for you."
        ),
    )

    class Meta:
        model = PagerDutyConnection
        fields = ["name", "from_email", "api_url", "events_url", "subdomain", "pagerduty_resolve_resolves_incident"]

    def clean_new_webhook_secret(self):
        secret = self.cleaned_data.get("new_webhook_secret") or ""
        if secret and not secret.isprintable():
            raise forms.ValidationError("A webhook secret is printable text.")
        return secret

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.fields["new_api_key"].required = True
            self.fields["new_api_key"].help_text = "REST API key. Encrypted at rest and never shown after saving."
        elif "name" in self.fields:  # absent on a view-only page, where every field is read-only
            self.fields["name"].disabled = True  # steps refer to connections by name

    def clean(self):
        data = super().clean()
        # Before the model's own clean() runs (in _post_clean): a changed URL is accepted only with a key.
        if data.get("new_api_key"):
            self.instance.enter_api_key(data["new_api_key"])
        if data.get("new_webhook_secret") and data["new_webhook_secret"] != self.instance.webhook_secret:
            if self.instance.webhook_secret:
                self.instance.webhook_secret_previous = self.instance.webhook_secret
            self.instance.webhook_secret = data["new_webhook_secret"]
        return data


class WebhookSubscriptionForm(forms.Form):
    url = forms.CharField(
        label="Public URL",
        max_length=URL_MAX,
        help_text="Where PagerDuty delivers: https (http only on loopback), ending in /webhooks/pagerduty/<name>/.",
    )
    service_id = forms.CharField(label="Only this service", required=False, max_length=32)
    team_id = forms.CharField(label="Only this team", required=False, max_length=32)


class ServiceMappingInline(admin.TabularInline):
    model = ServiceMapping
    extra = 1


@admin.register(PagerDutyConnection)
class PagerDutyConnectionAdmin(admin.ModelAdmin):
    form = PagerDutyConnectionForm
    list_display = ["name", "api_url", "from_email", "key_status", "test_status", "last_tested_at"]
    readonly_fields = [
        "key_status",
        "webhook_status",
        "last_tested_at",
        "last_test_ok",
        "last_test_message",
    ]
    inlines = [ServiceMappingInline]
    change_form_template = "admin/pagerduty/pagerdutyconnection/change_form.html"

    def get_fields(self, request, obj=None):
        fields = ["name", "new_api_key", "from_email", "api_url", "events_url", "subdomain"]
        fields += ["pagerduty_resolve_resolves_incident", "new_webhook_secret"]
        return fields + (
            ["key_status", "webhook_status", "last_tested_at", "last_test_ok", "last_test_message"] if obj else []
        )

    @admin.display(description="Webhooks")
    def webhook_status(self, obj):
        if not obj or not obj.webhook_secret:
            return "no secret: webhooks from PagerDuty are refused (403)"
        rotating = " and the previous one (rotation)" if obj.webhook_secret_previous else ""
        subscription = (
            f"subscription {obj.webhook_subscription_id}" if obj.webhook_subscription_id else "made in PagerDuty"
        )
        return f"{subscription}; secret stored (encrypted){rotating}"

    def delete_model(self, request, obj):
        note = connection_delete(connection=obj)
        if note:
            self.message_user(request, note, messages.INFO)

    def delete_queryset(self, request, queryset):
        for connection in queryset:
            self.delete_model(request, connection)

    @admin.display(description="API key")
    def key_status(self, obj):
        if obj and obj.api_key_unreadable:
            return "stored, but it cannot be decrypted with FIELD_ENCRYPTION_KEY: enter it again"
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
            path(
                "<int:pk>/webhook-subscription/",
                self.admin_site.admin_view(self.webhook_subscription_view),
                name="pagerduty_pagerdutyconnection_webhook_subscription",
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["may_test_connection"] = request.user.has_perm(TEST_PERMISSION)
        context["may_manage_webhooks"] = request.user.has_perm(WEBHOOKS_PERMISSION)
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @admin_permission_required(TEST_PERMISSION)
    def test_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"], "Press the Test connection button on the connection's page.")
        connection = get_object_or_404(PagerDutyConnection, pk=pk)
        ok, message = connection_test(connection=connection)
        messages.add_message(request, messages.SUCCESS if ok else messages.ERROR, message)
        return redirect(reverse("admin:pagerduty_pagerdutyconnection_change", args=[pk]))

    @admin_permission_required(WEBHOOKS_PERMISSION)
    def webhook_subscription_view(self, request, pk):
        connection = get_object_or_404(PagerDutyConnection, pk=pk)
        back = reverse("admin:pagerduty_pagerdutyconnection_change", args=[pk])
        initial = {"url": settings.SITE_URL + reverse("pagerduty-webhook", args=[connection.name])}
        form = WebhookSubscriptionForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                made = webhook_subscribe(connection=connection, **form.cleaned_data)
            except (DomainError, PagerDutyError) as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(
                    request, f"Subscribed: PagerDuty delivers to {made['url']} ({made['id']}); the secret is stored."
                )
                return redirect(back)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": connection,
            "form": form,
            "title": f"Webhook subscription of {connection.name}",
            "back": back,
        }
        return TemplateResponse(request, "admin/pagerduty/pagerdutyconnection/webhook_subscription.html", context)


@admin.register(UrgencyMapping)
class UrgencyMappingAdmin(admin.ModelAdmin):
    list_display = ["severity", "urgency"]


@admin.register(ServiceMapping)
class ServiceMappingAdmin(admin.ModelAdmin):
    """Mappings are the runbook authors' (they decide where a page goes); connections are the
    PagerDuty admins'. So mappings have their own pages besides the inline on the connection."""

    list_display = ["connection", "service_label", "pagerduty_service_id"]
    list_filter = ["connection"]
    search_fields = ["service", "pagerduty_service_id"]

    @admin.display(description="Activity.service", ordering="service")
    def service_label(self, obj):
        return obj.service or "(default)"


CHANNEL_TEST_PERMISSION = "pagerduty.test_channel"


class ChannelForm(forms.ModelForm):
    # Not a model field of the form: the stored key is never loaded into it, so it cannot be rendered.
    new_routing_key = forms.CharField(
        label="Routing key",
        required=False,
        strip=True,
        max_length=PAGERDUTY_API_KEY_MAX,
        validators=[validate_routing_key],
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=(
            "Events API v2 integration key (32 characters). Write-only: it is encrypted and never shown again. "
            "Leave empty to keep the current key; changing the events URL needs the key again."
        ),
    )

    # Not stripped: the prefix is put before the summary as written, "[shop] " with its space.
    summary_prefix = forms.CharField(
        required=False, strip=False, max_length=100, help_text=Channel._meta.get_field("summary_prefix").help_text
    )

    class Meta:
        model = Channel
        fields = ["name", "events_url", "summary_prefix", "default_source"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.fields["new_routing_key"].required = True
            self.fields[
                "new_routing_key"
            ].help_text = (
                "Events API v2 integration key (32 characters). Encrypted at rest and never shown after saving."
            )
        elif "name" in self.fields:  # absent on a view-only page
            self.fields["name"].disabled = True  # steps refer to channels by name

    def clean(self):
        data = super().clean()
        if data.get("new_routing_key"):
            self.instance.enter_routing_key(data["new_routing_key"])
        return data


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = ["name", "events_url", "summary_prefix", "key_status", "test_status", "last_tested_at"]
    readonly_fields = ["key_status", "last_tested_at", "last_test_ok", "last_test_message"]
    change_form_template = "admin/pagerduty/channel/change_form.html"

    def get_fields(self, request, obj=None):
        fields = ["name", "new_routing_key", "events_url", "summary_prefix", "default_source"]
        return fields + (["key_status", "last_tested_at", "last_test_ok", "last_test_message"] if obj else [])

    @admin.display(description="Routing key")
    def key_status(self, obj):
        if obj and obj.routing_key_unreadable:
            return "stored, but it cannot be decrypted with FIELD_ENCRYPTION_KEY: enter it again"
        return "stored (encrypted)" if obj and obj.has_routing_key else "missing"

    @admin.display(description="Last test")
    def test_status(self, obj):
        if obj.last_test_ok is None:
            return "never tested"
        return format_html("{}", "ok" if obj.last_test_ok else f"failed: {obj.last_test_message}")

    def get_urls(self):
        return [
            path("<int:pk>/test/", self.admin_site.admin_view(self.test_view), name="pagerduty_channel_test"),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["may_test_channel"] = request.user.has_perm(CHANNEL_TEST_PERMISSION)
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @admin_permission_required(CHANNEL_TEST_PERMISSION)
    def test_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"], "Press the Test channel button on the channel's page.")
        channel = get_object_or_404(Channel, pk=pk)
        ok, message = channel_test(channel=channel)
        messages.add_message(request, messages.SUCCESS if ok else messages.ERROR, message)
        return redirect(reverse("admin:pagerduty_channel_change", args=[pk]))
