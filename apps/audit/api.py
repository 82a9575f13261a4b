"""GET /api/v1/audit/: the audit log, newest first; PagerDuty admins only (auditlog.view_logentry)."""

import re

from auditlog.models import LogEntry
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets

ACTIONS = {
    LogEntry.Action.CREATE: "create",
    LogEntry.Action.UPDATE: "update",
    LogEntry.Action.DELETE: "delete",
    LogEntry.Action.ACCESS: "access",
}


class AuditEntrySerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True, help_text="null: the system"
    )
    action = serializers.SerializerMethodField(
        help_text="create, update, delete, or what a person did: runbook.run, run.rerun, run.approve, …"
    )
    object_type = serializers.SerializerMethodField(help_text="app_label.model, e.g. pagerduty.pagerdutyconnection")
    object_id = serializers.CharField(source="object_pk")
    changes = serializers.JSONField(help_text="field → [before, after]; secrets appear only as '(secret set)'")
    details = serializers.JSONField(source="additional_data")

    class Meta:
        model = LogEntry
        fields = [
            "id",
            "timestamp",
            "actor",
            "actor_email",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "changes",
            "details",
            "remote_addr",
        ]

    def get_action(self, entry) -> str:
        return (entry.additional_data or {}).get("event") or ACTIONS.get(entry.action, str(entry.action))

    def get_object_type(self, entry) -> str:
        return f"{entry.content_type.app_label}.{entry.content_type.model}"


OBJECT_TYPE_PATTERN = r"^(?:[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*)?$"


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter(
                "object_type", str, pattern=OBJECT_TYPE_PATTERN, description="app_label.model, e.g. runbooks.runbook"
            ),
            OpenApiParameter("object_id", str, description="Primary key of the object"),
            OpenApiParameter("actor", str, description="Username of the person"),
        ]
    )
)
class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """Who changed what and when: connections, runbooks and steps, mappings, group membership,
    manual runs, re-runs and approvals. Filters: ?object_type=, ?object_id=, ?actor=."""

    serializer_class = AuditEntrySerializer
    action_permissions = {
        "list": ["auditlog.view_logentry"],
        "retrieve": ["auditlog.view_logentry"],
    }

    def get_queryset(self):
        queryset = LogEntry.objects.select_related("content_type", "actor").order_by("-timestamp", "-id")
        params = self.request.query_params
        object_type = params.get("object_type", "").lower()
        if object_type:
            app_label, _dot, model = object_type.partition(".")
            if not re.fullmatch(OBJECT_TYPE_PATTERN.strip("^$"), object_type):
                raise serializers.ValidationError(
                    {"object_type": [f"Expected app_label.model, e.g. runbooks.runbook; got {object_type!r}"]}
                )
            queryset = queryset.filter(content_type__app_label=app_label, content_type__model=model)
        if params.get("object_id"):
            # Ids repeat across types: give object_type too to name one object.
            queryset = queryset.filter(object_pk=params["object_id"].strip())
        if params.get("actor"):
            queryset = queryset.filter(actor__username=params["actor"].strip())
        return queryset
