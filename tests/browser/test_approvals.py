"""Approving in a real browser: the buttons on a run's page post the page's own form (its CSRF
token included) to the approve view, and the run continues."""

import pytest
from django.contrib.auth.models import Group

from apps.runbooks import services
from apps.runbooks.models import RunbookRun, RunStatus
from tests.factories import IncidentFactory
from tests.runbooks.helpers import make_runbook

pytestmark = pytest.mark.browser

ASK = {"key": "ask", "action": "runbook.approval", "with": {"message": "Page the database team?"}}
WAIT = {"key": "wait", "action": "runbook.wait_for_status", "with": {"statuses": "Resolved"}}


@pytest.fixture
def waiting_run(transactional_db):
    # A transactional test's flush drops the groups the roles migration made; approvers name one.
    Group.objects.get_or_create(name="Responders")
    runbook = make_runbook(steps=[ASK, WAIT])
    incident = IncidentFactory(title="db slow")
    run = services.run_create(runbook=runbook, event=incident.events.get())
    services.run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING
    return run


@pytest.mark.parametrize("where", ["run", "incident", "list"])
def test_approve_from_the_page_with_a_comment(page, waiting_run, where):
    url = {
        "run": f"/admin/runbooks/runbookrun/{waiting_run.pk}/change/",
        "incident": f"/admin/incidents/incident/{waiting_run.incident_id}/change/",
        "list": "/admin/runbooks/runbookrun/approvals/",
    }[where]
    page.goto(url)
    assert "Page the database team?" in page.locator("#content").inner_text()
    page.locator(f'textarea[name="approval_comment_{waiting_run.pk}"]').fill("go ahead")
    page.get_by_role("button", name="Approve").click()
    page.wait_for_selector("ul.messagelist")
    assert "approved, the run continues" in page.locator("ul.messagelist").inner_text()
    assert page.url.endswith(url)
    ask = RunbookRun.objects.get().step_runs.get(key="ask")
    assert (ask.status, ask.outputs["decided_by"], ask.outputs["comment"]) == ("succeeded", "author", "go ahead")
