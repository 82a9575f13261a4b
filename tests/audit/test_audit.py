"""The audit log: every listed change is recorded with who and what changed, and no secret ever is."""

import json

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection as db
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.incidents.models import IncidentEvent
from apps.pagerduty.models import PagerDutyConnection, ServiceMapping
from apps.runbooks.models import Runbook, RunStatus, StepRun
from apps.runbooks.services import run_create
from tests.conftest import API_KEY, PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import make_runbook
from tests.runbooks.test_authoring_admin import runbook_form

pytestmark = pytest.mark.django_db


def api_as(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def entries_for(obj) -> list[LogEntry]:
    return list(LogEntry.objects.get_for_object(obj).order_by("pk"))


def stored_ciphertext(connection_id: int) -> str:
    with db.cursor() as cursor:
        cursor.execute("SELECT api_key FROM pagerduty_pagerdutyconnection WHERE id = %s", [connection_id])
        return cursor.fetchone()[0]


def every_audit_row_as_text() -> str:
    return json.dumps(list(LogEntry.objects.values()), default=str, ensure_ascii=False)


def test_connection_changes_are_recorded_with_actor_and_diff_and_never_the_key(role_user, client):
    admin_user = role_user("PagerDuty admins")
    api = api_as(admin_user)
    keys, ciphertexts = ["u+FIRSTkey-0a1b2c3d4e5f", "u+SECONDkey-9f8e7d6c5b4a", "u+THIRDkey-1234abcd5678"], []

    created = api.post(
        "/api/v1/pagerduty/connections/",
        {"name": "eu", "api_key": keys[0], "from_email": "sre@example.com", "api_url": PD_URL},
        format="json",
    )
    assert created.status_code == 201, created.json()
    connection = PagerDutyConnection.objects.get(name="eu")
    ciphertexts.append(stored_ciphertext(connection.pk))
    changed = api.patch(
        f"/api/v1/pagerduty/connections/{connection.pk}/",
        {"api_key": keys[1], "from_email": "oncall@example.com"},
        format="json",
    )
    assert changed.status_code == 200, changed.json()
    ciphertexts.append(stored_ciphertext(connection.pk))

    client.force_login(admin_user)
    response = client.post(
        f"/admin/pagerduty/pagerdutyconnection/{connection.pk}/change/",
        {
            "new_api_key": keys[2],
            "from_email": "oncall@example.com",
            "api_url": PD_URL,
            "events_url": PD_URL,  # unchanged: created with api_url only, events_url followed it
            "subdomain": "acme",
            "service_mappings-TOTAL_FORMS": "0",
            "service_mappings-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:1500]
    ciphertexts.append(stored_ciphertext(connection.pk))
    assert api.delete(f"/api/v1/pagerduty/connections/{connection.pk}/").status_code == 204

    created_entry, api_entry, admin_entry, deleted_entry = entries_for(connection)
    assert [e.action for e in (created_entry, api_entry, admin_entry, deleted_entry)] == [0, 1, 1, 2]
    assert all(e.actor == admin_user for e in (created_entry, api_entry, admin_entry, deleted_entry))
    assert created_entry.changes["api_key"] == ["(empty)", "(secret set)"]
    assert created_entry.changes["api_url"] == [None, PD_URL]
    assert api_entry.changes == {
        "api_key": ["(secret set)", "(secret set)"],
        "from_email": ["sre@example.com", "oncall@example.com"],
    }
    assert admin_entry.changes == {"api_key": ["(secret set)", "(secret set)"], "subdomain": ["", "acme"]}
    assert admin_entry.remote_addr == "127.0.0.1"

    text = every_audit_row_as_text()
    assert len(set(ciphertexts)) == 3 and all(c.startswith("fernet:") for c in ciphertexts)
    for secret in [*keys, *ciphertexts, API_KEY, "fernet:"]:
        assert secret not in text
    # Masking must not leak a part of the key either (auditlog's default mask keeps half of it).
    for key in keys:
        assert key[len(key) // 2 :] not in text


def test_saving_a_key_that_did_not_change_records_nothing_about_it(pd_connection, role_user):
    api = api_as(role_user("PagerDuty admins"))
    api.patch(f"/api/v1/pagerduty/connections/{pd_connection.pk}/", {"subdomain": "acme"}, format="json")
    last = entries_for(pd_connection)[-1]
    assert last.changes == {"subdomain": ["", "acme"]}


def test_runbooks_steps_and_mappings_record_who_changed_them(client, role_user, pd_connection):
    author = role_user("Runbook authors")
    client.force_login(author)
    step = {"key": "page", "action": "pagerduty.create_incident", "with": {"title": "{{Activity.title}}"}}
    response = client.post("/admin/runbooks/runbook/add/", runbook_form(steps=[step], comment="first"))
    assert response.status_code == 302, response.content.decode()[:1500]
    runbook = Runbook.objects.get()
    [runbook_created] = entries_for(runbook)
    [step_created] = entries_for(runbook.steps.get())
    assert runbook_created.actor == author == step_created.actor
    assert runbook_created.changes["slug"] == [None, "page-on-critical"]
    assert step_created.changes["inputs"][1] == {"title": "{{Activity.title}}"}

    response = client.post(
        "/admin/pagerduty/servicemapping/add/",
        {"connection": pd_connection.pk, "service": "checkout", "pagerduty_service_id": "PCHKOUT"},
    )
    assert response.status_code == 302, response.content.decode()[:1500]
    [mapping_created] = entries_for(ServiceMapping.objects.get(service="checkout"))
    assert mapping_created.actor == author
    assert mapping_created.changes["pagerduty_service_id"] == [None, "PCHKOUT"]


def test_runbooks_loaded_from_yaml_are_recorded_as_the_system(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "slug: from-yaml\nname: From YAML\ntrigger: {on: manual}\nsteps:\n"
        "  - key: page\n    action: pagerduty.create_incident\n    with: {title: x}\n"
    )
    call_command("load_runbooks", str(tmp_path))
    entries = entries_for(Runbook.objects.get(slug="from-yaml"))
    assert "From YAML" in [e.changes["name"][1] for e in entries if "name" in e.changes]
    assert {e.actor for e in entries} == {None}


def test_group_membership_and_role_permissions_are_recorded(client, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-0123456789")
    alice = django_user_model.objects.create_user("alice", "alice@example.com", "pw-0123456789")
    responders = Group.objects.get(name="Responders")
    client.force_login(root)
    form = {
        "username": "alice",
        "email": "alice@example.com",
        "is_active": "on",
        "groups": [str(responders.pk)],
        "date_joined_0": "2026-01-05",
        "date_joined_1": "09:00:00",
    }
    response = client.post(f"/admin/auth/user/{alice.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    response = client.post(f"/admin/auth/user/{alice.pk}/change/", {**form, "groups": []})
    assert response.status_code == 302
    changes = [e.changes for e in entries_for(alice) if "groups" in (e.changes or {})]
    assert changes == [
        {"groups": {"type": "m2m", "operation": "add", "objects": ["Responders"]}},
        {"groups": {"type": "m2m", "operation": "delete", "objects": ["Responders"]}},
    ]
    assert {e.actor for e in entries_for(alice) if e.action == LogEntry.Action.UPDATE} == {root}
    assert "pbkdf2" not in every_audit_row_as_text()  # the password hash is never recorded


def test_manual_run_and_rerun_are_recorded(role_user, pd_connection, django_capture_on_commit_callbacks):
    responder = role_user("Responders")
    api = api_as(responder)
    runbook = make_runbook("manual-page", trigger={"on": "manual"})
    incident = IncidentFactory()
    response = api.post("/api/v1/runbooks/manual-page/run/", {"incident": str(incident.pk)}, format="json")
    assert response.status_code == 202, response.json()
    ran = entries_for(runbook)[-1]
    assert (ran.actor, ran.additional_data["event"]) == (responder, "runbook.run")
    assert ran.additional_data["incident_short_id"] == incident.short_id

    run = run_create(runbook=runbook, event=IncidentEvent.objects.get(kind="manual"))
    StepRun.objects.filter(run=run).update(status=RunStatus.FAILED)
    run.status = RunStatus.FAILED
    run.save(update_fields=["status"])
    with django_capture_on_commit_callbacks(execute=False):
        response = api.post(f"/api/v1/runs/{run.pk}/rerun/")
    assert response.status_code == 202, response.json()
    [rerun] = entries_for(run)
    assert (rerun.actor, rerun.additional_data["event"]) == (responder, "run.rerun")
    assert rerun.changes == {"status": ["failed", "pending"]}
    assert rerun.additional_data["from_step"] == "page"


def test_a_disabled_runbook_is_not_run_manually(role_user, client):
    responder = role_user("Responders")
    runbook = make_runbook("off", trigger={"on": "manual"}, enabled=False)
    incident = IncidentFactory()
    before = LogEntry.objects.count()
    response = api_as(responder).post("/api/v1/runbooks/off/run/", {"incident": str(incident.pk)}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"runbook": ["Runbook 'off' is disabled; enable it before running it."]}
    client.force_login(responder)
    page = client.post(f"/admin/runbooks/runbook/{runbook.pk}/run/", {"incident": str(incident.pk)})
    assert page.status_code == 400
    assert "is disabled; enable it before running it" in page.content.decode()
    assert not IncidentEvent.objects.filter(kind="manual").exists()
    assert LogEntry.objects.count() == before


def test_admin_run_now_starts_a_manual_run(role_user, client, pd_connection):
    responder = role_user("Responders")
    runbook = make_runbook("manual-page", trigger={"on": "manual"})
    incident = IncidentFactory()
    client.force_login(responder)
    assert "Run now" in client.get(f"/admin/runbooks/runbook/{runbook.pk}/change/").content.decode()
    response = client.post(f"/admin/runbooks/runbook/{runbook.pk}/run/", {"incident": str(incident.pk)})
    assert response.status_code == 302
    event = IncidentEvent.objects.get(kind="manual")
    assert (event.runbook_slug, event.actor) == ("manual-page", f"admin:{responder.username}")


def test_audit_api_filters_by_object_and_refuses_bad_filters(role_user, pd_connection):
    api = api_as(role_user("PagerDuty admins"))
    make_runbook("other")
    data = api.get(f"/api/v1/audit/?object_type=pagerduty.pagerdutyconnection&object_id={pd_connection.pk}").json()
    assert data["count"] == 1
    [entry] = data["results"]
    assert entry["action"] == "create" and entry["object_type"] == "pagerduty.pagerdutyconnection"
    assert entry["object_id"] == str(pd_connection.pk) and entry["actor"] is None
    assert entry["changes"]["api_key"][1] == "(secret set)"
    everything = api.get("/api/v1/audit/?limit=100").json()
    assert {e["object_type"] for e in everything["results"]} >= {"runbooks.runbook", "runbooks.step"}
    bad = api.get("/api/v1/audit/?object_type=runbook")
    assert bad.status_code == 400 and "object_type" in bad.json()["errors"]
    # An id alone is a filter too (ids repeat across types: add object_type to name one object).
    assert api.get("/api/v1/audit/?object_id=1").status_code == 200


def test_audit_admin_lists_entries_for_pagerduty_admins(role_user, client, pd_connection):
    client.force_login(role_user("PagerDuty admins"))
    page = client.get("/admin/auditlog/logentry/")
    assert page.status_code == 200 and "default" in page.content.decode()
    client.force_login(role_user("Viewers"))
    assert client.get("/admin/auditlog/logentry/").status_code == 403
