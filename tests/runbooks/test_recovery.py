"""Beat's safety net: work whose Celery message was lost (broker down at commit, worker gone)."""

from datetime import timedelta

import pytest
import responses
from django.contrib.auth import get_user_model
from django.utils import timezone
from kombu.exceptions import OperationalError
from rest_framework.test import APIClient

from apps.incidents.models import IncidentEvent
from apps.incidents.services import incident_update
from apps.runbooks import services, tasks
from apps.runbooks.models import RunbookRun
from tests.conftest import PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import add_create_ok, make_runbook, writes

pytestmark = pytest.mark.django_db


def test_lost_dispatch_is_recovered(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook()
    incident = IncidentFactory()
    incident_update(incident_id=incident.pk, status="Investigating")  # on_commit never ran: message lost
    event = incident.events.get(kind="status_changed")
    assert event.dispatched_at is None
    IncidentEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.recover_stalled_runs.delay().get() == {"events": 1, "runs": 0}
    assert RunbookRun.objects.get().status == "succeeded"
    assert writes(pd) == [("POST", "/incidents")]
    # Once dispatched, the next sweep finds nothing to do.
    IncidentEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    assert services.runs_recover_stalled() == {"events": 0, "runs": 0}


def test_run_with_expired_lease_is_taken_over(pd, pd_connection, django_capture_on_commit_callbacks):
    runbook = make_runbook()
    incident = IncidentFactory()
    with django_capture_on_commit_callbacks(execute=True):
        pass
    run = services.run_create(runbook=runbook, event=incident.events.get())
    RunbookRun.objects.filter(pk=run.pk).update(
        status="running", lease_token="dead", lease_expires_at=timezone.now() - timedelta(seconds=5)
    )
    fresh = services.run_create(runbook=make_runbook("other"), event=incident.events.get())
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        result = services.runs_recover_stalled()
    # The fresh pending run is younger than the grace period: left to its own message.
    assert result == {"events": 0, "runs": 1}
    assert RunbookRun.objects.get(pk=run.pk).status == "succeeded"
    assert RunbookRun.objects.get(pk=fresh.pk).status == "pending"


# --- the broker is down when a change is saved --------------------------------------------------


@pytest.fixture
def broker_down(monkeypatch):
    """Publishing fails as Celery reports it with Redis unreachable, after its own publish retries."""

    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.dispatch_incident_event, "delay", refuse)
    monkeypatch.setattr(tasks.execute_run, "delay", refuse)


def test_status_change_with_the_broker_down_answers_200_and_the_sweep_dispatches_it(
    pd, pd_connection, django_capture_on_commit_callbacks, broker_down, monkeypatch, settings, caplog
):
    make_runbook()
    incident = IncidentFactory()
    user = get_user_model().objects.create_superuser("ops")
    api = APIClient()
    api.force_authenticate(user)

    with django_capture_on_commit_callbacks(execute=True):
        response = api.patch(f"/api/v1/incidents/{incident.pk}/", {"status": "Investigating"}, format="json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["status"] == "Investigating"
    event = IncidentEvent.objects.get(incident=incident, kind="status_changed")
    assert event.dispatched_at is None  # saved, not yet dispatched
    [warning] = [r for r in caplog.records if r.name == "apps.core.queueing"]
    assert warning.levelname == "WARNING"
    assert "dispatch_incident_event" in warning.getMessage() and "recovery sweep" in warning.getMessage()

    # The broker is back; the sweep finds the event once it is older than the grace period.
    monkeypatch.undo()
    settings.RUN_RECOVERY_PENDING_AFTER_SECONDS = 30
    assert services.runs_recover_stalled() == {"events": 0, "runs": 0}  # younger: may still be queued
    IncidentEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(seconds=31))
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.recover_stalled_runs.delay().get() == {"events": 1, "runs": 0}
    assert RunbookRun.objects.get().status == "succeeded"
    assert writes(pd) == [("POST", "/incidents")]


def test_run_created_with_the_broker_down_stays_pending_for_the_sweep(
    pd, pd_connection, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    make_runbook()
    with django_capture_on_commit_callbacks(execute=True):
        incident = IncidentFactory()
    with django_capture_on_commit_callbacks(execute=False):
        incident_update(incident_id=incident.pk, status="Investigating")
    event = incident.events.get(kind="status_changed")

    def refuse(*args, **kwargs):
        raise OperationalError("Connection refused")

    monkeypatch.setattr(tasks.execute_run, "delay", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        [run] = services.runs_create_for_event(event_id=event.pk)
    run.refresh_from_db()
    assert run.status == "pending"
    assert IncidentEvent.objects.get(pk=event.pk).dispatched_at is not None  # the run exists: dispatched
    assert any("execute_run" in r.getMessage() for r in caplog.records if r.name == "apps.core.queueing")

    monkeypatch.undo()
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.runs_recover_stalled(pending_after_seconds=0) == {"events": 0, "runs": 1}
    assert RunbookRun.objects.get(pk=run.pk).status == "succeeded"


def test_rerun_with_the_broker_down_answers_202_and_stays_pending(
    pd, pd_connection, django_capture_on_commit_callbacks, monkeypatch
):
    make_runbook()
    pd.add(responses.POST, f"{PD_URL}/incidents", status=400, json={"error": {"message": "Invalid Input Provided"}})
    incident = IncidentFactory()
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Investigating")
    run = RunbookRun.objects.get()
    assert run.status == "failed"

    def refuse(*args, **kwargs):
        raise OperationalError("Connection refused")

    monkeypatch.setattr(tasks.execute_run, "delay", refuse)
    api = APIClient()
    api.force_authenticate(get_user_model().objects.create_superuser("root"))
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/runs/{run.pk}/rerun/")
    assert response.status_code == 202, response.content
    assert RunbookRun.objects.get(pk=run.pk).status == "pending"


def test_pending_after_is_a_setting(pd, pd_connection, settings, django_capture_on_commit_callbacks):
    runbook = make_runbook()
    with django_capture_on_commit_callbacks(execute=True):
        incident = IncidentFactory()
    run = services.run_create(runbook=runbook, event=incident.events.get())
    RunbookRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timedelta(seconds=20))
    settings.RUN_RECOVERY_PENDING_AFTER_SECONDS = 30
    assert services.runs_recover_stalled() == {"events": 0, "runs": 0}
    settings.RUN_RECOVERY_PENDING_AFTER_SECONDS = 10
    add_create_ok(pd)
    assert services.runs_recover_stalled() == {"events": 0, "runs": 1}
    assert RunbookRun.objects.get(pk=run.pk).status == "succeeded"
