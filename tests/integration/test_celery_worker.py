"""Status change through the REST API → Redis → a real Celery worker → PostgreSQL → the
PagerDuty stand-in over HTTP. Nothing is mocked."""

import os
import signal

import pytest

from apps.runbooks.models import RunbookRun, StepRun
from tests.integration.conftest import runs_finished, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _writes(state):
    return [(r["method"], r["path"]) for r in state.requests if r["method"] != "GET"]


def test_status_changes_drive_pagerduty_through_a_real_worker(wired):
    api, state, worker = wired
    created = api.post(
        "/api/v1/incidents/",
        {
            "title": 'R&D <db> "x"',
            "summary": "db down",
            "severity": 1,
            "environment": "production",
            "service": "checkout",
            "owner": "sre@example.com",
        },
        format="json",
    ).json()
    incident_id = created["id"]

    assert api.patch(f"/api/v1/incidents/{incident_id}/", {"status": "Investigating"}, format="json").status_code == 200
    wait_for(lambda: runs_finished(incident_id, 1), message=f"page run\n{worker.output()}")
    run = RunbookRun.objects.get(incident_id=incident_id, runbook__slug="page-on-critical")
    assert run.status == "succeeded", run.step_runs.get().error
    [incident] = list(state.incidents.values())
    assert incident["title"] == 'SEV1: R&D <db> "x"'
    assert incident["incident_key"] == f"ai-sre-{incident_id}"
    assert incident["urgency"] == "high"
    assert incident["escalation_policy"]["id"] == "PEP0001"
    create = state.find_requests("POST", "/incidents")[0]
    assert create["headers"]["Authorization"] == "Token token=sandbox-token"
    assert create["headers"]["From"] == "sre@example.com"

    # Escalation: the page step reuses the open incident, then a responder is requested.
    api.patch(f"/api/v1/incidents/{incident_id}/", {"severity": "SEV0"}, format="json")
    wait_for(lambda: runs_finished(incident_id, 2), message="escalation run")
    escalation = RunbookRun.objects.get(incident_id=incident_id, runbook__slug="escalate-responder")
    assert escalation.status == "succeeded", [s.error for s in escalation.step_runs.all()]
    assert escalation.step_runs.get(key="page").outputs["deduplicated"] is True
    assert [
        r["responder_request_target"]["id"]
        for r in state.find_requests("POST", f"/incidents/{incident['id']}/responder_requests")[0]["json"][
            "responder_request_targets"
        ]
    ] == ["PRESPND"]

    api.patch(f"/api/v1/incidents/{incident_id}/", {"status": "Resolved"}, format="json")
    wait_for(lambda: runs_finished(incident_id, 3), message="resolve run")
    assert state.incidents[incident["id"]]["status"] == "resolved"
    assert _writes(state) == [
        ("POST", "/incidents"),
        ("POST", f"/incidents/{incident['id']}/responder_requests"),
        ("PUT", f"/incidents/{incident['id']}"),
    ]
    assert len(state.incidents) == 1


def test_worker_killed_after_pagerduty_answered_pages_once(wired):
    """SIGKILL the pool process while PagerDuty's answer is on the wire; the redelivered task
    (acks_late + reject_on_worker_lost) must adopt the incident, not create a second one."""
    api, state, worker = wired
    # PagerDuty creates the incident, then its answer takes 5 s to arrive — plenty of time to die.
    state.add_script({"method": "POST", "path": "/incidents", "after": True, "delay_ms": 5000, "status": 201})
    incident_id = api.post(
        "/api/v1/incidents/",
        {"title": "kill me", "severity": 0, "environment": "production", "owner": "sre@example.com"},
        format="json",
    ).json()["id"]
    api.patch(f"/api/v1/incidents/{incident_id}/", {"status": "Investigating"}, format="json")

    wait_for(lambda: state.find_requests("POST", "/incidents") or state.incidents, message="create reached PagerDuty")
    wait_for(lambda: len(state.incidents) == 1, message="incident created upstream")
    [child] = worker.pool_children()
    os.kill(child, signal.SIGKILL)

    wait_for(lambda: runs_finished(incident_id, 1), timeout=60, message=f"recovered run\n{worker.output()}")
    run = RunbookRun.objects.get(incident_id=incident_id)
    step = StepRun.objects.get(run=run)
    assert run.status == "succeeded", step.error
    assert run.executions >= 2
    assert step.outputs["deduplicated"] is True
    assert len(state.incidents) == 1
    assert len(state.find_requests("POST", "/incidents")) == 1
    lookups = state.find_requests("GET", "/incidents")
    assert lookups and lookups[-1]["query"]["incident_key"] == [f"ai-sre-{incident_id}"]
