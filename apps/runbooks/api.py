import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings

from apps.core.api_fields import StrictBooleanField, StrictModelSerializer
from apps.core.errors import DomainError
from apps.core.query_params import query_datetime
from apps.incidents.api import IncidentRefField, IncidentSerializer, IncidentViewSet
from apps.incidents.models import Incident
from apps.incidents.selectors import INCIDENT_REF_DESCRIPTION, INCIDENT_REF_PATTERN, parse_incident_ref
from apps.runbooks import services, waits
from apps.runbooks.dryrun import runbook_dry_run
from apps.runbooks.loader import conditions_spec, trigger_spec
from apps.runbooks.models import (
    PagerDutyIncidentLink,
    Runbook,
    RunbookRun,
    RunbookVersion,
    Step,
    StepRun,
    StepRunExchange,
)
from apps.runbooks.selectors import LOOKUP, REQUEST, step_run_exchanges
from apps.runbooks.timeline import MAX_ENTRIES, MAX_WINDOW, incident_timeline, timeline_markdown
from apps.runbooks.versions import runbook_version_latest


class StepSerializer(StrictModelSerializer):
    class Meta:
        model = Step
        fields = ["key", "name", "position", "action", "connection", "on_failure"]

    def get_fields(self):
        # `with` is a Python keyword, so it cannot be declared as an attribute; the runbooks-as-code
        # name is what the API shows (and what the schema documents).
        fields = super().get_fields()
        fields["with"] = serializers.DictField(
            child=serializers.JSONField(),
            source="inputs",
            read_only=True,
            help_text="Field → Mustache template; custom_details is a mapping and links a list of {href, text} "
            "(their strings are templates)",
        )
        return fields


class RunbookSerializer(StrictModelSerializer):
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


class ExchangeSerializer(StrictModelSerializer):
    role = serializers.ChoiceField(
        choices=[REQUEST, LOOKUP],
        read_only=True,
        help_text="request: an attempt at the step's own request; lookup: a read made to plan or settle it",
    )
    attempt = serializers.IntegerField(source="number", read_only=True, help_text="1..n within its role")

    class Meta:
        model = StepRunExchange
        fields = [
            "role",
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


class StepRunSerializer(StrictModelSerializer):
    exchanges = ExchangeSerializer(
        many=True, read_only=True, help_text="Every HTTP exchange in order: the step's own request and its look-ups"
    )
    duration_ms = serializers.IntegerField(read_only=True, allow_null=True)

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
            "wait_until",
            "duration_ms",
            "exchanges",
        ]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        # Labelled and numbered in one pass over the (prefetched) exchanges.
        data["exchanges"] = ExchangeSerializer(step_run_exchanges(step_run=instance)["all"], many=True).data
        return data


class RunSerializer(StrictModelSerializer):
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


class DecisionRequestSerializer(serializers.Serializer):
    comment = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=waits.COMMENT_MAX, help_text="Why; recorded"
    )


class ApprovalDecisionSerializer(serializers.Serializer):
    step = serializers.CharField(help_text="Key of the approval step")
    status = serializers.CharField(
        help_text="The step's status: succeeded (approved, or timed out and continued) or failed"
    )
    decision = serializers.CharField(help_text="approved, rejected or timed_out")
    decided_by = serializers.CharField(allow_blank=True)
    decided_at = serializers.CharField()
    comment = serializers.CharField(allow_blank=True)


class AlreadyDecidedSerializer(serializers.Serializer):
    message = serializers.CharField()
    decision = ApprovalDecisionSerializer()


class RerunRequestSerializer(serializers.Serializer):
    version = serializers.ChoiceField(
        choices=services.RerunVersion.CHOICES,
        default=services.RerunVersion.RECORDED,
        help_text=(
            "recorded (the default): the steps as this run recorded them. current: the runbook as saved now, "
            "so a fix saved since the failure is used; the run then names the current version."
        ),
        error_messages={"invalid_choice": 'Expected "recorded" or "current", got {input!r}.'},
    )


class ManualRunSerializer(serializers.Serializer):
    incident = IncidentRefField()


class ManualRunResponseSerializer(serializers.Serializer):
    event = serializers.IntegerField(help_text="The incident timeline event that asked for the run")
    incident = serializers.UUIDField()


class DryRunRequestSerializer(serializers.Serializer):
    incident = IncidentRefField(required=False, help_text="Incident to render the steps for")
    sample = StrictBooleanField(required=False, default=False, help_text="Use the built-in sample incident")

    # Exactly one of the two, as the schema says (ApiAutoSchema merges this into the component).
    openapi_extra = {
        "oneOf": [
            {"required": ["incident"], "properties": {"sample": {"not": {"enum": [True]}}}},
            {
                "required": ["sample"],
                "properties": {"sample": {"not": {"enum": [False]}}},
                "not": {"required": ["incident"]},
            },
        ]
    }
    openapi_body_required = True

    either = 'Send either {"incident": "<incident id>"} or {"sample": true}'

    def to_internal_value(self, data):
        # Asking for both is malformed whether or not the incident exists: said before looking it up.
        if isinstance(data, dict) and "incident" in data and data.get("sample") is True:
            raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [self.either]})
        return super().to_internal_value(data)

    def validate(self, data):
        if "incident" not in data and not data.get("sample"):
            raise serializers.ValidationError(self.either)
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
    warnings = serializers.ListField(
        child=serializers.CharField(), help_text="Allowed but likely unintended, e.g. resolving what was just created"
    )
    error = serializers.CharField(allow_blank=True)
    field = serializers.CharField(allow_blank=True, help_text="The field the error is about, if any")


class DryRunResponseSerializer(serializers.Serializer):
    runbook = serializers.CharField()
    version = serializers.IntegerField(allow_null=True)
    incident = serializers.DictField()
    steps = DryRunStepSerializer(many=True)


class RunbookVersionSerializer(StrictModelSerializer):
    # Null for versions recorded without a person (loaded from YAML, recorded when a run started).
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

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

    @extend_schema(request=ManualRunSerializer, responses={202: ManualRunResponseSerializer})
    @action(detail=True, methods=["post"])
    def run(self, request, slug=None):
        """Run this runbook now on an incident (recorded on the incident's timeline); 202, the run
        itself happens on a worker."""
        runbook = self.get_object()
        serializer = ManualRunSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        incident = serializer.validated_data["incident"]
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
    @action(detail=True, methods=["get"], pagination_class=None)
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
        # Membership of the step's approvers group is checked too (403 outside it).
        "approve": ["runbooks.approve_runbookrun"],
        "reject": ["runbooks.approve_runbookrun"],
    }

    def get_queryset(self):
        queryset = RunbookRun.objects.select_related(
            "runbook", "runbook_version", "incident", "event"
        ).prefetch_related("step_runs__exchanges")
        if self.action == "list" and "incident" in self.request.query_params:
            values = self.request.query_params.getlist("incident")
            if len(values) > 1:
                raise serializers.ValidationError({"incident": ["Give incident once."]})
            try:
                key = parse_incident_ref(values[0])
            except DomainError as exc:
                raise serializers.ValidationError({"incident": [str(exc)]}) from None
            queryset = queryset.filter(**{"incident_id" if isinstance(key, uuid.UUID) else "incident__number": key})
        return queryset

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "incident",
                {"type": "string", "pattern": INCIDENT_REF_PATTERN},
                description=f"Only runs on this incident. {INCIDENT_REF_DESCRIPTION}",
            )
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=RerunRequestSerializer, responses={202: RunSerializer})
    @action(detail=True, methods=["post"])
    def rerun(self, request, pk=None):
        """Re-run from the first failed step; steps that succeeded are not repeated. `version`
        says which steps run: `recorded` (the default, as before) or `current` (the runbook as
        saved now). 409 when the run is not finished or no step failed."""
        run = self.get_object()
        serializer = RerunRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = services.run_rerun_from_failed(run_id=run.pk, version=serializer.validated_data["version"])
        return Response(self.get_serializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=DecisionRequestSerializer, responses={200: RunSerializer, 409: AlreadyDecidedSerializer})
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        """Approve the approval step this run waits for; the run continues with the next step. 403
        outside the step's approvers group; 409 with the decision when it was already decided."""
        return self._decide(request, approve=True)

    @extend_schema(request=DecisionRequestSerializer, responses={200: RunSerializer, 409: AlreadyDecidedSerializer})
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        """Reject the approval step this run waits for: the step fails with the comment. 403 outside
        the step's approvers group; 409 with the decision when it was already decided."""
        return self._decide(request, approve=False)

    def _decide(self, request, *, approve: bool):
        run = self.get_object()
        serializer = DecisionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            run = waits.approval_decide(
                run_id=run.pk, user=request.user, approve=approve, comment=serializer.validated_data["comment"]
            )
        except waits.AlreadyDecided as exc:
            return Response({"message": str(exc), "decision": exc.decision}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(self.get_queryset().get(pk=run.pk)).data)


# --- incidents with their PagerDuty side ---------------------------------------------------------
# The incidents app cannot know about links (dependencies point one way): runbooks extends its API
# the way it extends its admin page.


class PagerDutyAssigneeSerializer(serializers.Serializer):
    id = serializers.CharField()
    summary = serializers.CharField()


class PagerDutyIncidentLinkSerializer(StrictModelSerializer):
    connection = serializers.SlugRelatedField(slug_field="name", read_only=True)
    assignees = PagerDutyAssigneeSerializer(many=True, read_only=True)

    class Meta:
        model = PagerDutyIncidentLink
        fields = [
            "pagerduty_incident_id",
            "connection",
            "incident_number",
            "html_url",
            "incident_key",
            "service_id",
            "status",
            "urgency",
            "priority",
            "assignees",
            "escalation_level",
            "last_event_type",
            "last_event_at",
            "mirrored_at",
            "created_at",
        ]
        read_only_fields = fields


class IncidentWithPagerDutySerializer(IncidentSerializer):
    pagerduty_incidents = PagerDutyIncidentLinkSerializer(
        source="pagerduty_links",
        many=True,
        read_only=True,
        help_text="The PagerDuty incidents linked to this one, with PagerDuty's state as its webhooks or a read "
        "last told it (mirrored_at; null when only our own requests set it).",
    )

    class Meta(IncidentSerializer.Meta):
        fields = [*IncidentSerializer.Meta.fields, "pagerduty_incidents"]


# --- the timeline ---------------------------------------------------------------------------------


class MarkdownRenderer(BaseRenderer):
    media_type = "text/markdown"
    format = "markdown"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data.encode(self.charset) if isinstance(data, str) else b""


class TimelineIncidentSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    short_id = serializers.CharField()
    title = serializers.CharField()
    severity = serializers.IntegerField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)
    url = serializers.CharField()


class TimelineEntrySerializer(serializers.Serializer):
    at = serializers.DateTimeField(help_text="ISO 8601 in UTC (Z).")
    source = serializers.ChoiceField(choices=["incident", "runbook", "pagerduty"])
    kind = serializers.CharField(
        help_text="status_changed, severity_changed, created, manual; run_started, run_succeeded, step_succeeded, "
        "step_failed…; PagerDuty's event type (incident.acknowledged…) or log entry type."
    )
    actor = serializers.CharField(help_text="Who did it: a person, a runbook (and who ran it), a PagerDuty user.")
    summary = serializers.CharField()
    details = serializers.DictField(help_text="What else is known (PagerDuty ids, channel, run and step, note).")


class TimelineSerializer(serializers.Serializer):
    incident = TimelineIncidentSerializer()
    entries = TimelineEntrySerializer(many=True, help_text=f"In time order; at most {MAX_ENTRIES}.")
    notes = serializers.ListField(
        child=serializers.CharField(),
        help_text="What the answer lacks and why: PagerDuty's log unreadable, a window narrowed, entries cut.",
    )


class IncidentTimelineMixin:
    def handle_exception(self, exc):
        # Errors are JSON (as documented) even when the Markdown draft was asked for.
        if getattr(self, "action", None) == "timeline" and getattr(self.request, "accepted_renderer", None):
            self.request.accepted_renderer = JSONRenderer()
            self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "since", OpenApiTypes.DATETIME, description="ISO 8601 with a zone; default: just before the incident"
            ),
            OpenApiParameter(
                "until",
                OpenApiTypes.DATETIME,
                description=f"ISO 8601 with a zone; default now; at most {MAX_WINDOW.days} days after since",
            ),
            OpenApiParameter(
                "format",
                str,
                enum=["json", "markdown"],
                description="markdown: a post-mortem draft (text/markdown), times in UTC",
            ),
        ],
        responses={(200, "application/json"): TimelineSerializer, (200, "text/markdown"): OpenApiTypes.STR},
        description="Everything that happened to the incident in time order: our events, runbook runs and steps, "
        "PagerDuty's webhooks and the log entries of each linked PagerDuty incident (read live; when PagerDuty "
        "cannot be read the answer is still 200, without them, and `notes` says so).",
    )
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, MarkdownRenderer])
    def timeline(self, request, pk=None):
        incident = self.get_object()
        since, until = query_datetime(request, "since"), query_datetime(request, "until")
        data = incident_timeline(incident=incident, since=since, until=until)
        if getattr(request.accepted_renderer, "format", "") == "markdown":
            return Response(timeline_markdown(data), content_type="text/markdown; charset=utf-8")
        return Response(TimelineSerializer(data).data)


class IncidentWithPagerDutyViewSet(IncidentTimelineMixin, IncidentViewSet):
    __doc__ = IncidentViewSet.__doc__
    serializer_class = IncidentWithPagerDutySerializer
    queryset = Incident.objects.prefetch_related("events", "pagerduty_links__connection")
    action_permissions = {**IncidentViewSet.action_permissions, "timeline": ["incidents.view_incident"]}
