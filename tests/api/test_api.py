import json

import pytest
import responses
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.core.roles import ROLE_NAMES
from apps.incidents.models import Incident
from apps.pagerduty.models import PagerDutyConnection
from apps.runbooks.models import RunbookRun
from tests.conftest import API_KEY, PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import add_create_ok, body, make_runbook

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(role_user):
    # Every role: these tests are about what the API does; who may do it is tests/test_permissions.py.
    return role_user(*ROLE_NAMES, username="ops")


@pytest.fixture
def api(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_anonymous_requests_are_refused(client):
    for path in ["/api/v1/incidents/", "/api/v1/runbooks/", "/api/v1/runs/", "/api/v1/pagerduty/connections/"]:
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.json()["message"]


def test_session_auth_works(client, user):
    client.force_login(user)
    assert client.get("/api/v1/incidents/").status_code == 200


def test_create_and_list_incidents(api):
    response = api.post(
        "/api/v1/incidents/",
        {"title": "DB down", "severity": "SEV1", "service": "db", "environment": "production", "owner": "a@b.co"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["short_id"].startswith("INC-")
    assert (data["severity"], data["status"]) == (1, "Detected")
    assert data["events"][0]["kind"] == "created"
    listing = api.get("/api/v1/incidents/").json()
    assert listing["count"] == 1 and listing["results"][0]["id"] == data["id"]


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        ({"title": ""}, "title", "blank"),
        ({"title": "x", "severity": 9}, "severity", "Expected a severity 0–4"),
        ({"title": "x", "status": "Panicking"}, "status", "Expected one of Detected"),
        ({"title": "x", "owner": "not-an-email"}, "owner", "valid email"),
    ],
)
def test_bad_incident_input_is_400_with_field_errors(api, payload, field, fragment):
    response = api.post("/api/v1/incidents/", payload, format="json")
    assert response.status_code == 400
    data = response.json()
    assert field in data["errors"]
    assert fragment in json.dumps(data["errors"][field], ensure_ascii=False)
    assert data["message"].startswith(field)


def test_malformed_json_is_400(api):
    response = api.generic("POST", "/api/v1/incidents/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["message"]


def test_patch_status_fires_runbooks(api, pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook()
    incident = IncidentFactory(severity=1)
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.patch(f"/api/v1/incidents/{incident.pk}/", {"status": "investigating"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "Investigating"
    assert [c.request.method for c in pd.calls] == ["POST"]
    assert body(pd.calls[0])["incident"]["urgency"] == "high"
    runs = api.get(f"/api/v1/runs/?incident={incident.pk}").json()["results"]
    assert len(runs) == 1
    step = runs[0]["step_runs"][0]
    assert step["status"] == "succeeded"
    assert step["request"]["headers"]["Authorization"] == "Token token=***redacted***"
    assert step["exchanges"][0]["status"] == 201
    assert API_KEY not in json.dumps(runs)


def test_patch_by_short_id_and_severity(api, django_capture_on_commit_callbacks):
    incident = IncidentFactory(severity=3)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.patch(f"/api/v1/incidents/{incident.short_id}/", {"severity": "SEV0"}, format="json")
    assert response.status_code == 200
    assert Incident.objects.get(pk=incident.pk).severity == 0
    assert response.json()["events"][-1]["kind"] == "severity_changed"


def test_patch_bad_status_is_400_and_changes_nothing(api):
    incident = IncidentFactory()
    response = api.patch(f"/api/v1/incidents/{incident.pk}/", {"status": "Done"}, format="json")
    assert response.status_code == 400
    assert Incident.objects.get(pk=incident.pk).status == "Detected"


def test_unknown_incident_is_404_not_500(api):
    assert api.get("/api/v1/incidents/not-a-uuid/").status_code == 404
    assert api.get("/api/v1/runs/?incident=nope").status_code == 400


def test_runbooks_are_readable_in_yaml_shape(api):
    make_runbook(conditions={"severity": [0, 1]})
    data = api.get("/api/v1/runbooks/page-on-critical/").json()
    assert data["trigger"] == {"on": "status_changed", "to": ["Investigating"]}
    assert data["conditions"] == {"severity": [0, 1]}
    assert data["steps"][0]["with"]["incident_key"] == "ai-sre-{{Activity.id}}"


def test_manual_run_endpoint(api, pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook("manual-page", trigger={"on": "manual"})
    incident = IncidentFactory()
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/runbooks/manual-page/run/", {"incident": str(incident.pk)}, format="json")
    assert response.status_code == 202
    assert RunbookRun.objects.get().status == "succeeded"


def test_connection_api_key_is_write_only(api):
    response = api.post(
        "/api/v1/pagerduty/connections/",
        {
            "name": "eu",
            "api_key": "secret-key-abcdef123",
            "from_email": "a@b.co",
            "api_url": "https://api.eu.pagerduty.com",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert "api_key" not in response.json() and response.json()["has_api_key"] is True
    listing = api.get("/api/v1/pagerduty/connections/")
    assert "secret-key-abcdef123" not in listing.content.decode()
    pk = response.json()["id"]
    # Updating without a key keeps the stored one.
    assert api.patch(f"/api/v1/pagerduty/connections/{pk}/", {"from_email": "c@d.co"}, format="json").status_code == 200
    assert PagerDutyConnection.objects.get(pk=pk).api_key == "secret-key-abcdef123"


def test_connection_without_key_is_400(api):
    response = api.post("/api/v1/pagerduty/connections/", {"name": "x", "from_email": "a@b.co"}, format="json")
    assert response.status_code == 400
    assert "api_key" in response.json()["errors"]


def test_connection_test_endpoint(api, pd, pd_connection):
    pd.add(responses.GET, f"{PD_URL}/abilities", json={"abilities": ["teams", "coordinated_responding"]})
    response = api.post(f"/api/v1/pagerduty/connections/{pd_connection.pk}/test/")
    assert response.json() == {"ok": True, "message": f"Connected to {PD_URL}; account abilities: 2"}
    assert pd.calls[0].request.headers["Authorization"] == f"Token token={API_KEY}"
    pd.replace(
        responses.GET,
        f"{PD_URL}/abilities",
        status=401,
        json={"error": {"message": "Authentication failed", "code": 2006}},
    )
    response = api.post(f"/api/v1/pagerduty/connections/{pd_connection.pk}/test/")
    # The test ran and its outcome is the answer: a refusal by PagerDuty is not an error of this API.
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is False
    assert body["message"].startswith(
        "PagerDuty 401: Authentication failed. What to do: PagerDuty did not accept the API key."
    )
    assert "revoked" in body["message"] and "https://api.eu.pagerduty.com (EU)" in body["message"]


def test_rerun_endpoint_refuses_successful_run(api, pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook()
    add_create_ok(pd)
    incident = IncidentFactory()
    with django_capture_on_commit_callbacks(execute=True):
        api.patch(f"/api/v1/incidents/{incident.pk}/", {"status": "Investigating"}, format="json")
    run = RunbookRun.objects.get()
    response = api.post(f"/api/v1/runs/{run.pk}/rerun/")
    assert response.status_code == 409  # the run is fine; its state forbids a re-run
    assert response.json()["message"] == "Nothing to re-run: no step failed"


def test_openapi_schema(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in [
        "/api/v1/incidents/",
        "/api/v1/incidents/{id}/",
        "/api/v1/runs/",
        "/api/v1/runbooks/{slug}/",
        "/api/v1/pagerduty/connections/",
    ]:
        assert path in paths
