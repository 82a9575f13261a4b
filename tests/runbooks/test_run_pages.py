"""The admin's run pages: re-run choices, "Run a runbook" on the incident page (dry run first),
live status JSON, short ids in search, the record's pairing as shown."""

import pytest
import responses
from django.test import Client

from apps.incidents.models import IncidentEvent
from apps.incidents.services import incident_update
from apps.runbooks.models import RunbookRun
from tests.conftest import PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import PAGE_STEP, add_create_ok, make_runbook, writes
from tests.runbooks.test_rerun_versions import escalate, fix_runbook, not_found

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed_run(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook(steps=[PAGE_STEP, escalate("QBROKEN")])
    add_create_ok(pd)
    not_found(pd, "/incidents/QBROKEN/responder_requests")
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=IncidentFactory().pk, status="Investigating", actor="test")
    return RunbookRun.objects.get()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_run_page_offers_both_reruns_to_responders_only(failed_run, role_user):
    fix_runbook()
    page = client_for(role_user("Responders")).get(f"/admin/runbooks/runbookrun/{failed_run.pk}/change/")
    html = page.content.decode()
    assert "Re-run from the failed step with the recorded version (v1)" in html
    assert "Re-run from the failed step with the current version (v2)" in html
    assert "the runbook is now at" in html and "rb-run-failed" in html
    viewer = client_for(role_user("Viewers")).get(f"/admin/runbooks/runbookrun/{failed_run.pk}/change/")
    assert "Re-run from the failed step" not in viewer.content.decode()


def test_rerun_confirm_page_then_rerun_with_current_version(
    pd, failed_run, root_admin, django_capture_on_commit_callbacks
):
    fix_runbook()
    pd.add(responses.POST, f"{PD_URL}/incidents/Q1ABCDEF/responder_requests", json={"responder_request": {}})
    url = f"/admin/runbooks/runbookrun/{failed_run.pk}/rerun/"
    confirm = root_admin.get(url, {"version": "current"})
    assert confirm.status_code == 200
    assert "as saved now, version 2" in confirm.content.decode()
    assert writes(pd).count(("POST", "/incidents/Q1ABCDEF/responder_requests")) == 0  # a GET changes nothing
    assert root_admin.get(url, {"version": "newest"}).status_code == 400
    with django_capture_on_commit_callbacks(execute=True):
        response = root_admin.post(url, {"version": "current"})
    assert response.status_code == 302
    failed_run.refresh_from_db()
    assert (failed_run.status, failed_run.runbook_version.number) == ("succeeded", 2)
    # Finished and nothing failed: the page says so instead of offering a re-run.
    again = root_admin.post(url, {"version": "current"})
    assert again.status_code == 400 and "nothing to re-run" in again.content.decode().lower()


def test_admin_action_reruns_with_the_current_version(pd, failed_run, root_admin, django_capture_on_commit_callbacks):
    fix_runbook()
    pd.add(responses.POST, f"{PD_URL}/incidents/Q1ABCDEF/responder_requests", json={"responder_request": {}})
    with django_capture_on_commit_callbacks(execute=True):
        root_admin.post(
            "/admin/runbooks/runbookrun/",
            {"action": "rerun_from_failed_current", "_selected_action": [failed_run.pk]},
        )
    failed_run.refresh_from_db()
    assert (failed_run.status, failed_run.runbook_version.number) == ("succeeded", 2)


def test_run_page_pairs_the_response_and_folds_json(failed_run, root_admin):
    html = root_admin.get(f"/admin/runbooks/runbookrun/{failed_run.pk}/change/").content.decode()
    assert "Attempts at this step&#x27;s request" in html or "Attempts at this step's request" in html
    assert '<details class="rb-json"' in html
    assert "404 · Not Found" in html  # the escalate step's own answer, in its summary line


def test_live_json_says_whether_anything_changed(failed_run, role_user):
    viewer = client_for(role_user("Viewers"))
    first = viewer.get("/admin/runbooks/runbookrun/live/", {"run": failed_run.pk}).json()
    assert first["active"] is False and first["runs"] == [{"id": failed_run.pk, "status": "failed"}]
    RunbookRun.objects.filter(pk=failed_run.pk).update(status="pending")
    second = viewer.get("/admin/runbooks/runbookrun/live/", {"run": failed_run.pk}).json()
    assert second["active"] is True and second["signature"] != first["signature"]
    by_incident = viewer.get("/admin/runbooks/runbookrun/live/", {"incident": failed_run.incident.short_id}).json()
    assert by_incident["signature"] == second["signature"]
    assert viewer.get("/admin/runbooks/runbookrun/live/", {"run": "x"}).status_code == 400
    assert viewer.get("/admin/runbooks/runbookrun/live/", {"incident": "INC-²"}).status_code == 400
    assert client_for(role_user()).get("/admin/runbooks/runbookrun/live/", {"run": failed_run.pk}).status_code == 403


def test_incident_page_shows_the_runs_its_last_change_started(failed_run, root_admin):
    html = root_admin.get(f"/admin/incidents/incident/{failed_run.incident_id}/change/").content.decode()
    assert 'id="rb-incident-runs"' in html and "Runs started by the last change" in html
    assert "rb-run-failed" in html and "Run a runbook" in html
    assert "data-rb-live=" in html


def test_run_a_runbook_from_the_incident_page_previews_then_runs(
    pd, pd_connection, role_user, django_capture_on_commit_callbacks
):
    runbook = make_runbook(trigger={"on": "manual"})
    make_runbook("off", enabled=False)
    incident = IncidentFactory()
    responder = client_for(role_user("Responders"))
    url = f"/admin/incidents/incident/{incident.pk}/run-runbook/"
    choose = responder.get(url).content.decode()
    assert runbook.slug in choose and 'value="off"' not in choose
    preview = responder.get(url, {"runbook": runbook.slug})
    html = preview.content.decode()
    assert preview.status_code == 200 and "rb-dry-run-results" in html and "POST" in html
    assert len(pd.calls) == 0  # the dry run sent nothing
    assert RunbookRun.objects.count() == 0
    assert responder.get(url, {"runbook": "off"}).status_code == 400
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        response = responder.post(url, {"runbook": runbook.slug})
    assert response.status_code == 302
    assert IncidentEvent.objects.filter(incident=incident, kind="manual").count() == 1
    assert RunbookRun.objects.get(incident=incident).status == "succeeded"
    assert client_for(role_user("Viewers")).get(url).status_code == 403


def test_admin_search_finds_short_ids(failed_run, root_admin, django_capture_on_commit_callbacks):
    incident = failed_run.incident
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=IncidentFactory().pk, status="Investigating", actor="test")
    assert RunbookRun.objects.count() == 2
    for term in (incident.short_id, incident.short_id.lower(), f" {incident.short_id} "):
        found = root_admin.get("/admin/incidents/incident/", {"q": term}).context["cl"]
        assert [i.pk for i in found.result_list] == [incident.pk]
        runs = root_admin.get("/admin/runbooks/runbookrun/", {"q": term}).context["cl"]
        assert [r.pk for r in runs.result_list] == [failed_run.pk]
    # A filter still applies to what the short id finds.
    runs = root_admin.get("/admin/runbooks/runbookrun/", {"q": incident.short_id, "status__exact": "succeeded"})
    assert list(runs.context["cl"].result_list) == []


def test_api_takes_the_short_id_wherever_it_takes_the_uuid(failed_run, root_api, django_capture_on_commit_callbacks):
    incident = failed_run.incident
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=IncidentFactory().pk, status="Investigating", actor="test")
    for ref in (incident.short_id, incident.short_id.lower(), str(incident.pk)):
        runs = root_api.get("/api/v1/runs/", {"incident": ref})
        assert runs.status_code == 200, runs.content
        assert [r["id"] for r in runs.json()["results"]] == [failed_run.pk]
        assert root_api.get(f"/api/v1/incidents/{ref}/").json()["id"] == str(incident.pk)
    dry = root_api.post(
        f"/api/v1/runbooks/{failed_run.runbook.slug}/dry-run/", {"incident": incident.short_id}, format="json"
    )
    assert dry.status_code == 200 and dry.json()["incident"]["short_id"] == incident.short_id
