"""Control steps in authoring: validation, the warning for resolving what was just created, the
dry run's "would wait for", and YAML that round-trips without a connection."""

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.runbooks.dryrun import StepSource, sample_incident, steps_dry_run, steps_preview
from apps.runbooks.loader import load_yaml, runbook_to_spec, spec_problems
from apps.runbooks.models import Runbook
from apps.runbooks.validation import StepDraft, runbook_warnings, validate_steps
from tests.factories import IncidentFactory
from tests.runbooks.helpers import PAGE_STEP
from tests.runbooks.test_loader import REPO_RUNBOOKS

pytestmark = pytest.mark.django_db

PAGE = StepDraft("page", "pagerduty.create_incident", {"title": "x"})
RESOLVE = StepDraft("resolve", "pagerduty.resolve_incident", {})
WAIT = StepDraft("wait", "runbook.wait_for_status", {"statuses": "Monitoring, Resolved"})


def messages(problems) -> dict:
    return {(p.step, p.field): p.message for p in problems}


def test_literal_fields_are_checked_when_saved():
    found = messages(
        validate_steps(
            runbook="r",
            steps=[
                StepDraft(
                    "wait", "runbook.wait_for_status", {"statuses": "Monitoring, Closed", "timeout_minutes": "soon"}
                ),
                StepDraft("ask", "runbook.approval", {"on_timeout": "retry", "timeout_minutes": "0"}),
                StepDraft("ok", "runbook.approval", {"timeout_minutes": "{{Activity.severity}}"}),
            ],
        )
    )
    assert found[("wait", "statuses")].startswith("unknown status 'Closed' (expected Detected, Investigating")
    assert found[("wait", "timeout_minutes")] == "must be a whole number of minutes, not 'soon'"
    assert found[("ask", "on_timeout")] == "must be one of fail, continue"
    assert found[("ask", "timeout_minutes")] == "must be between 1 and 10080"
    assert not [key for key in found if key[0] == "ok"]
    assert ("wait", "statuses") in messages(
        validate_steps(runbook="r", steps=[StepDraft("wait", "runbook.wait_for_status", {})])
    )


@pytest.mark.parametrize(
    ("steps", "warned"),
    [
        ([PAGE, RESOLVE], ["resolve"]),
        (
            [PAGE, StepDraft("ack", "pagerduty.acknowledge_incident", {"incident_id": "{{steps.page.incident_id}}"})],
            ["ack"],
        ),
        ([PAGE, WAIT, RESOLVE], []),
        ([PAGE, StepDraft("ask", "runbook.approval", {}), RESOLVE], []),
        ([PAGE, StepDraft("resolve", "pagerduty.resolve_incident", {"incident_id": "PSOMEOTHER"})], []),
        ([RESOLVE], []),
    ],
)
def test_warning_when_resolving_what_was_just_created(steps, warned):
    warnings = runbook_warnings(runbook="r", steps=steps)
    assert [w.step for w in warnings] == warned
    if warned:
        assert "with no wait step in between" in warnings[0].message


def test_dry_run_says_what_a_control_step_would_wait_for(pd_connection):
    steps = [
        StepSource("page", PAGE_STEP["action"], inputs=PAGE_STEP["with"]),
        StepSource("ask", "runbook.approval", connection="", inputs={"message": "Go?"}),
        StepSource("wait", "runbook.wait_for_status", connection="", inputs={"statuses": "monitoring,Resolved"}),
        StepSource("resolve", "pagerduty.resolve_incident", inputs={"resolution": "{{steps.wait.status}}"}),
    ]
    page, ask, wait, resolve = steps_dry_run(steps=steps, incident=sample_incident(), allow_reads=False)
    assert (ask["status"], ask["request"], ask["sends_request"], ask["connection"]) == ("planned", None, False, "")
    assert ask["notes"] == ["Would wait for approval by Responders (at most 30 min, then fail)"]
    assert wait["notes"] == ["Would wait for status Monitoring, Resolved (at most 60 min, then fail)"]
    assert resolve["rendered"]["resolution"] == "<steps.wait.status>"
    assert all(step["warnings"] == [] for step in (page, ask, wait, resolve))


def test_dry_run_of_a_real_incident_already_in_the_status():
    incident = IncidentFactory(status="Monitoring")
    (wait,) = steps_dry_run(
        steps=[StepSource("wait", "runbook.wait_for_status", inputs={"statuses": "Monitoring"})], incident=incident
    )
    assert wait["notes"][0].endswith("the incident is Monitoring already, so it would continue at once")


def test_preview_shows_the_warning_and_field_errors(pd_connection):
    steps = [
        StepSource("page", PAGE_STEP["action"], inputs=PAGE_STEP["with"]),
        StepSource("resolve", "pagerduty.resolve_incident"),
        StepSource("wait", "runbook.wait_for_status", inputs={"statuses": "Soon"}),
    ]
    _, resolve, wait = steps_preview(steps=steps, incident=sample_incident())
    assert "with no wait step in between" in resolve["warnings"][0]
    assert wait["errors"]["statuses"][0].startswith("unknown status 'Soon'")


def test_yaml_round_trip_and_no_connection_on_control_steps(tmp_path):
    call_command("load_runbooks", str(REPO_RUNBOOKS / "page-and-resolve.yaml"))
    runbook = Runbook.objects.get(slug="page-and-resolve")
    assert [s.connection for s in runbook.steps.order_by("position")] == ["default", "", "default"]
    exported = runbook_to_spec(runbook)
    original = load_yaml((REPO_RUNBOOKS / "page-and-resolve.yaml").read_text())[0]
    assert exported == original
    assert "connection" not in exported["steps"][1]
    assert yaml.safe_load(yaml.safe_dump(exported)) == original


def test_a_control_step_naming_a_connection_is_refused():
    spec = {
        "slug": "x",
        "name": "x",
        "trigger": {"on": "manual"},
        "steps": [{"key": "ask", "action": "runbook.approval", "connection": "default"}],
    }
    assert [str(p) for p in spec_problems(spec)] == [
        "runbook 'x', step 'ask', field 'connection': runbook.approval is a control step and names no connection"
    ]


def test_load_runbooks_prints_the_warning(tmp_path, capsys):
    spec = {
        "slug": "oops",
        "name": "Oops",
        "trigger": {"on": "manual"},
        "steps": [PAGE_STEP, {"key": "resolve", "action": "pagerduty.resolve_incident", "connection": "default"}],
    }
    (tmp_path / "oops.yaml").write_text(yaml.safe_dump(spec))
    call_command("load_runbooks", str(tmp_path), "--check")
    assert "step 'resolve': resolves what step 'page' created, with no wait step in between" in capsys.readouterr().err
    with pytest.raises(CommandError):
        call_command("load_runbooks", str(tmp_path / "missing.yaml"))


def test_admin_dry_run_page_shows_the_wait(pd_connection, root_admin):
    call_command("load_runbooks", str(REPO_RUNBOOKS / "page-and-resolve.yaml"))
    runbook = Runbook.objects.get(slug="page-and-resolve")
    html = root_admin.get(f"/admin/runbooks/runbook/{runbook.pk}/dry-run/?incident=sample").content.decode()
    assert "Would wait for status Monitoring, Resolved (at most 1440 min, then fail)" in html
    assert "Warning:" not in html
