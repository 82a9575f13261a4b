"""The trial of issue 13, in a real Chromium: a run fails on a broken step; the author fixes the
runbook and saves version 2; "Re-run from the failed step with the current version" sends the fix,
and the run page, left open, turns from pending to succeeded by itself — no reload.

The test plays the worker: the message the re-run queues is caught and the test executes the run
(`services.run_execute`, the task's body) while the page is open, against the PagerDuty stand-in
over real HTTP.
"""

import os
import tempfile
from pathlib import Path

import pytest

from apps.incidents.services import incident_update
from apps.pagerduty.models import ServiceMapping
from apps.pagerduty.services import connection_upsert
from apps.runbooks import receivers, services
from apps.runbooks.models import RunbookRun
from apps.sandbox.seed import seed_account
from apps.sandbox.server import SandboxServer
from apps.sandbox.state import ADMIN_EMAIL, SandboxState
from tests.browser.test_runbook_editor import field_input, step_row
from tests.factories import IncidentFactory
from tests.runbooks.helpers import make_runbook

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = ROOT / "docs" if os.environ.get("UPDATE_SCREENSHOTS") else Path(tempfile.gettempdir())

PAGE = {
    "key": "page",
    "name": "Ensure a PagerDuty incident",
    "action": "pagerduty.create_incident",
    "connection": "default",
    "with": {"from": "{{Activity.owner}}", "title": "{{Activity.title}}", "incident_key": "ai-sre-{{Activity.id}}"},
}
BROKEN_ESCALATE = {
    "key": "escalate",
    "name": "Request an additional responder",
    "action": "pagerduty.add_responder",
    "connection": "default",
    # A pasted id of an incident that does not exist: PagerDuty answers 404.
    "with": {"from": "{{Activity.owner}}", "incident_id": "QBROKEN0", "responder_id": "PRESPND", "message": "Join"},
}


@pytest.fixture
def stand_in(transactional_db):
    state = SandboxState(tokens={"sandbox-token"})
    seed_account(state, users=20, teams=3, schedules=4, escalation_policies=3, services=4, seed=1)
    server = SandboxServer(state, port=0).start()
    connection = connection_upsert(
        name="default", api_key="sandbox-token", from_email="sre@example.com", api_url=server.url
    )
    ServiceMapping.objects.create(connection=connection, service="", pagerduty_service_id="PSVC001")
    yield state
    server.stop()


@pytest.fixture
def queued(monkeypatch):
    """Messages the engine queues, kept for the test to execute (there is no worker here). A status
    change's dispatch creates its runs and queues them all, instead of executing the first in place
    as the one-hop dispatch does: the page must be seen while the run is still pending."""
    runs: list = []
    monkeypatch.setattr(services, "enqueue", lambda task, *args, recovery: runs.append(args[0]) or True)
    monkeypatch.setattr(
        receivers,
        "enqueue",
        lambda task, event_id, recovery: bool(services.runs_create_for_event(event_id=event_id, queue_from=0)),
    )
    return runs


def test_fix_rerun_with_current_version_and_watch_it_succeed(page, stand_in, queued):
    runbook = make_runbook("escalate", steps=[PAGE, BROKEN_ESCALATE], trigger={"on": "status_changed"})
    incident = IncidentFactory(owner=ADMIN_EMAIL, severity=1)
    incident_update(incident_id=incident.pk, status="Investigating", actor="test")
    run = RunbookRun.objects.get()
    services.run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == "failed", run.error
    assert "404" in run.step_runs.get(key="escalate").error

    # The run page says what failed, which version ran, and offers both re-runs.
    page.goto(f"/admin/runbooks/runbookrun/{run.pk}/change/")
    assert page.locator("#rb-run-status .rb-run-failed").is_visible()
    assert page.locator("#rb-run-version").inner_text().startswith("v1")
    # JSON is folded: the request line is a summary, the body opens on demand.
    escalate_request = page.locator("details.rb-json", has_text="POST").filter(has_text="responder_requests").first
    assert escalate_request.get_attribute("open") is None

    # The author fixes the step: incident_id empty means the incident the page step linked.
    page.goto(f"/admin/runbooks/runbook/{runbook.pk}/change/")
    escalate = step_row(page, 1)
    field_input(escalate, "incident_id").fill("")
    page.locator('input[name="_continue"]').click()
    page.wait_for_selector("ul.messagelist")
    assert "Saved as version 2" in page.locator("ul.messagelist").inner_text()

    page.goto(f"/admin/runbooks/runbookrun/{run.pk}/change/")
    assert "the runbook is now at v2" in page.locator("#rb-run-version").inner_text()
    page.locator("#rb-rerun-current").click()
    assert "as saved now, version 2" in page.locator("#content-main").inner_text()
    page.locator("#rb-rerun-confirm").click()
    page.wait_for_url(f"**/admin/runbooks/runbookrun/{run.pk}/change/")
    assert page.locator("#rb-run-status .rb-run-pending").is_visible()
    assert page.locator("#rb-run-version").inner_text().startswith("v2")
    assert queued == [run.pk, run.pk]  # the first run, then the re-run
    page.evaluate("window.rbNotReloaded = true")

    # The worker executes the run while the page is open; the page turns itself to succeeded.
    services.run_execute(run_id=run.pk)
    page.wait_for_selector("#rb-run-status .rb-run-succeeded", timeout=10_000)
    assert page.evaluate("window.rbNotReloaded") is True, "the page was reloaded"
    assert "(succeeded)" in page.locator("#content > h2").inner_text()
    escalate_status = page.locator("#step_runs-group .inline-related").nth(1)
    assert "succeeded" in escalate_status.inner_text()
    # Two attempts at the step's own request, numbered 1 and 2: the 404 of v1 and the 201 of v2.
    table = escalate_status.locator("table.rb-exchanges", has_text="Attempts at this step's request")
    assert [table.locator("tr").nth(i).locator("td").first.inner_text() for i in (1, 2)] == ["1", "2"]
    page.screenshot(path=str(SCREENSHOT_DIR / "run-page.png"), full_page=False)

    run.refresh_from_db()
    assert (run.status, run.runbook_version.number) == ("succeeded", 2)
    [pd_incident] = stand_in.incidents.values()
    sent = stand_in.find_requests("POST", f"/incidents/{pd_incident['id']}/responder_requests")
    assert len(sent) == 1 and sent[0]["status"] in (200, 201)


def test_insert_variable_replaces_a_default_or_an_id_and_a_glued_id_is_refused(page, stand_in):
    from tests.browser.test_runbook_editor import add_step, pick, runbook_header, wait_for_preview

    runbook_header(page, slug="glued", name="Glued ids", trigger_on="manual")
    add_step(page, "Create PagerDuty Incident", key="create_incident", name="Page")
    escalate = add_step(page, "Add Responder to PagerDuty Incident", key="escalate", name="Escalate")
    incident_id = field_input(escalate, "incident_id")
    assert incident_id.input_value() == "{{pagerduty.incident_id}}"  # pre-filled default
    # The trial: choosing a variable for a pre-filled field appended it. It replaces it now.
    pick(page, escalate, "incident_id", "steps.create_incident.incident_id")
    assert incident_id.input_value() == "{{steps.create_incident.incident_id}}"
    # A one-id field is replaced even where the caret sits after what is there.
    incident_id.click()
    page.keyboard.press("End")
    pick(page, escalate, "incident_id", "pagerduty.incident_id")
    assert incident_id.input_value() == "{{pagerduty.incident_id}}"
    # A list of ids gets a separator; a message field takes the variable at the caret.
    responders = field_input(escalate, "responder_id")
    responders.fill("PRESPND")
    responders.click()
    page.keyboard.press("End")
    pick(page, escalate, "responder_id", "Activity.owner")
    assert responders.input_value() == "PRESPND, {{Activity.owner}}"
    message = field_input(escalate, "message")
    message.fill("Join ")
    message.click()
    page.keyboard.press("End")
    pick(page, escalate, "message", "Activity.short_id")
    assert message.input_value() == "Join {{Activity.short_id}}"

    # Two variables glued in an id field (typed this time, as a paste would) are refused at save.
    pick(page, escalate, "incident_id", "steps.create_incident.incident_id")
    incident_id.click()
    page.keyboard.press("Home")
    page.keyboard.type("QX")
    wait_for_preview(page)
    page.locator('input[name="_continue"]').click()
    page.wait_for_selector(".errornote")
    errors = page.locator("#content-main").inner_text()
    assert "must render to a single id, but 'QX{{steps.create_incident.incident_id}}' puts text next to" in errors


def test_incident_page_runs_a_runbook_after_a_dry_run_and_shows_it_live(page, stand_in, queued):
    make_runbook("by-hand", steps=[PAGE], trigger={"on": "manual"})
    incident = IncidentFactory(owner=ADMIN_EMAIL, severity=1)
    page.goto(f"/admin/incidents/incident/{incident.pk}/change/")
    page.locator("#rb-run-a-runbook").click()
    page.locator("#rb-runbook").select_option("by-hand")
    page.locator("#rb-preview").click()
    # The dry run first: the exact request, nothing sent, nothing recorded.
    assert "POST" in page.locator("#rb-dry-run-results").inner_text()
    assert stand_in.find_requests("POST", "/incidents") == []
    assert not RunbookRun.objects.exists()
    page.locator("#rb-run-confirm").click()
    page.wait_for_url(f"**/admin/incidents/incident/{incident.pk}/change/")
    panel = page.locator("#rb-incident-runs")
    assert "Runs started by the last change" in panel.inner_text()
    assert panel.locator(".rb-run-pending").is_visible()
    page.fill("#id_summary", "typed while the run goes on")
    page.evaluate("window.rbNotReloaded = true")

    services.run_execute(run_id=queued[-1])
    page.wait_for_selector("#rb-incident-runs .rb-run-succeeded", timeout=10_000)
    assert page.evaluate("window.rbNotReloaded") is True
    # Only the runs were redrawn: what the person was typing in the form is still there.
    assert page.input_value("#id_summary") == "typed while the run goes on"
    assert page.locator("#runbook_runs-group .rb-run-succeeded").count() == 1
