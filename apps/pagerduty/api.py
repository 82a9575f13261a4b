from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.api_fields import StrictBooleanField, StrictCharField, StrictModelSerializer, StrictURLField
from apps.core.errors import Conflict
from apps.core.limits import PAGERDUTY_API_KEY_MAX
from apps.pagerduty import services, subscriptions
from apps.pagerduty.errors import PagerDutyError
from apps.pagerduty.models import Channel, PagerDutyConnection
from apps.pagerduty.validators import (
    DESTINATION_FIELDS,
    ROUTING_KEY_LENGTH,
    allowed_url_pattern,
    api_key_problem,
    routing_key_problem,
    validate_pagerduty_url,
)
from apps.pagerduty.webhooks import INCIDENT_EVENT_TYPES

# Spaces and line breaks around a pasted key are trimmed; the key itself is printable ASCII (a
# header value). The schema says exactly that, so a client knows what will be accepted.
_KEY_EDGE = "[ \\t\\r\\n]*"
_TRIMMED = " \t\r\n"


class _WriteOnlyKeyField(StrictCharField):
    """A credential: write-only; blank (or only spaces) on update keeps the stored one; a new
    object needs one. Subclasses say what it is called, how it is checked and what the schema admits."""

    missing = ""
    noun = ""
    key_pattern = ""  # one key, without the surrounding spaces the field trims

    def __init__(self, **kwargs):
        kwargs.setdefault("write_only", True)
        super().__init__(**kwargs)

    def problem(self, value: str) -> str | None:
        raise NotImplementedError

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        # On what was sent, before trimming: the documented maxLength is of the request's text.
        if len(value) > PAGERDUTY_API_KEY_MAX:
            raise serializers.ValidationError(f"Ensure this field has no more than {PAGERDUTY_API_KEY_MAX} characters.")
        value = value.strip(_TRIMMED)
        if not value and not self.allow_blank:
            raise serializers.ValidationError(self.missing)
        if value:
            problem = self.problem(value)
            if problem:
                raise serializers.ValidationError(f"This {self.noun} {problem}.")
        return value


class WriteOnlyKeyFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "apps.pagerduty.api._WriteOnlyKeyField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        key = f"{self.target.key_pattern}{_KEY_EDGE}"
        pattern = f"^{_KEY_EDGE}(?:{key})?$" if self.target.allow_blank else f"^{_KEY_EDGE}{key}$"
        return {"type": "string", "writeOnly": True, "maxLength": PAGERDUTY_API_KEY_MAX, "pattern": pattern}


class ApiKeyField(_WriteOnlyKeyField):
    missing = "A new connection needs an API key."
    noun = "API key"
    key_pattern = "[!-~]+"

    def problem(self, value):
        return api_key_problem(value)


class RoutingKeyField(_WriteOnlyKeyField):
    missing = "A new channel needs a routing key."
    noun = "routing key"
    key_pattern = f"[!-~]{{{ROUTING_KEY_LENGTH}}}"

    def problem(self, value):
        return routing_key_problem(value)


class PagerDutyURLField(StrictURLField):
    """A PagerDuty base URL a stored key may be sent to (PAGERDUTY_ALLOWED_HOSTS, https but for loopback)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 200)
        super().__init__(**kwargs)
        self.validators.append(validate_pagerduty_url)


class PagerDutyURLFieldSchema(OpenApiSerializerFieldExtension):
    target_class = PagerDutyURLField

    def map_serializer_field(self, auto_schema, direction):
        schema = {"type": "string", "maxLength": self.target.max_length}
        if direction == "request":
            schema["pattern"] = allowed_url_pattern()
        return schema


# A changed api_url or events_url needs the key in the same request (PagerDutyConnection.clean):
# a stored key never follows a URL it was not entered for. Sending either field counts as a change.
_URL_NEEDS_KEY = {
    "allOf": [
        {
            "anyOf": [
                {"not": {"required": [name]}},
                {"required": ["api_key"], "properties": {"api_key": {"type": "string", "pattern": "[!-~]"}}},
            ]
        }
        for name in DESTINATION_FIELDS
    ]
}


class PagerDutyConnectionSerializer(StrictModelSerializer):
    api_key = ApiKeyField(required=False, allow_blank=True)
    api_url = PagerDutyURLField(required=False, help_text="EU accounts: https://api.eu.pagerduty.com")
    events_url = PagerDutyURLField(required=False, help_text="EU accounts: https://events.eu.pagerduty.com")
    has_api_key = serializers.BooleanField(read_only=True)
    has_webhook_secret = serializers.SerializerMethodField(help_text="A webhook signing secret is stored (never shown)")
    pagerduty_resolve_resolves_incident = StrictBooleanField(
        required=False, help_text="A PagerDuty resolve of a linked incident resolves ours (off by default)"
    )
    openapi_extra = _URL_NEEDS_KEY

    class Meta:
        model = PagerDutyConnection
        fields = [
            "id",
            "name",
            "api_key",
            "has_api_key",
            "from_email",
            "api_url",
            "events_url",
            "subdomain",
            "pagerduty_resolve_resolves_incident",
            "has_webhook_secret",
            "webhook_subscription_id",
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "webhook_subscription_id",
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
            "created_at",
            "updated_at",
        ]

    def get_has_webhook_secret(self, obj) -> bool:
        return bool(obj.webhook_secret)

    def validate(self, attrs):
        if self.instance is None and not attrs.get("api_key"):
            raise serializers.ValidationError({"api_key": "A new connection needs an API key."})
        return attrs

    def create(self, validated_data):
        return services.connection_upsert(**validated_data)

    def update(self, instance, validated_data):
        data = {
            "name": instance.name,
            "from_email": instance.from_email,
            "api_url": instance.api_url,
            "events_url": instance.events_url,
            "subdomain": instance.subdomain,
            "pagerduty_resolve_resolves_incident": instance.pagerduty_resolve_resolves_incident,
            **validated_data,
        }
        if data["name"] != instance.name:
            raise Conflict("Renaming a connection would orphan the steps that use it.", field="name")
        return services.connection_upsert(**data)


class PagerDutyConnectionCreateSerializer(PagerDutyConnectionSerializer):
    api_key = ApiKeyField(help_text="REST API key; write-only")


class ConnectionTestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField(help_text="What PagerDuty answered, or why it could not be reached")


class WebhookSubscriptionCreateSerializer(serializers.Serializer):
    url = StrictCharField(
        max_length=subscriptions.URL_MAX,
        validators=[RegexValidator(subscriptions.WEBHOOK_URL.pattern, "An https URL (http only on localhost).")],
        help_text="Public URL PagerDuty delivers to, https (http only on localhost): …/webhooks/pagerduty/<name>/",
    )
    service_id = StrictCharField(
        required=False,
        max_length=32,
        allow_blank=True,
        validators=[RegexValidator(subscriptions.PAGERDUTY_ID_OR_BLANK, "A PagerDuty service id, like P1234AB.")],
        help_text="Only this service's incidents; empty: the whole account",
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=INCIDENT_EVENT_TYPES),
        required=False,
        max_length=len(INCIDENT_EVENT_TYPES),
        help_text="Event types; default (or empty) every incident event type",
    )


class WebhookSubscriptionSerializer(serializers.Serializer):
    id = serializers.CharField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    filter = serializers.DictField()
    active = serializers.BooleanField()
    temporarily_disabled = serializers.BooleanField()
    description = serializers.CharField(allow_blank=True)


class WebhookSubscriptionResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()
    subscription = WebhookSubscriptionSerializer(allow_null=True, help_text="Without its secret; null when not made")


class PagerDutyConnectionViewSet(viewsets.ModelViewSet):
    serializer_class = PagerDutyConnectionSerializer
    queryset = PagerDutyConnection.objects.all()
    action_permissions = {
        "list": ["pagerduty.view_pagerdutyconnection"],
        "retrieve": ["pagerduty.view_pagerdutyconnection"],
        "create": ["pagerduty.add_pagerdutyconnection"],
        "update": ["pagerduty.change_pagerdutyconnection"],
        "partial_update": ["pagerduty.change_pagerdutyconnection"],
        "destroy": ["pagerduty.delete_pagerdutyconnection"],
        "test": ["pagerduty.test_pagerdutyconnection"],
        "webhook_subscription": ["pagerduty.manage_webhooks_pagerdutyconnection"],
    }

    def get_serializer_class(self):
        return PagerDutyConnectionCreateSerializer if self.action == "create" else PagerDutyConnectionSerializer

    @extend_schema(
        request=None,
        responses={200: ConnectionTestResultSerializer},
        description="Ask PagerDuty which abilities the key has. The outcome is the answer: `ok` false, with "
        "PagerDuty's refusal or why it could not be reached in `message`, is still a 200 — the test ran.",
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        # Not a 502 when PagerDuty says no: the request to this API succeeded, and a client (or a
        # monitor) must not mistake a wrong key for this service being down.
        ok, message = services.connection_test(connection=self.get_object())
        return Response({"ok": ok, "message": message})

    @extend_schema(
        request=WebhookSubscriptionCreateSerializer,
        responses={201: WebhookSubscriptionResultSerializer, 200: WebhookSubscriptionResultSerializer},
        description="Create the connection's webhook subscription at PagerDuty (POST /webhook_subscriptions). Its "
        "signing secret, which PagerDuty shows only in this answer, is stored encrypted and never returned; a "
        "secret already stored is kept as the previous one, still accepted, until the next subscription. 201 when "
        "made; 200 with `ok` false and PagerDuty's refusal in `message` when PagerDuty refused or failed (the "
        "request to this API was valid).",
    )
    @action(detail=True, methods=["post"], url_path="webhook-subscription")
    def webhook_subscription(self, request, pk=None):
        connection = self.get_object()
        data = WebhookSubscriptionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            made = subscriptions.webhook_subscribe(connection=connection, **data.validated_data)
        except PagerDutyError as exc:
            return Response({"ok": False, "message": f"PagerDuty refused: {exc}", "subscription": None})
        message = f"Subscribed: PagerDuty delivers to {made['url']}; the signing secret is stored."
        return Response({"ok": True, "message": message, "subscription": made}, status=201)

    def perform_destroy(self, instance):
        subscriptions.connection_delete(connection=instance)


# --- Events API v2 channels ----------------------------------------------------------------------


class ChannelSerializer(StrictModelSerializer):
    routing_key = RoutingKeyField(required=False, allow_blank=True)
    events_url = PagerDutyURLField(required=False, help_text="EU accounts: https://events.eu.pagerduty.com")
    has_routing_key = serializers.BooleanField(read_only=True)
    # Not trimmed: the prefix is put before the summary as written, "[shop] " with its space.
    summary_prefix = StrictCharField(required=False, allow_blank=True, max_length=100, trim_whitespace=False)
    # A changed events_url needs the routing key in the same request (Channel.clean).
    openapi_extra = {
        "anyOf": [
            {"not": {"required": ["events_url"]}},
            {"required": ["routing_key"], "properties": {"routing_key": {"type": "string", "pattern": "[!-~]"}}},
        ]
    }

    class Meta:
        model = Channel
        fields = [
            "id",
            "name",
            "routing_key",
            "has_routing_key",
            "events_url",
            "summary_prefix",
            "default_source",
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["last_tested_at", "last_test_ok", "last_test_message", "created_at", "updated_at"]

    def validate(self, attrs):
        if self.instance is None and not attrs.get("routing_key"):
            raise serializers.ValidationError({"routing_key": "A new channel needs a routing key."})
        return attrs

    def create(self, validated_data):
        return services.channel_upsert(**validated_data)

    def update(self, instance, validated_data):
        data = {
            "name": instance.name,
            "events_url": instance.events_url,
            "summary_prefix": instance.summary_prefix,
            "default_source": instance.default_source,
            **validated_data,
        }
        if data["name"] != instance.name:
            raise Conflict("Renaming a channel would orphan the steps that use it.", field="name")
        return services.channel_upsert(**data)


class ChannelCreateSerializer(ChannelSerializer):
    routing_key = RoutingKeyField(help_text="Events API v2 integration key (32 characters); write-only")


class ChannelTestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField(help_text="What PagerDuty answered to the trigger and the resolve")


class ChannelViewSet(viewsets.ModelViewSet):
    serializer_class = ChannelSerializer
    queryset = Channel.objects.all()
    action_permissions = {
        "list": ["pagerduty.view_channel"],
        "retrieve": ["pagerduty.view_channel"],
        "create": ["pagerduty.add_channel"],
        "update": ["pagerduty.change_channel"],
        "partial_update": ["pagerduty.change_channel"],
        "destroy": ["pagerduty.delete_channel"],
        "test": ["pagerduty.test_channel"],
    }

    def get_serializer_class(self):
        return ChannelCreateSerializer if self.action == "create" else ChannelSerializer

    @extend_schema(
        request=None,
        responses={200: ChannelTestResultSerializer},
        description="Send a trigger event, then a resolve with the same dedup key. The outcome is the answer: "
        "`ok` false, with PagerDuty's refusal in `message`, is still a 200 — the test ran.",
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        ok, message = services.channel_test(channel=self.get_object())
        return Response({"ok": ok, "message": message})
