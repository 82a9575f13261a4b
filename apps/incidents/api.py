import uuid

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.response import Response

from apps.incidents import services
from apps.incidents.models import Incident, IncidentEvent, IncidentStatus


class SeverityField(serializers.Field):
    """Accepts 1, "1" or "SEV1"; always answers with the number."""

    default_error_messages = {"invalid": "Expected a severity 0–4 or SEV0–SEV4, got {value!r}."}

    def to_internal_value(self, data):
        try:
            return services.parse_severity(data)
        except Exception:
            self.fail("invalid", value=data)

    def to_representation(self, value):
        return value


class StatusField(serializers.Field):
    default_error_messages = {"invalid": "Expected one of {choices}, got {value!r}."}

    def to_internal_value(self, data):
        try:
            return services.parse_status(data)
        except Exception:
            self.fail("invalid", value=data, choices=", ".join(IncidentStatus.values))

    def to_representation(self, value):
        return value


class IncidentEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = IncidentEvent
        fields = ["id", "kind", "from_status", "to_status", "from_severity", "to_severity", "actor", "created_at"]


class IncidentSerializer(serializers.ModelSerializer):
    short_id = serializers.CharField(read_only=True)
    severity = SeverityField(required=False)
    status = StatusField(required=False)
    url = serializers.CharField(read_only=True)
    events = IncidentEventSerializer(many=True, read_only=True)

    class Meta:
        model = Incident
        fields = [
            "id",
            "short_id",
            "title",
            "summary",
            "severity",
            "status",
            "service",
            "environment",
            "owner",
            "created_at",
            "updated_at",
            "resolved_at",
            "url",
            "events",
        ]
        read_only_fields = ["id", "created_at", "updated_at", "resolved_at"]


class IncidentViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Incidents. PATCH `status` or `severity` records a timeline event and fires matching runbooks."""

    serializer_class = IncidentSerializer
    queryset = Incident.objects.prefetch_related("events")
    http_method_names = ["get", "post", "patch", "head", "options"]
    action_permissions = {
        "list": ["incidents.view_incident"],
        "retrieve": ["incidents.view_incident"],
        "create": ["incidents.add_incident"],
        "partial_update": ["incidents.change_incident"],
    }

    def get_object(self):
        # Accept the UUID or the short id people read off a page (INC-42).
        lookup = str(self.kwargs["pk"])
        if lookup.upper().startswith("INC-") and lookup[4:].isdigit():
            return get_object_or_404(self.get_queryset(), number=int(lookup[4:]))
        try:
            return get_object_or_404(self.get_queryset(), pk=uuid.UUID(lookup))
        except ValueError:
            return get_object_or_404(self.get_queryset(), pk=None)

    def _actor(self) -> str:
        return f"api:{self.request.user.get_username()}"

    def perform_create(self, serializer):
        serializer.instance = services.incident_create(actor=self._actor(), **serializer.validated_data)

    @extend_schema(request=IncidentSerializer, responses=IncidentSerializer)
    def partial_update(self, request, *args, **kwargs):
        incident = self.get_object()
        serializer = self.get_serializer(incident, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        incident = services.incident_update(incident_id=incident.pk, actor=self._actor(), **serializer.validated_data)
        return Response(self.get_serializer(Incident.objects.prefetch_related("events").get(pk=incident.pk)).data)
