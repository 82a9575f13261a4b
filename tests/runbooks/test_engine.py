"""The engine end to end in-process: status change → matcher → run → PagerDuty request.

HTTP is mocked with `responses`; assertions are on the exact request PagerDuty would receive and
on what the database holds afterwards."""

import json
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from django.utils import timezone

from apps.incidents.services import incident_update
from apps.runbooks import services, tasks
from apps.runbooks.models import PagerDutyIncidentLink, RunbookRun, RunStatus, StepRun
from tests.conftest import API_KEY, PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import PAGE_STEP, add_create_ok, body, change_status, make_runbook, pd_incident, writes

pytestmark = pytest.mark.django_db


def test_investigating_sev1_sends_exact_create_request(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook(conditions={"severity": [0, 1], "environments": ["production"]})
    incident = IncidentFactory(severity=1, summary="p99 latency 4s", owner="alice@example.com")
    add_create_ok(pd, key=f"ai-sre-{incident.id}")

    change_status(incident, "Investigating", django_capture_on_commit_callbacks)

    assert len(pd.calls) == 1
    request = pd.calls[0].request
    assert (request.method, request.url) == ("POST", f"{PD_URL}/incidents")
    assert request.headers["Authorization"] == f"Token token={API_KEY}"
    assert request.headers["Accept"] == "application/vnd.pagerduty+json;version=2"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["From"] == "alice@example.com"
    assert body(pd.calls[0]) == {
        "incident": {
            "type": "incident",
            "title": f"SEV1: {incident.title}",
            "service": {"id": "P1234AB", "type": "service_reference"},
            "urgency": "high",
            "incident_key": f"ai-sre-{incident.id}",
            "body": {"type": "incident_body", "details": f"p99 latency 4s\n\n{incident.url}"},
        }
    }
    run = RunbookRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED
    step = run.step_runs.get()
    assert step.outputs["incident_id"] == "Q1ABCDEF"
    assert step.outputs["deduplicated"] is False
    assert step.attempts == 1
    link = PagerDutyIncidentLink.objects.get()
    assert (link.incident_id, link.pagerduty_incident_id, link.incident_number) == (incident.pk, "Q1ABCDEF", 7)


@pytest.mark.parametrize(("severity", "urgency"), [(0, "high"), (1, "high"), (2, "low"), (3, "low"), (4, "low")])
def test_urgency_follows_severity(pd, pd_connection, django_capture_on_commit_callbacks, severity, urgency):
    make_runbook()
    incident = IncidentFactory(severity=severity)
    add_create_ok(pd)
    change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    assert body(pd.calls[0])["incident"]["urgency"] == urgency


def test_explicit_urgency_wins(pd, pd_connection, django_capture_on_commit_callbacks):
    step = {**PAGE_STEP, "with": {**PAGE_STEP["with"], "urgency": "low"}}
    make_runbook(steps=[step])
    incident = IncidentFactory(severity=0)
    add_create_ok(pd)
    change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    assert body(pd.calls[0])["incident"]["urgency"] == "low"


def test_conditions_that_do_not_hold_send_nothing(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook(conditions={"severity": [0, 1], "environments": ["production"]})
    staging = IncidentFactory(severity=1, environment="staging")
    sev3 = IncidentFactory(severity=3)
    change_status(staging, "Investigating", django_capture_on_commit_callbacks)
    change_status(sev3, "Investigating", django_capture_on_commit_callbacks)
    change_status(sev3, "Identified", django_capture_on_commit_callbacks)
    assert pd.calls == [] or len(pd.calls) == 0
    assert RunbookRun.objects.count() == 0


def test_title_arrives_byte_for_byte(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook()
    incident = IncidentFactory(title='R&D <db> "x"')
    add_create_ok(pd)
    change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    raw = pd.calls[0].request.body
    assert b'"SEV1: R&D <db> \\"x\\""' in raw
    assert body(pd.calls[0])["incident"]["title"] == 'SEV1: R&D <db> "x"'


def test_service_mapping_used_when_step_has_no_service(pd, pd_connection, django_capture_on_commit_callbacks):
    pd_connection.service_mappings.create(service="checkout", pagerduty_service_id="PCHECK1")
    step = {**PAGE_STEP, "with": {k: v for k, v in PAGE_STEP["with"].items() if k != "service_id"}}
    make_runbook(steps=[step])
    add_create_ok(pd)
    change_status(IncidentFactory(service="checkout"), "Investigating", django_capture_on_commit_callbacks)
    add_create_ok(pd)
    change_status(IncidentFactory(service="search"), "Investigating", django_capture_on_commit_callbacks)
    assert [body(c)["incident"]["service"]["id"] for c in pd.calls] == ["PCHECK1", "PSVC001"]


THREE_STEPS = [
    PAGE_STEP,
    {
        "key": "escalate",
        "action": "pagerduty.add_responder",
        "connection": "default",
        "with": {
            "from": "{{Activity.owner}}",
            "incident_id": "{{steps.page.incident_id}}",
            "responder_id": "PEP5678",
            "responder_type": "escalation_policy",
            "requester_id": "{{Activity.owner}}",
            "message": "Additional responder needed for SEV{{Activity.severity}} incident",
        },
    },
    {
        "key": "close",
        "action": "pagerduty.resolve_incident",
        "connection": "default",
        "with": {"incident_id": "{{steps.page.incident_id}}", "resolution": "Handled by {{Activity.short_id}}"},
    },
]


def test_three_steps_in_order_with_wrapped_target_and_resolved_requester(
    pd, pd_connection, django_capture_on_commit_callbacks
):
    make_runbook(steps=THREE_STEPS)
    incident = IncidentFactory(severity=1, owner="Alice@Example.com")
    add_create_ok(pd, incident_id="QINC001")
    pd.add(
        responses.GET,
        f"{PD_URL}/users",
        json={
            "users": [{"id": "PNOTME1", "email": "alice@example.co"}, {"id": "PALICE1", "email": "alice@example.com"}]
        },
    )
    pd.add(responses.POST, f"{PD_URL}/incidents/QINC001/responder_requests", json={"responder_request": {}})
    pd.add(responses.PUT, f"{PD_URL}/incidents/QINC001", json={"incident": pd_incident("QINC001", status="resolved")})

    change_status(incident, "Investigating", django_capture_on_commit_callbacks)

    assert writes(pd) == [
        ("POST", "/incidents"),
        ("POST", "/incidents/QINC001/responder_requests"),
        ("PUT", "/incidents/QINC001"),
    ]
    lookup = next(c for c in pd.calls if c.request.method == "GET")
    assert parse_qs(urlsplit(lookup.request.url).query)["query"] == ["Alice@Example.com"]
    responder_call = next(c for c in pd.calls if c.request.url.endswith("/responder_requests"))
    assert responder_call.request.headers["From"] == "Alice@Example.com"
    assert body(responder_call) == {
        "requester_id": "PALICE1",
        "message": "Additional responder needed for SEV1 incident",
        "responder_request_targets": [
            {"responder_request_target": {"id": "PEP5678", "type": "escalation_policy_reference"}}
        ],
    }
    resolve_call = pd.calls[-1]
    assert body(resolve_call) == {
        "incident": {
            "type": "incident_reference",
            "status": "resolved",
            "resolution": f"Handled by {incident.short_id}",
        }
    }
    assert resolve_call.request.headers["From"] == "sre@example.com"  # connection default
    run = RunbookRun.objects.get()
    assert [s.status for s in run.step_runs.all()] == ["succeeded"] * 3
    assert PagerDutyIncidentLink.objects.get().status == "resolved"


def test_responder_id_of_unknown_type_is_probed_once(pd, pd_connection, django_capture_on_commit_callbacks):
    steps = [
        PAGE_STEP,
        {**THREE_STEPS[1], "with": {**THREE_STEPS[1]["with"], "responder_type": "", "requester_id": "PREQ001"}},
    ]
    make_runbook(steps=steps)
    add_create_ok(pd)
    pd.add(responses.GET, f"{PD_URL}/users/PEP5678", status=404, json={"error": {"message": "Not Found", "code": 2100}})
    pd.add(responses.POST, f"{PD_URL}/incidents/Q1ABCDEF/responder_requests", json={"responder_request": {}})
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    target = body(pd.calls[-1])["responder_request_targets"][0]["responder_request_target"]
    assert target == {"id": "PEP5678", "type": "escalation_policy_reference"}


def test_unknown_requester_email_fails_step_with_clear_error(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook(steps=THREE_STEPS[:2])
    add_create_ok(pd)
    pd.add(responses.GET, f"{PD_URL}/users", json={"users": []})
    change_status(IncidentFactory(owner="ghost@example.com"), "Investigating", django_capture_on_commit_callbacks)
    step = StepRun.objects.get(key="escalate")
    assert step.status == "failed"
    assert "no PagerDuty user has the email 'ghost@example.com'" in step.error
    assert RunbookRun.objects.get().status == "failed"


# --- nothing pages twice --------------------------------------------------------------------------


def test_same_status_twice_fires_once(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook()
    incident = IncidentFactory()
    add_create_ok(pd)
    change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    assert writes(pd) == [("POST", "/incidents")]
    assert incident.events.filter(kind="status_changed").count() == 1


def test_same_event_dispatched_twice_starts_one_run(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook()
    incident = IncidentFactory()
    add_create_ok(pd)
    change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    event = incident.events.get(kind="status_changed")
    with django_capture_on_commit_callbacks(execute=True):
        tasks.dispatch_incident_event.delay(event.pk)
        tasks.dispatch_incident_event.delay(event.pk)
    assert RunbookRun.objects.count() == 1
    assert writes(pd) == [("POST", "/incidents")]


def test_same_execute_message_delivered_twice_sends_once(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook()
    incident = IncidentFactory()
    add_create_ok(pd)
    change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    assert tasks.execute_run.apply(args=[run.pk]).get() is None  # redelivery of a finished run: no-op
    assert writes(pd) == [("POST", "/incidents")]
    assert RunbookRun.objects.get().executions == 1


def test_concurrent_delivery_is_refused_while_leased(pd, pd_connection, django_capture_on_commit_callbacks):
    runbook = make_runbook()
    incident = IncidentFactory()
    change_status(incident, "Detected", django_capture_on_commit_callbacks)
    event = incident.events.first()
    run = services.run_create(runbook=runbook, event=event)
    RunbookRun.objects.filter(pk=run.pk).update(
        status="running", lease_token="other-worker", lease_expires_at=timezone.now() + timedelta(seconds=60)
    )
    with pytest.raises(services.LeaseHeld):
        services.run_execute(run_id=run.pk)
    assert pd.calls == [] or len(pd.calls) == 0


def test_dedup_400_adopts_the_open_incident(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook()
    incident = IncidentFactory()
    key = f"ai-sre-{incident.id}"
    pd.add(
        responses.POST,
        f"{PD_URL}/incidents",
        status=400,
        json={
            "error": {
                "message": "Invalid Input Provided",
                "code": 2001,
                "errors": ["Open incident with matching dedup key already exists on this service"],
            }
        },
    )
    pd.add(responses.GET, f"{PD_URL}/incidents", json={"incidents": [pd_incident("QEXIST1", 41, key)]})

    change_status(incident, "Investigating", django_capture_on_commit_callbacks)

    lookup = pd.calls[1].request
    assert parse_qs(urlsplit(lookup.url).query) == {
        "incident_key": [key],
        "statuses[]": ["triggered", "acknowledged"],
        "date_range": ["all"],
        "service_ids[]": ["P1234AB"],
    }
    step = StepRun.objects.get()
    assert step.status == "succeeded"
    assert step.outputs["incident_id"] == "QEXIST1"
    assert step.outputs["deduplicated"] is True
    assert step.attempts == 1  # the look-up that found the open incident is not an attempt
    assert step.response["status"] == 400  # the answer to its own POST, not the look-up's
    assert writes(pd) == [("POST", "/incidents")]


def test_rerun_of_finished_run_reuses_linked_incident(pd, pd_connection, django_capture_on_commit_callbacks):
    steps = [PAGE_STEP, {**THREE_STEPS[1], "with": {**THREE_STEPS[1]["with"], "requester_id": "PREQ001"}}]
    make_runbook(steps=steps)
    add_create_ok(pd)
    pd.add(
        responses.POST,
        f"{PD_URL}/incidents/Q1ABCDEF/responder_requests",
        status=402,
        json={"error": {"message": "Account does not have the abilities to perform the action", "code": 2014}},
    )
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    assert run.status == "failed"
    error = run.step_runs.get(key="escalate").error
    assert "PagerDuty 402: Account does not have the abilities" in error
    assert "What to do: the PagerDuty account lacks the ability" in error

    pd.replace(responses.POST, f"{PD_URL}/incidents/Q1ABCDEF/responder_requests", json={"responder_request": {}})
    with django_capture_on_commit_callbacks(execute=True):
        services.run_rerun_from_failed(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert writes(pd).count(("POST", "/incidents")) == 1  # the page step was not repeated

    # A brand-new run for the same incident (another event) reuses the linked incident, once
    # PagerDuty says it is still open.
    pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", json={"incident": pd_incident()})
    make_runbook("second", steps=[PAGE_STEP], trigger={"on": "status_changed", "to": ["Identified"]})
    change_status(run.incident, "Identified", django_capture_on_commit_callbacks)
    second = RunbookRun.objects.get(runbook__slug="second").step_runs.get()
    assert second.outputs["deduplicated"] is True
    assert writes(pd).count(("POST", "/incidents")) == 1


def test_worker_dies_after_pagerduty_answered(pd, pd_connection, django_capture_on_commit_callbacks, monkeypatch):
    """Crash between PagerDuty's 201 and our bookkeeping; the redelivery must not page again."""
    make_runbook()
    incident = IncidentFactory()
    key = f"ai-sre-{incident.id}"
    add_create_ok(pd, incident_id="QCRASH1", key=key)

    from apps.runbooks.executors import pagerduty as pd_actions

    real_save_link = pd_actions._save_link

    def die(*args, **kwargs):
        raise SystemExit("worker killed")  # BaseException: nothing in the engine catches it

    monkeypatch.setattr(pd_actions, "_save_link", die)
    with pytest.raises(SystemExit), django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Investigating")
    run = RunbookRun.objects.get()
    assert run.status == "running"
    assert run.step_runs.get().status == "running"

    # The lease of the dead worker expires; the message is redelivered.
    monkeypatch.setattr(pd_actions, "_save_link", real_save_link)
    RunbookRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    pd.replace(
        responses.POST,
        f"{PD_URL}/incidents",
        status=400,
        json={
            "error": {
                "message": "x",
                "code": 2001,
                "errors": ["Open incident with matching dedup key already exists on this service"],
            }
        },
    )
    pd.add(responses.GET, f"{PD_URL}/incidents", json={"incidents": [pd_incident("QCRASH1", key=key)]})
    tasks.execute_run.apply(args=[run.pk])

    run.refresh_from_db()
    step = run.step_runs.get()
    assert (run.status, step.status, run.executions) == ("succeeded", "succeeded", 2)
    assert step.outputs == {**step.outputs, "incident_id": "QCRASH1", "deduplicated": True}
    assert writes(pd) == [("POST", "/incidents")]  # reconciled by lookup, not re-sent
    assert PagerDutyIncidentLink.objects.filter(pagerduty_incident_id="QCRASH1").count() == 1


# --- retries and errors ---------------------------------------------------------------------------


def test_429_waits_for_ratelimit_reset(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook()
    pd.add(
        responses.POST,
        f"{PD_URL}/incidents",
        status=429,
        headers={"ratelimit-reset": "2"},
        json={"error": {"message": "Rate Limit Exceeded", "code": 2020}},
    )
    add_create_ok(pd)
    started = time.monotonic()
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    elapsed = time.monotonic() - started
    step = StepRun.objects.get()
    assert step.status == "succeeded"
    assert [e.status for e in step.exchanges.all()] == [429, 201]
    assert step.exchanges.first().response_headers == {"ratelimit-reset": "2"}
    assert 1.9 <= elapsed < 10


def test_500_retried_with_backoff_until_cap(
    pd, pd_connection, django_capture_on_commit_callbacks, fast_retries, monkeypatch
):
    waits = []
    monkeypatch.setattr("apps.runbooks.services._sleep", waits.append)
    make_runbook()
    for _ in range(5):
        pd.add(responses.POST, f"{PD_URL}/incidents", status=500, json={"error": {"message": "Internal Server Error"}})
    # A 500 may come after PagerDuty acted: before giving up, the step looks the incident up.
    pd.add(responses.GET, f"{PD_URL}/incidents", json={"incidents": []})
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert step.status == "failed"
    assert [e.method for e in step.exchanges.all()] == ["POST"] * 5 + ["GET"]  # PAGERDUTY_MAX_ATTEMPTS, look-up
    assert step.attempts == 5
    assert "PagerDuty 500: Internal Server Error" in step.error
    assert len(waits) == 4
    assert all(0 < w <= fast_retries.PAGERDUTY_BACKOFF_CAP_SECONDS for w in waits)


def test_500_then_success(pd, pd_connection, django_capture_on_commit_callbacks, fast_retries):
    make_runbook()
    pd.add(responses.POST, f"{PD_URL}/incidents", status=503, body="")
    add_create_ok(pd)
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert (step.status, step.attempts) == ("succeeded", 2)


def test_401_fails_at_once_with_pagerduty_message(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook()
    pd.add(
        responses.POST,
        f"{PD_URL}/incidents",
        status=401,
        json={"error": {"message": "Authentication failed", "code": 2006}},
    )
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert step.status == "failed"
    assert step.attempts == 1
    # PagerDuty's words first, then what to do about them.
    assert step.error.startswith(
        "PagerDuty 401: Authentication failed. What to do: PagerDuty did not accept the API key."
    )
    assert "revoked" in step.error
    assert step.response["status"] == 401


def test_400_shows_every_pagerduty_error(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook()
    pd.add(
        responses.POST,
        f"{PD_URL}/incidents",
        status=400,
        json={
            "error": {
                "message": "Invalid Input Provided",
                "code": 2001,
                "errors": ["Service not found", "Title too long"],
            }
        },
    )
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    assert StepRun.objects.get().error == "PagerDuty 400: Invalid Input Provided — Service not found; Title too long"


def test_on_failure_continue_runs_later_steps(pd, pd_connection, django_capture_on_commit_callbacks):
    failing = {**PAGE_STEP, "key": "first", "on_failure": "continue"}
    make_runbook(
        steps=[failing, {**PAGE_STEP, "key": "second", "with": {**PAGE_STEP["with"], "incident_key": "other"}}]
    )
    pd.add(
        responses.POST, f"{PD_URL}/incidents", status=403, json={"error": {"message": "Access Denied", "code": 2010}}
    )
    add_create_ok(pd)
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    assert [s.status for s in run.step_runs.all()] == ["failed", "succeeded"]
    assert run.status == "failed"


def test_stop_cancels_later_steps(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook(steps=THREE_STEPS)
    pd.add(responses.POST, f"{PD_URL}/incidents", status=404, json={"error": {"message": "Not Found", "code": 2100}})
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    assert [s.status for s in run.step_runs.all()] == ["failed", "cancelled", "cancelled"]
    assert "Step 'page' failed: PagerDuty 404: Not Found" in run.error


def test_missing_connection_fails_step_clearly(pd, db, django_capture_on_commit_callbacks):
    make_runbook()
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert step.status == "failed"
    assert "No PagerDuty connection named 'default'" in step.error


def test_resolve_without_link_is_skipped(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook(steps=[THREE_STEPS[2] | {"with": {}}], trigger={"on": "status_changed", "to": ["Resolved"]})
    incident = IncidentFactory()
    change_status(incident, "Resolved", django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert step.status == "skipped"
    assert "nothing to resolve" in step.error
    assert RunbookRun.objects.get().status == "succeeded"


def test_resolve_uses_linked_incident_without_pasted_id(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook()
    make_runbook(
        "resolve-on-closure",
        steps=[
            {
                "key": "resolve",
                "action": "pagerduty.resolve_incident",
                "with": {"resolution": "done at {{Activity.resolved_at}}"},
            }
        ],
        trigger={"on": "status_changed", "to": ["Resolved"]},
    )
    incident = IncidentFactory()
    add_create_ok(pd, incident_id="QLINKED")
    change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    pd.add(responses.PUT, f"{PD_URL}/incidents/QLINKED", json={"incident": pd_incident("QLINKED", status="resolved")})
    change_status(incident, "Resolved", django_capture_on_commit_callbacks)
    incident.refresh_from_db()
    resolution = body(pd.calls[-1])["incident"]["resolution"]
    assert resolution == "done at " + incident.resolved_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_resolved_incident_is_not_resolved_again(pd, pd_connection, django_capture_on_commit_callbacks):
    # page-and-resolve resolves at Monitoring; resolve-on-closure fires later at Resolved. PagerDuty
    # already answered "resolved" to the first PUT, and a resolved incident never reopens there.
    make_runbook()
    resolve = {"key": "resolve", "action": "pagerduty.resolve_incident", "with": {}}
    make_runbook("resolve-at-monitoring", steps=[resolve], trigger={"on": "status_changed", "to": ["Monitoring"]})
    make_runbook("resolve-on-closure", steps=[resolve], trigger={"on": "status_changed", "to": ["Resolved"]})
    incident = IncidentFactory()
    add_create_ok(pd, incident_id="QLINKED")
    change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    pd.add(responses.PUT, f"{PD_URL}/incidents/QLINKED", json={"incident": pd_incident("QLINKED", status="resolved")})
    change_status(incident, "Monitoring", django_capture_on_commit_callbacks)
    change_status(incident, "Resolved", django_capture_on_commit_callbacks)
    assert writes(pd) == [("POST", "/incidents"), ("PUT", "/incidents/QLINKED")]
    last = StepRun.objects.filter(run__runbook__slug="resolve-on-closure").get()
    assert last.status == "succeeded" and last.outputs["already_resolved"] is True


def test_template_error_at_run_time_fails_step_naming_field(pd, pd_connection, django_capture_on_commit_callbacks):
    runbook = make_runbook()
    step = runbook.steps.get()
    step.inputs = {**step.inputs, "title": "{{steps.nothing.incident_id}}"}  # bypasses save-time validation
    step.save()
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    step_run = StepRun.objects.get()
    assert step_run.status == "failed"
    assert step_run.error.startswith("title: {{steps.nothing.incident_id}} has no value")


def test_api_key_never_stored_or_recorded_in_clear(pd, pd_connection, django_capture_on_commit_callbacks):
    from django.db import connection

    make_runbook()
    pd.add(responses.POST, f"{PD_URL}/incidents", status=401, json={"error": {"message": f"bad token {API_KEY}"}})
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM pagerduty_pagerdutyconnection")
        stored = cursor.fetchone()[0]
    assert API_KEY not in stored and stored.startswith("fernet:")
    dump = json.dumps([list(StepRun.objects.values()), list(StepRun.objects.get().exchanges.values())], default=str)
    assert API_KEY not in dump
    assert "Token token=***redacted***" in dump
    assert "bad token ***redacted***" in dump


def test_waiting_out_a_429_keeps_the_lease(
    pd, pd_connection, django_capture_on_commit_callbacks, monkeypatch, settings
):
    settings.RUNBOOK_RUN_LEASE_SECONDS = 5
    leases = []

    def record_lease(seconds):
        run = RunbookRun.objects.get()
        leases.append((run.lease_expires_at - timezone.now()).total_seconds())

    monkeypatch.setattr("apps.runbooks.services._sleep", record_lease)
    make_runbook()
    pd.add(responses.POST, f"{PD_URL}/incidents", status=429, headers={"ratelimit-reset": "60"})
    add_create_ok(pd)
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    assert len(leases) == 1 and leases[0] > 60  # a 60 s wait must not let another worker take the run
    assert RunbookRun.objects.get().status == "succeeded"


def test_imported_oncall_users_resolve_without_asking_pagerduty(pd, pd_connection, django_capture_on_commit_callbacks):
    from apps.oncall.models import OncallEscalationPolicy, OncallUser

    OncallUser.objects.create(connection=pd_connection, pagerduty_id="PIMPORT", name="Alice", email="alice@example.com")
    OncallEscalationPolicy.objects.create(connection=pd_connection, pagerduty_id="PEP5678", name="Primary")
    untyped = {**THREE_STEPS[1]["with"], "responder_type": ""}
    make_runbook(steps=[PAGE_STEP, {**THREE_STEPS[1], "with": untyped}])
    add_create_ok(pd)
    pd.add(responses.POST, f"{PD_URL}/incidents/Q1ABCDEF/responder_requests", json={"responder_request": {}})
    change_status(IncidentFactory(owner="ALICE@example.com"), "Investigating", django_capture_on_commit_callbacks)
    assert [c.request.method for c in pd.calls] == ["POST", "POST"]  # no GET /users, no type probe
    sent = body(pd.calls[1])
    assert sent["requester_id"] == "PIMPORT"
    assert sent["responder_request_targets"][0]["responder_request_target"]["type"] == "escalation_policy_reference"
