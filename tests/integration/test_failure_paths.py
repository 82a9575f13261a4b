"""Failure paths over real processes: Celery workers on Redis and PostgreSQL, the stand-in on
loopback answering like a PagerDuty having a bad day. Assertions read what the stand-in received
and what the database recorded; the only clock read is "no retry came sooner than PagerDuty asked"."""

import time
from datetime import timedelta

import pytest
import requests
from django.conf import settings

from apps.incidents.models import IncidentEvent
from apps.runbooks import tasks
from apps.runbooks.models import PagerDutyIncidentLink, RunbookRun, StepRun
from tests.integration.conftest import all_runs_finished, create_incident, runs_finished, upstream_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TOKEN = "sandbox-token"
WINDOW_LEFT = 4  # seconds
PD_HEADERS = {
    "Authorization": f"Token token={TOKEN}",
    "Accept": "application/vnd.pagerduty+json;version=2",
    "Content-Type": "application/json",
    "From": "sre@example.com",
}


def _page(api, incident_id):
    # page-on-critical fires on → Investigating for SEV0/1 in production: one POST /incidents per incident.
    assert api.patch(f"/api/v1/incidents/{incident_id}/", {"status": "Investigating"}, format="json").status_code == 200


def _creates_for(state, incident_id):
    return [
        r
        for r in state.find_requests("POST", "/incidents")
        if r["json"]["incident"]["incident_key"] == f"ai-sre-{incident_id}"
    ]


def _page_step(incident_id) -> StepRun:
    return StepRun.objects.get(run__incident_id=incident_id, run__runbook__slug="page-on-critical", key="page")


def _assert_waited_after_429s(step: StepRun, reset: str | None = None):
    """Every 429 the step saw is followed by another attempt, sent no sooner than the wait PagerDuty announced."""
    exchanges = list(step.exchanges.order_by("id"))
    assert [e.attempt for e in exchanges] == list(range(1, len(exchanges) + 1))
    for throttled, following in zip(exchanges, exchanges[1:], strict=False):
        if throttled.status != 429:
            continue
        if reset is not None:
            assert throttled.response_headers["ratelimit-reset"] == reset
        announced = float(throttled.response_headers["ratelimit-reset"])
        # Both rows are written by the same worker as each answer arrives: the gap covers the sleep.
        assert following.created_at - throttled.created_at >= timedelta(seconds=announced), (
            f"attempt {following.attempt} came before the {announced}s PagerDuty asked for"
        )
    assert exchanges[-1].status != 429


def test_scripted_429_storm_is_waited_out_and_pages_once(wired, more_workers):
    api, state, worker = wired
    more_workers(concurrency=2)
    # Longer than the workers' longest backoff (PAGERDUTY_BACKOFF_CAP_SECONDS=1), so a client that
    # ignored the header and fell back to its own backoff would be caught coming back too early.
    reset = 2
    # One fewer than a step may attempt: however the 429s fall across the runs in flight, none can fail.
    throttled = settings.PAGERDUTY_MAX_ATTEMPTS - 1
    state.add_script(
        {
            "method": "POST",
            "path": "/incidents",
            "status": 429,
            "headers": {"ratelimit-reset": str(reset), "ratelimit-limit": "960", "ratelimit-remaining": "0"},
            "body": {"error": {"message": "Rate Limit Exceeded", "code": 2020}},
            "times": throttled,
        }
    )
    ids = [create_incident(api, f"storm {n}") for n in range(5)]
    for incident_id in ids:
        _page(api, incident_id)
    wait_for(lambda: all_runs_finished(ids), timeout=60, message=f"storm runs\n{worker.output()}")

    statuses = []
    for incident_id in ids:
        run = RunbookRun.objects.get(incident_id=incident_id)
        step = _page_step(incident_id)
        assert run.status == "succeeded", step.error
        assert len(upstream_for(state, incident_id)) == 1
        assert step.outputs["deduplicated"] is False
        assert step.attempts == step.exchanges.count()
        _assert_waited_after_429s(step, reset=str(reset))
        statuses += [e.status for e in step.exchanges.all()]
    assert sorted(statuses) == [201] * len(ids) + [429] * throttled
    assert len(state.incidents) == len(ids)
    received = state.find_requests("POST", "/incidents")
    assert sorted(r["status"] for r in received) == [201] * len(ids) + [429] * throttled
    assert all(r["fault"] == "script" for r in received if r["status"] == 429)


def test_stand_in_rate_limit_answers_real_429s_and_they_are_waited_out(wired):
    api, state, worker = wired
    limit = 5
    admin = requests.post(f"{state.base_url}/_sandbox/config", json={"rate_limit_per_minute": limit}, timeout=5)
    assert admin.status_code == 200, admin.text
    ids = [create_incident(api, f"throttled {n}") for n in range(3)]
    # The stand-in counts each token's requests in fixed 60 s windows, as PagerDuty does. Start
    # with this token's window used up and a few seconds left, so the 429s are real ones with
    # the stand-in's own headers but the test does not wait out a whole minute.
    with state.lock:
        state._rate_windows[TOKEN] = [time.monotonic() - (60 - WINDOW_LEFT), limit]
    for incident_id in ids:
        _page(api, incident_id)
    wait_for(lambda: all_runs_finished(ids), timeout=60, message=f"throttled runs\n{worker.output()}")

    received = state.find_requests("POST", "/incidents")
    refused = [r for r in received if r["status"] == 429]
    assert refused, "the stand-in's own limiter never refused a request: nothing was tested"
    for request in refused:
        assert request["fault"] is None  # from the limiter, not a script
        assert request["response_json"] == {"error": {"message": "Rate Limit Exceeded", "code": 2020}}
        assert request["response_headers"]["ratelimit-limit"] == str(limit)
        assert request["response_headers"]["ratelimit-remaining"] == "0"
        assert 1 <= int(request["response_headers"]["ratelimit-reset"]) <= WINDOW_LEFT
    assert [r["status"] for r in received].count(201) == len(ids)
    seen = 0
    for incident_id in ids:
        step = _page_step(incident_id)
        assert step.run.status == "succeeded", step.error
        assert len(upstream_for(state, incident_id)) == 1
        _assert_waited_after_429s(step)
        seen += sum(1 for e in step.exchanges.all() if e.status == 429)
    assert seen == len(refused)


def test_5xx_burst_is_retried_and_every_attempt_recorded(wired):
    api, state, worker = wired
    burst = [500, 503, 500, 503]  # at most PAGERDUTY_MAX_ATTEMPTS - 1 on any one step
    assert len(burst) < settings.PAGERDUTY_MAX_ATTEMPTS
    state.add_script([{"method": "POST", "path": "/incidents", "status": status} for status in burst])
    ids = [create_incident(api, f"burst {n}") for n in range(3)]
    for incident_id in ids:
        _page(api, incident_id)
    wait_for(lambda: all_runs_finished(ids), message=f"burst runs\n{worker.output()}")

    statuses = []
    for incident_id in ids:
        step = _page_step(incident_id)
        assert step.run.status == "succeeded", step.error
        assert len(upstream_for(state, incident_id)) == 1
        exchanges = list(step.exchanges.order_by("id"))
        assert [e.status for e in exchanges][-1] == 201
        assert all(e.status in (500, 503) for e in exchanges[:-1])
        assert step.attempts == len(exchanges) == len(_creates_for(state, incident_id))
        statuses += [e.status for e in exchanges]
    assert sorted(statuses) == sorted(burst + [201] * len(ids))
    assert len(state.incidents) == len(ids)


def test_5xx_after_pagerduty_acted_is_adopted_not_created_again(wired):
    """PagerDuty opens the incident, then answers 502: the retry meets the dedup 400 and adopts it."""
    api, state, worker = wired
    state.add_script({"method": "POST", "path": "/incidents", "status": 502, "after": True})
    incident_id = create_incident(api, "lost answer")
    _page(api, incident_id)
    wait_for(lambda: runs_finished(incident_id, 1), message=f"run\n{worker.output()}")

    step = _page_step(incident_id)
    assert step.status == "succeeded", step.error
    [upstream] = upstream_for(state, incident_id)
    assert step.outputs["incident_id"] == upstream["id"]
    assert step.outputs["deduplicated"] is True
    assert [(e.method, e.status) for e in step.exchanges.order_by("id")] == [
        ("POST", 502),
        ("POST", 400),
        ("GET", 200),
    ]
    assert len(state.incidents) == 1


def test_5xx_longer_than_max_attempts_fails_then_rerun_pages_once(wired):
    api, state, worker = wired
    attempts = settings.PAGERDUTY_MAX_ATTEMPTS
    state.add_script(
        {
            "method": "POST",
            "path": "/incidents",
            "status": 500,
            "body": {"error": {"message": "Internal Server Error", "code": 2000, "errors": ["database overloaded"]}},
            "times": attempts,
        }
    )
    incident_id = create_incident(api, "long burst")
    _page(api, incident_id)
    wait_for(lambda: runs_finished(incident_id, 1), message=f"failing run\n{worker.output()}")
    run = RunbookRun.objects.get(incident_id=incident_id)
    step = _page_step(incident_id)
    assert run.status == "failed"
    assert step.status == "failed"
    assert step.error == "PagerDuty 500: Internal Server Error — database overloaded"
    # A 500 may come after PagerDuty acted: before giving up the step looked, and found nothing.
    assert step.attempts == attempts  # the look-up is listed apart, not counted as an attempt
    assert [(e.method, e.status) for e in step.exchanges.all()] == [("POST", 500)] * attempts + [("GET", 200)]
    assert len(_creates_for(state, incident_id)) == attempts
    assert upstream_for(state, incident_id) == []

    response = api.post(f"/api/v1/runs/{run.pk}/rerun/")
    assert response.status_code == 202, response.content
    wait_for(lambda: RunbookRun.objects.get(pk=run.pk).status in ("succeeded", "failed"), message="re-run")
    run.refresh_from_db()
    step.refresh_from_db()
    assert run.status == "succeeded", step.error
    assert run.executions == 2
    assert len(upstream_for(state, incident_id)) == 1
    assert [r["status"] for r in _creates_for(state, incident_id)] == [500] * attempts + [201]
    # The failed attempts stay on the record next to the one that worked.
    assert [e.status for e in step.exchanges.all()] == [500] * attempts + [200, 201]
    assert (step.attempts, step.response["status"]) == (attempts + 1, 201)
    assert step.outputs["incident_id"] == upstream_for(state, incident_id)[0]["id"]


def test_incident_already_open_upstream_is_adopted(wired):
    api, state, worker = wired
    incident_id = create_incident(api, "already paged by hand")
    made = requests.post(
        f"{state.base_url}/incidents",
        json={
            "incident": {
                "type": "incident",
                "title": "paged by hand",
                "service": {"id": "PSVC001", "type": "service_reference"},
                "incident_key": f"ai-sre-{incident_id}",
            }
        },
        headers=PD_HEADERS,
        timeout=5,
    )
    assert made.status_code == 201, made.text
    by_hand = made.json()["incident"]["id"]
    _page(api, incident_id)
    wait_for(lambda: runs_finished(incident_id, 1), message=f"dedup run\n{worker.output()}")

    step = _page_step(incident_id)
    assert step.status == "succeeded", step.error
    assert step.outputs["deduplicated"] is True
    assert step.outputs["incident_id"] == by_hand
    assert [e.status for e in step.exchanges.all()] == [400, 200]  # the dedup 400, then the lookup
    [refused] = _creates_for(state, incident_id)[1:]
    assert "Open incident with matching dedup key already exists" in str(refused["response_json"])
    [lookup] = state.find_requests("GET", "/incidents")
    assert lookup["query"]["incident_key"] == [f"ai-sre-{incident_id}"]
    assert lookup["query"]["service_ids[]"] == ["PSVC001"]
    assert sorted(lookup["query"]["statuses[]"]) == ["acknowledged", "triggered"]
    link = PagerDutyIncidentLink.objects.get(incident_id=incident_id)
    assert (link.pagerduty_incident_id, link.created_by_id) == (by_hand, step.pk)
    assert [i["id"] for i in state.incidents.values()] == [by_hand]
    assert state.incidents[by_hand]["title"] == "paged by hand"


def test_redelivered_messages_for_a_finished_run_send_nothing(wired):
    api, state, worker = wired
    incident_id = create_incident(api, "once")
    _page(api, incident_id)
    wait_for(lambda: runs_finished(incident_id, 1), message="first run")
    run = RunbookRun.objects.get(incident_id=incident_id)
    event = IncidentEvent.objects.get(incident_id=incident_id, to_status="Investigating", kind="status_changed")
    assert run.event_id == event.pk
    sent_before = len(state.requests)
    dispatched, executed = worker.finished_tasks("dispatch_incident_event"), worker.finished_tasks("execute_run")

    # The same two messages again, through the real broker, as Redis redelivers an unacked message.
    tasks.dispatch_incident_event.delay(event.pk)
    tasks.execute_run.delay(run.pk)
    wait_for(
        lambda: (
            worker.finished_tasks("dispatch_incident_event") > dispatched
            and worker.finished_tasks("execute_run") > executed
        ),
        message=f"redeliveries consumed\n{worker.output()}",
    )
    assert len(state.requests) == sent_before
    assert RunbookRun.objects.filter(incident_id=incident_id).count() == 1
    run.refresh_from_db()
    assert (run.status, run.executions) == ("succeeded", 1)
    assert len(upstream_for(state, incident_id)) == 1
