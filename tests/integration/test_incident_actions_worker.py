"""A note and an override on the real stack (Celery worker subprocess, Redis, PostgreSQL, the
stand-in over HTTP): the worker is SIGKILLed after PagerDuty recorded the write and before it
answered; the recovered run adopts what PagerDuty holds and writes nothing twice."""

import os
import signal

import pytest

from apps.runbooks.models import RunbookRun, StepRun
from apps.runbooks.services import runbook_upsert_from_spec
from apps.sandbox import CHECKOUT_SCHEDULE_ID, RESPONDER_USER_ID
from tests.integration.conftest import create_incident, runs_finished, upstream_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RUNBOOK = {
    "slug": "note-and-cover",
    "name": "Note and cover",
    "trigger": {"on": "manual"},
    "steps": [
        {"key": "page", "action": "pagerduty.create_incident", "with": {"title": "{{Activity.title}}"}},
        {"key": "note", "action": "pagerduty.add_note", "with": {"content": "Bridge open for {{Activity.short_id}}"}},
        {
            "key": "cover",
            "action": "pagerduty.create_override",
            "with": {"schedule_id": CHECKOUT_SCHEDULE_ID, "user_id": RESPONDER_USER_ID, "start": "now", "end": "+8h"},
        },
    ],
}


def _kill_pool_child(worker):
    [child] = worker.pool_children()
    os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("victim", ["note", "cover"])
def test_kill_after_pagerduty_recorded_the_write_adopts_it(wired, victim):
    api, state, worker = wired
    runbook_upsert_from_spec(spec=RUNBOOK)
    path = "/incidents/*/notes" if victim == "note" else f"/schedules/{CHECKOUT_SCHEDULE_ID}/overrides"
    # PagerDuty records it, then its answer takes 5 s: the worker dies waiting for it.
    state.add_script({"method": "POST", "path": path, "status": 200, "after": True, "delay_ms": 5000})
    overrides_before = len(state.schedules[CHECKOUT_SCHEDULE_ID]["_overrides"])
    incident_id = create_incident(api, f"kill during {victim}")
    answer = api.post(f"/api/v1/runbooks/{RUNBOOK['slug']}/run/", {"incident": incident_id}, format="json")
    assert answer.status_code == 202, answer.content

    def written():
        if victim == "note":
            return any(state.notes.get(i["id"]) for i in upstream_for(state, incident_id))
        return len(state.schedules[CHECKOUT_SCHEDULE_ID]["_overrides"]) > overrides_before

    wait_for(written, message=f"{victim} recorded upstream\n{worker.output()}")
    step = StepRun.objects.get(run__incident_id=incident_id, key=victim)
    assert step.status == "running"
    _kill_pool_child(worker)

    wait_for(lambda: runs_finished(incident_id, 1), timeout=90, message=f"recovered\n{worker.output()}")
    run = RunbookRun.objects.get(incident_id=incident_id)
    steps = {s.key: s for s in run.step_runs.all()}
    assert run.status == "succeeded", {k: s.error for k, s in steps.items()}
    assert run.executions >= 2
    assert steps[victim].outputs["deduplicated"] is True
    [upstream] = upstream_for(state, incident_id)
    assert len(state.notes[upstream["id"]]) == 1
    assert len(state.schedules[CHECKOUT_SCHEDULE_ID]["_overrides"]) == overrides_before + 1
    posts = state.find_requests("POST", path.replace("*", upstream["id"]))
    assert len(posts) == 1
