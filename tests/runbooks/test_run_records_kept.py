"""Run records are kept: no delete in the admin for runs and exchanges, nor for the runbooks and
incidents that have runs — unless RUN_RECORDS_DELETABLE says otherwise."""

import pytest

from apps.runbooks.models import RunbookRun, StepRunExchange
from apps.runbooks.services import run_create
from tests.factories import IncidentFactory, RunbookFactory, StepFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def run():
    incident = IncidentFactory()
    runbook = RunbookFactory(slug="page")
    StepFactory(runbook=runbook, key="page", inputs={"title": "{{Activity.title}}"})
    run = run_create(runbook=runbook, event=incident.events.get())
    StepRunExchange.objects.create(
        step_run=run.step_runs.get(), method="POST", url="https://pd.test/incidents", status=201
    )
    return run


def test_nobody_deletes_run_records_by_default(root_admin, run):
    exchange = StepRunExchange.objects.get()
    assert root_admin.get(f"/admin/runbooks/runbookrun/{run.pk}/delete/").status_code == 403
    assert root_admin.post(f"/admin/runbooks/runbookrun/{run.pk}/delete/", {"post": "yes"}).status_code == 403
    assert root_admin.post(f"/admin/runbooks/steprunexchange/{exchange.pk}/delete/", {"post": "yes"}).status_code == 403
    listing = root_admin.get("/admin/runbooks/runbookrun/").content.decode()
    assert 'value="delete_selected"' not in listing
    # Nor through what they belong to: the runbook and the incident stay, with their runs.
    page = root_admin.get(f"/admin/runbooks/runbook/{run.runbook.pk}/delete/").content.decode()
    assert "runbook run" in page
    assert root_admin.post(f"/admin/runbooks/runbook/{run.runbook.pk}/delete/", {"post": "yes"}).status_code == 403
    assert root_admin.post(f"/admin/incidents/incident/{run.incident.pk}/delete/", {"post": "yes"}).status_code == 403
    assert RunbookRun.objects.filter(pk=run.pk).exists() and StepRunExchange.objects.count() == 1


def test_a_deployment_may_allow_superusers_to_delete_them(root_admin, run, settings):
    settings.RUN_RECORDS_DELETABLE = True
    assert root_admin.post(f"/admin/runbooks/runbookrun/{run.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not RunbookRun.objects.filter(pk=run.pk).exists()
