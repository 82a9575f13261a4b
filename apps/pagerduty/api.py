from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.pagerduty import services
from apps.pagerduty.models import PagerDutyConnection
from apps.pagerduty.validators import validate_api_key


class PagerDutyConnectionSerializer(serializers.ModelSerializer):
    # Write-only: accepted on create/update, never returned. Changing api_url or events_url needs it
    # in the same request (PagerDutyConnection.clean): a stored key never follows a changed URL.
    api_key = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=True, validators=[validate_api_key]
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
            raise serializers.ValidationError({"name": "Renaming a connection would orphan the steps that use it."})
        return services.connection_upsert(**data)


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

    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        ok, message = services.connection_test(connection=self.get_object())
        return Response({"ok": ok, "message": message}, status=200 if ok else 502)
