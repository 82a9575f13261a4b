"""Read-only API over imported on-call data, with "who is on call now" (from the last sync, no PagerDuty call)."""

from datetime import datetime

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.response import Response

from apps.core.api_fields import StrictModelSerializer
from apps.core.query_params import query_boolean, query_datetime
from apps.oncall import selectors
from apps.oncall.models import OncallEscalationPolicy, OncallSchedule, OncallUser


class _ImportedSerializer(StrictModelSerializer):
    connection = serializers.SlugRelatedField(slug_field="name", read_only=True)
    # As PagerDuty sent it (possibly empty): plain text, not a promise of a well-formed URL.
    html_url = serializers.CharField(read_only=True)

    class Meta:
        fields = [
            "id",
            "connection",
            "pagerduty_id",
            "name",
            "local_alias",
            "notes",
            "html_url",
            "synced_at",
            "deleted_upstream_at",
        ]

    def get_extra_kwargs(self):
        # Imported from PagerDuty: this API only reads it, so no field carries input validation
        # (which the schema would otherwise document as constraints on stored values).
        extra = super().get_extra_kwargs()
        for name in self.Meta.fields:
            extra.setdefault(name, {})["read_only"] = True
        return extra


class OncallUserSerializer(_ImportedSerializer):
    teams = serializers.SerializerMethodField()

    class Meta(_ImportedSerializer.Meta):
        model = OncallUser
        fields = [*_ImportedSerializer.Meta.fields, "email", "time_zone", "role", "job_title", "teams"]

    def get_teams(self, obj) -> list[dict]:
        return [{"id": m.team_pagerduty_id, "role": m.role} for m in obj.memberships.all()]


class _OnCallNowMixin(serializers.Serializer):
    on_call_now = serializers.SerializerMethodField()

    def get_on_call_now(self, obj) -> list[dict]:
        entries = (self.context.get("on_call_now") or {}).get(obj.pk, [])
        return [e.as_dict() for e in entries]


class OncallScheduleSerializer(_OnCallNowMixin, _ImportedSerializer):
    class Meta(_ImportedSerializer.Meta):
        model = OncallSchedule
        fields = [
            *_ImportedSerializer.Meta.fields,
            "description",
            "time_zone",
            "team_ids",
            "rendered_since",
            "rendered_until",
            "on_call_now",
        ]


class OncallEscalationPolicySerializer(_OnCallNowMixin, _ImportedSerializer):
    rules = serializers.SerializerMethodField()

    class Meta(_ImportedSerializer.Meta):
        model = OncallEscalationPolicy
        fields = [
            *_ImportedSerializer.Meta.fields,
            "description",
            "num_loops",
            "team_ids",
            "rules",
            "on_call_now",
        ]

    def get_rules(self, obj) -> list[dict]:
        return [
            {
                "level": rule.position + 1,
                "escalation_delay_in_minutes": rule.escalation_delay_in_minutes,
                "targets": [{"type": t.target_type, "id": t.target_pagerduty_id} for t in rule.targets.all()],
            }
            for rule in obj.rules.all()
        ]


_FILTERS = [
    OpenApiParameter("connection", str, description="Only data imported through this connection (its name)"),
    OpenApiParameter("q", str, description="Name contains this text (any letter case)"),
    OpenApiParameter("include_deleted", OpenApiTypes.BOOL, description="Also objects deleted upstream"),
]
_INCLUDE_DELETED = _FILTERS[2]
_AT = OpenApiParameter(
    "at", OpenApiTypes.DATETIME, description="Who is on call at this time (ISO 8601 with a zone); default now"
)


class _ImportedViewSet(viewsets.ReadOnlyModelViewSet):
    """Filters: ?connection=<name>, ?q=<name contains>, ?include_deleted=true."""

    def get_queryset(self):
        qs = self.queryset.select_related("connection")
        params = self.request.query_params
        if params.get("connection"):
            qs = qs.filter(connection__name=params["connection"])
        if params.get("q"):
            qs = qs.filter(name__icontains=params["q"])
        if not query_boolean(self.request, "include_deleted"):
            qs = qs.filter(deleted_upstream_at__isnull=True)
        return qs.order_by("name", "pk")


@extend_schema_view(
    list=extend_schema(
        parameters=[*_FILTERS, OpenApiParameter("email", str, description="The user with this email (any case)")]
    ),
    retrieve=extend_schema(parameters=[_INCLUDE_DELETED]),
)
class OncallUserViewSet(_ImportedViewSet):
    """Imported PagerDuty users; ?email= finds one by email (any case)."""

    queryset = OncallUser.objects.prefetch_related("memberships")
    serializer_class = OncallUserSerializer

    def get_queryset(self):
        qs = super().get_queryset()
        if self.request.query_params.get("email"):
            qs = qs.filter(email__iexact=self.request.query_params["email"].strip())
        return qs


class _OnCallNowViewSet(_ImportedViewSet):
    """`on_call_now` is computed for the whole page at once; ?at=<ISO 8601 with zone> asks about another time."""

    def _at(self) -> datetime:
        return query_datetime(self.request, "at") or timezone.now()

    def _on_call(self, objects: list, at: datetime) -> dict:
        raise NotImplementedError("subclasses say how to compute who is on call")

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "on_call_now": getattr(self, "_on_call_now", {})}

    def list(self, request, *args, **kwargs):
        at = self._at()
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        objects = list(page if page is not None else queryset)
        self._on_call_now = self._on_call(objects, at)
        serializer = self.get_serializer(objects, many=True)
        return self.get_paginated_response(serializer.data) if page is not None else Response(serializer.data)

    def retrieve(self, request, *args, **kwargs):
        at = self._at()
        obj = self.get_object()
        self._on_call_now = self._on_call([obj], at)
        return Response(self.get_serializer(obj).data)


@extend_schema_view(
    list=extend_schema(parameters=[*_FILTERS, _AT]), retrieve=extend_schema(parameters=[_INCLUDE_DELETED, _AT])
)
class OncallScheduleViewSet(_OnCallNowViewSet):
    queryset = OncallSchedule.objects.all()
    serializer_class = OncallScheduleSerializer

    def _on_call(self, objects, at):
        return selectors.oncall_now_for_schedules(schedules=objects, at=at)


@extend_schema_view(
    list=extend_schema(parameters=[*_FILTERS, _AT]), retrieve=extend_schema(parameters=[_INCLUDE_DELETED, _AT])
)
class OncallEscalationPolicyViewSet(_OnCallNowViewSet):
    queryset = OncallEscalationPolicy.objects.prefetch_related("rules__targets")
    serializer_class = OncallEscalationPolicySerializer

    def _on_call(self, objects, at):
        return selectors.oncall_now_for_policies(policies=objects, at=at)
