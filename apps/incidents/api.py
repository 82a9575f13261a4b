import re

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, serializers, viewsets
from rest_framework.response import Response

from apps.core import limits
from apps.core.api_fields import (
    MULTI_LINE,
    SINGLE_LINE,
    SINGLE_LINE_NOT_BLANK,
    StrictCharField,
    StrictEmailField,
    StrictModelSerializer,
    case_insensitive_pattern,
)
from apps.core.errors import DomainError
from apps.incidents import services
from apps.incidents.models import Incident, IncidentEvent, IncidentStatus, Severity
from apps.incidents.selectors import INCIDENT_REF_DESCRIPTION, INCIDENT_REF_PATTERN, incident_get

_SEVERITY_TEXT = "(?:[Ss][Ee][Vv])?[0-4]"
_STATUS_TEXT = "|".join(case_insensitive_pattern(value) for value in IncidentStatus.values)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": 4},
            {"type": "string", "pattern": f"^{_SEVERITY_TEXT}$"},
        ],
        "description": '0–4 (0 is the worst); requests may also say "SEV1" or "1". Answered as a number.',
    }
)
class SeverityField(serializers.Field):
    """Accepts 1, "1" or "SEV1"; always answers with the number."""

    default_error_messages = {"invalid": "Expected a severity 0–4 or SEV0–SEV4, got {value!r}."}

    def to_internal_value(self, data):
        if isinstance(data, int) and not isinstance(data, bool) and data in Severity.values:
            return data
        if isinstance(data, str) and re.fullmatch(_SEVERITY_TEXT, data):
            return services.parse_severity(data)
        shown = data if not isinstance(data, str) or len(data) <= 40 else data[:40] + "…"
        self.fail("invalid", value=shown)

    def to_representation(self, value):
        return value


@extend_schema_field(
    {
        "type": "string",
        "pattern": f"^(?:{_STATUS_TEXT})$",
        "description": f"One of {', '.join(IncidentStatus.values)} (any letter case in requests).",
        "example": IncidentStatus.INVESTIGATING,
    }
)
class StatusField(serializers.Field):
    default_error_messages = {"invalid": "Expected one of {choices}, got {value!r}."}

    def to_internal_value(self, data):
        if isinstance(data, str) and re.fullmatch(_STATUS_TEXT, data):
            return services.parse_status(data)
        shown = data if not isinstance(data, str) or len(data) <= 40 else data[:40] + "…"
        self.fail("invalid", value=shown, choices=", ".join(IncidentStatus.values))

    def to_representation(self, value):
        return value


@extend_schema_field({"type": "string", "pattern": INCIDENT_REF_PATTERN, "description": INCIDENT_REF_DESCRIPTION})
class IncidentRefField(serializers.Field):
    """An incident named in a request body by UUID or short id; resolves to the Incident.

    A well-formed reference to no incident answers 404 naming the field (the request was valid,
    the incident is missing); a malformed one is a 400."""

    def to_internal_value(self, data):
        try:
            return incident_get(ref=data, field=self.field_name)
        except DomainError as exc:
            if exc.status_code == 404:
                raise
            raise serializers.ValidationError(str(exc)) from None

    def to_representation(self, value):
        return str(value.pk)


class IncidentEventSerializer(StrictModelSerializer):
    class Meta:
        model = IncidentEvent
        fields = [
            "id",
            "kind",
            "from_status",
            "to_status",
            "from_severity",
            "to_severity",
            "actor",
            "created_at",
            "pagerduty_event_type",
            "details",
        ]


class IncidentSerializer(StrictModelSerializer):
    short_id = serializers.CharField(read_only=True)
    title = StrictCharField(max_length=limits.INCIDENT_TITLE_MAX, validators=[SINGLE_LINE_NOT_BLANK])
    summary = StrictCharField(
        max_length=limits.INCIDENT_SUMMARY_MAX, allow_blank=True, required=False, validators=[MULTI_LINE]
    )
    severity = SeverityField(required=False)
    status = StatusField(required=False)
    service = StrictCharField(
        max_length=limits.INCIDENT_SERVICE_MAX, allow_blank=True, required=False, validators=[SINGLE_LINE]
    )
    environment = StrictCharField(
        max_length=limits.INCIDENT_ENVIRONMENT_MAX, allow_blank=True, required=False, validators=[SINGLE_LINE]
    )
    owner = StrictEmailField(max_length=limits.INCIDENT_OWNER_MAX, allow_blank=True, required=False)
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
    lookup_schema = {"type": "string", "pattern": INCIDENT_REF_PATTERN}
    lookup_description = INCIDENT_REF_DESCRIPTION

    def get_object(self):
        # The UUID or the short id people read off a page (INC-42); anything else names no incident.
        lookup = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        try:
            incident = incident_get(ref=lookup, field="id", queryset=self.get_queryset())
        except DomainError:
            raise Http404(f"No incident {lookup[:60]}") from None
        self.check_object_permissions(self.request, incident)
        return incident

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
