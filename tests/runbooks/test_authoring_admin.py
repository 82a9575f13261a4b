"""The authoring admin over HTTP: editor metadata, live preview, save → version, errors on fields,
dry-run and versions pages. The browser tests drive the same endpoints through the real UI."""

import json
import re
from html import unescape

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from apps.oncall.models import OncallEscalationPolicy, OncallService, OncallUser
from apps.runbooks.models import Runbook, RunbookVersion
from tests.factories import IncidentFactory
from tests.runbooks.helpers import PAGE_STEP, make_runbook

pytestmark = pytest.mark.django_db

ACTIONS_URL = "/admin/runbooks/runbook/authoring/actions.json"
PREVIEW_URL = "/admin/runbooks/runbook/authoring/preview/"


def runbook_form(*, slug="page-on-critical", steps=(), initial=0, comment="", **fields) -> dict:
    data = {
        "slug": slug,
        "name": fields.get("name", "Page on-call"),
        "description": "",
        "enabled": "on",
        "trigger_on": "status_changed",
        "trigger_to": ["Investigating"],
        "condition_severity": ["0", "1"],
        "condition_services": "",
        "condition_environments": "production",
        "version_comment": comment,
        "steps-TOTAL_FORMS": str(len(steps)),
        "steps-INITIAL_FORMS": str(initial),
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
        "_continue": "1",
    }
    for index, step in enumerate(steps):
        prefix = f"steps-{index}-"
        data.update(
            {
                prefix + "position": str(step.get("position", index)),
                prefix + "key": step["key"],
                prefix + "name": step.get("name", ""),
                prefix + "action": step["action"],
                prefix + "connection": step.get("connection", "default"),
                prefix + "inputs": json.dumps(step.get("with", {})),
                prefix + "on_failure": step.get("on_failure", "stop"),
            }
        )
        if "id" in step:
            data[prefix + "id"] = str(step["id"])
            data[prefix + "runbook"] = str(step["runbook"])
    return data


@pytest.fixture
def staff(django_user_model, client):
    def login(*codenames):
        # Permissions come from groups only (apps.core.roles): an ad-hoc group holds exactly these.
        user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
        group = Group.objects.create(name="only " + ", ".join(codenames))
        group.permissions.set(Permission.objects.filter(codename__in=codenames))
        user.groups.add(group)
        client.force_login(user)
        return client

    return login


# --- editor metadata -------------------------------------------------------------------------------


def test_actions_metadata_describes_fields_variables_connections_and_incidents(admin_client, pd_connection):
    pd_connection.service_mappings.create(service="checkout", pagerduty_service_id="PCHECK1")
    incident = IncidentFactory(title="Disk full")

    data = admin_client.get(ACTIONS_URL).json()

    create = next(a for a in data["actions"] if a["name"] == "pagerduty.create_incident")
    assert (create["label"], create["category"]) == ("Create PagerDuty Incident", "On-Call › PagerDuty")
    key = next(f for f in create["fields"] if f["name"] == "incident_key")
    assert (key["required"], key["default"]) == (True, "ai-sre-{{Activity.id}}")
    assert "incident_id" in create["outputs"]
    assert {"name": "Activity.title", "description": "Title", "example": "Checkout API returns 500s"} in data[
        "variables"
    ]["Activity"]
    assert data["variables"]["PagerDuty"][0]["name"] == "pagerduty.incident_id"
    [connection] = data["connections"]
    assert connection["from_email"] == "sre@example.com"
    assert connection["services"][:2] == [
        {"id": "PSVC001", "label": "default service mapping"},
        {"id": "PCHECK1", "label": "mapped from checkout"},
    ]
    assert data["sample"]["value"] == "sample"
    assert data["incidents"][0]["value"] == str(incident.pk)
    assert "api_key" not in json.dumps(data)


def test_imported_services_and_responders_are_offered(admin_client, pd_connection):
    OncallService.objects.create(connection=pd_connection, pagerduty_id="PSVC002", name="Search")
    OncallEscalationPolicy.objects.create(connection=pd_connection, pagerduty_id="PEP0001", name="On-call")
    OncallUser.objects.create(connection=pd_connection, pagerduty_id="PRESPND", name="Res", email="r@x.io")

    [connection] = admin_client.get(ACTIONS_URL).json()["connections"]

    assert {"id": "PSVC002", "label": "Search (imported)"} in connection["services"]
    assert connection["responders"] == [
        {"id": "PEP0001", "label": "escalation policy: On-call"},
        {"id": "PRESPND", "label": "user: Res <r@x.io>"},
    ]


def test_metadata_and_preview_need_permission(staff, client, pd_connection):
    anonymous = client.get(ACTIONS_URL)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    no_perms = staff("view_incident")  # admitted to the admin, but not to runbooks
    assert no_perms.get(ACTIONS_URL).status_code == 403
    assert no_perms.get(ACTIONS_URL).json()["message"] == "You may not view runbooks"
    assert no_perms.post(PREVIEW_URL, "{}", content_type="application/json").status_code == 403


def test_view_only_user_reads_metadata_but_cannot_preview_drafts(staff, pd_connection):
    viewer = staff("view_runbook")
    assert viewer.get(ACTIONS_URL).status_code == 200
    assert viewer.post(PREVIEW_URL, json.dumps({"steps": []}), content_type="application/json").status_code == 403


# --- live preview ----------------------------------------------------------------------------------


def preview(client, steps, **choice):
    return client.post(PREVIEW_URL, json.dumps({"steps": steps, **choice}), content_type="application/json")


def test_preview_renders_each_field_and_the_request(admin_client, pd_connection):
    incident = IncidentFactory(severity=0, title="DB down")
    steps = [{"key": "page", "action": "pagerduty.create_incident", "inputs": PAGE_STEP["with"]}]

    response = preview(admin_client, steps, incident=str(incident.pk))

    assert response.status_code == 200
    data = response.json()
    assert data["incident"] == {"sample": False, "label": f"{incident.short_id} · SEV0 · Detected — DB down"}
    [step] = data["steps"]
    assert step["status"] == "planned"
    assert step["rendered"]["title"] == "SEV0: DB down"
    assert step["derived"]["urgency"] == "high"
    assert step["request"]["body"]["incident"]["incident_key"] == f"ai-sre-{incident.id}"
    assert step["errors"] == {} and step["step_errors"] == []


def test_preview_puts_every_problem_on_its_field(admin_client, pd_connection):
    steps = [
        {"key": "page", "action": "pagerduty.create_incident", "inputs": {"title": "{{Activity.titel}}"}},
        {"key": "Bad Key", "action": "pagerduty.add_responder", "inputs": {"responder_id": "", "colour": "red"}},
        {"key": "x", "action": "pagerduty.nope", "inputs": {}},
        {"key": "new", "action": "", "inputs": {}},
    ]

    page, bad, unknown, unchosen = preview(admin_client, steps, sample=True).json()["steps"]

    assert page["errors"] == {"title": ["Unknown variable {{Activity.titel}}; did you mean {{Activity.title}}?"]}
    assert bad["errors"]["key"] == ["key must be lower-case letters, digits and underscores"]
    assert bad["errors"]["responder_id"] == ["is required"]
    assert bad["errors"]["colour"][0].startswith("pagerduty.add_responder has no field 'colour'")
    assert unknown["errors"]["action"][0].startswith("Unknown action 'pagerduty.nope'")
    assert unchosen["errors"] == {"action": ["Choose an action"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "Not JSON"),
        (json.dumps({"steps": "page"}), 'Expected {"steps": [...]'),
        (json.dumps({"steps": ["page"]}), "Step 1: expected an object"),
        (json.dumps({"steps": [], "incident": "nope"}), "No incident with id 'nope'"),
        (json.dumps({"steps": [], "incident": "6f1c2d3e-0000-4000-8000-000000000000"}), "No incident with id"),
    ],
)
def test_preview_bad_input_is_a_400_with_a_message(admin_client, body, message):
    response = admin_client.post(PREVIEW_URL, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["message"].startswith(message)


def test_preview_only_accepts_post(admin_client):
    assert admin_client.get(PREVIEW_URL).status_code == 405


# --- saving: versions and errors on fields -----------------------------------------------------------


def test_saving_in_the_admin_writes_a_version_per_change(admin_client, admin_user, pd_connection):
    response = admin_client.post(
        "/admin/runbooks/runbook/add/", runbook_form(steps=[PAGE_STEP], comment="first cut"), follow=True
    )
    assert response.status_code == 200
    assert "Saved as version 1." in response.content.decode()
    runbook = Runbook.objects.get()
    version = runbook.versions.get()
    assert (version.number, version.comment, version.created_by) == (1, "first cut", admin_user)
    assert version.spec["steps"][0]["with"] == PAGE_STEP["with"]

    step = runbook.steps.get()
    existing = {**PAGE_STEP, "id": step.pk, "runbook": runbook.pk}
    url = f"/admin/runbooks/runbook/{runbook.pk}/change/"
    unchanged = admin_client.post(url, runbook_form(steps=[existing], initial=1), follow=True)
    assert "Saved as version" not in unchanged.content.decode()
    assert runbook.versions.count() == 1

    edited = {**existing, "with": {**PAGE_STEP["with"], "urgency": "low"}}
    admin_client.post(url, runbook_form(steps=[edited], initial=1), follow=True)
    assert list(runbook.versions.values_list("number", "comment")) == [(2, "Edited in the admin"), (1, "first cut")]


def test_existing_steps_render_their_fields_as_a_json_object(admin_client, pd_connection):
    runbook = make_runbook()
    page = admin_client.get(f"/admin/runbooks/runbook/{runbook.pk}/change/").content.decode()
    textarea = re.search(r'<textarea name="steps-0-inputs"[^>]*>(.*?)</textarea>', page, re.S)
    assert json.loads(unescape(textarea.group(1))) == PAGE_STEP["with"]
    assert 'id="runbook-editor-config"' in page
    assert "runbooks/editor.js" in page and "runbooks/editor.css" in page
    assert reverse("admin:runbooks_runbook_dry_run", args=[runbook.pk]) in page


def test_failed_save_marks_each_field_with_its_problem(admin_client, pd_connection):
    step = {**PAGE_STEP, "with": {**PAGE_STEP["with"], "title": "{{Activity.titel}}", "urgency": "urgent"}}

    response = admin_client.post("/admin/runbooks/runbook/add/", runbook_form(steps=[step]))

    assert response.status_code == 200
    assert not Runbook.objects.exists() and not RunbookVersion.objects.exists()
    page = response.content.decode()
    problems = re.search(r'<textarea name="steps-0-inputs"[^>]*data-problems="([^"]*)"', page)
    assert json.loads(unescape(problems.group(1))) == {
        "title": ["Unknown variable {{Activity.titel}}; did you mean {{Activity.title}}?"],
        "urgency": ["must be one of high, low"],
    }
    assert "title: Unknown variable {{Activity.titel}}" in unescape(page)


# --- dry run and versions pages ---------------------------------------------------------------------


def test_dry_run_page_lists_the_planned_requests(admin_client, pd, pd_connection):
    runbook = make_runbook()
    incident = IncidentFactory(title="Disk full")
    url = reverse("admin:runbooks_runbook_dry_run", args=[runbook.pk])

    form = admin_client.get(url).content.decode()
    assert 'name="incident"' in form and "rb-dry-run-results" not in form

    page = unescape(admin_client.get(url, {"incident": str(incident.pk)}).content.decode())
    assert "rb-dry-run-results" in page
    assert 'POST</code> <code class="rb-url">https://pd.test/incidents' in page
    assert '"title": "SEV1: Disk full"' in page
    assert "Token token=***redacted***" in page
    assert len(pd.calls) == 0

    sample = unescape(admin_client.get(url, {"incident": "sample"}).content.decode())
    assert "(sample, not saved)" in sample
    assert '"title": "SEV1: Checkout API returns 500s"' in sample


def test_dry_run_page_reports_a_bad_incident_instead_of_failing(admin_client, pd_connection):
    runbook = make_runbook()
    url = reverse("admin:runbooks_runbook_dry_run", args=[runbook.pk])
    response = admin_client.get(url, {"incident": "not-a-uuid"})
    assert response.status_code == 200
    assert "No incident with id &#x27;not-a-uuid&#x27;" in response.content.decode()
    assert admin_client.get(reverse("admin:runbooks_runbook_dry_run", args=[9999])).status_code == 404


def test_versions_page_diffs_two_versions_and_shows_yaml(admin_client, pd_connection):
    runbook = make_runbook()
    make_runbook(steps=[{**PAGE_STEP, "with": {**PAGE_STEP["with"], "urgency": "low"}}])
    url = reverse("admin:runbooks_runbook_versions", args=[runbook.pk])

    page = unescape(admin_client.get(url).content.decode())

    assert "Changes from v1 to v2" in page
    assert re.search(r'<span class="rb-diff-added">\+ +urgency: low</span>', page)
    yaml_page = admin_client.get(reverse("admin:runbooks_runbook_version", args=[runbook.pk, 1])).content.decode()
    assert "slug: page-on-critical" in yaml_page
    assert admin_client.get(reverse("admin:runbooks_runbook_version", args=[runbook.pk, 7])).status_code == 404
    bad = unescape(admin_client.get(url, {"a": "9", "b": "1"}).content.decode())
    assert "Runbook 'page-on-critical' has no version '9'" in bad


def test_change_page_lists_versions(admin_client, pd_connection):
    runbook = make_runbook()
    page = admin_client.get(f"/admin/runbooks/runbook/{runbook.pk}/change/").content.decode()
    assert "Saved versions" in page
    assert reverse("admin:runbooks_runbook_version", args=[runbook.pk, 1]) in page
