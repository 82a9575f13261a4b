from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.api_fields import StrictCharField, StrictModelSerializer
from apps.core.errors import Conflict
from apps.core.limits import PAGERDUTY_API_KEY_MAX
from apps.pagerduty import services
from apps.pagerduty.models import PagerDutyConnection
from apps.pagerduty.validators import validate_api_key


class PagerDutyConnectionSerializer(StrictModelSerializer):
    # Write-only: accepted on create/update, never returned. Blank on update keeps the stored key.
    # Changing api_url or events_url needs it in the same request (PagerDutyConnection.clean): a
    # stored key never follows a changed URL.
    api_key = StrictCharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=PAGERDUTY_API_KEY_MAX,
        validators=[validate_api_key],
    )
    has_api_key = serializers.BooleanField(read_only=True)

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
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["last_tested_at", "last_test_ok", "last_test_message", "created_at", "updated_at"]
        extra_kwargs = {"api_url": {"required": False}, "events_url": {"required": False}}

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
            **validated_data,
        }
        if data["name"] != instance.name:
            raise Conflict("Renaming a connection would orphan the steps that use it.", field="name")
        return services.connection_upsert(**data)


class PagerDutyConnectionCreateSerializer(PagerDutyConnectionSerializer):
    api_key = StrictCharField(
        write_only=True, min_length=1, max_length=PAGERDUTY_API_KEY_MAX, help_text="REST API key; write-only"
    )


class ConnectionTestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField(help_text="What PagerDuty answered, or why it could not be reached")


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
