"""One broker hop from a status change to PagerDuty, and the bookkeeping that keeps it safe.

The dispatch task executes the event's first run in place; the others go to execute_run as
before. Uniqueness and the lease are what they were: a redelivered dispatch (its worker died)
waits for the dead worker's lease, then carries on. Every HTTP attempt is recorded before the
step's next request leaves and before any wait, though it is written with the step's next write."""

import time
from datetime import timedelta

import pytest
import responses
from django.utils import timezone

from apps.incidents.models import IncidentEvent
from apps.incidents.services import incident_update
from apps.runbooks import services, tasks
from apps.runbooks.models import RunbookRun, RunStatus, StepRunExchange
from tests.conftest import PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import PAGE_STEP, add_create_ok, make_runbook, pd_incident, writes

pytestmark = pytest.mark.django_db

SERVER_ERROR = {"error": {"message": "Internal Server Error", "code": 2000}}
RESOLVE_STEP = {
    "key": "close",
    "action": "pagerduty.resolve_incident",
    "connection": "default",
    "with": {"incident_id": "{{steps.page.incident_id}}"},
}


@pytest.fixture
def queued(monkeypatch):
    """execute_run messages as the broker would get them (not executed): (run id, countdown)."""
    sent = []
    monkeypatch.setattr(tasks.execute_run, "delay", lambda run_id: sent.append((run_id, None)))
    monkeypatch.setattr(
        tasks.execute_run, "apply_async", lambda args, countdown=None: sent.append((args[0], countdown))
    )
    return sent


def status_change(incident, monkeypatch, capture) -> IncidentEvent:
    """The change is committed and its dispatch message published, but not yet consumed."""
    published = []
    with monkeypatch.context() as patched, capture(execute=True):
        patched.setattr(tasks.dispatch_incident_event, "delay", published.append)
        incident_update(incident_id=incident.pk, status="Investigating", actor="test")
    [event_id] = published
    return IncidentEvent.objects.get(pk=event_id)


def test_dispatch_executes_the_first_run_in_place_and_queues_the_others(
    pd, pd_connection, queued, monkeypatch, django_capture_on_commit_callbacks
):
    first = make_runbook("a-first")
    second = make_runbook("b-second")
    incident = IncidentFactory()
    event = status_change(incident, monkeypatch, django_capture_on_commit_callbacks)
    add_create_ok(pd, key=f"ai-sre-{incident.id}")

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.dispatch_incident_event.apply(args=[event.pk]).get() == "succeeded"

    runs = {run.runbook_id: run for run in RunbookRun.objects.all()}
    assert (runs[first.pk].status, runs[first.pk].executions) == (RunStatus.SUCCEEDED, 1)
    assert runs[first.pk].lease_token == "" and runs[first.pk].lease_expires_at is None
    assert runs[second.pk].status == RunStatus.PENDING
    assert queued == [(runs[second.pk].pk, None)]  # only the second run takes a second hop
    assert writes(pd) == [("POST", "/incidents")]
    event.refresh_from_db()
    assert event.dispatched_at is not None


def test_redelivered_dispatch_waits_for_the_dead_workers_lease_then_carries_on(
    pd, pd_connection, queued, monkeypatch, settings, django_capture_on_commit_callbacks
):
    make_runbook()
    incident = IncidentFactory()
    event = status_change(incident, monkeypatch, django_capture_on_commit_callbacks)
    # The first delivery created the run, leased to itself, and died before its first step.
    [run] = services.runs_create_for_event(event_id=event.pk, queue_from=1)
    run.refresh_from_db()
    assert (run.status, run.executions) == (RunStatus.RUNNING, 1)
    assert run.lease_expires_at > timezone.now() + timedelta(seconds=settings.RUNBOOK_RUN_LEASE_SECONDS - 5)

    # Redelivered while the lease holds: nothing created, nothing sent, execute_run queued for its end.
    assert tasks.dispatch_incident_event.apply(args=[event.pk]).get() is None
    assert RunbookRun.objects.count() == 1
    assert len(pd.calls) == 0
    [(run_id, countdown)] = queued
    assert run_id == run.pk
    assert settings.RUNBOOK_RUN_LEASE_SECONDS - 5 < countdown <= settings.RUNBOOK_RUN_LEASE_SECONDS + 1

    # Redelivered once the lease expired: taken over and finished in place.
    RunbookRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    add_create_ok(pd, key=f"ai-sre-{incident.id}")
    assert tasks.dispatch_incident_event.apply(args=[event.pk]).get() == "succeeded"
    run.refresh_from_db()
    assert (run.status, run.executions) == (RunStatus.SUCCEEDED, 2)
    assert writes(pd) == [("POST", "/incidents")]

    # And again, finished: a no-op.
    assert tasks.dispatch_incident_event.apply(args=[event.pk]).get() is None
    assert writes(pd) == [("POST", "/incidents")]
    assert RunbookRun.objects.get().executions == 2


def test_every_attempt_is_recorded_before_the_next_request_and_before_each_wait(
    pd, pd_connection, monkeypatch, fast_retries, django_capture_on_commit_callbacks
):
    recorded_when = {"sleeps": [], "look-up": None}
    monkeypatch.setattr(
        "apps.runbooks.services._sleep", lambda seconds: recorded_when["sleeps"].append(StepRunExchange.objects.count())
    )
    make_runbook()
    for _ in range(5):
        pd.add(responses.POST, f"{PD_URL}/incidents", status=500, json=SERVER_ERROR)

    def look_up(request):
        # The fifth 500 may have opened the incident: it is on record before the look-up leaves.
        recorded_when["look-up"] = StepRunExchange.objects.count()
        return 200, {}, '{"incidents": []}'

    pd.add_callback(responses.GET, f"{PD_URL}/incidents", callback=look_up, content_type="application/json")
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=IncidentFactory().pk, status="Investigating", actor="test")

    assert recorded_when == {"sleeps": [1, 2, 3, 4], "look-up": 5}
    step = RunbookRun.objects.get().step_runs.get()
    assert step.status == RunStatus.FAILED
    assert [(e.method, e.status, e.attempt) for e in step.exchanges.all()] == [
        ("POST", 500, 1),
        ("POST", 500, 2),
        ("POST", 500, 3),
        ("POST", 500, 4),
        ("POST", 500, 5),
        ("GET", 200, 1),
    ]
    # The look-up is recorded but is no attempt, and its answer is not the step's (run-record pairing).
    assert step.attempts == 5
    assert step.response["status"] == 500  # the answer to the step's own last request, as it is stored
    created = [e.created_at for e in step.exchanges.all()]
    assert created == sorted(created) and created[-1] <= step.finished_at


def test_a_run_whose_lease_was_taken_over_stops_before_its_next_step(
    pd, pd_connection, settings, django_capture_on_commit_callbacks
):
    """The lease is renewed only with less than half of it left; a worker that was that slow finds
    out, when renewing, that the run was taken over, and stops."""
    settings.RUNBOOK_RUN_LEASE_SECONDS = 1
    make_runbook(steps=[PAGE_STEP, RESOLVE_STEP])

    def slow_create(request):
        time.sleep(0.6)  # past half the lease
        RunbookRun.objects.update(lease_token="another-worker", lease_expires_at=timezone.now() + timedelta(60))
        return 201, {}, responses.json_module.dumps({"incident": pd_incident()})

    pd.add_callback(responses.POST, f"{PD_URL}/incidents", callback=slow_create, content_type="application/json")
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=IncidentFactory().pk, status="Investigating", actor="test")

    run = RunbookRun.objects.get()
    assert [(s.key, s.status) for s in run.step_runs.all()] == [("page", "succeeded"), ("close", "pending")]
    assert (run.status, run.lease_token) == (RunStatus.RUNNING, "another-worker")  # its record, untouched
    assert writes(pd) == [("POST", "/incidents")]


def _link_reads(queries) -> list[str]:
    """Statements reading the link table itself (not the event's EXISTS over it)."""
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith(
            ('SELECT "runbooks_pagerdutyincidentlink"', 'SELECT 1 AS "a" FROM "runbooks_pagerdutyincidentlink"')
        )
    ]


def test_a_first_page_on_an_unlinked_incident_looks_for_no_link(
    pd, pd_connection, monkeypatch, django_capture_on_commit_callbacks
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    make_runbook()
    incident = IncidentFactory()
    event = status_change(incident, monkeypatch, django_capture_on_commit_callbacks)
    add_create_ok(pd, key=f"ai-sre-{incident.id}")

    with CaptureQueriesContext(connection) as queries:
        run = services.event_dispatch(event_id=event.pk)

    assert run.status == RunStatus.SUCCEEDED
    assert writes(pd) == [("POST", "/incidents")]
    # Read with the event: the incident had no link, so the create step looked for none.
    assert _link_reads(queries) == []
    assert incident.pagerduty_links.get().pagerduty_incident_id == "Q1ABCDEF"


def test_a_second_create_in_the_same_run_finds_the_link_the_first_made(
    pd, pd_connection, monkeypatch, django_capture_on_commit_callbacks
):
    again = {**PAGE_STEP, "key": "page_again", "name": "Create it again"}
    make_runbook(steps=[PAGE_STEP, again])
    incident = IncidentFactory()
    event = status_change(incident, monkeypatch, django_capture_on_commit_callbacks)
    key = f"ai-sre-{incident.id}"
    add_create_ok(pd, key=key)
    pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", json={"incident": pd_incident(key=key)})

    run = services.event_dispatch(event_id=event.pk)

    assert run.status == RunStatus.SUCCEEDED
    steps = {s.key: s for s in run.step_runs.all()}
    assert steps["page_again"].outputs["incident_id"] == "Q1ABCDEF"
    assert steps["page_again"].outputs["deduplicated"] is True
    # The link was found and PagerDuty asked whether it is still open; nothing paged twice.
    assert writes(pd) == [("POST", "/incidents")]
    assert [c.request.method for c in pd.calls] == ["POST", "GET"]
