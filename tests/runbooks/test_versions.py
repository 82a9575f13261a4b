"""Runbook versions: written when a runbook changes, recorded on each run, diffable, YAML-shaped."""

from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.db import IntegrityError
from rest_framework.test import APIClient

from apps.incidents.services import incident_update
from apps.runbooks.loader import load_yaml, runbook_to_spec
from apps.runbooks.models import Runbook, RunbookRun, RunbookVersion
from apps.runbooks.services import runbook_upsert_from_spec
from apps.runbooks.versions import runbook_version_ensure, version_yaml, versions_diff
from tests.factories import IncidentFactory
from tests.runbooks.helpers import PAGE_STEP, add_create_ok, change_status, make_runbook

pytestmark = pytest.mark.django_db
REPO_RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"


def test_loading_yaml_writes_a_version_only_when_something_changed(tmp_path):
    call_command("load_runbooks", str(REPO_RUNBOOKS))
    call_command("load_runbooks", str(REPO_RUNBOOKS))
    assert RunbookVersion.objects.count() == len(list(REPO_RUNBOOKS.glob("*.yaml")))
    version = RunbookVersion.objects.get(runbook__slug="page-on-critical")
    assert (version.number, version.comment, version.created_by) == (1, "Loaded from YAML", None)
    assert version.spec == runbook_to_spec(Runbook.objects.get(slug="page-on-critical"))

    changed = load_yaml((REPO_RUNBOOKS / "page-on-critical.yaml").read_text())[0]
    changed["steps"][0]["with"]["title"] = "PAGE: {{Activity.title}}"
    (tmp_path / "page-on-critical.yaml").write_text(yaml.safe_dump(changed))
    call_command("load_runbooks", str(tmp_path))

    numbers = list(Runbook.objects.get(slug="page-on-critical").versions.values_list("number", flat=True))
    assert numbers == [2, 1]


def test_export_and_import_keep_working_with_versions(tmp_path):
    call_command("load_runbooks", str(REPO_RUNBOOKS))
    call_command("export_runbooks", str(tmp_path))
    for source in REPO_RUNBOOKS.glob("*.yaml"):
        original = load_yaml(source.read_text())[0]
        exported = yaml.safe_load((tmp_path / source.name).read_text())
        assert exported == original
    call_command("load_runbooks", str(tmp_path))
    # Re-importing the export changes nothing: still one version per runbook.
    assert RunbookVersion.objects.count() == len(list(REPO_RUNBOOKS.glob("*.yaml")))


def test_a_version_is_the_yaml_a_person_would_commit():
    call_command("load_runbooks", str(REPO_RUNBOOKS / "resolve-on-closure.yaml"))
    version = RunbookVersion.objects.get()
    assert load_yaml(version_yaml(version))[0] == load_yaml((REPO_RUNBOOKS / "resolve-on-closure.yaml").read_text())[0]


def test_diff_between_versions_shows_the_changed_lines():
    runbook = make_runbook()
    v1 = runbook.versions.get()
    step = {**PAGE_STEP, "with": {**PAGE_STEP["with"], "title": "PAGE: {{Activity.title}}"}}
    runbook = make_runbook(steps=[step])
    v2 = runbook.versions.get(number=2)

    diff = versions_diff(older=v1, newer=v2)

    assert diff[0] == ("header", "--- page-on-critical v1")
    assert diff[1] == ("header", "+++ page-on-critical v2")
    changed = [(kind, line.replace(" ", "")) for kind, line in diff if kind in ("added", "removed")]
    assert changed == [
        ("removed", "-title:'SEV{{Activity.severity}}:{{Activity.title}}'"),
        ("added", "+title:'PAGE:{{Activity.title}}'"),
    ]
    assert {kind for kind, _ in diff} == {"header", "hunk", "added", "removed", "context"}


def test_numbers_are_per_runbook_and_ensure_is_idempotent(django_user_model):
    first = make_runbook("first")
    second = make_runbook("second")
    user = django_user_model.objects.create_user("editor")
    version, created = runbook_version_ensure(runbook=first, user=user, comment="nothing changed")
    assert (version.number, created, version.created_by) == (1, False, None)
    first.name = "Renamed"
    first.save()
    version, created = runbook_version_ensure(runbook=first, user=user, comment="renamed")
    assert (version.number, created, version.created_by, version.comment) == (2, True, user, "renamed")
    assert second.versions.get().number == 1


def test_each_run_records_the_version_it_executed(pd, pd_connection, django_capture_on_commit_callbacks):
    runbook = make_runbook()
    incident = IncidentFactory()
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Investigating", actor="test")
    assert RunbookRun.objects.get().runbook_version == runbook.versions.get(number=1)

    # Edited by a path that records no version (here: the ORM directly): the run still names what it ran.
    step = runbook.steps.get()
    step.inputs = {**step.inputs, "title": "Changed outside any form"}
    step.save()
    second = IncidentFactory()
    add_create_ok(pd, incident_id="QSECOND")
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=second.pk, status="Investigating", actor="test")
    run = RunbookRun.objects.get(incident=second)
    assert run.runbook_version.number == 2
    assert run.runbook_version.comment == "Recorded when a run started"
    assert run.runbook_version.spec["steps"][0]["with"]["title"] == "Changed outside any form"
    assert run.step_runs.get().rendered["title"] == "Changed outside any form"


def test_upsert_with_user_and_comment(django_user_model):
    user = django_user_model.objects.create_user("loader")
    spec = load_yaml((REPO_RUNBOOKS / "page-on-critical.yaml").read_text())[0]
    runbook, _ = runbook_upsert_from_spec(spec=spec, user=user, comment="from CI")
    version = runbook.versions.get()
    assert (version.created_by, version.comment) == (user, "from CI")


def test_api_lists_versions_and_runs_name_theirs(pd, pd_connection, django_capture_on_commit_callbacks, admin_user):
    runbook = make_runbook()
    make_runbook(steps=[{**PAGE_STEP, "with": {**PAGE_STEP["with"], "urgency": "low"}}])
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=IncidentFactory().pk, status="Investigating", actor="test")
    api = APIClient()
    api.force_authenticate(admin_user)

    versions = api.get(f"/api/v1/runbooks/{runbook.slug}/versions/").json()
    runs = api.get("/api/v1/runs/").json()["results"]

    assert [(v["number"], v["comment"]) for v in versions] == [(2, "Loaded from YAML"), (1, "Loaded from YAML")]
    assert versions[0]["spec"]["steps"][0]["with"]["urgency"] == "low"
    assert runs[0]["runbook_version"] == 2


def _run_on_new_incident(pd, capture, incident_id) -> RunbookRun:
    incident = IncidentFactory()
    add_create_ok(pd, incident_id=incident_id)
    change_status(incident, "Investigating", capture)
    return RunbookRun.objects.get(incident=incident)


def test_a_run_of_an_unchanged_runbook_reads_no_version(pd, pd_connection, django_capture_on_commit_callbacks):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    make_runbook()
    first = _run_on_new_incident(pd, django_capture_on_commit_callbacks, "QFIRST1")
    with CaptureQueriesContext(connection) as queries:
        second = _run_on_new_incident(pd, django_capture_on_commit_callbacks, "QSECND1")
    assert second.runbook_version_id == first.runbook_version_id
    assert second.runbook_version.number == 1
    assert not [q["sql"] for q in queries.captured_queries if "runbooks_runbookversion" in q["sql"]]


def test_a_runbook_saved_back_to_an_earlier_spec_runs_as_its_newest_version(
    pd, pd_connection, django_capture_on_commit_callbacks
):
    runbook = make_runbook()
    original = runbook_to_spec(runbook)
    assert _run_on_new_incident(pd, django_capture_on_commit_callbacks, "QONE0001").runbook_version.number == 1
    runbook_upsert_from_spec(spec={**original, "name": "Renamed for a while"})
    runbook_upsert_from_spec(spec=original)  # the spec version 1 holds, saved again: version 3
    run = _run_on_new_incident(pd, django_capture_on_commit_callbacks, "QTHREE01")
    assert (run.runbook_version.number, run.runbook_version.spec) == (3, original)


# Real transactions: the foreign key is checked when the run's transaction commits, as in a worker.
@pytest.mark.django_db(transaction=True)
def test_a_remembered_version_that_is_gone_loses_no_run(
    pd, pd_connection, django_capture_on_commit_callbacks, monkeypatch
):
    """A version the worker remembers, missing from the database (restored from a backup): the run
    is not taken for a duplicate and dropped; the event stays undispatched for the sweep."""
    from apps.incidents.models import IncidentEvent
    from apps.runbooks import services, tasks
    from apps.runbooks.versions import _RUN_VERSIONS

    runbook = make_runbook()
    _run_on_new_incident(pd, django_capture_on_commit_callbacks, "QFIRST2")
    ((key, (canonical, _)),) = _RUN_VERSIONS.items()
    _RUN_VERSIONS[key] = (canonical, 987654)  # a version pk this database never had
    incident = IncidentFactory()
    monkeypatch.setattr(tasks.dispatch_incident_event, "delay", lambda *args: None)  # dispatched by hand
    incident_update(incident_id=incident.pk, status="Investigating", actor="test")
    event = IncidentEvent.objects.get(incident=incident, kind="status_changed")

    with pytest.raises(IntegrityError):
        services.event_dispatch(event_id=event.pk)
    event.refresh_from_db()
    assert event.dispatched_at is None
    assert not RunbookRun.objects.filter(incident=incident).exists()

    add_create_ok(pd, incident_id="QAGAIN1")
    run = services.event_dispatch(event_id=event.pk)  # what the sweep's redispatch does
    assert (run.status, run.runbook_version) == ("succeeded", runbook.versions.get(number=1))
