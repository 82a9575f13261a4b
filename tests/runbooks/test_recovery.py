"""Beat's safety net: work whose Celery message was lost (broker down at commit, worker gone)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.incidents.models import IncidentEvent
from apps.incidents.services import incident_update
from apps.runbooks import services, tasks
from apps.runbooks.models import RunbookRun
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
