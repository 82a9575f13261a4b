"""Admin pages as a person uses them: through Django's test client, asserting what the page
shows and what the database holds afterwards."""

import json

import pytest
import responses
from django.contrib.auth import get_user_model

from apps.incidents.models import Incident
from apps.pagerduty.models import PagerDutyConnection
from apps.runbooks.models import Runbook, RunbookRun
from tests.conftest import API_KEY, PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import add_create_ok, make_runbook

pytestmark = pytest.mark.django_db
INLINE_MANAGEMENT = {
    f"{prefix}-{k}": "0"
    for prefix in ("events", "pagerduty_links", "runbook_runs")
    for k in ("TOTAL_FORMS", "INITIAL_FORMS")
}


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_connection_key_is_write_only(admin_client, pd_connection):
    page = admin_client.get(f"/admin/pagerduty/pagerdutyconnection/{pd_connection.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert API_KEY not in html
    assert "stored (encrypted)" in html
    assert "Test connection" in html
    # Saving without typing a key keeps the stored one.
    response = admin_client.post(
        f"/admin/pagerduty/pagerdutyconnection/{pd_connection.pk}/change/",
        {
            "new_api_key": "",
            "from_email": "new@example.com",
            "api_url": PD_URL,
            "events_url": "https://events.pagerduty.com",
            "subdomain": "",
            "service_mappings-TOTAL_FORMS": "0",
            "service_mappings-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    connection = PagerDutyConnection.objects.get(pk=pd_connection.pk)
    assert (connection.api_key, connection.from_email) == (API_KEY, "new@example.com")


def test_new_connection_requires_a_key(admin_client):
    response = admin_client.post(
        "/admin/pagerduty/pagerdutyconnection/add/",
        {
            "name": "eu",
            "new_api_key": "",
            "from_email": "a@b.co",
            "api_url": "https://api.eu.pagerduty.com",
            "events_url": "https://events.eu.pagerduty.com",
            "service_mappings-TOTAL_FORMS": "0",
            "service_mappings-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert not PagerDutyConnection.objects.filter(name="eu").exists()


def test_test_connection_button(admin_client, pd, pd_connection):
    pd.add(
        responses.GET,
        f"{PD_URL}/abilities",
        status=401,
        json={"error": {"message": "Authentication failed", "code": 2006}},
    )
    response = admin_client.post(f"/admin/pagerduty/pagerdutyconnection/{pd_connection.pk}/test/", follow=True)
    assert "PagerDuty 401: Authentication failed" in response.content.decode()
    assert PagerDutyConnection.objects.get(pk=pd_connection.pk).last_test_ok is False


def test_incident_status_change_in_admin_fires_runbooks(
    admin_client, pd, pd_connection, django_capture_on_commit_callbacks
):
    make_runbook()
    incident = IncidentFactory(severity=1)
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/incidents/incident/{incident.pk}/change/",
            {
                "title": incident.title,
                "summary": incident.summary,
                "severity": "1",
                "status": "Investigating",
                "service": incident.service,
                "environment": incident.environment,
                "owner": incident.owner,
                **INLINE_MANAGEMENT,
            },
        )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Incident.objects.get(pk=incident.pk).status == "Investigating"
    assert incident.events.filter(kind="status_changed", actor="admin:root").exists()
    run = RunbookRun.objects.get()
    assert run.status == "succeeded"

    page = admin_client.get(f"/admin/runbooks/runbookrun/{run.pk}/change/").content.decode()
    assert "Token token=***redacted***" in page and API_KEY not in page
    assert "Q1ABCDEF" in page


def test_incident_created_in_admin_gets_short_id(admin_client):
    response = admin_client.post(
        "/admin/incidents/incident/add/",
        {
            "title": "From admin",
            "summary": "",
            "severity": "2",
            "status": "Detected",
            "service": "",
            "environment": "",
            "owner": "",
            **INLINE_MANAGEMENT,
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    incident = Incident.objects.get(title="From admin")
    assert incident.number >= 1 and incident.events.get().kind == "created"


def test_runbook_with_unknown_variable_is_refused_on_the_step(admin_client):
    data = {
        "slug": "bad",
        "name": "Bad",
        "description": "",
        "enabled": "on",
        "trigger_on": "status_changed",
        "trigger_to": ["Investigating"],
        "condition_services": "",
        "condition_environments": "",
        "steps-TOTAL_FORMS": "1",
        "steps-INITIAL_FORMS": "0",
        "steps-0-position": "0",
        "steps-0-key": "page",
        "steps-0-name": "",
        "steps-0-action": "pagerduty.create_incident",
        "steps-0-connection": "default",
        "steps-0-inputs": json.dumps({"title": "{{Activity.titel}}"}),
        "steps-0-on_failure": "stop",
    }
    response = admin_client.post("/admin/runbooks/runbook/add/", data)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Unknown variable {{Activity.titel}}; did you mean {{Activity.title}}?" in html
    assert not Runbook.objects.filter(slug="bad").exists()

    data["steps-0-inputs"] = json.dumps({"title": "{{Activity.title}}"})
    response = admin_client.post("/admin/runbooks/runbook/add/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Runbook.objects.get(slug="bad").steps.get().inputs == {"title": "{{Activity.title}}"}


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/incidents/incident/",
        "/admin/runbooks/runbook/",
        "/admin/runbooks/runbookrun/",
        "/admin/pagerduty/pagerdutyconnection/",
        "/admin/pagerduty/urgencymapping/",
    ],
)
def test_pages_render(admin_client, pd_connection, path):
    make_runbook()
    IncidentFactory()
    assert admin_client.get(path).status_code == 200
