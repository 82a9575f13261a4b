"""The new incident actions end to end against the PagerDuty stand-in over real HTTP (the stand-in
checks every request against the official spec): what PagerDuty holds afterwards, and that a lost
answer leaves exactly one note and one override."""

from datetime import timedelta

import pytest

from apps.incidents.services import incident_trigger_runbook
from apps.oncall.models import OncallSchedule
from apps.oncall.overrides import parse_time
from apps.pagerduty.services import connection_upsert
from apps.runbooks.dryrun import runbook_dry_run
from apps.runbooks.models import RunbookRun
from apps.runbooks.services import runbook_upsert_from_spec
from apps.sandbox import (
    ADMIN_EMAIL,
    CHECKOUT_SCHEDULE_ID,
    PRIORITY_IDS,
    RESPONDER_EMAIL,
    RESPONDER_USER_ID,
    SandboxServer,
    SandboxState,
    seed_account,
)
from tests.factories import IncidentFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def standin(db):
    state = SandboxState(tokens={"sandbox-token"})
    seed_account(state, users=20, teams=3, schedules=4, escalation_policies=3, services=4, seed=1)
    server = SandboxServer(state, port=0).start()
    connection = connection_upsert(name="default", api_key="sandbox-token", from_email=ADMIN_EMAIL, api_url=server.url)
    connection.service_mappings.create(service="", pagerduty_service_id="PSVC001")
    OncallSchedule.objects.create(connection=connection, pagerduty_id=CHECKOUT_SCHEDULE_ID, name="Checkout primary")
    yield state
    server.stop()


def life_of_an_incident():
    return {
        "slug": "incident-life",
        "name": "Incident life",
        "trigger": {"on": "manual"},
        "steps": [
            {"key": "page", "action": "pagerduty.create_incident", "with": {"title": "{{Activity.title}}"}},
            {"key": "ack", "action": "pagerduty.acknowledge_incident", "with": {}},
            {"key": "note", "action": "pagerduty.add_note", "with": {"content": "Looking at {{Activity.url}}"}},
            {"key": "prio", "action": "pagerduty.set_priority", "with": {"priority": "P1"}},
            {"key": "urgency", "action": "pagerduty.set_urgency", "with": {"urgency": "low"}},
            {"key": "reassign", "action": "pagerduty.reassign_incident", "with": {"assignee_ids": RESPONDER_EMAIL}},
            {
                "key": "cover",
                "action": "pagerduty.create_override",
                "with": {"schedule_id": "Checkout primary", "user_id": RESPONDER_EMAIL, "start": "now", "end": "+12h"},
            },
        ],
    }


def run(runbook, incident, capture):
    with capture(execute=True):
        incident_trigger_runbook(incident_id=incident.pk, runbook_slug=runbook.slug, actor="test")
    return RunbookRun.objects.get(incident=incident)


def test_every_action_lands_in_pagerduty_as_planned(standin, django_capture_on_commit_callbacks):
    state = standin
    runbook, _ = runbook_upsert_from_spec(spec=life_of_an_incident())
    incident = IncidentFactory(severity=1)

    planned = runbook_dry_run(runbook=runbook, incident=incident)
    assert [s["status"] for s in planned] == ["planned"] * 7, [s["error"] for s in planned]
    assert planned[3]["request"]["body"]["incident"]["priority"]["id"] == PRIORITY_IDS["P1"]
    assert {r["method"] for r in state.requests} <= {"GET"}

    finished = run(runbook, incident, django_capture_on_commit_callbacks)
    steps = {s.key: s for s in finished.step_runs.all()}
    assert finished.status == "succeeded", {k: s.error for k, s in steps.items()}
    [upstream] = state.incidents.values()
    assert upstream["status"] == "acknowledged"
    assert upstream["priority"]["id"] == PRIORITY_IDS["P1"]
    assert upstream["urgency"] == "low"
    assert [a["assignee"]["id"] for a in upstream["assignments"]] == [RESPONDER_USER_ID]
    assert [n["content"] for n in state.notes[upstream["id"]]] == [f"Looking at {incident.url}"]
    assert steps["note"].outputs["note_id"] == state.notes[upstream["id"]][0]["id"]
    [override] = [
        o for o in state.schedules[CHECKOUT_SCHEDULE_ID]["_overrides"] if o["user"]["id"] == RESPONDER_USER_ID
    ]
    assert steps["cover"].outputs["override_id"] == override["id"]
    assert steps["ack"].outputs == {
        "incident_id": upstream["id"],
        "status": "acknowledged",
        "already_acknowledged": False,
    }
    # The dry run showed the bodies the stand-in received (the override's times aside: `now` moves).
    sent = {
        r["path"]: r["json"] for r in state.requests if r["method"] in ("POST", "PUT") and r["path"].endswith("notes")
    }
    assert sent[f"/incidents/{upstream['id']}/notes"] == {"note": {"content": f"Looking at {incident.url}"}}


def test_lost_answers_leave_one_note_and_one_override(standin, django_capture_on_commit_callbacks):
    state = standin
    spec = life_of_an_incident()
    spec["steps"] = [s for s in spec["steps"] if s["key"] in ("page", "note", "cover")]
    runbook, _ = runbook_upsert_from_spec(spec=spec)
    # PagerDuty carries each out, then the connection drops before the answer.
    state.add_script(
        [
            {"method": "POST", "path": "/incidents/*/notes", "status": 0, "after": True},
            {"method": "POST", "path": f"/schedules/{CHECKOUT_SCHEDULE_ID}/overrides", "status": 0, "after": True},
        ]
    )
    before = len(state.schedules[CHECKOUT_SCHEDULE_ID]["_overrides"])
    finished = run(runbook, IncidentFactory(), django_capture_on_commit_callbacks)
    steps = {s.key: s for s in finished.step_runs.all()}
    assert finished.status == "succeeded", {k: s.error for k, s in steps.items()}
    [upstream] = state.incidents.values()
    assert len(state.notes[upstream["id"]]) == 1
    assert len(state.schedules[CHECKOUT_SCHEDULE_ID]["_overrides"]) == before + 1
    assert steps["note"].outputs["deduplicated"] is True
    assert steps["cover"].outputs["deduplicated"] is True
    # GET /users (the email), the POST whose answer was lost, the look-up that found it.
    assert [(e.method, e.url.split("?")[0].rsplit("/", 1)[-1]) for e in steps["cover"].exchanges.order_by("id")] == [
        ("GET", "users"),
        ("POST", "overrides"),
        ("GET", "overrides"),
    ]
    start = steps["cover"].outputs["start"]
    end = steps["cover"].outputs["end"]
    assert parse_time(end) - parse_time(start) == timedelta(hours=12)
