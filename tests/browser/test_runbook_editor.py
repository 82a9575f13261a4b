"""A person builds the example runbooks in the admin, in a real Chromium, without typing `{{`.

Every character this test sends goes through `keys()`, which refuses `{{`: variables only arrive
through the data picker. The saved runbooks must then export exactly as runbooks/*.yaml, and the
preview and the dry run must show the request the engine would send.
"""

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from apps.pagerduty.models import ServiceMapping
from apps.pagerduty.services import connection_upsert
from apps.runbooks import loader
from apps.runbooks.models import Runbook
from apps.sandbox.seed import seed_account
from apps.sandbox.server import SandboxServer
from apps.sandbox.state import SandboxState
from tests.factories import IncidentFactory

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
# The README's picture is refreshed only on request, so a test run never dirties the checkout.
SCREENSHOT = (
    ROOT / "docs" / "runbook-editor.png"
    if os.environ.get("UPDATE_SCREENSHOTS")
    else Path(tempfile.gettempdir()) / "runbook-editor.png"
)
SENT: list[str] = []


@dataclass(frozen=True)
class Var:
    """A variable chosen in the data picker (never typed)."""

    name: str


def keys(page, text: str) -> None:
    assert "{{" not in text, f"the test must not type {{{{ by hand: {text!r}"
    SENT.append(text)
    page.keyboard.type(text)


def fill(locator, text: str) -> None:
    assert "{{" not in text, f"the test must not type {{{{ by hand: {text!r}"
    SENT.append(text)
    locator.fill(text)


@pytest.fixture
def stand_in(transactional_db):
    """The PagerDuty stand-in on a local port, with its well-known users, services and policies."""
    state = SandboxState(tokens={"sandbox-token"})
    seed_account(state, users=20, teams=3, schedules=4, escalation_policies=3, services=4, seed=1)
    server = SandboxServer(state, port=0).start()
    connection = connection_upsert(
        name="default", api_key="sandbox-token", from_email="sre@example.com", api_url=server.url
    )
    ServiceMapping.objects.create(connection=connection, service="", pagerduty_service_id="PSVC001")
    yield state, server
    server.stop()


def step_row(page, index: int):
    return page.locator("#steps-group .rb-step").nth(index)


def field_input(row, name: str):
    return row.locator(f'.rb-field[data-field="{name}"] .rb-input')


def wait_for_preview(page) -> None:
    page.wait_for_function(
        "() => { const s = document.getElementById('rb-preview-status');"
        " return s && (s.dataset.state === 'ok' || s.dataset.state === 'error'); }"
    )


def add_step(page, action_label: str, *, key: str, name: str):
    before = page.locator("#steps-group .rb-step").count()
    page.locator("#steps-group .add-row a").click()
    chooser = page.locator("#rb-action-chooser")
    assert chooser.is_visible()
    # Grouped by category: On-Call › PagerDuty, then the action.
    assert chooser.locator(".rb-chooser-category h3").first.inner_text().lower() == "on-call › pagerduty"
    chooser.get_by_role("button", name=re.compile(rf"^{re.escape(action_label)}")).click()
    assert not chooser.is_visible()
    row = step_row(page, before)
    fill(row.locator('input[name$="-key"]'), key)
    fill(row.locator('input[name$="-name"]'), name)
    return row


def pick(page, row, field: str, variable: str) -> None:
    row.locator(f'.rb-field[data-field="{field}"] .rb-picker-button').click()
    picker = page.locator("#rb-picker")
    assert picker.is_visible()
    # Search as a person would: a word of the variable, then choose it from the list.
    keys(page, variable.rsplit(".", 1)[-1])
    item = picker.locator(f'.rb-picker-item[data-name="{variable}"]')
    assert item.is_visible()
    item.locator("button").click()
    assert not picker.is_visible()


def compose(page, row, field: str, *parts) -> None:
    """Clear a field, then build its template from typed text and picked variables, in order."""
    box = field_input(row, field)
    fill(box, "")
    box.click()
    for part in parts:
        if isinstance(part, Var):
            pick(page, row, field, part.name)
        else:
            keys(page, part)


def choose(row, field: str, value: str) -> None:
    row.locator(f'.rb-field[data-field="{field}"] select.rb-input').select_option(value)


def runbook_header(page, *, slug, name, trigger_on, to=(), severity=(), environments="", description=""):
    page.goto("/admin/runbooks/runbook/add/")
    page.wait_for_selector("#rb-preview-status")
    # Slug first: once edited by hand, the admin stops deriving it from the name.
    fill(page.locator("#id_slug"), slug)
    fill(page.locator("#id_name"), name)
    if description:
        fill(page.locator("#id_description"), description)
    page.locator("#id_trigger_on").select_option(trigger_on)
    for status in to:
        page.locator(f'input[name="trigger_to"][value="{status}"]').check()
    for level in severity:
        page.locator(f'input[name="condition_severity"][value="{level}"]').check()
    if environments:
        fill(page.locator("#id_condition_environments"), environments)


def save_and_continue(page) -> None:
    page.locator('input[name="_continue"]').click()
    page.wait_for_selector("ul.messagelist")
    assert page.locator(".errornote").count() == 0, page.locator(".errornote").inner_text()
    assert "Saved as version" in page.locator("ul.messagelist").inner_text()
    # Let the reloaded editor finish its first preview: with SQLite in memory the live server
    # shares the test's database connection, so the test must not query while a request runs.
    wait_for_preview(page)


def build_page_on_critical(page):
    runbook_header(
        page,
        slug="page-on-critical",
        name="Page on-call for SEV0/SEV1",
        description="Opens a PagerDuty incident routed to the on-call escalation policy.",
        trigger_on="status_changed",
        to=["Investigating"],
        severity=[0, 1],
        environments="production",
    )
    row = add_step(page, "Create PagerDuty Incident", key="page", name="Create PagerDuty incident")
    # Sensible defaults arrive with the action: title, summary, url and the dedup key.
    assert field_input(row, "incident_key").input_value() == "ai-sre-" + "{{Activity.id}}"
    assert field_input(row, "title").input_value() == "SEV{{Activity.severity}}: {{Activity.title}}"
    compose(page, row, "from", Var("Activity.owner"))
    fill(field_input(row, "responder_id"), "PEP0001")
    choose(row, "responder_type", "escalation_policy")
    wait_for_preview(page)
    preview = row.locator(".rb-preview")
    # The built-in sample incident (SEV1) by default: urgency from the mapping, the key, the body.
    assert "high (SEV1 → high (urgency mapping))" in preview.locator(".rb-derived-urgency").inner_text()
    assert preview.locator(".rb-derived-key").inner_text() == "ai-sre-6f1c2d3e-0000-4000-8000-123456789abc"
    body = json.loads(preview.locator(".rb-body").inner_text())
    assert body["incident"]["title"] == "SEV1: Checkout API returns 500s"
    assert body["incident"]["escalation_policy"] == {"id": "PEP0001", "type": "escalation_policy_reference"}
    assert row.locator('.rb-field[data-field="from"] .rb-rendered').inner_text() == "→ alice@example.com"
    save_and_continue(page)


def build_escalate_responder(page, incident_choice: str):
    runbook_header(
        page,
        slug="escalate-responder",
        name="Add a responder when an incident escalates",
        trigger_on="severity_changed",
        severity=[0, 1],
    )
    page.locator("#rb-preview-incident").select_option(incident_choice)
    page_step = add_step(page, "Create PagerDuty Incident", key="page", name="Ensure a PagerDuty incident")
    compose(page, page_step, "from", Var("Activity.owner"))
    escalate = add_step(
        page, "Add Responder to PagerDuty Incident", key="escalate", name="Request an additional responder"
    )
    compose(page, escalate, "from", Var("Activity.owner"))
    compose(page, escalate, "incident_id", Var("steps.page.incident_id"))
    fill(field_input(escalate, "responder_id"), "PRESPND")
    compose(page, escalate, "requester_id", Var("Activity.owner"))
    compose(
        page,
        escalate,
        "message",
        Var("Activity.short_id"),
        " escalated to SEV",
        Var("Activity.severity"),
        ": ",
        Var("Activity.title"),
    )
    wait_for_preview(page)
    preview = escalate.locator(".rb-preview")
    assert "<steps.page.incident_id>" in preview.locator(".rb-url").inner_text()
    assert preview.locator(".rb-placeholders").inner_text().startswith("<steps.page.incident_id>")
    save_and_continue(page)


def build_resolve_on_closure(page):
    runbook_header(
        page, slug="resolve-on-closure", name="Resolve PagerDuty incident on closure", trigger_on="status_changed"
    )
    page.locator('input[name="trigger_to"][value="Resolved"]').check()
    row = add_step(page, "Resolve PagerDuty Incident", key="resolve", name="Resolve PagerDuty incident")
    compose(page, row, "from", Var("Activity.owner"))
    # Empty means "the linked PagerDuty incident", which is what the YAML relies on.
    fill(field_input(row, "incident_id"), "")
    compose(page, row, "resolution", "Resolved in ", Var("Activity.short_id"), " at ", Var("Activity.resolved_at"))
    wait_for_preview(page)
    body = json.loads(row.locator(".rb-body").inner_text())
    assert body["incident"]["resolution"] == "Resolved in INC-123 at 2026-11-23T11:30:00Z"
    save_and_continue(page)


def build_page_and_resolve(page):
    runbook_header(
        page,
        slug="page-and-resolve",
        name="Page, wait for Monitoring, resolve (SEV2)",
        trigger_on="status_changed",
        to=["Investigating"],
        severity=[2],
        environments="production",
    )
    row = add_step(page, "Create PagerDuty Incident", key="page", name="Create PagerDuty incident")
    compose(page, row, "from", Var("Activity.owner"))
    fill(field_input(row, "responder_id"), "PEP0001")
    choose(row, "responder_type", "escalation_policy")
    resolve = add_step(page, "Resolve PagerDuty Incident", key="resolve", name="Resolve the page")
    compose(page, resolve, "incident_id", Var("steps.page.incident_id"))
    wait_for_preview(page)
    # Resolving what was just paged, with nothing in between: allowed, but the preview warns.
    assert "with no wait step in between" in resolve.locator(".rb-preview .rb-warning").inner_text()

    wait = add_step(page, "Wait for incident status", key="wait", name="Wait until Monitoring or Resolved")
    assert not wait.locator(".fieldBox.field-connection").is_visible()  # control steps name no connection
    assert field_input(wait, "timeout_minutes").input_value() == "60"
    fill(field_input(wait, "statuses"), "Monitoring, Resolved")
    fill(field_input(wait, "timeout_minutes"), "1440")
    wait.locator(".rb-up").click()
    wait_for_preview(page)
    assert "Would wait for status Monitoring, Resolved" in wait.locator(".rb-preview").inner_text()
    assert wait.locator(".rb-preview .rb-request-line").count() == 0
    assert resolve.locator(".rb-preview .rb-warning").count() == 0
    compose(
        page,
        resolve,
        "resolution",
        Var("Activity.short_id"),
        " reached ",
        Var("steps.wait.status"),
        ": ",
        Var("Activity.url"),
    )
    save_and_continue(page)


def drag_above(page, row, target) -> None:
    """A real HTML5 drag by the handle, with the mouse, as a person does it."""
    handle = row.locator(".rb-handle").bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(handle["x"] + 30, handle["y"] - 30, steps=5)
    # The editor folds every step to its title once a drag starts; aim at the folded target.
    page.wait_for_function("() => document.getElementById('steps-group').classList.contains('rb-reordering')")
    box = target.bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 4, steps=10)
    page.mouse.up()


def spec_without_description(spec: dict) -> dict:
    return {key: value for key, value in spec.items() if key != "description"}


def test_build_the_example_runbooks_without_typing_braces(page, stand_in, live_server):
    state, server = stand_in
    incident = IncidentFactory(
        title="Checkout latency above SLO", severity=1, owner="sre@example.com", environment="production"
    )
    SENT.clear()

    build_page_on_critical(page)
    build_escalate_responder(page, str(incident.pk))
    build_resolve_on_closure(page)
    build_page_and_resolve(page)

    assert not any("{{" in text for text in SENT)
    for path in sorted((ROOT / "runbooks").glob("*.yaml")):
        expected = loader.load_yaml(path.read_text())[0]
        saved = loader.runbook_to_spec(Runbook.objects.get(slug=expected["slug"]))
        assert spec_without_description(saved) == spec_without_description(expected), path.name

    # Dry run from the admin: the exact request per step, read-only look-ups only.
    runbook = Runbook.objects.get(slug="escalate-responder")
    page.goto(f"/admin/runbooks/runbook/{runbook.pk}/change/")
    page.get_by_role("link", name="Dry run").click()
    page.locator("#rb-dry-run-incident").select_option(str(incident.pk))
    page.locator("#rb-dry-run-submit").click()
    # count() does not wait: on a loaded machine the results may not be on the page yet.
    page.wait_for_selector("#rb-dry-run-results .rb-dry-run-step")
    rows = page.locator("#rb-dry-run-results .rb-dry-run-step")
    assert rows.count() == 2
    create, escalate = rows.nth(0), rows.nth(1)
    assert create.locator(".rb-badge-planned").count() == 1
    assert create.locator(".rb-request-line").inner_text() == f"POST {server.url}/incidents"
    assert json.loads(create.locator(".rb-body").inner_text())["incident"]["title"] == (
        "SEV1: Checkout latency above SLO"
    )
    assert "Token token=***redacted***" in create.locator(".rb-headers").inner_text()
    assert escalate.locator(".rb-request-line").inner_text() == (
        f"POST {server.url}/incidents/<steps.page.incident_id>/responder_requests"
    )
    escalate_body = json.loads(escalate.locator(".rb-body").inner_text())
    assert escalate_body["requester_id"] == "PSREADM"  # sre@example.com, looked up read-only
    assert escalate_body["responder_request_targets"] == [
        {"responder_request_target": {"id": "PRESPND", "type": "user_reference"}}
    ]
    assert "GET " in escalate.locator(".rb-reads").inner_text()
    assert {r["method"] for r in state.requests} == {"GET"}

    # The editor with its preview, for the README.
    page.goto(f"/admin/runbooks/runbook/{runbook.pk}/change/")
    page.locator("#rb-preview-incident").select_option(str(incident.pk))
    wait_for_preview(page)
    step_row(page, 0).get_by_role("button", name="Fold").click()
    escalate_row = step_row(page, 1)
    escalate_row.locator('.rb-field[data-field="message"] .rb-picker-button').click()
    keys(page, "sev")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": int(page.locator("#steps-group").bounding_box()["height"]) + 40})
    page.locator("#steps-group").screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_unknown_variable_is_flagged_on_its_field_live_and_after_a_failed_save(page, stand_in):
    runbook_header(page, slug="typo", name="Typo", trigger_on="manual")
    row = add_step(page, "Create PagerDuty Incident", key="page", name="Page")
    title = field_input(row, "title")
    # The one place a person types braces: a typo the editor must catch before saving.
    title.fill("SEV1: {{Activity.titel}}")
    wait_for_preview(page)
    field = row.locator('.rb-field[data-field="title"]')
    assert "rb-invalid" in field.get_attribute("class")
    assert field.locator(".rb-errors").inner_text() == (
        "Unknown variable {{Activity.titel}}; did you mean {{Activity.title}}?"
    )
    assert "1 step has problems" in page.locator("#rb-preview-status").inner_text()

    page.locator('input[name="_continue"]').click()
    page.wait_for_selector(".errornote")
    wait_for_preview(page)
    assert not Runbook.objects.filter(slug="typo").exists()
    row = step_row(page, 0)
    field = row.locator('.rb-field[data-field="title"]')
    assert "rb-invalid" in field.get_attribute("class")
    assert "Unknown variable {{Activity.titel}}" in field.locator(".rb-errors").inner_text()
    assert field_input(row, "title").input_value() == "SEV1: {{Activity.titel}}"


def test_steps_reorder_by_drag_and_drop(page, stand_in):
    runbook_header(page, slug="reorder", name="Reorder", trigger_on="manual")
    first = add_step(page, "Create PagerDuty Incident", key="page", name="Page")
    second = add_step(page, "Add Responder to PagerDuty Incident", key="escalate", name="Escalate")
    compose(page, second, "incident_id", Var("steps.page.incident_id"))
    fill(field_input(second, "responder_id"), "PRESPND")
    wait_for_preview(page)
    assert "rb-invalid" not in second.locator('.rb-field[data-field="incident_id"]').get_attribute("class")

    # Escalate above page: its reference to steps.page is now to a later step, and is flagged.
    drag_above(page, second, first)
    assert second.locator('input[name$="-position"]').input_value() == "0"
    assert first.locator('input[name$="-position"]').input_value() == "1"
    wait_for_preview(page)
    assert "rb-invalid" in second.locator('.rb-field[data-field="incident_id"]').get_attribute("class")

    second.locator(".rb-down").click()
    wait_for_preview(page)
    assert "rb-invalid" not in second.locator('.rb-field[data-field="incident_id"]').get_attribute("class")
    save_and_continue(page)
    assert [s.key for s in Runbook.objects.get(slug="reorder").steps.order_by("position")] == ["page", "escalate"]
