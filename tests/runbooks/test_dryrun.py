"""Dry run and preview: the exact request the engine would send, with nothing sent or recorded.

The strongest check is the comparison with the engine itself: dry-run an incident, then let the
engine run the same runbook on it and compare with what it recorded and what PagerDuty received.
"""

from pathlib import Path

import pytest
import responses
from rest_framework.test import APIClient

from apps.incidents.services import incident_trigger_runbook, incident_update
from apps.oncall.models import OncallEscalationPolicy, OncallUser
from apps.pagerduty.services import connection_upsert
from apps.runbooks import loader
from apps.runbooks.dryrun import StepSource, runbook_dry_run, sample_incident, steps_preview
from apps.runbooks.models import PagerDutyIncidentLink, RunbookRun, StepRun
from apps.runbooks.services import runbook_upsert_from_spec
from apps.sandbox import SandboxServer, SandboxState, seed_account
from tests.conftest import API_KEY, PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import PAGE_STEP, add_create_ok, body, make_runbook

pytestmark = pytest.mark.django_db

RUNBOOKS_DIR = Path(__file__).resolve().parents[2] / "runbooks"

ESCALATE = {
    "key": "escalate",
    "action": "pagerduty.add_responder",
    "connection": "default",
    "with": {
        "from": "{{Activity.owner}}",
        "incident_id": "{{steps.page.incident_id}}",
        "responder_id": "PEP5678",
        "responder_type": "escalation_policy",
        "requester_id": "{{Activity.owner}}",
        "message": "Please join {{Activity.short_id}}",
    },
}


def example(slug: str) -> dict:
    return loader.load_yaml((RUNBOOKS_DIR / f"{slug}.yaml").read_text())[0]


def test_dry_run_request_is_the_request_the_engine_sends(pd, pd_connection, django_capture_on_commit_callbacks):
    runbook = make_runbook(conditions={"severity": [0, 1]})
    incident = IncidentFactory(severity=0, title='R&D <db> "x"', owner="alice@example.com")

    [planned] = runbook_dry_run(runbook=runbook, incident=incident)

    assert len(pd.calls) == 0
    assert RunbookRun.objects.count() == 0
    add_create_ok(pd, key=f"ai-sre-{incident.id}")
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Investigating", actor="test")
    step_run = StepRun.objects.get()
    assert planned["status"] == "planned"
    assert planned["request"] == step_run.request
    assert planned["rendered"] == step_run.rendered
    assert planned["request"]["headers"]["Authorization"] == "Token token=***redacted***"
    assert planned["request"]["body"] == body(pd.calls[0])
    assert pd.calls[0].request.url == planned["request"]["url"] == f"{PD_URL}/incidents"
    assert planned["derived"] == {
        "urgency": "high",
        "urgency_source": "SEV0 → high (urgency mapping)",
        "service_id": "P1234AB",
        "service_source": "set on the step",
        "incident_key": f"ai-sre-{incident.id}",
    }


def test_dry_run_has_no_side_effect(pd, pd_connection):
    runbook = make_runbook(steps=[PAGE_STEP, ESCALATE])
    incident = IncidentFactory()
    pd.add(responses.GET, f"{PD_URL}/users", json={"users": [{"id": "PSREADM", "email": "sre@example.com"}]})

    runbook_dry_run(runbook=runbook, incident=incident)

    assert [c.request.method for c in pd.calls] == ["GET"]
    assert RunbookRun.objects.count() == StepRun.objects.count() == PagerDutyIncidentLink.objects.count() == 0


def test_later_steps_get_marked_placeholders_for_earlier_outputs(pd, pd_connection):
    runbook = make_runbook(steps=[PAGE_STEP, ESCALATE])
    incident = IncidentFactory(owner="sre@example.com")
    pd.add(responses.GET, f"{PD_URL}/users", json={"users": [{"id": "PSREADM", "email": "sre@example.com"}]})

    page, escalate = runbook_dry_run(runbook=runbook, incident=incident)

    assert page["placeholders"] == []
    assert escalate["status"] == "planned"
    assert escalate["rendered"]["incident_id"] == "<steps.page.incident_id>"
    assert escalate["request"]["url"] == f"{PD_URL}/incidents/<steps.page.incident_id>/responder_requests"
    assert escalate["placeholders"] == [
        {
            "value": "<steps.page.incident_id>",
            "field": "incident_id",
            "reason": "output 'incident_id' of step 'page': known only once that step has run",
        }
    ]
    # The requester lookup is a read-only GET: allowed in a dry run, and listed.
    assert escalate["request"]["body"]["requester_id"] == "PSREADM"
    assert [(r["method"], r["status"]) for r in escalate["reads"]] == [("GET", 200)]
    assert escalate["reads"][0]["url"].startswith(f"{PD_URL}/users?query=sre%40example.com")


def test_without_reads_an_email_becomes_a_marked_placeholder(pd, pd_connection):
    runbook = make_runbook(steps=[PAGE_STEP, ESCALATE])

    _, escalate = runbook_dry_run(runbook=runbook, incident=IncidentFactory(), allow_reads=False)

    assert len(pd.calls) == 0
    assert escalate["request"]["body"]["requester_id"] == "<user id for sre@example.com>"
    assert {p["value"]: p["field"] for p in escalate["placeholders"]} == {
        "<steps.page.incident_id>": "incident_id",
        "<user id for sre@example.com>": "requester_id",
    }


def test_default_linked_incident_after_a_planned_create_is_a_placeholder(pd, pd_connection):
    resolve = {"key": "close", "action": "pagerduty.resolve_incident", "with": {"resolution": "done"}}
    runbook = make_runbook(steps=[PAGE_STEP, resolve])

    _, close = runbook_dry_run(runbook=runbook, incident=IncidentFactory())

    assert close["status"] == "planned"
    assert close["request"]["method"] == "PUT"
    assert close["request"]["url"] == f"{PD_URL}/incidents/<steps.page.incident_id>"
    assert close["placeholders"][0]["value"] == "<steps.page.incident_id>"


def test_resolve_without_linked_incident_is_skipped_like_the_engine(pd, pd_connection):
    spec = example("resolve-on-closure")
    runbook, _ = runbook_upsert_from_spec(spec=spec)
    incident = IncidentFactory()

    [step] = runbook_dry_run(runbook=runbook, incident=incident)

    assert step["status"] == "skipped"
    assert step["error"] == f"No PagerDuty incident is linked to {incident.short_id}: nothing to resolve"
    assert step["request"] is None


def test_open_linked_incident_is_reused_and_its_real_id_flows_on(pd, pd_connection):
    runbook = make_runbook(steps=[PAGE_STEP, ESCALATE])
    incident = IncidentFactory()
    PagerDutyIncidentLink.objects.create(
        incident=incident,
        connection=pd_connection,
        pagerduty_incident_id="QOPEN01",
        incident_key=f"ai-sre-{incident.id}",
        service_id="P1234AB",
    )
    pd.add(responses.GET, f"{PD_URL}/users", json={"users": [{"id": "PSREADM", "email": "sre@example.com"}]})

    page, escalate = runbook_dry_run(runbook=runbook, incident=incident)

    assert page["sends_request"] is False
    assert "QOPEN01 is already open" in page["notes"][0]
    assert escalate["request"]["url"] == f"{PD_URL}/incidents/QOPEN01/responder_requests"
    assert escalate["placeholders"] == []


def test_sample_incident_uses_the_documented_examples(pd, pd_connection):
    runbook, _ = runbook_upsert_from_spec(spec=example("page-on-critical"))

    [step] = runbook_dry_run(runbook=runbook, sample=True)

    sample = sample_incident()
    assert step["request"]["body"] == {
        "incident": {
            "type": "incident",
            "title": "SEV1: Checkout API returns 500s",
            "service": {"id": "PSVC001", "type": "service_reference"},
            "urgency": "high",
            "incident_key": "ai-sre-6f1c2d3e-0000-4000-8000-123456789abc",
            "body": {"type": "incident_body", "details": f"Error rate above 5% since 10:02 UTC\n\n{sample.url}"},
            "escalation_policy": {"id": "PEP0001", "type": "escalation_policy_reference"},
        }
    }
    assert step["request"]["headers"]["From"] == "alice@example.com"
    assert step["derived"]["service_source"] == "default service mapping (no mapping for 'checkout')"
    assert sample._state.adding  # never saved


def test_sample_resolve_targets_the_sample_linked_incident(pd, pd_connection):
    runbook, _ = runbook_upsert_from_spec(spec=example("resolve-on-closure"))
    [step] = runbook_dry_run(runbook=runbook, sample=True)
    assert step["request"]["url"] == f"{PD_URL}/incidents/Q1ABCDEF2GHIJK"
    assert step["request"]["body"]["incident"]["resolution"] == "Resolved in INC-123 at 2026-11-23T11:30:00Z"


def test_missing_connection_and_runtime_template_errors_name_the_field(pd, pd_connection):
    runbook = make_runbook(steps=[PAGE_STEP, {**ESCALATE, "connection": "eu"}])
    page_step = runbook.steps.get(key="page")
    page_step.inputs = {**page_step.inputs, "summary": "{{steps.nothing.incident_id}}"}  # bypasses validation
    page_step.save()

    page, escalate = runbook_dry_run(runbook=runbook, incident=IncidentFactory(), allow_reads=False)

    assert (page["status"], page["field"]) == ("error", "summary")
    assert page["error"].startswith("summary: {{steps.nothing.incident_id}} has no value")
    assert page["rendered"]["title"].startswith("SEV1: ")  # the other fields still render
    assert (escalate["status"], escalate["field"]) == ("error", "connection")
    assert "No PagerDuty connection named 'eu'" in escalate["error"]
    assert escalate["notes"] == ["Would not run: step 'page' fails first and has on_failure: stop"]


def test_pagerduty_error_during_a_read_fails_the_step_not_the_dry_run(pd, pd_connection):
    runbook = make_runbook(steps=[PAGE_STEP, ESCALATE])
    pd.add(responses.GET, f"{PD_URL}/users", status=401, json={"error": {"message": "Invalid token", "code": 2006}})

    page, escalate = runbook_dry_run(runbook=runbook, incident=IncidentFactory())

    assert page["status"] == "planned"
    assert escalate["status"] == "error"
    assert "Invalid token" in escalate["error"]
    assert escalate["reads"][0]["status"] == 401


def test_user_responder_of_unknown_type_is_looked_up_in_dry_run_and_assumed_in_preview(pd, pd_connection):
    spec = example("escalate-responder")
    runbook, _ = runbook_upsert_from_spec(spec=spec)
    pd.add(responses.GET, f"{PD_URL}/users/PRESPND", json={"user": {"id": "PRESPND"}})
    pd.add(responses.GET, f"{PD_URL}/users", json={"users": [{"id": "PSREADM", "email": "sre@example.com"}]})

    _, escalate = runbook_dry_run(runbook=runbook, incident=IncidentFactory())
    target = escalate["request"]["body"]["responder_request_targets"][0]["responder_request_target"]
    assert target == {"id": "PRESPND", "type": "user_reference"}
    assert escalate["notes"] == []

    pd.calls.reset()
    steps = [StepSource.from_step(s) for s in runbook.steps.all()]
    _, preview = steps_preview(steps=steps, incident=IncidentFactory())
    assert len(pd.calls) == 0
    assert "this preview assumes a user" in preview["notes"][0]


def test_imported_oncall_data_resolves_without_pagerduty(pd, pd_connection):
    OncallUser.objects.create(connection=pd_connection, pagerduty_id="PIMPORT", name="SRE", email="SRE@example.com")
    OncallEscalationPolicy.objects.create(connection=pd_connection, pagerduty_id="PEPIMP1", name="Checkout")
    escalate = {**ESCALATE, "with": {**ESCALATE["with"], "responder_id": "PEPIMP1", "responder_type": ""}}
    runbook = make_runbook(steps=[PAGE_STEP, escalate])

    _, planned = runbook_dry_run(runbook=runbook, incident=IncidentFactory(owner="sre@example.com"))

    assert len(pd.calls) == 0  # neither the email nor the id's type needed PagerDuty
    assert planned["request"]["body"]["requester_id"] == "PIMPORT"
    target = planned["request"]["body"]["responder_request_targets"][0]["responder_request_target"]
    assert target == {"id": "PEPIMP1", "type": "escalation_policy_reference"}
    assert planned["notes"] == []


def test_choose_incident_or_sample():
    from apps.core.errors import DomainError

    runbook = make_runbook()
    with pytest.raises(DomainError, match="either an incident or the sample"):
        runbook_dry_run(runbook=runbook)


# --- preview ---------------------------------------------------------------------------------------


def test_preview_flags_unknown_variable_on_its_field_with_a_suggestion(pd_connection):
    steps = [StepSource(key="page", action="pagerduty.create_incident", inputs={"title": "{{Activity.titel}}"})]

    [step] = steps_preview(steps=steps, incident=sample_incident())

    assert step["errors"]["title"] == ["Unknown variable {{Activity.titel}}; did you mean {{Activity.title}}?"]
    assert step["status"] == "error"


def test_preview_flags_syntax_errors_required_fields_and_later_step_references(pd_connection):
    steps = [
        StepSource(key="page", action="pagerduty.create_incident", inputs={"title": "{{#Activity.title}}"}),
        StepSource(key="page2", action="pagerduty.add_responder", inputs={"responder_id": ""}),
        StepSource(key="early", action="pagerduty.resolve_incident", inputs={"resolution": "{{steps.later.x}}"}),
        StepSource(key="later", action="pagerduty.resolve_incident"),
    ]

    page, page2, early, _ = steps_preview(steps=steps, incident=sample_incident())

    assert page["errors"]["title"][0].startswith("Mustache syntax error")
    assert page2["errors"]["responder_id"] == ["is required"]
    assert early["errors"]["resolution"][0].startswith("Unknown variable {{steps.later.x}}")


def test_preview_shows_rendered_fields_urgency_key_and_body(pd_connection):
    steps = [StepSource.from_step(type("S", (), {**PAGE_STEP, "inputs": PAGE_STEP["with"], "on_failure": "stop"}))]
    incident = IncidentFactory(severity=3, title="Disk full")

    [step] = steps_preview(steps=steps, incident=incident)

    assert step["errors"] == {} and step["step_errors"] == []
    assert step["rendered"]["title"] == "SEV3: Disk full"
    assert step["derived"]["urgency"] == "low"
    assert step["derived"]["incident_key"] == f"ai-sre-{incident.id}"
    assert step["request"]["body"]["incident"]["title"] == "SEV3: Disk full"
    assert "Activity.title" in step["variables"]


def test_preview_offers_only_outputs_of_steps_above(pd_connection):
    steps = [
        StepSource(key="page", action="pagerduty.create_incident"),
        StepSource(key="escalate", action="pagerduty.add_responder", inputs={"responder_id": "PEP5678"}),
    ]
    page, escalate = steps_preview(steps=steps, incident=sample_incident())
    assert not any(name.startswith("steps.") for name in page["variables"])
    assert "steps.page.incident_id" in escalate["variables"]


# --- API -------------------------------------------------------------------------------------------


@pytest.fixture
def api(role_user):
    client = APIClient()
    client.force_authenticate(role_user("Responders", username="sre"))
    return client


def test_api_dry_run_with_incident(api, pd, pd_connection):
    runbook, _ = runbook_upsert_from_spec(spec=example("page-on-critical"))
    incident = IncidentFactory()

    response = api.post(f"/api/v1/runbooks/{runbook.slug}/dry-run/", {"incident": str(incident.pk)}, format="json")

    assert response.status_code == 200, response.content
    data = response.json()
    assert data["runbook"] == "page-on-critical"
    assert data["version"] == 1
    assert data["incident"] == {"id": str(incident.pk), "short_id": incident.short_id}
    [step] = data["steps"]
    assert set(step) >= {"key", "action", "status", "rendered", "request", "placeholders", "error"}
    assert step["request"]["method"] == "POST"
    assert step["request"]["url"] == f"{PD_URL}/incidents"
    assert step["request"]["headers"]["Authorization"] == "Token token=***redacted***"
    assert API_KEY not in response.content.decode()
    assert len(pd.calls) == 0
    assert RunbookRun.objects.count() == 0


def test_api_dry_run_with_sample(api, pd_connection):
    runbook, _ = runbook_upsert_from_spec(spec=example("escalate-responder"))
    response = api.post(f"/api/v1/runbooks/{runbook.slug}/dry-run/", {"sample": True}, format="json")
    assert response.status_code == 200
    assert [s["key"] for s in response.json()["steps"]] == ["page", "escalate"]


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({}, 400, 'Send either {"incident": "<incident id>"} or {"sample": true}'),
        ({"sample": True, "incident": "6f1c2d3e-0000-4000-8000-123456789abc"}, 400, "Send either"),
        ({"incident": "nope"}, 400, "incident: Not an incident id: 'nope'"),
        ({"incident": "INC-²"}, 400, "incident: Not an incident id"),
        ({"sample": "yes"}, 400, "sample: Expected true or false"),
        # Well formed, but no such incident: the request was right, the incident is missing.
        ({"incident": "6f1c2d3e-0000-4000-8000-123456789abc"}, 404, "incident: No incident 6f1c2d3e"),
        ({"incident": "INC-4000000000"}, 404, "incident: No incident INC-4000000000"),
        (["sample"], 400, "Invalid data"),
    ],
)
def test_api_dry_run_bad_input_is_refused_with_a_message(api, pd_connection, payload, status, message):
    runbook = make_runbook()
    response = api.post(f"/api/v1/runbooks/{runbook.slug}/dry-run/", payload, format="json")
    assert response.status_code == status
    assert response.json()["message"].startswith(message)


def test_api_dry_run_accepts_a_short_id(api, pd_connection):
    runbook, incident = make_runbook(), IncidentFactory()
    response = api.post(f"/api/v1/runbooks/{runbook.slug}/dry-run/", {"incident": incident.short_id.lower()})
    assert response.status_code == 200
    assert response.json()["incident"] == {"id": str(incident.pk), "short_id": incident.short_id}


def test_api_dry_run_unknown_runbook_and_anonymous(api, pd_connection):
    assert api.post("/api/v1/runbooks/nope/dry-run/", {"sample": True}, format="json").status_code == 404
    runbook = make_runbook()
    anonymous = APIClient().post(f"/api/v1/runbooks/{runbook.slug}/dry-run/", {"sample": True}, format="json")
    assert anonymous.status_code in (401, 403)


# --- the PagerDuty stand-in ------------------------------------------------------------------------


@pytest.fixture
def sandbox(db):
    state = SandboxState(tokens={"sandbox-token"})
    seed_account(state, users=20, teams=3, schedules=4, escalation_policies=3, services=4, seed=1)
    server = SandboxServer(state, port=0).start()
    connection = connection_upsert(
        name="default", api_key="sandbox-token", from_email="sre@example.com", api_url=server.url
    )
    connection.service_mappings.create(service="", pagerduty_service_id="PSVC001")
    yield state, server
    server.stop()


def test_dry_run_body_is_what_the_pagerduty_stand_in_receives(sandbox, django_capture_on_commit_callbacks):
    state, server = sandbox
    runbook, _ = runbook_upsert_from_spec(spec={**example("escalate-responder"), "trigger": {"on": "manual"}})
    incident = IncidentFactory(severity=1, owner="sre@example.com", title='R&D <db> "x"')

    planned = runbook_dry_run(runbook=runbook, incident=incident)

    assert [s["status"] for s in planned] == ["planned", "planned"], planned
    assert {r["method"] for r in state.requests} <= {"GET"}
    state.reset_requests()
    with django_capture_on_commit_callbacks(execute=True):
        incident_trigger_runbook(incident_id=incident.pk, runbook_slug=runbook.slug, actor="test")
    writes = [r for r in state.requests if r["method"] in ("POST", "PUT")]
    created = next(r for r in writes if r["path"] == "/incidents")
    assert created["json"] == planned[0]["request"]["body"]
    assert created["headers"]["From"] == planned[0]["request"]["headers"]["From"]
    responder = next(r for r in writes if r["path"].endswith("/responder_requests"))
    pd_id = StepRun.objects.get(key="page").outputs["incident_id"]
    assert planned[1]["request"]["url"].replace("<steps.page.incident_id>", pd_id) == server.url + responder["path"]
    assert responder["json"] == planned[1]["request"]["body"]
