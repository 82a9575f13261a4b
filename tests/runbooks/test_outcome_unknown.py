"""Writes whose outcome is unknown — an answer lost after PagerDuty acted, a worker killed mid-step —
are settled by asking PagerDuty, never by guessing: adopt what is there, send what is not.

HTTP is mocked with `responses` (every request also checked against PagerDuty's OpenAPI spec);
a worker death is a BaseException raised where the process would have died, which nothing in the
engine catches, as SIGKILL would leave it."""

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from django.utils import timezone

from apps.runbooks import services, tasks
from apps.runbooks.executors import Action
from apps.runbooks.executors.base import _REGISTRY, ActionSpec, PlannedRequest, register
from apps.runbooks.executors.pagerduty import _not_before
from apps.runbooks.models import PagerDutyIncidentLink, RunbookRun, StepRun
from tests.conftest import PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import PAGE_STEP, add_create_ok, body, make_runbook, pd_incident, writes
from tests.runbooks.test_engine import THREE_STEPS, change_status

pytestmark = pytest.mark.django_db

SERVER_ERROR = {"error": {"message": "Internal Server Error", "code": 2000}}
RESPONDERS_URL = f"{PD_URL}/incidents/Q1ABCDEF/responder_requests"
ESCALATE = {**THREE_STEPS[1], "with": {**THREE_STEPS[1]["with"], "message": "Join {{Activity.short_id}}"}}


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing in the engine catches it, so the database keeps what was committed."""


def die(*args, **kwargs):
    raise WorkerKilled


def lookups(pd, path="/incidents"):
    return [c for c in pd.calls if c.request.method == "GET" and urlsplit(c.request.url).path == path]


def incident_with_requests(*requests_made, incident_id="Q1ABCDEF"):
    return {"incident": {**pd_incident(incident_id), "responder_requests": list(requests_made)}}


def responder_request(*, requester="PALICE1", message, targets=("PEP5678",), at=None):
    """A responder request as PagerDuty lists it on the incident (targets wrapped, as the live API)."""
    return {
        "requester": {"id": requester, "type": "user_reference"},
        "requested_at": (at or timezone.now()).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "message": message,
        "responder_request_targets": [
            {"responder_request_target": {"id": t, "type": "escalation_policy", "incidents_responders": []}}
            for t in targets
        ],
    }


def users_lookup(pd):
    pd.add(responses.GET, f"{PD_URL}/users", json={"users": [{"id": "PALICE1", "email": "alice@example.com"}]})


# --- create_incident: a lost answer on the last attempt -----------------------------------------


def _create_lost_on_the_last_attempt(pd):
    """A runbook and an incident whose create fails four times with 500; on the fifth and last
    attempt PagerDuty opens the incident, then the connection drops."""
    make_runbook()
    incident = IncidentFactory()
    for _ in range(4):
        pd.add(responses.POST, f"{PD_URL}/incidents", status=500, json=SERVER_ERROR)
    pd.add(responses.POST, f"{PD_URL}/incidents", body=requests.ConnectionError("Connection aborted"))
    return incident, f"ai-sre-{incident.id}"


def test_create_whose_last_answer_is_lost_is_looked_up_and_linked(
    pd, pd_connection, django_capture_on_commit_callbacks, fast_retries
):
    incident, key = _create_lost_on_the_last_attempt(pd)
    pd.add(responses.GET, f"{PD_URL}/incidents", json={"incidents": [pd_incident("QLOST01", key=key)]})

    change_status(incident, "Investigating", django_capture_on_commit_callbacks)

    step = StepRun.objects.get()
    assert step.status == "succeeded", step.error
    assert step.outputs["incident_id"] == "QLOST01"
    assert step.outputs["deduplicated"] is True
    assert writes(pd) == [("POST", "/incidents")] * 5
    [lookup] = lookups(pd)
    query = parse_qs(urlsplit(lookup.request.url).query)
    assert query["incident_key"] == [key]
    assert query["service_ids[]"] == ["P1234AB"]
    assert sorted(query["statuses[]"]) == ["acknowledged", "triggered"]
    link = PagerDutyIncidentLink.objects.get(incident=incident)
    assert (link.pagerduty_incident_id, link.incident_key, link.created_by_id) == ("QLOST01", key, step.pk)
    assert [e.status for e in step.exchanges.order_by("id")] == [500, 500, 500, 500, None, 200]
    assert step.attempts == 5  # the look-up is listed apart, not counted


def test_the_look_up_for_a_lost_create_gets_twice_the_patience(
    pd, pd_connection, django_capture_on_commit_callbacks, fast_retries
):
    """Seven failed reads of the incident list: more than PAGERDUTY_MAX_ATTEMPTS (5), within the
    look-up's ten. The incident is found and linked; nothing is created twice."""
    incident, key = _create_lost_on_the_last_attempt(pd)
    for _ in range(7):
        pd.add(responses.GET, f"{PD_URL}/incidents", status=502, json={"error": {"message": "Bad Gateway"}})
    pd.add(responses.GET, f"{PD_URL}/incidents", json={"incidents": [pd_incident("QLOST02", key=key)]})

    change_status(incident, "Investigating", django_capture_on_commit_callbacks)

    step = StepRun.objects.get()
    assert (step.status, step.outputs["incident_id"]) == ("succeeded", "QLOST02"), step.error
    assert writes(pd) == [("POST", "/incidents")] * 5
    assert len(lookups(pd)) == 8


def test_create_that_gives_up_after_an_ambiguous_attempt_looks_first(
    pd, pd_connection, django_capture_on_commit_callbacks, fast_retries
):
    """500, 429, 429, dropped after PagerDuty acted, 500: the last answer says nothing about the fourth."""
    make_runbook()
    incident = IncidentFactory()
    key = f"ai-sre-{incident.id}"
    for status in (500, 429, 429):
        pd.add(responses.POST, f"{PD_URL}/incidents", status=status, json=SERVER_ERROR)
    pd.add(responses.POST, f"{PD_URL}/incidents", body=requests.ConnectionError("reset after sending"))
    pd.add(responses.POST, f"{PD_URL}/incidents", status=500, json=SERVER_ERROR)
    pd.add(responses.GET, f"{PD_URL}/incidents", json={"incidents": [pd_incident("QLOST02", key=key)]})

    change_status(incident, "Investigating", django_capture_on_commit_callbacks)

    step = StepRun.objects.get()
    assert (step.status, step.outputs["incident_id"], step.outputs["deduplicated"]) == ("succeeded", "QLOST02", True)
    assert PagerDutyIncidentLink.objects.get(incident=incident).pagerduty_incident_id == "QLOST02"


def test_create_that_gives_up_and_finds_nothing_fails_with_pagerdutys_words(
    pd, pd_connection, django_capture_on_commit_callbacks, fast_retries
):
    make_runbook()
    for _ in range(5):
        pd.add(responses.POST, f"{PD_URL}/incidents", status=503, json={"error": {"message": "Service Unavailable"}})
    pd.add(responses.GET, f"{PD_URL}/incidents", json={"incidents": []})
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    # Known now: PagerDuty holds no such incident, so a re-run may create it.
    assert step.status == "failed"
    assert step.error == "PagerDuty 503: Service Unavailable"
    assert len(lookups(pd)) == 1
    assert not PagerDutyIncidentLink.objects.exists()


def test_create_whose_lookup_fails_too_says_outcome_unknown(
    pd, pd_connection, django_capture_on_commit_callbacks, fast_retries
):
    make_runbook()
    for _ in range(5):
        pd.add(responses.POST, f"{PD_URL}/incidents", body=requests.ConnectionError("reset"))
    pd.add(responses.GET, f"{PD_URL}/incidents", status=403, json={"error": {"message": "Access Denied", "code": 2010}})
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert step.status == "failed"
    assert step.error.startswith("Outcome unknown: POST /incidents may have reached PagerDuty")
    assert "looking it up failed: PagerDuty 403: Access Denied" in step.error


# --- add_responder: an ambiguous answer in the same execution -----------------------------------


def _two_steps(pd, *, users=True):
    make_runbook(steps=[PAGE_STEP, ESCALATE])
    add_create_ok(pd)
    if users:
        users_lookup(pd)


def test_ambiguous_responder_request_not_on_the_incident_is_sent_again(
    pd, pd_connection, django_capture_on_commit_callbacks, fast_retries
):
    _two_steps(pd)
    incident = IncidentFactory(owner="alice@example.com")
    pd.add(responses.POST, RESPONDERS_URL, status=502, json={"error": {"message": "Bad Gateway"}})
    pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", json=incident_with_requests())
    pd.add(responses.POST, RESPONDERS_URL, json={"responder_request": {"id": "PRR0001"}})

    change_status(incident, "Investigating", django_capture_on_commit_callbacks)

    step = StepRun.objects.get(key="escalate")
    assert step.status == "succeeded", step.error
    assert step.outputs["responder_request_id"] == "PRR0001"
    assert step.outputs["deduplicated"] is False
    assert writes(pd).count(("POST", "/incidents/Q1ABCDEF/responder_requests")) == 2
    assert len(lookups(pd, "/incidents/Q1ABCDEF")) == 1


def test_ambiguous_responder_request_found_on_the_incident_is_adopted(
    pd, pd_connection, django_capture_on_commit_callbacks, fast_retries
):
    _two_steps(pd)
    incident = IncidentFactory(owner="alice@example.com")
    pd.add(responses.POST, RESPONDERS_URL, body=requests.ReadTimeout("no answer in 10 s"))
    message = f"Join {incident.short_id}"
    someone_else = responder_request(requester="POTHER1", message=message)
    ours = responder_request(message=message)
    pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", json=incident_with_requests(ours, someone_else))

    change_status(incident, "Investigating", django_capture_on_commit_callbacks)

    step = StepRun.objects.get(key="escalate")
    assert step.status == "succeeded", step.error
    assert step.outputs["deduplicated"] is True
    assert step.outputs["responder_ids"] == ["PEP5678"]
    assert writes(pd).count(("POST", "/incidents/Q1ABCDEF/responder_requests")) == 1


# --- add_responder: a worker killed during the step ---------------------------------------------


def _recover(run):
    """The dead worker's lease expires; the redelivered message executes the run again."""
    RunbookRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    tasks.execute_run.apply(args=[run.pk])
    run.refresh_from_db()
    return run


def test_kill_during_responder_lookup_sends_on_recovery(
    pd, pd_connection, django_capture_on_commit_callbacks, monkeypatch
):
    """Killed while resolving the requester's email (GET /users): nothing was written, so the
    step is not `running` and recovery simply sends — once."""
    _two_steps(pd, users=False)
    incident = IncidentFactory(owner="alice@example.com")
    pd.add_callback(responses.GET, f"{PD_URL}/users", callback=die)
    with pytest.raises(WorkerKilled):
        change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    step = run.step_runs.get(key="escalate")
    assert (run.status, step.status) == ("running", "pending")

    users_lookup(pd)
    pd.add(responses.POST, RESPONDERS_URL, json={"responder_request": {"id": "PRR0002"}})
    run = _recover(run)

    step.refresh_from_db()
    assert (run.status, step.status) == ("succeeded", "succeeded")
    assert step.outputs["deduplicated"] is False
    assert writes(pd).count(("POST", "/incidents/Q1ABCDEF/responder_requests")) == 1
    assert lookups(pd, "/incidents/Q1ABCDEF") == []  # nothing to reconcile: it never got that far


def test_kill_after_responder_post_adopts_on_recovery(
    pd, pd_connection, django_capture_on_commit_callbacks, monkeypatch
):
    """Killed after the POST reached PagerDuty, before its answer was recorded: the step is
    `running`; recovery finds the request on the incident and adopts it instead of paging again."""
    _two_steps(pd)
    incident = IncidentFactory(owner="alice@example.com")
    pd.add_callback(responses.POST, RESPONDERS_URL, callback=die)
    with pytest.raises(WorkerKilled):
        change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    step = run.step_runs.get(key="escalate")
    assert step.status == "running"
    # Written before the request: what the step was about to send, and when it started.
    assert step.request["url"] == RESPONDERS_URL and step.started_at is not None

    message = f"Join {incident.short_id}"
    pd.add(
        responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", json=incident_with_requests(responder_request(message=message))
    )
    run = _recover(run)

    step.refresh_from_db()
    assert (run.status, step.status) == ("succeeded", "succeeded"), step.error
    assert step.outputs["deduplicated"] is True
    assert writes(pd).count(("POST", "/incidents/Q1ABCDEF/responder_requests")) == 1
    assert len(lookups(pd, "/incidents/Q1ABCDEF")) == 1


def test_kill_after_responder_marked_running_but_before_sending_sends_on_recovery(pd, pd_connection):
    """Found `running` but PagerDuty lists no such request (an old one by the same requester
    does not count): it is sent."""
    runbook = make_runbook(steps=[PAGE_STEP, ESCALATE])
    incident = IncidentFactory(owner="alice@example.com")
    run = services.run_create(runbook=runbook, event=incident.events.get())
    run.step_runs.filter(key="page").update(status="succeeded", outputs={"incident_id": "Q1ABCDEF"})
    run.step_runs.filter(key="escalate").update(status="running", started_at=timezone.now())
    users_lookup(pd)
    old = responder_request(message=f"Join {incident.short_id}", at=timezone.now() - timedelta(hours=1))
    pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", json=incident_with_requests(old))
    pd.add(responses.POST, RESPONDERS_URL, json={"responder_request": {"id": "PRR0003"}})

    services.run_execute(run_id=run.pk)

    step = run.step_runs.get(key="escalate")
    assert step.status == "succeeded", step.error
    assert step.outputs["deduplicated"] is False
    assert body(pd.calls[-1])["requester_id"] == "PALICE1"
    assert writes(pd) == [("POST", "/incidents/Q1ABCDEF/responder_requests")]


def test_interrupted_responder_request_that_cannot_be_looked_up_is_not_resent(pd, pd_connection):
    runbook = make_runbook(steps=[PAGE_STEP, {**ESCALATE, "with": {**ESCALATE["with"], "requester_id": "PREQ001"}}])
    incident = IncidentFactory()
    run = services.run_create(runbook=runbook, event=incident.events.get())
    run.step_runs.filter(key="page").update(status="succeeded", outputs={"incident_id": "Q1ABCDEF"})
    run.step_runs.filter(key="escalate").update(status="running", started_at=timezone.now())
    pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", status=403, json={"error": {"message": "Access Denied"}})

    services.run_execute(run_id=run.pk)

    step = run.step_runs.get(key="escalate")
    assert step.status == "failed"
    assert step.error.startswith("Outcome unknown: POST /incidents/Q1ABCDEF/responder_requests may have reached")
    assert "looking it up failed: PagerDuty 403: Access Denied" in step.error
    assert writes(pd) == []


def test_incident_without_responder_requests_listed_is_not_guessed(pd, pd_connection):
    runbook = make_runbook(steps=[PAGE_STEP, {**ESCALATE, "with": {**ESCALATE["with"], "requester_id": "PREQ001"}}])
    incident = IncidentFactory()
    run = services.run_create(runbook=runbook, event=incident.events.get())
    run.step_runs.filter(key="page").update(status="succeeded", outputs={"incident_id": "Q1ABCDEF"})
    run.step_runs.filter(key="escalate").update(status="running", started_at=timezone.now())
    pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", json={"incident": pd_incident()})

    services.run_execute(run_id=run.pk)

    step = run.step_runs.get(key="escalate")
    assert step.status == "failed"
    assert "Outcome unknown" in step.error and "lists no responder_requests" in step.error
    assert writes(pd) == []


# --- the hook is general: an action that cannot look its write up never re-sends it --------------


class _NoteLike(Action):
    def plan(self, ctx):
        return PlannedRequest("POST", "/incidents/Q1ABCDEF/notes", {"note": {"content": "x"}}, "sre@example.com")

    def execute(self, ctx, planned):  # pragma: no cover - must not be reached when recovering
        raise AssertionError("re-sent a write whose outcome is unknown")


@pytest.fixture
def note_like_action():
    register(
        ActionSpec(
            name="test.note_like",
            label="note-like",
            category="test",
            description="A write without its own reconcile().",
            fields=(),
            outputs={},
            implementation=_NoteLike(),
        )
    )
    yield
    _REGISTRY.pop("test.note_like")


def test_action_without_reconcile_refuses_to_guess(pd, pd_connection, note_like_action):
    runbook = make_runbook(steps=[{"key": "note", "action": "test.note_like", "connection": "default", "with": {}}])
    run = services.run_create(runbook=runbook, event=IncidentFactory().events.get())
    run.step_runs.update(status="running", started_at=timezone.now())
    services.run_execute(run_id=run.pk)
    step = run.step_runs.get()
    assert step.status == "failed"
    assert step.error.startswith("Outcome unknown: POST /incidents/Q1ABCDEF/notes may have reached PagerDuty")
    assert len(pd.calls) == 0


# --- resolve_incident: idempotent, yet a resolve whose answers were all lost is looked at --------


def test_resolve_whose_answers_failed_after_it_landed_is_seen_resolved(
    pd, pd_connection, django_capture_on_commit_callbacks, fast_retries
):
    close = {
        "key": "close",
        "action": "pagerduty.resolve_incident",
        "connection": "default",
        "with": {"incident_id": "Q1ABCDEF"},
    }
    make_runbook(steps=[close])
    pd.add(responses.PUT, f"{PD_URL}/incidents/Q1ABCDEF", body=requests.ConnectionError("reset after sending"))
    for _ in range(4):
        pd.add(responses.PUT, f"{PD_URL}/incidents/Q1ABCDEF", status=502, json={"error": {"message": "Bad Gateway"}})
    pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", json={"incident": pd_incident(status="resolved")})

    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)

    step = StepRun.objects.get()
    assert step.status == "succeeded", step.error
    assert step.outputs == {"incident_id": "Q1ABCDEF", "status": "resolved", "already_resolved": False}
    assert [e.method for e in step.exchanges.order_by("id")] == ["PUT"] * 5 + ["GET"]


@pytest.mark.parametrize(
    ("stamp", "ours"),
    [("2026-01-01T10:00:00Z", True), ("2026-01-01T10:00:00", True), ("2026-01-01T09:00:00+00:00", False), ("?", True)],
)
def test_requested_at_is_read_in_any_form_pagerduty_writes_it(stamp, ours):
    assert _not_before(stamp, datetime(2026, 1, 1, 9, 58, tzinfo=UTC)) is ours


def test_the_look_up_that_decides_gets_twice_the_patience(
    pd, pd_connection, django_capture_on_commit_callbacks, fast_retries
):
    """PAGERDUTY_MAX_ATTEMPTS (5) failed look-ups would leave the outcome unknown; a read is safe to
    repeat, so it may take up to twice as many before the step gives up."""
    _two_steps(pd)
    incident = IncidentFactory(owner="alice@example.com")
    pd.add(responses.POST, RESPONDERS_URL, status=503, json={"error": {"message": "Service Unavailable"}})
    for _ in range(7):
        pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", status=502, json={"error": {"message": "Bad Gateway"}})
    pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", json=incident_with_requests())
    pd.add(responses.POST, RESPONDERS_URL, json={"responder_request": {"id": "PRR0004"}})

    change_status(incident, "Investigating", django_capture_on_commit_callbacks)

    step = StepRun.objects.get(key="escalate")
    assert step.status == "succeeded", step.error
    assert len(lookups(pd, "/incidents/Q1ABCDEF")) == 8
    assert writes(pd).count(("POST", "/incidents/Q1ABCDEF/responder_requests")) == 2


def test_create_answered_without_the_incident_is_looked_up(pd, pd_connection, django_capture_on_commit_callbacks):
    """A 201 that does not say which incident: it exists, so the step finds it by key."""
    make_runbook()
    incident = IncidentFactory()
    pd.add(responses.POST, f"{PD_URL}/incidents", status=201, json={})
    pd.add(
        responses.GET, f"{PD_URL}/incidents", json={"incidents": [pd_incident("QNOBODY", key=f"ai-sre-{incident.id}")]}
    )
    change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert (step.status, step.outputs["incident_id"], step.outputs["deduplicated"]) == ("succeeded", "QNOBODY", True)
    assert PagerDutyIncidentLink.objects.get(incident=incident).pagerduty_incident_id == "QNOBODY"


def test_create_answered_without_the_incident_and_not_found_fails_clearly(
    pd, pd_connection, django_capture_on_commit_callbacks
):
    make_runbook()
    pd.add(responses.POST, f"{PD_URL}/incidents", status=201, json={"status": "ok"})
    pd.add(responses.GET, f"{PD_URL}/incidents", json={"incidents": []})
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert step.status == "failed"
    assert step.error == "PagerDuty: a success answer without the incident: \"{'status': 'ok'}\""
