"""Outcome unknown, settled by asking PagerDuty, over real processes: the stand-in "does it, then
loses the answer" (`after` scripts), workers are SIGKILLed mid-step, beat sweeps what a dead
worker left behind. Assertions read what the stand-in holds and what the database recorded."""

import os
import re
import signal
import time

import pytest

from apps.runbooks.models import PagerDutyIncidentLink, RunbookRun, StepRun
from tests.integration.conftest import QUEUE, create_incident, runs_finished, upstream_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _step(incident_id, slug, key) -> StepRun:
    return StepRun.objects.get(run__incident_id=incident_id, run__runbook__slug=slug, key=key)


# --- item: a page the engine did not know it made -----------------------------------------------


@pytest.mark.parametrize(
    "answers",
    [
        pytest.param([500, 500, 500, 500, "lost"], id="lost-on-the-last-attempt"),
        pytest.param([500, 429, 429, "lost", 500], id="lost-then-500"),
    ],
)
def test_create_whose_answer_is_lost_is_looked_up_and_linked(wired, answers):
    api, state, worker = wired
    # "lost": PagerDuty opens the incident, then the connection drops before the answer (status 0).
    state.add_script(
        [
            {"method": "POST", "path": "/incidents", "status": 0, "after": True}
            if answer == "lost"
            else {"method": "POST", "path": "/incidents", "status": answer}
            for answer in answers
        ]
    )
    incident_id = create_incident(api, "answer lost")
    api.patch(f"/api/v1/incidents/{incident_id}/", {"status": "Investigating"}, format="json")
    wait_for(lambda: runs_finished(incident_id, 1), timeout=60, message=f"run\n{worker.output()}")

    step = _step(incident_id, "page-on-critical", "page")
    [upstream] = upstream_for(state, incident_id)
    assert step.status == "succeeded", step.error
    assert step.outputs["deduplicated"] is True
    assert step.outputs["incident_id"] == upstream["id"]
    link = PagerDutyIncidentLink.objects.get(incident_id=incident_id)
    assert (link.pagerduty_incident_id, link.created_by_id) == (upstream["id"], step.pk)
    creates = state.find_requests("POST", "/incidents")
    assert len(creates) == len(answers)  # never more than the policy allows
    [lookup] = state.find_requests("GET", "/incidents")
    assert lookup["query"]["incident_key"] == [f"ai-sre-{incident_id}"]
    assert [e.method for e in step.exchanges.order_by("id")] == ["POST"] * len(answers) + ["GET"]
    assert len(state.incidents) == 1


# --- item: outcome unknown where the outcome is knowable -----------------------------------------


def _escalate(api, state, worker):
    """severity → SEV0 fires escalate-responder: page (create), then add PRESPND as a responder,
    requested by sre@example.com, whose id is looked up first (GET /users?query=)."""
    incident_id = create_incident(api, "escalating", severity=2)
    api.patch(f"/api/v1/incidents/{incident_id}/", {"severity": 0}, format="json")
    return incident_id


def _kill_pool_child(worker):
    [child] = worker.pool_children()
    os.kill(child, signal.SIGKILL)


def test_kill_during_the_responder_lookup_sends_once_on_recovery(wired):
    api, state, worker = wired
    # The requester look-up answers after 5 s: time to kill the worker while the step is in it.
    state.add_script({"method": "GET", "path": "/users", "status": 200, "after": True, "delay_ms": 5000})
    incident_id = _escalate(api, state, worker)
    wait_for(lambda: state.find_requests("GET", "/users"), message=f"look-up sent\n{worker.output()}")
    step = _step(incident_id, "escalate-responder", "escalate")
    assert step.status == "pending"  # looking up writes nothing: not `running` yet
    _kill_pool_child(worker)

    wait_for(lambda: runs_finished(incident_id, 1), timeout=60, message=f"recovered\n{worker.output()}")
    step.refresh_from_db()
    run = step.run
    assert run.status == "succeeded", step.error
    assert run.executions >= 2
    assert step.outputs["deduplicated"] is False
    [upstream] = upstream_for(state, incident_id)
    assert len(state.find_requests("POST", f"/incidents/{upstream['id']}/responder_requests")) == 1
    assert len(state.incidents[upstream["id"]]["responder_requests"]) == 1
    assert state.find_requests("GET", f"/incidents/{upstream['id']}") == []  # nothing to reconcile


def test_kill_after_the_responder_request_reached_pagerduty_adopts_it(wired):
    api, state, worker = wired
    # PagerDuty records the request, then its answer takes 5 s: the worker dies waiting for it.
    state.add_script(
        {"method": "POST", "path": "/incidents/*/responder_requests", "status": 200, "after": True, "delay_ms": 5000}
    )
    incident_id = _escalate(api, state, worker)
    wait_for(lambda: any(i["responder_requests"] for i in state.incidents.values()), message="request made")
    step = _step(incident_id, "escalate-responder", "escalate")
    assert step.status == "running"
    _kill_pool_child(worker)

    wait_for(lambda: runs_finished(incident_id, 1), timeout=60, message=f"recovered\n{worker.output()}")
    step.refresh_from_db()
    assert step.run.status == "succeeded", step.error
    assert step.outputs["deduplicated"] is True
    assert step.outputs["responder_ids"] == ["PRESPND"]
    [upstream] = upstream_for(state, incident_id)
    assert len(state.find_requests("POST", f"/incidents/{upstream['id']}/responder_requests")) == 1
    assert len(state.incidents[upstream["id"]]["responder_requests"]) == 1
    assert len(state.find_requests("GET", f"/incidents/{upstream['id']}")) == 1  # the reconciling look-up


def test_ambiguous_responder_answer_is_checked_on_the_incident_and_not_sent_twice(wired):
    api, state, worker = wired
    state.add_script({"method": "POST", "path": "/incidents/*/responder_requests", "status": 502, "after": True})
    incident_id = _escalate(api, state, worker)
    wait_for(lambda: runs_finished(incident_id, 1), timeout=60, message=f"run\n{worker.output()}")
    step = _step(incident_id, "escalate-responder", "escalate")
    assert step.status == "succeeded", step.error
    assert step.outputs["deduplicated"] is True
    [upstream] = upstream_for(state, incident_id)
    assert len(state.incidents[upstream["id"]]["responder_requests"]) == 1
    assert [e.status for e in step.exchanges.order_by("id") if e.method == "POST"] == [502]


# --- item: recovery within a lease and an interval -----------------------------------------------

_TASK_LINE = re.compile(r"Task (\S+)\[([0-9a-f-]+)\] (received|succeeded|retry|raised|ignored|rejected)")


def _busy(log: str) -> bool:
    """Whether the worker of this log is in the middle of a task (received, not yet finished): the
    run may be executed by the dispatch task itself (in place) or by execute_run."""
    states = {match[2]: match[3] for match in _TASK_LINE.finditer(log)}
    return "received" in states.values()


def test_run_orphaned_by_a_killed_worker_finishes_within_a_lease_and_an_interval(wired, procfile):
    """The whole worker executing a run is killed (main process and pool): its message stays
    unacknowledged in Redis for CELERY_VISIBILITY_TIMEOUT (900 s). Beat's sweep finds the run once
    its lease expired, and the other worker finishes it, adopting the incident the dead one made."""
    api, state, worker = wired
    lease, interval = 3, 2  # RUNBOOK_RUN_LEASE_SECONDS of these workers; RUN_RECOVERY_INTERVAL below
    procfile.beat(RUN_RECOVERY_INTERVAL=interval)
    procfile.worker("other", queue=QUEUE, concurrency=1)
    state.add_script({"method": "POST", "path": "/incidents", "status": 201, "after": True, "delay_ms": 8000})
    incident_id = create_incident(api, "orphaned")
    api.patch(f"/api/v1/incidents/{incident_id}/", {"status": "Investigating"}, format="json")
    wait_for(lambda: len(state.incidents) == 1, message=f"incident created upstream\n{worker.output()}")
    if _busy(procfile.logs["other"].read_text(errors="replace")):
        victims = procfile.celery_pids("other") + procfile.pool_pids("other")
    else:
        victims = [worker.process.pid, *worker.pool_children()]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()

    wait_for(lambda: runs_finished(incident_id, 1), timeout=90, message="orphaned run recovered")
    settled = time.monotonic() - killed
    run = RunbookRun.objects.get(incident_id=incident_id)
    step = run.step_runs.get()
    assert run.status == "succeeded", step.error
    assert run.executions == 2
    assert step.outputs["deduplicated"] is True
    assert len(state.find_requests("POST", "/incidents")) == 1
    print(f"orphaned run finished {settled:.1f} s after the kill (lease {lease} s, sweep every {interval} s)")
    # Far below the 900 s Redis would take to redeliver; generous above lease + interval on a busy machine.
    assert settled < lease + interval + 30
