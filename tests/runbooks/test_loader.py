from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from apps.runbooks.loader import load_yaml, runbook_to_spec
from apps.runbooks.models import Runbook

pytestmark = pytest.mark.django_db
REPO_RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"


def test_seed_runbooks_load_idempotently():
    call_command("load_runbooks", str(REPO_RUNBOOKS))
    first = {rb.slug: [s.pk for s in rb.steps.all()] for rb in Runbook.objects.all()}
    call_command("load_runbooks", str(REPO_RUNBOOKS))
    assert {rb.slug: [s.pk for s in rb.steps.all()] for rb in Runbook.objects.all()} == first
    assert set(first) == {"page-on-critical", "escalate-responder", "resolve-on-closure", "page-and-resolve"}


def test_export_round_trips(tmp_path):
    call_command("load_runbooks", str(REPO_RUNBOOKS))
    call_command("export_runbooks", str(tmp_path))
    for source in REPO_RUNBOOKS.glob("*.yaml"):
        original = load_yaml(source.read_text())[0]
        exported = yaml.safe_load((tmp_path / source.name).read_text())
        assert exported == original | {"steps": exported["steps"]}
        assert [s["with"] for s in exported["steps"]] == [s["with"] for s in original["steps"]]
    assert runbook_to_spec(Runbook.objects.get(slug="page-on-critical"))["trigger"] == {
        "on": "status_changed",
        "to": ["Investigating"],
    }


BROKEN = """
slug: broken
name: Broken
trigger: {on: status_changed, to: [Investigating, Panicking]}
conditions: {severity: [1, 7]}
steps:
  - key: page
    action: pagerduty.create_incident
    with:
      title: "{{Activity.titel}}"
      summary: "{{#Activity.summary}}"
      colour: red
  - key: escalate
    action: pagerduty.add_responder
    with:
      incident_id: "{{steps.pgae.incident_id}}"
      responder_id: PEP1
  - key: escalate
    action: pagerduty.page_everyone
"""


def test_check_lists_every_problem_with_location(tmp_path, capsys):
    (tmp_path / "broken.yaml").write_text(BROKEN)
    with pytest.raises(CommandError, match="nothing was written"):
        call_command("load_runbooks", str(tmp_path), "--check")
    err = capsys.readouterr().err
    expected = [
        "runbook 'broken': trigger.to: unknown status 'Panicking'",
        "runbook 'broken': conditions.severity: 7 is not a severity 0–4",
        "runbook 'broken', step 'page', field 'title': Unknown variable {{Activity.titel}}; did you mean {{Activity.title}}?",
        "runbook 'broken', step 'page', field 'summary': Mustache syntax error",
        "runbook 'broken', step 'page', field 'colour': pagerduty.create_incident has no field 'colour'",
        "runbook 'broken', step 'escalate', field 'incident_id': Unknown variable {{steps.pgae.incident_id}}",
        "runbook 'broken', step 'escalate': key is used by an earlier step",
        "runbook 'broken', step 'escalate', field 'action': Unknown action 'pagerduty.page_everyone'",
    ]
    for line in expected:
        assert line in err, line
    assert Runbook.objects.count() == 0


def test_later_step_outputs_only_visible_downstream(tmp_path):
    (tmp_path / "order.yaml").write_text(
        """
slug: order
name: Order
trigger: {on: manual}
steps:
  - key: first
    action: pagerduty.resolve_incident
    with: {incident_id: "{{steps.second.incident_id}}"}
  - key: second
    action: pagerduty.create_incident
"""
    )
    with pytest.raises(CommandError):
        call_command("load_runbooks", str(tmp_path), "--check")


def test_yaml_syntax_error_is_reported(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("slug: [unclosed\n")
    with pytest.raises(CommandError):
        call_command("load_runbooks", str(tmp_path))
    assert "YAML syntax error" in capsys.readouterr().err


def test_check_writes_nothing():
    call_command("load_runbooks", str(REPO_RUNBOOKS), "--check")
    assert Runbook.objects.count() == 0


def test_steps_removed_from_yaml_are_removed(tmp_path):
    call_command("load_runbooks", str(REPO_RUNBOOKS / "escalate-responder.yaml"))
    spec = load_yaml((REPO_RUNBOOKS / "escalate-responder.yaml").read_text())[0]
    spec["steps"] = spec["steps"][:1]
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(spec))
    call_command("load_runbooks", str(tmp_path / "e.yaml"))
    assert list(Runbook.objects.get(slug="escalate-responder").steps.values_list("key", flat=True)) == ["page"]


def test_keep_edited_leaves_a_runbook_changed_since_it_was_loaded_and_says_so(tmp_path, django_user_model):
    """`make run` restarts load the example runbooks with --keep-edited: an admin edit survives."""
    from io import StringIO

    from apps.runbooks.versions import runbook_version_ensure

    for source in REPO_RUNBOOKS.glob("*.yaml"):
        (tmp_path / source.name).write_text(source.read_text())
    call_command("load_runbooks", str(tmp_path), "--keep-edited", stdout=StringIO())
    edited = Runbook.objects.get(slug="page-on-critical")
    edited.name = "Page on-call (tuned by hand)"
    edited.save()
    runbook_version_ensure(runbook=edited, user=django_user_model.objects.create_user("ana"), comment="tuned")
    # The file of another runbook changed upstream (a pull): that one is still loaded over.
    resolve = tmp_path / "resolve-on-closure.yaml"
    resolve.write_text(resolve.read_text().replace("name: ", "name: Renamed ", 1))

    out = StringIO()
    call_command("load_runbooks", str(tmp_path), "--keep-edited", stdout=out)
    text = out.getvalue()
    assert "kept page-on-critical: changed since it was loaded (version 2 by ana" in text
    assert f"To replace it with the file: python manage.py load_runbooks {tmp_path / 'page-on-critical.yaml'}" in text
    assert f"{len(list(REPO_RUNBOOKS.glob('*.yaml'))) - 1} runbook(s) loaded, 1 kept as edited" in text
    assert Runbook.objects.get(slug="page-on-critical").name == "Page on-call (tuned by hand)"
    assert Runbook.objects.get(slug="resolve-on-closure").name.startswith("Renamed ")

    # A change made without a version (a shell) counts as an edit too.
    Runbook.objects.filter(slug="resolve-on-closure").update(name="by hand")
    out = StringIO()
    call_command("load_runbooks", str(tmp_path), "--keep-edited", stdout=out)
    assert "kept resolve-on-closure" in out.getvalue()

    # Without the flag the files win, as before.
    call_command("load_runbooks", str(tmp_path), stdout=StringIO())
    assert Runbook.objects.get(slug="page-on-critical").name == "Page on-call for SEV0/SEV1"


def test_demo_setup_keeps_admin_edits_to_the_example_runbooks(monkeypatch):
    from io import StringIO

    monkeypatch.delenv("PAGERDUTY_API_KEY", raising=False)
    monkeypatch.delenv("PAGERDUTY_SANDBOX_URL", raising=False)
    call_command("demo_setup", stdout=StringIO())
    runbook = Runbook.objects.get(slug="escalate-responder")
    step = runbook.steps.get(key="escalate")
    step.inputs = {**step.inputs, "responder_id": "PFIXED1"}
    step.save()
    out = StringIO()
    call_command("demo_setup", stdout=out)
    assert "kept escalate-responder" in out.getvalue()
    assert runbook.steps.get(key="escalate").inputs["responder_id"] == "PFIXED1"
