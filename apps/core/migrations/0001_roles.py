"""The five roles of docs/permissions.md. Frozen here as they were at this point: later changes are
made by later migrations (apps.core.roles.grant_permissions), never by editing this list."""

from django.db import migrations

from apps.core.roles import grant_permissions

VIEW = [
    "incidents.view_incident",
    "incidents.view_incidentevent",
    "runbooks.view_runbook",
    "runbooks.view_step",
    "runbooks.view_runbookversion",
    "runbooks.view_runbookrun",
    "runbooks.view_steprun",
    "runbooks.view_steprunexchange",
    "runbooks.view_pagerdutyincidentlink",
    "pagerduty.view_pagerdutyconnection",
    "pagerduty.view_servicemapping",
    "pagerduty.view_urgencymapping",
    "oncall.view_oncallteam",
    "oncall.view_oncalluser",
    "oncall.view_teammembership",
    "oncall.view_oncallschedule",
    "oncall.view_schedulelayer",
    "oncall.view_schedulelayermember",
    "oncall.view_scheduleentry",
    "oncall.view_oncallescalationpolicy",
    "oncall.view_escalationrule",
    "oncall.view_escalationtarget",
    "oncall.view_oncallservice",
    "oncall.view_syncrun",
]

ROLES = {
    "Viewers": VIEW,
    "Responders": [
        *VIEW,
        "incidents.add_incident",
        "incidents.change_incident",
        "runbooks.dry_run_runbook",
        "runbooks.run_runbook",
        "runbooks.rerun_runbookrun",
        "runbooks.approve_runbookrun",
    ],
    "Runbook authors": [
        *VIEW,
        "runbooks.add_runbook",
        "runbooks.change_runbook",
        "runbooks.delete_runbook",
        "runbooks.add_step",
        "runbooks.change_step",
        "runbooks.delete_step",
        "runbooks.dry_run_runbook",
        "pagerduty.add_servicemapping",
        "pagerduty.change_servicemapping",
        "pagerduty.delete_servicemapping",
        "pagerduty.add_urgencymapping",
        "pagerduty.change_urgencymapping",
        "pagerduty.delete_urgencymapping",
    ],
    "On-call managers": [
        *VIEW,
        "oncall.plan_syncrun",
        "oncall.apply_syncrun",
        "oncall.override_oncallschedule",
        # Local notes and aliases on imported objects (synced fields stay read-only).
        "oncall.change_oncallteam",
        "oncall.change_oncalluser",
        "oncall.change_oncallschedule",
        "oncall.change_oncallescalationpolicy",
        "oncall.change_oncallservice",
    ],
    "PagerDuty admins": [
        *VIEW,
        "pagerduty.add_pagerdutyconnection",
        "pagerduty.change_pagerdutyconnection",
        "pagerduty.delete_pagerdutyconnection",
        "pagerduty.test_pagerdutyconnection",
        "pagerduty.manage_webhooks_pagerdutyconnection",
        "auditlog.view_logentry",
    ],
}


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auditlog", "0017_add_actor_email"),
        ("incidents", "0001_initial"),
        ("oncall", "0002_permissions"),
        ("pagerduty", "0003_permissions"),
        ("runbooks", "0003_permissions"),
    ]

    operations = [grant_permissions(ROLES)]
