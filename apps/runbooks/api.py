from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.incidents.models import Incident
from apps.runbooks import services
from apps.runbooks.dryrun import runbook_dry_run
from apps.runbooks.loader import conditions_spec, trigger_spec
from apps.runbooks.models import Runbook, RunbookRun, RunbookVersion, Step, StepRun, StepRunExchange
from apps.runbooks.versions import runbook_version_latest


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
        return trigger_spec(runbook)

    def get_conditions(self, runbook) -> dict:
        return conditions_spec(runbook)


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
    runbook_version = serializers.SerializerMethodField(help_text="Number of the runbook version this run executed")
    incident_short_id = serializers.CharField(source="incident.short_id", read_only=True)
    event = serializers.CharField(source="event.__str__", read_only=True)
    step_runs = StepRunSerializer(many=True, read_only=True)

    class Meta:
        model = RunbookRun
        fields = [
            "id",
            "runbook",
            "runbook_version",
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

    def get_runbook_version(self, run) -> int | None:
        return run.runbook_version.number if run.runbook_version_id else None


class ManualRunSerializer(serializers.Serializer):
    incident = serializers.UUIDField()


class DryRunRequestSerializer(serializers.Serializer):
    incident = serializers.UUIDField(required=False, help_text="Incident to render the steps for")
    sample = serializers.BooleanField(required=False, default=False, help_text="Use the built-in sample incident")

    def validate(self, data):
        if bool(data.get("incident")) == bool(data.get("sample")):
            raise serializers.ValidationError('Send either {"incident": "<incident uuid>"} or {"sample": true}')
        if data.get("incident"):
            incident = Incident.objects.filter(pk=data["incident"]).first()
            if incident is None:
                raise serializers.ValidationError({"incident": [f"No incident with id {data['incident']}"]})
            data["incident"] = incident
        return data


class PlannedRequestSerializer(serializers.Serializer):
    method = serializers.CharField()
    url = serializers.CharField()
    headers = serializers.DictField(child=serializers.CharField(), help_text="Secrets redacted")
    body = serializers.JSONField(allow_null=True)


class DryRunStepSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    action = serializers.CharField()
    connection = serializers.CharField()
    # A plain string in the schema: a second enum named "status" would collide with the run status enum.
    status = serializers.CharField(help_text="planned, skipped or error")
    rendered = serializers.DictField(child=serializers.CharField(), help_text="Each field's template, rendered")
    request = PlannedRequestSerializer(allow_null=True, help_text="Exactly what the engine would send")
    sends_request = serializers.BooleanField(help_text="False when the engine would reuse an open incident")
    placeholders = serializers.ListField(
        child=serializers.DictField(), help_text="Values known only at run time: value, field, reason"
    )
    reads = serializers.ListField(child=serializers.DictField(), help_text="Read-only look-ups made for the plan")
    derived = serializers.DictField(help_text="Urgency, service and incident key the step would use")
    notes = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField(allow_blank=True)
    field = serializers.CharField(allow_blank=True, help_text="The field the error is about, if any")


class DryRunResponseSerializer(serializers.Serializer):
    runbook = serializers.CharField()
    version = serializers.IntegerField(allow_null=True)
    incident = serializers.DictField()
    steps = DryRunStepSerializer(many=True)


class RunbookVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = RunbookVersion
        fields = ["number", "created_at", "created_by", "comment", "spec"]


class RunbookViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = RunbookSerializer
    queryset = Runbook.objects.prefetch_related("steps")
    lookup_field = "slug"
    action_permissions = {
        "list": ["runbooks.view_runbook"],
        "retrieve": ["runbooks.view_runbook"],
        "run": ["runbooks.run_runbook"],
        "dry_run": ["runbooks.dry_run_runbook"],
        "versions": ["runbooks.view_runbookversion"],
    }

    @extend_schema(request=ManualRunSerializer, responses={202: None})
    @action(detail=True, methods=["post"])
    def run(self, request, slug=None):
        """Run this runbook now on an incident (recorded on the incident's timeline)."""
        runbook = self.get_object()
        serializer = ManualRunSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        incident = get_object_or_404(Incident, pk=serializer.validated_data["incident"])
        event = services.runbook_run_manually(
            runbook_id=runbook.pk, incident_id=incident.pk, actor=f"api:{request.user.get_username()}"
        )
        return Response({"event": event.pk, "incident": str(incident.pk)}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=DryRunRequestSerializer, responses={200: DryRunResponseSerializer})
    @action(detail=True, methods=["post"], url_path="dry-run")
    def dry_run(self, request, slug=None):
        """Render every step for an incident (or the sample) and return the exact requests that would
        go to PagerDuty. Nothing is sent except read-only look-ups (listed per step) and no run is recorded."""
        runbook = self.get_object()
        serializer = DryRunRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        incident = serializer.validated_data.get("incident")
        sample = serializer.validated_data.get("sample", False)
        steps = runbook_dry_run(runbook=runbook, incident=incident, sample=sample)
        version = runbook_version_latest(runbook=runbook)
        return Response(
            {
                "runbook": runbook.slug,
                "version": version.number if version else None,
                "incident": {"id": str(incident.pk), "short_id": incident.short_id} if incident else {"sample": True},
                "steps": [{k: v for k, v in step.items() if k != "field_errors"} for step in steps],
            }
        )

    @extend_schema(request=None, responses=RunbookVersionSerializer(many=True))
    @action(detail=True, methods=["get"])
    def versions(self, request, slug=None):
        """Every saved version of this runbook, newest first, in the runbooks-as-code shape."""
        runbook = self.get_object()
        versions = runbook.versions.select_related("created_by").order_by("-number")
        return Response(RunbookVersionSerializer(versions, many=True).data)


class RunViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = RunSerializer
    action_permissions = {
        "list": ["runbooks.view_runbookrun"],
        "retrieve": ["runbooks.view_runbookrun"],
        "rerun": ["runbooks.rerun_runbookrun"],
    }

    def get_queryset(self):
        queryset = RunbookRun.objects.select_related(
            "runbook", "runbook_version", "incident", "event"
        ).prefetch_related("step_runs__exchanges")
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
