"""Read-only API over on-call data: the imported directory with "who is on call" from the last sync (no
PagerDuty call), and `oncall/now/`, which asks PagerDuty live."""

from datetime import datetime

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api_fields import StrictModelSerializer
from apps.core.errors import DomainError
from apps.core.query_params import query_boolean, query_datetime
from apps.oncall import selectors
from apps.oncall.live import MAX_IDS, PD_ID_PATTERN, oncall_live_fetch, oncall_snapshot_only
from apps.oncall.models import OncallEscalationPolicy, OncallSchedule, OncallUser
from apps.pagerduty.errors import PagerDutyError
from apps.pagerduty.models import PagerDutyConnection
from apps.pagerduty.selectors import connection_get


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
    action_permissions = {"list": ["oncall.view_oncalluser"], "retrieve": ["oncall.view_oncalluser"]}

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
    action_permissions = {"list": ["oncall.view_oncallschedule"], "retrieve": ["oncall.view_oncallschedule"]}

    def _on_call(self, objects, at):
        return selectors.oncall_now_for_schedules(schedules=objects, at=at)


@extend_schema_view(
    list=extend_schema(parameters=[*_FILTERS, _AT]), retrieve=extend_schema(parameters=[_INCLUDE_DELETED, _AT])
)
class OncallEscalationPolicyViewSet(_OnCallNowViewSet):
    queryset = OncallEscalationPolicy.objects.prefetch_related("rules__targets")
    serializer_class = OncallEscalationPolicySerializer
    action_permissions = {
        "list": ["oncall.view_oncallescalationpolicy"],
        "retrieve": ["oncall.view_oncallescalationpolicy"],
    }

    def _on_call(self, objects, at):
        return selectors.oncall_now_for_policies(policies=objects, at=at)


class CanViewOncall(BasePermission):
    """Reading on-call data, imported or live, is the Viewers' right (the view permissions of schedules and policies)."""

    message = "You do not have permission to read on-call data."

    def has_permission(self, request, view):
        return request.user.has_perms(("oncall.view_oncallschedule", "oncall.view_oncallescalationpolicy"))


def _time_param(params, name: str) -> datetime | None:
    if name not in params:
        return None
    raw = params.get(name)
    try:
        value = parse_datetime(raw)
    except ValueError:
        value = None
    if value is None or timezone.is_naive(value):
        raise ValidationError({name: ["Give a time in ISO 8601 with a zone, e.g. 2026-11-23T09:00:00Z."]})
    return value


def live_connection(name: str | None) -> PagerDutyConnection:
    """The named connection; without a name, the only one there is, else the one called "default"."""
    if name:
        return connection_get(name=name)
    only = list(PagerDutyConnection.objects.order_by("pk")[:2])
    return only[0] if len(only) == 1 else connection_get(name="default")


_IDS = {"type": "array", "maxItems": MAX_IDS, "items": {"type": "string", "pattern": PD_ID_PATTERN}}


class OncallNowView(APIView):
    """Who is on call, live from PagerDuty (GET /oncalls), with overrides, next shifts, contact methods and gaps."""

    permission_classes = [IsAuthenticated, CanViewOncall]
    extra_error_statuses = {404: "No PagerDuty connection has the name given in `connection`."}

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "connection", str, description="PagerDuty connection name (default: the only one); unknown: 404"
            ),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="ISO 8601 with a zone; default now"),
            OpenApiParameter(
                "until", OpenApiTypes.DATETIME, description="ISO 8601 with a zone; default since; at most 90 days"
            ),
            OpenApiParameter("schedule_ids", _IDS, description="PagerDuty schedule ids (also comma-separated)"),
            OpenApiParameter(
                "escalation_policy_ids", _IDS, description="PagerDuty escalation policy ids (also comma-separated)"
            ),
        ],
        responses={200: dict},
        description="Live from PagerDuty. When PagerDuty fails or refuses, the answer is still 200: "
        "`source` is `snapshot` (the imported answer from the last sync) and `notes` says why.",
    )
    def get(self, request):
        params = request.query_params
        try:
            connection = live_connection(params.get("connection"))
        except DomainError as exc:
            raise NotFound(str(exc)) from None
        since, until = _time_param(params, "since"), _time_param(params, "until")
        schedule_ids = [*params.getlist("schedule_ids"), *params.getlist("schedule_ids[]")]
        policy_ids = [*params.getlist("escalation_policy_ids"), *params.getlist("escalation_policy_ids[]")]
        try:
            live = oncall_live_fetch(
                connection=connection,
                since=since,
                until=until,
                schedule_ids=schedule_ids,
                escalation_policy_ids=policy_ids,
            )
        except PagerDutyError as exc:
            # Our request was valid (checked above); PagerDuty refusing or failing leaves the imported
            # answer, marked `source: snapshot` with the reason, rather than an error.
            return Response(
                oncall_snapshot_only(
                    connection=connection, since=since, until=until, schedule_ids=schedule_ids, reason=str(exc)
                )
            )
        return Response(live.as_dict())
