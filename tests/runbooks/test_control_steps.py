"""Control steps: an approval and a status wait park the run (no worker, no lease) and are resumed
by a decision, by the incident's own status change, or by the timeout sweep — each exactly once."""

import threading
from datetime import timedelta

import pytest
import responses
from auditlog.models import LogEntry
from django.contrib.auth.models import Group, Permission
from django.db import connection, connections
from django.utils import timezone
from rest_framework.test import APIClient

from apps.incidents.services import incident_update
from apps.runbooks import services, tasks, waits
from apps.runbooks.models import RunbookRun, RunStatus, StepRun
from tests.conftest import PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import PAGE_STEP, add_create_ok, change_status, make_runbook, pd_incident, writes

pytestmark = pytest.mark.django_db

APPROVE_STEP = {
    "key": "ask",
    "action": "runbook.approval",
    "with": {"message": "Page the on-call for {{Activity.short_id}}?"},
}
WAIT_STEP = {
    "key": "wait",
    "action": "runbook.wait_for_status",
    "with": {"statuses": "Monitoring, Resolved", "timeout_minutes": "120"},
}
RESOLVE_STEP = {"key": "resolve", "action": "pagerduty.resolve_incident", "connection": "default", "with": {}}


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def decide(client, run, verb, capture, **body):
    with capture(execute=True):
        return client.post(f"/api/v1/runs/{run.pk}/{verb}/", body, format="json")


@pytest.fixture
def waiting_approval(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook(steps=[APPROVE_STEP, PAGE_STEP])
    incident = IncidentFactory(severity=1)
    change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    return RunbookRun.objects.get()


def test_approval_parks_the_run_without_a_lease_or_a_request(waiting_approval, pd):
    run = waiting_approval
    assert run.status == RunStatus.WAITING
    assert run.updated_at >= run.step_runs.get(key="ask").started_at  # parked now, as the API shows
    assert (run.lease_token, run.lease_expires_at) == ("", None)
    ask, page = run.step_runs.order_by("position")
    assert ask.status == RunStatus.WAITING
    assert ask.rendered["message"] == f"Page the on-call for {run.incident.short_id}?"
    assert ask.rendered["approvers"] == "Responders"
    assert 29 * 60 < (ask.wait_until - ask.started_at).total_seconds() <= 30 * 60
    assert page.status == RunStatus.PENDING
    assert len(pd.calls) == 0


def test_a_run_whose_lease_was_lost_is_not_parked_by_the_old_worker(
    pd, pd_connection, django_capture_on_commit_callbacks
):
    """The worker reaching the approval no longer holds the run (its lease expired and another took
    it): it parks nothing, neither the step nor the run; the new holder reaches the step itself."""
    from apps.incidents.models import IncidentEvent
    from apps.runbooks.executors.base import get_action
    from apps.runbooks.executors.control import StepWaiting

    runbook = make_runbook(steps=[APPROVE_STEP])
    incident = IncidentFactory()
    with django_capture_on_commit_callbacks(execute=False):
        incident_update(incident_id=incident.pk, status="Investigating", actor="test")
    run = services.run_create(
        runbook=runbook, event=IncidentEvent.objects.get(incident=incident, kind="status_changed")
    )
    RunbookRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, lease_token="the-new-holder")
    step_run = run.step_runs.get(key="ask")
    rendered = {"message": "Page?", "approvers": "Responders", "timeout_minutes": "30", "on_timeout": "fail"}

    with pytest.raises(StepWaiting):
        waits.step_wait(
            run=run,
            step_run=step_run,
            spec=get_action("runbook.approval"),
            rendered=rendered,
            token="the-old-holder",
            stored_rendered=rendered,
        )
    run.refresh_from_db()
    assert (run.status, run.lease_token) == (RunStatus.RUNNING, "the-new-holder")
    step_run.refresh_from_db()
    assert (step_run.status, step_run.wait_until) == (RunStatus.PENDING, None)


def test_approve_continues_the_run_and_records_who(waiting_approval, pd, role_user, django_capture_on_commit_callbacks):
    alice = role_user("Responders", username="alice")
    add_create_ok(pd)
    answer = decide(api_for(alice), waiting_approval, "approve", django_capture_on_commit_callbacks, comment="go")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["id"] == waiting_approval.pk
    assert answer.json()["step_runs"][0]["wait_until"] is None  # decided
    run = RunbookRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED
    ask = run.step_runs.get(key="ask")
    assert ask.status == RunStatus.SUCCEEDED
    assert ask.outputs["decision"] == "approved"
    assert (ask.outputs["decided_by"], ask.outputs["comment"]) == ("alice", "go")
    assert ask.outputs["decided_at"].endswith("Z")
    assert writes(pd) == [("POST", "/incidents")]
    entry = LogEntry.objects.get(additional_data__event="run.approve")
    assert entry.actor == alice
    assert entry.additional_data["comment"] == "go"
    assert entry.object_pk == str(run.pk)


def test_a_decision_ends_only_its_own_wait(pd, pd_connection, root_api, django_capture_on_commit_callbacks):
    make_runbook(steps=[APPROVE_STEP, PAGE_STEP])
    first, second = IncidentFactory(), IncidentFactory()
    for incident in (first, second):
        change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get(incident=first)
    with django_capture_on_commit_callbacks(execute=False):
        assert root_api.post(f"/api/v1/runs/{run.pk}/approve/", {}, format="json").status_code == 200

    other = RunbookRun.objects.get(incident=second)
    ask = other.step_runs.get(key="ask")
    assert (other.status, ask.status, ask.outputs) == (RunStatus.WAITING, RunStatus.WAITING, {})
    assert ask.wait_until is not None and ask.finished_at is None


def test_a_resumed_run_is_fresh_to_the_recovery_sweep(waiting_approval, root_api, django_capture_on_commit_callbacks):
    """A run that waited two hours is handed back as pending *now*: the sweep, which re-queues runs
    pending for longer than RUN_RECOVERY_PENDING_AFTER_SECONDS, leaves the resume message its time."""
    RunbookRun.objects.filter(pk=waiting_approval.pk).update(updated_at=timezone.now() - timedelta(hours=2))
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert root_api.post(f"/api/v1/runs/{waiting_approval.pk}/approve/", {}, format="json").status_code == 200
    assert len(queued) == 1
    run = RunbookRun.objects.get()
    assert run.status == RunStatus.PENDING and run.updated_at >= before
    ask = run.step_runs.get(key="ask")
    assert ask.finished_at >= before and ask.error == ""
    assert services.runs_recover_stalled(pending_after_seconds=60)["runs"] == 0


def test_ending_a_wait_that_has_ended_changes_nothing(waiting_approval, root_api, django_capture_on_commit_callbacks):
    """The timeout sweep read the step as waiting just before a decision ended it: its late attempt
    neither overwrites the decision nor hands the run back a second time."""
    stale = waiting_approval.step_runs.get(key="ask")
    with django_capture_on_commit_callbacks(execute=False):
        root_api.post(f"/api/v1/runs/{waiting_approval.pk}/approve/", {}, format="json")
    with django_capture_on_commit_callbacks(execute=False) as queued:
        ended = waits._end_wait(
            step_run=stale, status=RunStatus.FAILED, outputs={"decision": "timed_out"}, error="late"
        )
    assert ended is False and queued == []
    ask = RunbookRun.objects.get().step_runs.get(key="ask")
    assert (ask.status, ask.outputs["decision"], ask.error) == (RunStatus.SUCCEEDED, "approved", "")


def test_a_decision_with_the_broker_away_is_left_to_the_sweep(
    waiting_approval, root_api, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.execute_run, "delay", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        answer = root_api.post(f"/api/v1/runs/{waiting_approval.pk}/approve/", {}, format="json")
    assert answer.status_code == 200
    assert RunbookRun.objects.get().status == RunStatus.PENDING
    [warning] = [r for r in caplog.records if r.name == "apps.core.queueing"]
    assert warning.getMessage().endswith(f"; {waits.RESUME_SWEEP}")


def test_reject_fails_the_step_with_the_comment_and_sends_nothing(
    waiting_approval, pd, role_user, django_capture_on_commit_callbacks
):
    bob = role_user("Responders", username="bob")
    answer = decide(api_for(bob), waiting_approval, "reject", django_capture_on_commit_callbacks, comment="not now")
    assert answer.status_code == 200
    assert answer.json()["status"] == RunStatus.PENDING  # the worker takes it from here
    run = RunbookRun.objects.get()
    ask, page = run.step_runs.order_by("position")
    assert (ask.status, ask.error) == (RunStatus.FAILED, "Rejected by bob: not now")
    assert ask.outputs["decision"] == "rejected"
    assert page.status == RunStatus.CANCELLED
    assert "Rejected by bob: not now" in run.error
    assert len(pd.calls) == 0
    assert LogEntry.objects.filter(additional_data__event="run.reject", actor=bob).count() == 1


def test_a_second_decision_answers_409_with_the_first(
    waiting_approval, pd, role_user, django_capture_on_commit_callbacks
):
    alice, bob = role_user("Responders", username="alice"), role_user("Responders", username="bob")
    add_create_ok(pd)
    first = decide(api_for(alice), waiting_approval, "approve", django_capture_on_commit_callbacks, comment="go")
    assert first.status_code == 200
    again = decide(api_for(bob), waiting_approval, "reject", django_capture_on_commit_callbacks, comment="no")
    assert again.status_code == 409
    decided_at = RunbookRun.objects.get().step_runs.get(key="ask").outputs["decided_at"]
    assert again.json()["message"] == "Step 'ask' was already decided: approved by alice"
    assert again.json()["decision"] == {
        "step": "ask",
        "status": "succeeded",
        "decision": "approved",
        "decided_by": "alice",
        "decided_at": decided_at,
        "comment": "go",
    }
    assert RunbookRun.objects.get().step_runs.get(key="ask").outputs["decided_by"] == "alice"
    assert len(pd.calls) == 1
    assert LogEntry.objects.filter(additional_data__event__in=["run.approve", "run.reject"]).count() == 1


def test_without_approvers_the_responders_decide(waiting_approval, role_user, django_capture_on_commit_callbacks):
    # May approve runs in general (a group of its own grants it), but is not in Responders.
    Group.objects.create(name="Release managers").permissions.add(Permission.objects.get(codename="approve_runbookrun"))
    viewer = role_user("Viewers", "Release managers", username="viewer")
    refused = decide(api_for(viewer), waiting_approval, "approve", django_capture_on_commit_callbacks)
    assert refused.status_code == 403
    assert refused.json()["message"] == "Only members of the group 'Responders' may decide step 'ask'"
    responder = role_user("Responders", username="responder")
    assert decide(api_for(responder), waiting_approval, "reject", django_capture_on_commit_callbacks).status_code == 200


def test_only_the_approvers_group_may_decide(pd, pd_connection, role_user, django_capture_on_commit_callbacks):
    Group.objects.create(name="Incident commanders")
    step = {**APPROVE_STEP, "with": {"approvers": "Incident commanders"}}
    make_runbook(steps=[step, PAGE_STEP])
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    responder = role_user("Responders", username="responder")
    viewer = role_user("Viewers", username="viewer")
    commander = role_user("Responders", "Incident commanders", username="commander")

    refused = decide(api_for(responder), run, "approve", django_capture_on_commit_callbacks)
    assert refused.status_code == 403
    assert "Incident commanders" in refused.json()["message"]
    assert decide(api_for(viewer), run, "approve", django_capture_on_commit_callbacks).status_code == 403
    assert RunbookRun.objects.get().status == RunStatus.WAITING
    assert decide(api_for(commander), run, "reject", django_capture_on_commit_callbacks).status_code == 200
    assert RunbookRun.objects.get().status == RunStatus.FAILED


def test_an_approvers_group_that_does_not_exist_fails_the_step(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook(steps=[{**APPROVE_STEP, "with": {"approvers": "Nobody here"}}, PAGE_STEP])
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    assert run.status == RunStatus.FAILED
    assert "no group named 'Nobody here'" in run.step_runs.get(key="ask").error


def test_a_run_not_waiting_answers_409(pd, pd_connection, root_api, django_capture_on_commit_callbacks):
    make_runbook(steps=[PAGE_STEP])
    add_create_ok(pd)
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    answer = decide(root_api, run, "approve", django_capture_on_commit_callbacks)
    assert answer.status_code == 409
    assert "waits for no approval" in answer.json()["message"]


def test_comment_too_long_is_400(waiting_approval, root_api, django_capture_on_commit_callbacks):
    answer = decide(root_api, waiting_approval, "approve", django_capture_on_commit_callbacks, comment="x" * 2001)
    assert answer.status_code == 400
    assert "comment" in answer.json()["errors"]
    assert RunbookRun.objects.get().status == RunStatus.WAITING


@pytest.mark.parametrize(
    ("on_timeout", "run_status", "pages"), [("fail", RunStatus.FAILED, 0), ("continue", "succeeded", 1)]
)
def test_approval_timeout_follows_on_timeout(
    pd, pd_connection, django_capture_on_commit_callbacks, on_timeout, run_status, pages
):
    make_runbook(steps=[{**APPROVE_STEP, "with": {"timeout_minutes": "5", "on_timeout": on_timeout}}, PAGE_STEP])
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        assert waits.waits_sweep() == {"timed_out": 0, "resumed": 0}  # not yet
    with django_capture_on_commit_callbacks(execute=True):
        result = waits.waits_sweep(now=timezone.now() + timedelta(minutes=6))
    assert result == {"timed_out": 1, "resumed": 0}
    run = RunbookRun.objects.get()
    assert run.status == run_status
    ask = run.step_runs.get(key="ask")
    assert ask.outputs["decision"] == "timed_out"
    assert len(pd.calls) == pages
    assert LogEntry.objects.filter(additional_data__event="run.approval_timed_out").count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert waits.waits_sweep(now=timezone.now() + timedelta(minutes=60))["timed_out"] == 0


def test_redelivered_message_and_recovery_sweep_leave_a_waiting_run_alone(waiting_approval, pd):
    assert tasks.execute_run.apply(args=[waiting_approval.pk]).get() is None
    assert services.runs_recover_stalled(pending_after_seconds=0)["runs"] == 0
    run = RunbookRun.objects.get()
    assert (run.status, run.executions) == (RunStatus.WAITING, 1)
    assert run.step_runs.get(key="ask").status == RunStatus.WAITING
    assert len(pd.calls) == 0


def test_rerun_after_a_rejection_asks_again(waiting_approval, pd, root_api, django_capture_on_commit_callbacks):
    assert decide(root_api, waiting_approval, "reject", django_capture_on_commit_callbacks).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        services.run_rerun_from_failed(run_id=waiting_approval.pk)
    run = RunbookRun.objects.get()
    assert run.status == RunStatus.WAITING
    ask = run.step_runs.get(key="ask")
    assert (ask.status, ask.outputs, ask.error) == (RunStatus.WAITING, {}, "")
    assert len(pd.calls) == 0
    add_create_ok(pd)
    assert decide(root_api, run, "approve", django_capture_on_commit_callbacks).status_code == 200
    assert RunbookRun.objects.get().status == RunStatus.SUCCEEDED
    assert len(pd.calls) == 1


# --- wait for status ---------------------------------------------------------------------------


def test_page_wait_resolve_resolves_only_after_monitoring(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook(steps=[PAGE_STEP, WAIT_STEP, RESOLVE_STEP])
    incident = IncidentFactory(severity=1)
    add_create_ok(pd, incident_id="QPAGED1")
    change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    assert run.status == RunStatus.WAITING
    assert writes(pd) == [("POST", "/incidents")]

    change_status(incident, "Identified", django_capture_on_commit_callbacks)
    assert RunbookRun.objects.get().status == RunStatus.WAITING
    assert len(pd.calls) == 1

    pd.add(responses.PUT, f"{PD_URL}/incidents/QPAGED1", json={"incident": pd_incident("QPAGED1", status="resolved")})
    change_status(incident, "Monitoring", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED
    assert run.step_runs.get(key="wait").outputs == {"status": "Monitoring", "timed_out": False}
    assert writes(pd) == [("POST", "/incidents"), ("PUT", "/incidents/QPAGED1")]

    change_status(incident, "Resolved", django_capture_on_commit_callbacks)
    assert len(pd.calls) == 2


def test_wait_for_a_status_the_incident_already_has_continues_at_once(
    pd, pd_connection, django_capture_on_commit_callbacks
):
    make_runbook(steps=[{**WAIT_STEP, "with": {"statuses": "investigating"}}, PAGE_STEP])
    add_create_ok(pd)
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED
    assert run.step_runs.get(key="wait").outputs == {"status": "Investigating", "timed_out": False}


def test_a_status_change_resumes_only_its_own_incidents_waits(pd, pd_connection, django_capture_on_commit_callbacks):
    """Another incident once passed through Monitoring and now waits for it again: a change on this
    incident does not read that old change as its own."""
    make_runbook(steps=[WAIT_STEP, PAGE_STEP])
    other = IncidentFactory()
    change_status(other, "Monitoring", django_capture_on_commit_callbacks)  # before any run: starts nothing
    change_status(other, "Investigating", django_capture_on_commit_callbacks)
    this = IncidentFactory()
    change_status(this, "Investigating", django_capture_on_commit_callbacks)
    assert RunbookRun.objects.filter(status=RunStatus.WAITING).count() == 2

    add_create_ok(pd)
    change_status(this, "Resolved", django_capture_on_commit_callbacks)

    assert RunbookRun.objects.get(incident=this).status == RunStatus.SUCCEEDED
    waiting = RunbookRun.objects.get(incident=other)
    assert waiting.status == RunStatus.WAITING
    assert waiting.step_runs.get(key="wait").status == RunStatus.WAITING
    assert writes(pd) == [("POST", "/incidents")]


def test_a_missed_status_change_is_resumed_by_the_sweep(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook(steps=[WAIT_STEP, PAGE_STEP])
    incident = IncidentFactory()
    change_status(incident, "Investigating", django_capture_on_commit_callbacks)
    # The change commits but its signal is lost (the process died right after the commit).
    incident_update(incident_id=incident.pk, status="Resolved", actor="test")
    assert RunbookRun.objects.get().status == RunStatus.WAITING
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        assert waits.waits_sweep() == {"timed_out": 0, "resumed": 1}
    assert RunbookRun.objects.get().status == RunStatus.SUCCEEDED


def test_ended_waits_and_approvals_never_crowd_a_missed_status_out_of_the_sweep(
    pd, pd_connection, django_capture_on_commit_callbacks, monkeypatch
):
    """A sweep looks at SWEEP_BATCH steps at most. Status waits that ended and approvals still
    waiting come first (older rows) and must not take the places of the wait that missed its change."""
    monkeypatch.setattr(waits, "SWEEP_BATCH", 2)
    make_runbook(slug="waits", steps=[WAIT_STEP])
    make_runbook(slug="asks", steps=[APPROVE_STEP], trigger={"on": "status_changed", "to": ["Identified"]})
    for _ in range(2):
        ended = IncidentFactory()
        change_status(ended, "Investigating", django_capture_on_commit_callbacks)
        change_status(ended, "Monitoring", django_capture_on_commit_callbacks)
    for _ in range(2):
        change_status(IncidentFactory(), "Identified", django_capture_on_commit_callbacks)
    missed = IncidentFactory()
    change_status(missed, "Investigating", django_capture_on_commit_callbacks)
    incident_update(incident_id=missed.pk, status="Resolved", actor="test")  # its signal is lost
    assert StepRun.objects.filter(status=RunStatus.WAITING).count() == 3

    with django_capture_on_commit_callbacks(execute=True):
        assert waits.waits_sweep() == {"timed_out": 0, "resumed": 1}
    assert RunbookRun.objects.get(incident=missed).status == RunStatus.SUCCEEDED


@pytest.mark.parametrize(("on_timeout", "run_status"), [("fail", RunStatus.FAILED), ("continue", RunStatus.SUCCEEDED)])
def test_status_wait_timeout(pd, pd_connection, django_capture_on_commit_callbacks, on_timeout, run_status):
    make_runbook(steps=[{**WAIT_STEP, "with": {**WAIT_STEP["with"], "on_timeout": on_timeout}}])
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        waits.waits_sweep(now=timezone.now() + timedelta(minutes=121))
    run = RunbookRun.objects.get()
    assert run.status == run_status
    assert run.step_runs.get().outputs == {"status": "", "timed_out": True}


# --- one decision, however many arrive at once ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_decisions_make_one(pd, pd_connection, role_user, django_capture_on_commit_callbacks):
    if connection.vendor != "postgresql":
        # SQLite takes one writer at a time: the race this test stages cannot happen there.
        pytest.skip("two threads deciding at once need PostgreSQL's row locks: set DATABASE_URL=postgres://…")
    # A transactional test starts from a flushed database: the roles a data migration made may be gone.
    responders, _ = Group.objects.get_or_create(name="Responders")
    responders.permissions.add(
        Permission.objects.get(content_type__app_label="runbooks", codename="approve_runbookrun")
    )
    make_runbook(steps=[APPROVE_STEP, PAGE_STEP])
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    users = [role_user("Responders", username=name) for name in ("alice", "bob")]
    barrier = threading.Barrier(2)
    outcomes = {}

    def decide_in_thread(user, approve):
        try:
            barrier.wait()
            waits.approval_decide(run_id=run.pk, user=user, approve=approve, comment=user.username)
            outcomes[user.username] = "decided"
        except waits.AlreadyDecided as exc:
            outcomes[user.username] = exc.decision["decided_by"]
        finally:
            connections.close_all()

    add_create_ok(pd)
    threads = [
        threading.Thread(target=decide_in_thread, args=(u, a)) for u, a in zip(users, (True, False), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winner = next(name for name, outcome in outcomes.items() if outcome == "decided")
    loser = next(name for name in outcomes if name != winner)
    assert outcomes[loser] == winner
    ask = StepRun.objects.get(run=run, key="ask")
    assert ask.outputs["decided_by"] == winner
    assert LogEntry.objects.filter(additional_data__event__in=["run.approve", "run.reject"]).count() == 1


def test_the_status_change_hook_costs_one_query_when_nothing_waits(django_assert_num_queries):
    incident = IncidentFactory()
    incident_update(incident_id=incident.pk, status="Monitoring", actor="test")
    event = incident.events.latest("id")
    with django_assert_num_queries(1):
        assert waits.waits_resume_for_event(event_id=event.pk) == 0


def test_a_worker_killed_before_parking_leaves_a_run_the_sweep_parks(pd, pd_connection):
    """Killed between claiming the run and committing the park: the run is `running` with a lease
    and the step still `pending`; once the lease expires the sweep's execution parks it, once."""
    runbook = make_runbook(steps=[APPROVE_STEP, PAGE_STEP])
    incident = IncidentFactory()
    run = services.run_create(runbook=runbook, event=incident.events.get())
    RunbookRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, lease_token="dead", lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert services.runs_recover_stalled(pending_after_seconds=0)["runs"] == 1
    run.refresh_from_db()
    assert (run.status, run.lease_token) == (RunStatus.WAITING, "")
    assert run.step_runs.get(key="ask").status == RunStatus.WAITING
    assert services.runs_recover_stalled(pending_after_seconds=0)["runs"] == 0
    assert len(pd.calls) == 0
