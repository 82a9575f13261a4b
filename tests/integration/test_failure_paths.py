"""Failure paths over real processes: a Celery worker on Redis and PostgreSQL, the stand-in on
loopback answering like a PagerDuty having a bad day."""

import pytest
import requests

from apps.runbooks import tasks
from apps.runbooks.models import RunbookRun
from tests.integration.conftest import runs_finished, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _incident(api, title, severity=1):
    return api.post(
        "/api/v1/incidents/",
        {"title": title, "severity": severity, "environment": "production", "owner": "sre@example.com"},
        format="json",
    ).json()["id"]


def _page(api, incident_id):
    assert api.patch(f"/api/v1/incidents/{incident_id}/", {"status": "Investigating"}, format="json").status_code == 200


def _upstream_incidents_for(state, incident_id):
    return [i for i in state.incidents.values() if i["incident_key"] == f"ai-sre-{incident_id}"]


def test_429_storm_is_waited_out_and_pages_once(wired):
    api, state, worker = wired
    state.add_script(
        {
            "method": "POST",
            "path": "/incidents",
            "status": 429,
            "headers": {"ratelimit-reset": "1", "ratelimit-limit": "960", "ratelimit-remaining": "0"},
            "body": {"error": {"message": "Rate Limit Exceeded", "code": 2020}},
            "times": 4,
        }
    )
    ids = [_incident(api, f"storm {n}") for n in range(3)]
    for incident_id in ids:
        _page(api, incident_id)
    for incident_id in ids:
        wait_for(
            lambda i=incident_id: runs_finished(i, 1), timeout=60, message=f"run of {incident_id}\n{worker.output()}"
        )
    statuses = []
    for incident_id in ids:
        run = RunbookRun.objects.get(incident_id=incident_id)
        step = run.step_runs.get()
        assert run.status == "succeeded", step.error
        assert len(_upstream_incidents_for(state, incident_id)) == 1
        statuses += list(step.exchanges.values_list("status", flat=True))
    assert statuses.count(429) == 4 and statuses.count(201) == 3
    assert len(state.incidents) == 3


def test_5xx_burst_is_retried_then_a_longer_one_fails_and_reruns(wired):
    api, state, worker = wired
    state.add_script({"method": "POST", "path": "/incidents", "status": 503, "body": None, "times": 2})
    first = _incident(api, "burst")
    _page(api, first)
    wait_for(lambda: runs_finished(first, 1), message=f"burst run\n{worker.output()}")
    step = RunbookRun.objects.get(incident_id=first).step_runs.get()
    assert (step.status, list(step.exchanges.values_list("status", flat=True))) == ("succeeded", [503, 503, 201])

    # Longer than PAGERDUTY_MAX_ATTEMPTS (5): the step fails with PagerDuty's words.
    state.add_script(
        {
            "method": "POST",
            "path": "/incidents",
            "status": 500,
            "body": {"error": {"message": "Internal Server Error", "code": 2000}},
            "times": 5,
        }
    )
    second = _incident(api, "long burst")
    _page(api, second)
    wait_for(lambda: runs_finished(second, 1), message="failing run")
    run = RunbookRun.objects.get(incident_id=second)
    step = run.step_runs.get()
    assert run.status == "failed"
    assert step.attempts == 5 and step.error == "PagerDuty 500: Internal Server Error"
    assert _upstream_incidents_for(state, second) == []

    assert api.post(f"/api/v1/runs/{run.pk}/rerun/").status_code == 202
    wait_for(lambda: RunbookRun.objects.get(pk=run.pk).status == "succeeded", message="re-run")
    assert len(_upstream_incidents_for(state, second)) == 1


def test_incident_already_open_upstream_is_adopted(wired):
    api, state, worker = wired
    incident_id = _incident(api, "already paged by hand")
    sandbox_url = RunbookRun._meta.apps.get_model("pagerduty", "PagerDutyConnection").objects.get().api_url
    made = requests.post(
        f"{sandbox_url}/incidents",
        json={
            "incident": {
                "type": "incident",
                "title": "paged by hand",
                "service": {"id": "PSVC001", "type": "service_reference"},
                "incident_key": f"ai-sre-{incident_id}",
            }
        },
        headers={
            "Authorization": "Token token=sandbox-token",
            "Accept": "application/vnd.pagerduty+json;version=2",
            "Content-Type": "application/json",
            "From": "sre@example.com",
        },
        timeout=5,
    )
    assert made.status_code == 201, made.text
    _page(api, incident_id)
    wait_for(lambda: runs_finished(incident_id, 1), message=f"dedup run\n{worker.output()}")
    step = RunbookRun.objects.get(incident_id=incident_id).step_runs.get()
    assert step.status == "succeeded", step.error
    assert step.outputs["deduplicated"] is True
    assert step.outputs["incident_id"] == made.json()["incident"]["id"]
    assert [e.status for e in step.exchanges.all()] == [400, 200]  # the dedup 400, then the lookup
    assert len(_upstream_incidents_for(state, incident_id)) == 1


def test_redelivered_message_for_a_finished_run_sends_nothing(wired):
    api, state, worker = wired
    incident_id = _incident(api, "once")
    _page(api, incident_id)
    wait_for(lambda: runs_finished(incident_id, 1), message="first run")
    run = RunbookRun.objects.get(incident_id=incident_id)
    sent_before = len(state.requests)
    executed = worker.finished_tasks("execute_run")
    tasks.execute_run.delay(run.pk)  # the same message again, through the real broker
    wait_for(lambda: worker.finished_tasks("execute_run") > executed, message="redelivery consumed")
    assert len(state.requests) == sent_before
    assert RunbookRun.objects.get(pk=run.pk).executions == 1
