"""runbooks/page-and-resolve.yaml on the real stack: REST API → Redis → a Celery worker →
PostgreSQL → the PagerDuty stand-in. One incident is paged; nothing is resolved until the incident
reaches Monitoring; then exactly one resolve. While it waits the run holds no worker and no lease."""

import time

import pytest

from apps.runbooks.models import RunbookRun
from tests.integration.conftest import create_incident, runs_finished, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _writes(state):
    return [(r["method"], r["path"]) for r in state.requests if r["method"] != "GET"]


def _run(incident_id) -> RunbookRun | None:
    return RunbookRun.objects.filter(incident_id=incident_id, runbook__slug="page-and-resolve").first()


def test_page_wait_for_monitoring_then_resolve_once(wired):
    api, state, worker = wired
    incident_id = create_incident(api, "checkout slow", severity=2)
    patch = lambda status: api.patch(f"/api/v1/incidents/{incident_id}/", {"status": status}, format="json")  # noqa: E731

    assert patch("Investigating").status_code == 200
    wait_for(lambda: (run := _run(incident_id)) and run.status == "waiting", message=f"waiting\n{worker.output()}")
    run = _run(incident_id)
    assert (run.lease_token, run.lease_expires_at) == ("", None)
    # The worker finished the task that parked the run: it is free, nothing polls.
    wait_for(lambda: "succeeded in" in worker.output() and "'waiting'" in worker.output(), message="task returned")
    [upstream] = list(state.incidents.values())
    assert upstream["incident_key"] == f"ai-sre-{incident_id}"
    assert _writes(state) == [("POST", "/incidents")]
    tasks_before = worker.finished_tasks("execute_run")

    assert patch("Identified").status_code == 200
    time.sleep(3)  # time enough for a wrongly resumed run to resolve
    assert _run(incident_id).status == "waiting"
    assert _writes(state) == [("POST", "/incidents")]
    assert worker.finished_tasks("execute_run") == tasks_before

    assert patch("Monitoring").status_code == 200
    wait_for(lambda: _run(incident_id).status == "succeeded", message=f"resumed\n{worker.output()}")
    run = _run(incident_id)
    assert run.step_runs.get(key="wait").outputs == {"status": "Monitoring", "timed_out": False}
    assert state.incidents[upstream["id"]]["status"] == "resolved"
    resolve = state.find_requests("PUT", f"/incidents/{upstream['id']}")[0]["json"]
    assert resolve["incident"]["status"] == "resolved"

    time.sleep(2)  # nothing else follows: one page, one resolve
    assert _writes(state) == [("POST", "/incidents"), ("PUT", f"/incidents/{upstream['id']}")]
    assert len(state.incidents) == 1
    assert runs_finished(incident_id, 1)
