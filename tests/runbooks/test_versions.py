"""Runbook versions: written when a runbook changes, recorded on each run, diffable, YAML-shaped."""

from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient

from apps.incidents.services import incident_update
from apps.runbooks.loader import load_yaml, runbook_to_spec
from apps.runbooks.models import Runbook, RunbookRun, RunbookVersion
from apps.runbooks.services import runbook_upsert_from_spec
from apps.runbooks.versions import runbook_version_ensure, version_yaml, versions_diff
from tests.factories import IncidentFactory
from tests.runbooks.helpers import PAGE_STEP, add_create_ok, make_runbook

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
