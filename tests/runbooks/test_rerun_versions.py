"""Re-running with the recorded or the current version, and a step's record pairing its own
request with its own answer (look-ups listed apart, attempts numbered 1..n)."""

import pytest
import responses

from apps.incidents.services import incident_update
from apps.runbooks import services
from apps.runbooks.api import StepRunSerializer
from apps.runbooks.models import RunbookRun, StepRun
from apps.runbooks.selectors import step_run_exchanges
from tests.conftest import PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import PAGE_STEP, add_create_ok, body, make_runbook, pd_incident, writes

pytestmark = pytest.mark.django_db


def escalate(incident_id: str, responder: str = "PEP5678") -> dict:
    return {
        "key": "escalate",
        "action": "pagerduty.add_responder",
        "connection": "default",
        "with": {
            "from": "{{Activity.owner}}",
            "incident_id": incident_id,
            "responder_id": responder,
            "responder_type": "escalation_policy",
            "requester_id": "PREQ001",
            "message": "Please join",
        },
    }


def not_found(pd, path: str) -> None:
    pd.add(responses.POST, f"{PD_URL}{path}", status=404, json={"error": {"message": "Not Found", "code": 2100}})


@pytest.fixture
def failed_run(pd, pd_connection, django_capture_on_commit_callbacks):
    """v1's escalate step names a PagerDuty incident that does not exist: the run fails there."""
    make_runbook(steps=[PAGE_STEP, escalate("QBROKEN")])
    add_create_ok(pd)
    not_found(pd, "/incidents/QBROKEN/responder_requests")
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=IncidentFactory().pk, status="Investigating", actor="test")
    run = RunbookRun.objects.get()
    assert (run.status, run.runbook_version.number) == ("failed", 1)
    return run


def fix_runbook(extra_steps=()) -> None:
    """The author saves v2 with the escalate step fixed (and maybe more steps)."""
    make_runbook(steps=[PAGE_STEP, escalate("{{steps.page.incident_id}}"), *extra_steps])


def rerun(run, capture, **kwargs) -> RunbookRun:
    with capture(execute=True):
        services.run_rerun_from_failed(run_id=run.pk, **kwargs)
    run.refresh_from_db()
    return run


def test_rerun_with_the_recorded_version_sends_v1_again(pd, failed_run, django_capture_on_commit_callbacks):
    fix_runbook()
    run = rerun(failed_run, django_capture_on_commit_callbacks)  # the default: as before
    assert run.status == "failed"
    assert run.runbook_version.number == 1
    assert writes(pd) == [("POST", "/incidents")] + [("POST", "/incidents/QBROKEN/responder_requests")] * 2


def test_rerun_with_the_current_version_uses_the_fix(pd, failed_run, django_capture_on_commit_callbacks):
    fix_runbook()
    pd.add(responses.POST, f"{PD_URL}/incidents/Q1ABCDEF/responder_requests", json={"responder_request": {}})
    run = rerun(failed_run, django_capture_on_commit_callbacks, version="current")
    assert run.status == "succeeded"
    assert run.runbook_version.number == 2
    # The page step succeeded under v1 and is not repeated; the fixed step is sent to the right incident.
    assert writes(pd) == [
        ("POST", "/incidents"),
        ("POST", "/incidents/QBROKEN/responder_requests"),
        ("POST", "/incidents/Q1ABCDEF/responder_requests"),
    ]
    assert body(pd.calls[-1])["message"] == "Please join"
    step = run.step_runs.get(key="escalate")
    assert step.inputs["incident_id"] == "{{steps.page.incident_id}}"
    assert (step.attempts, step.response["status"]) == (2, 200)
    assert [e.number for e in step_run_exchanges(step_run=step)["requests"]] == [1, 2]


def test_rerun_with_the_current_version_adds_new_steps_and_skips_removed_ones(
    pd, pd_connection, django_capture_on_commit_callbacks
):
    make_runbook(steps=[PAGE_STEP, escalate("QBROKEN"), {**escalate("QBROKEN"), "key": "old_extra"}])
    add_create_ok(pd)
    not_found(pd, "/incidents/QBROKEN/responder_requests")
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=IncidentFactory().pk, status="Investigating", actor="test")
    run = RunbookRun.objects.get()
    assert [(s.key, s.status) for s in run.step_runs.all()] == [
        ("page", "succeeded"),
        ("escalate", "failed"),
        ("old_extra", "cancelled"),
    ]
    fix_runbook(extra_steps=[{**escalate("{{steps.page.incident_id}}"), "key": "new_extra"}])
    pd.add(responses.POST, f"{PD_URL}/incidents/Q1ABCDEF/responder_requests", json={"responder_request": {}})
    run = rerun(run, django_capture_on_commit_callbacks, version="current")
    assert run.status == "succeeded"
    assert [(s.key, s.status) for s in run.step_runs.order_by("position")] == [
        ("page", "succeeded"),
        ("escalate", "succeeded"),
        ("new_extra", "succeeded"),
        ("old_extra", "skipped"),
    ]
    assert run.step_runs.get(key="old_extra").error == "Not in the current version of the runbook"
    # Nothing left to re-run: the removed step cannot come back.
    with pytest.raises(services.Conflict):
        services.run_rerun_from_failed(run_id=run.pk, version="current")


def test_rerun_refuses_an_unknown_version(failed_run):
    with pytest.raises(services.DomainError, match="version must be one of recorded, current"):
        services.run_rerun_from_failed(run_id=failed_run.pk, version="latest")
    failed_run.refresh_from_db()
    assert failed_run.status == "failed"


def test_rerun_api_takes_the_version_and_says_which_it_used(
    pd, failed_run, root_api, django_capture_on_commit_callbacks
):
    fix_runbook()
    pd.add(responses.POST, f"{PD_URL}/incidents/Q1ABCDEF/responder_requests", json={"responder_request": {}})
    response = root_api.post(f"/api/v1/runs/{failed_run.pk}/rerun/", {"version": "nope"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"version": ['Expected "recorded" or "current", got \'nope\'.']}
    with django_capture_on_commit_callbacks(execute=True):
        response = root_api.post(f"/api/v1/runs/{failed_run.pk}/rerun/", {"version": "current"}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["runbook_version"] == 2
    run = root_api.get(f"/api/v1/runs/{failed_run.pk}/").json()
    assert (run["status"], run["runbook_version"]) == ("succeeded", 2)


# --- pairing ---------------------------------------------------------------------------------------


def test_a_reused_incident_shows_no_answer_of_a_look_up_as_the_step_response(
    pd, pd_connection, django_capture_on_commit_callbacks
):
    """The trial's record: the create step reused the open incident, its only request was the
    responder look-up (GET /users/PEP0001 → 404), and the record showed that 404 as the answer to
    POST /incidents. Now the response is empty, the look-up is listed apart, and attempts are 0."""
    page = {**PAGE_STEP, "with": {**PAGE_STEP["with"], "responder_id": "PEP0001"}}
    make_runbook(steps=[page])
    incident = IncidentFactory()
    pd.add(responses.GET, f"{PD_URL}/users/PEP0001", status=404, json={"error": {"message": "Not Found"}})
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Investigating", actor="test")
    make_runbook("again", steps=[page], trigger={"on": "status_changed", "to": ["Identified"]})
    # The link was never mirrored from PagerDuty: the step reads the incident's status before reusing it.
    pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", json={"incident": pd_incident()})
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Identified", actor="test")
    step = StepRun.objects.get(run__runbook__slug="again")
    assert step.status == "succeeded" and step.outputs["deduplicated"] is True
    assert step.request["method"] == "POST"
    assert step.response == {}
    assert step.attempts == 0
    groups = step_run_exchanges(step_run=step)
    assert groups["requests"] == []
    assert [(e.role, e.number, e.method, e.status) for e in groups["lookups"]] == [
        ("lookup", 1, "GET", 404),
        ("lookup", 2, "GET", 200),
    ]


def test_attempts_are_numbered_one_to_n_and_look_ups_apart(
    pd, pd_connection, django_capture_on_commit_callbacks, fast_retries, monkeypatch
):
    monkeypatch.setattr("apps.runbooks.services._sleep", lambda seconds: None)
    make_runbook()
    for _ in range(2):
        pd.add(responses.POST, f"{PD_URL}/incidents", status=503, body="")
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=IncidentFactory().pk, status="Investigating", actor="test")
    step = StepRun.objects.get()
    groups = step_run_exchanges(step_run=step)
    assert [(e.number, e.status) for e in groups["requests"]] == [(1, 503), (2, 503), (3, 201)]
    assert (step.attempts, step.response["status"]) == (3, 201)
    # The API says the same: each exchange has its role and its number within it.
    exchanges = [(e["role"], e["attempt"], e["status"]) for e in StepRunSerializer(step).data["exchanges"]]
    assert exchanges == [("request", 1, 503), ("request", 2, 503), ("request", 3, 201)]
