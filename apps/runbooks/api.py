from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.incidents.models import Incident
from apps.incidents.services import incident_trigger_runbook
from apps.runbooks import services
from apps.runbooks.models import Runbook, RunbookRun, Step, StepRun, StepRunExchange


class StepSerializer(serializers.ModelSerializer):
    with_ = serializers.JSONField(source="inputs", read_only=True)

    class Meta:
        model = Step
        fields = ["key", "name", "position", "action", "connection", "with_", "on_failure"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["with"] = data.pop("with_")
        return data


class RunbookSerializer(serializers.ModelSerializer):
    trigger = serializers.SerializerMethodField()
    conditions = serializers.SerializerMethodField()
    steps = StepSerializer(many=True, read_only=True)

    class Meta:
        model = Runbook
        fields = [
            "slug",
            "name",
            "description",
            "enabled",
            "trigger",
            "conditions",
            "steps",
            "created_at",
            "updated_at",
        ]

    def get_trigger(self, runbook) -> dict:
        trigger = {"on": runbook.trigger_on}
        if runbook.trigger_to:
            trigger["to"] = runbook.trigger_to
        if runbook.trigger_from:
            trigger["from"] = runbook.trigger_from
        return trigger

    def get_conditions(self, runbook) -> dict:
        conditions = {}
        for name, value in (
            ("severity", runbook.condition_severity),
            ("services", runbook.condition_services),
            ("environments", runbook.condition_environments),
        ):
            if value:
                conditions[name] = value
        return conditions


class ExchangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = StepRunExchange
        fields = [
            "attempt",
            "method",
            "url",
            "request_headers",
            "request_body",
            "status",
            "response_headers",
            "response_body",
            "error",
            "duration_ms",
            "created_at",
        ]


class StepRunSerializer(serializers.ModelSerializer):
    exchanges = ExchangeSerializer(many=True, read_only=True)

    class Meta:
        model = StepRun
        fields = [
            "key",
            "name",
            "position",
            "action",
            "connection",
            "status",
            "rendered",
            "request",
            "response",
            "attempts",
            "error",
            "outputs",
            "started_at",
            "finished_at",
            "duration_ms",
            "exchanges",
        ]


class RunSerializer(serializers.ModelSerializer):
    runbook = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    incident_short_id = serializers.CharField(source="incident.short_id", read_only=True)
    event = serializers.CharField(source="event.__str__", read_only=True)
    step_runs = StepRunSerializer(many=True, read_only=True)

    class Meta:
        model = RunbookRun
        fields = [
            "id",
            "runbook",
            "incident",
            "incident_short_id",
            "event",
            "status",
            "error",
            "executions",
            "created_at",
            "started_at",
            "finished_at",
            "step_runs",
        ]


class ManualRunSerializer(serializers.Serializer):
    incident = serializers.UUIDField()


class RunbookViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = RunbookSerializer
    queryset = Runbook.objects.prefetch_related("steps")
    lookup_field = "slug"

    @extend_schema(request=ManualRunSerializer, responses={202: None})
    @action(detail=True, methods=["post"])
    def run(self, request, slug=None):
        """Run this runbook now on an incident (recorded on the incident's timeline)."""
        runbook = self.get_object()
        serializer = ManualRunSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        incident = get_object_or_404(Incident, pk=serializer.validated_data["incident"])
        event = incident_trigger_runbook(
            incident_id=incident.pk, runbook_slug=runbook.slug, actor=f"api:{request.user.get_username()}"
        )
        return Response({"event": event.pk, "incident": str(incident.pk)}, status=status.HTTP_202_ACCEPTED)


class RunViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = RunSerializer

    def get_queryset(self):
        queryset = RunbookRun.objects.select_related("runbook", "incident", "event").prefetch_related(
            "step_runs__exchanges"
        )
        incident = self.request.query_params.get("incident")
        if incident:
            try:
                queryset = queryset.filter(incident_id=serializers.UUIDField().to_internal_value(incident))
            except serializers.ValidationError:
                raise serializers.ValidationError({"incident": f"Not an incident id: {incident!r}"}) from None
        return queryset

    @extend_schema(parameters=[OpenApiParameter("incident", str, description="Incident UUID")])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=None, responses=RunSerializer)
    @action(detail=True, methods=["post"])
    def rerun(self, request, pk=None):
        """Re-run from the first failed step; steps that succeeded are not repeated."""
        run = services.run_rerun_from_failed(run_id=self.get_object().pk)
        return Response(self.get_serializer(run).data, status=status.HTTP_202_ACCEPTED)
