"""The new actions in the editor: the chooser's metadata, the live preview (no request to PagerDuty,
placeholders where a look-up is needed), and YAML export → import keeping every field."""

import json

import pytest
import yaml
from django.core.management import call_command

from apps.runbooks.loader import dump_yaml, load_yaml, runbook_to_spec, spec_problems
from apps.runbooks.models import Runbook
from apps.runbooks.services import runbook_upsert_from_spec
from apps.runbooks.versions import runbook_version_latest
from tests.factories import IncidentFactory

pytestmark = pytest.mark.django_db
ACTIONS_URL = "/admin/runbooks/runbook/authoring/actions.json"
PREVIEW_URL = "/admin/runbooks/runbook/authoring/preview/"
NEW_ACTIONS = {
    "pagerduty.acknowledge_incident": ["from", "incident_id"],
    "pagerduty.add_note": ["from", "incident_id", "content"],
    "pagerduty.reassign_incident": ["from", "incident_id", "assignee_ids", "escalation_policy_id"],
    "pagerduty.escalate_incident": ["from", "incident_id", "escalation_level"],
    "pagerduty.set_urgency": ["from", "incident_id", "urgency"],
    "pagerduty.set_priority": ["from", "incident_id", "priority"],
    "pagerduty.create_override": ["from", "schedule_id", "user_id", "start", "end"],
}
EVERY_FIELD = {
    "slug": "every-new-field",
    "name": "Every new field",
    "enabled": True,
    "trigger": {"on": "manual"},
    "steps": [
        {
            "key": "ack",
            "action": "pagerduty.acknowledge_incident",
            "connection": "default",
            "with": {"from": "{{Activity.owner}}", "incident_id": "{{pagerduty.incident_id}}"},
        },
        {
            "key": "note",
            "action": "pagerduty.add_note",
            "connection": "default",
            "with": {"content": 'R&D <db> "x"\nline two'},
        },
        {
            "key": "users",
            "action": "pagerduty.reassign_incident",
            "connection": "default",
            "with": {"assignee_ids": "{{Activity.owner}}, PUSER01"},
        },
        {
            "key": "policy",
            "action": "pagerduty.reassign_incident",
            "connection": "default",
            "with": {"escalation_policy_id": "PEP5678"},
        },
        {
            "key": "up",
            "action": "pagerduty.escalate_incident",
            "connection": "default",
            "with": {"escalation_level": "{{Activity.severity}}"},
        },
        {"key": "urgency", "action": "pagerduty.set_urgency", "connection": "default", "with": {"urgency": "low"}},
        {
            "key": "prio",
            "action": "pagerduty.set_priority",
            "connection": "default",
            "with": {"priority": "P{{Activity.severity}}"},
        },
        {
            "key": "cover",
            "action": "pagerduty.create_override",
            "connection": "default",
            "on_failure": "continue",
            "with": {
                "schedule_id": "Primary on-call",
                "user_id": "{{Activity.owner}}",
                "start": "now+1h",
                "end": "+12h",
            },
        },
    ],
}


def test_chooser_lists_the_new_actions_with_their_fields(admin_client, pd_connection):
    actions = {a["name"]: a for a in admin_client.get(ACTIONS_URL).json()["actions"]}
    for name, fields in NEW_ACTIONS.items():
        assert [f["name"] for f in actions[name]["fields"]] == fields
        assert actions[name]["category"] == "On-Call › PagerDuty"
    assert actions["pagerduty.add_note"]["outputs"].keys() >= {"incident_id", "note_id"}
    assert actions["pagerduty.create_override"]["outputs"].keys() >= {"override_id", "schedule_id", "user_id"}
    assert actions["pagerduty.set_urgency"]["outputs"].keys() >= {"incident_id", "status"}


def test_preview_shows_requests_and_placeholders_without_asking_pagerduty(admin_client, pd_connection):
    from apps.oncall.models import OncallSchedule

    OncallSchedule.objects.create(connection=pd_connection, pagerduty_id="PSCHED1", name="Primary on-call")
    steps = [{"key": s["key"], "action": s["action"], "inputs": s["with"]} for s in EVERY_FIELD["steps"]]
    incident = IncidentFactory(severity=1, owner="alice@example.com")
    response = admin_client.post(
        PREVIEW_URL, json.dumps({"steps": steps, "incident": str(incident.pk)}), content_type="application/json"
    )
    assert response.status_code == 200
    results = {s["key"]: s for s in response.json()["steps"]}
    # No incident is linked: incident changes say so on their field.
    assert results["ack"]["errors"].get("incident_id")
    assert results["note"]["field"] == "incident_id"
    prio = results["prio"]
    assert prio["errors"].get("incident_id")
    cover = results["cover"]
    assert cover["status"] == "planned", cover
    sent = cover["request"]["body"]["overrides"][0]
    assert cover["request"]["url"].endswith("/schedules/PSCHED1/overrides")
    assert sent["user"]["id"] == "<user id for alice@example.com>"
    assert sent["time_zone"] == "UTC"
    assert any(p["field"] == "user_id" for p in cover["placeholders"])


def test_preview_of_priority_by_name_is_a_marked_placeholder(admin_client, pd_connection):
    from apps.runbooks.models import PagerDutyIncidentLink

    incident = IncidentFactory(severity=1)
    PagerDutyIncidentLink.objects.create(incident=incident, connection=pd_connection, pagerduty_incident_id="QINC001")
    steps = [
        {"key": "prio", "action": "pagerduty.set_priority", "inputs": {"priority": "P{{Activity.severity}}"}},
        {"key": "up", "action": "pagerduty.escalate_incident", "inputs": {"escalation_level": "2"}},
    ]
    response = admin_client.post(
        PREVIEW_URL, json.dumps({"steps": steps, "incident": str(incident.pk)}), content_type="application/json"
    )
    prio, up = response.json()["steps"]
    assert prio["status"] == "planned"
    assert prio["request"]["url"].endswith("/incidents/QINC001")
    assert prio["request"]["body"]["incident"]["priority"] == {
        "id": "<priority id for P1>",
        "type": "priority_reference",
    }
    assert prio["placeholders"][0]["field"] == "priority"
    assert up["request"]["body"]["incident"]["escalation_level"] == 2


def test_yaml_export_import_round_trips_every_new_field(tmp_path):
    runbook, _ = runbook_upsert_from_spec(spec=EVERY_FIELD)
    exported = runbook_to_spec(runbook)
    assert exported == EVERY_FIELD
    text = dump_yaml(exported)
    assert load_yaml(text)[0] == EVERY_FIELD
    # Through the commands, as a user would.
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "every.yaml").write_text(text)
    Runbook.objects.all().delete()
    call_command("load_runbooks", str(tmp_path / "in"))
    call_command("export_runbooks", str(tmp_path / "out"))
    assert yaml.safe_load((tmp_path / "out" / "every-new-field.yaml").read_text()) == EVERY_FIELD
    version = runbook_version_latest(runbook=Runbook.objects.get(slug="every-new-field"))
    assert [s["with"] for s in version.spec["steps"]] == [s["with"] for s in EVERY_FIELD["steps"]]


@pytest.mark.parametrize(
    ("action", "fields", "field", "message"),
    [
        ("pagerduty.escalate_incident", {"escalation_level": "two"}, "escalation_level", "whole number"),
        ("pagerduty.escalate_incident", {"escalation_level": "21"}, "escalation_level", "whole number"),
        (
            "pagerduty.reassign_incident",
            {"assignee_ids": "PUSER01", "escalation_policy_id": "PEP5678"},
            "escalation_policy_id",
            "not both",
        ),
        ("pagerduty.reassign_incident", {}, "assignee_ids", "is required"),
        ("pagerduty.create_override", {"schedule_id": "P1", "user_id": "P2", "end": "yesterday"}, "end", "not a time"),
        (
            "pagerduty.create_override",
            {"schedule_id": "P1", "user_id": "P2", "start": "now+2h", "end": "now+1h"},
            "end",
            "after start",
        ),
    ],
)
def test_literals_that_can_never_work_are_refused_when_saved(action, fields, field, message):
    spec = {**EVERY_FIELD, "steps": [{"key": "s", "action": action, "with": fields}]}
    problems = spec_problems(spec, source="every.yaml")
    assert [(p.step, p.field) for p in problems] == [("s", field)]
    assert message in problems[0].message


def test_templated_values_are_left_to_run_time():
    spec = {
        **EVERY_FIELD,
        "steps": [
            {
                "key": "up",
                "action": "pagerduty.escalate_incident",
                "with": {"escalation_level": "{{Activity.severity}}"},
            },
            {
                "key": "cover",
                "action": "pagerduty.create_override",
                "with": {"schedule_id": "P1", "user_id": "P2", "start": "{{Activity.created_at}}", "end": "+1h"},
            },
        ],
    }
    assert spec_problems(spec, source="every.yaml") == []
