"""Programs get JSON errors, people keep Django's pages, and nothing we store grows without bound."""

import json
import logging

import pytest
import responses
from django.contrib.auth import get_user_model
from django.test import TestCase
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.core.limits import STORED_BODY_MAX_CHARS
from apps.incidents.api import IncidentViewSet
from apps.runbooks.models import StepRun, StepRunExchange
from tests.conftest import PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import make_runbook

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    user = get_user_model().objects.create_superuser("ops", password="pw-ops-123456")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_an_unexpected_exception_is_a_json_500_with_an_id_that_is_in_the_log(api, monkeypatch, caplog):
    def broken(self, request, *args, **kwargs):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(IncidentViewSet, "list", broken)
    with caplog.at_level(logging.ERROR, logger="apps.core.errors"):
        response = api.get("/api/v1/incidents/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    body = response.json()
    correlation_id = body["correlation_id"]
    assert response["X-Correlation-ID"] == correlation_id
    assert body["message"] == (
        f"Internal error: something went wrong on our side. Quote correlation id {correlation_id} when reporting it."
    )
    [record] = [r for r in caplog.records if correlation_id in r.getMessage()]
    # The traceback is in the log (formatted and redacted by RedactSecretsFilter, which then drops
    # exc_info so no later formatter prints the raw exception), never in the answer.
    traceback_text = record.exc_text or logging.Formatter().formatException(record.exc_info)
    assert "RuntimeError: a bug, not bad input" in traceback_text
    assert "a bug, not bad input" not in body["message"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/nope/", 404),
        ("GET", "/api/", 404),
        ("POST", "/webhooks/pagerduty/nope/", 404),
        ("DELETE", "/api/v1/incidents/", 405),
        ("GET", "/api/v1/incidents/INC-%C2%B2/", 404),
    ],
)
def test_api_errors_are_json(api, method, path, status):
    response = api.generic(method, path)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json()["message"]


def test_the_admin_keeps_html_error_pages(admin_client):
    response = admin_client.get("/admin/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    too_big = admin_client.generic("POST", "/admin/incidents/incident/add/", "x", CONTENT_LENGTH=str(2 * 1024**2))
    assert too_big.status_code == 413
    assert too_big["Content-Type"].startswith("text/plain")


def test_an_error_names_the_field_with_a_message_a_person_can_act_on(api):
    response = api.post("/api/v1/incidents/", {"severity": 1})
    assert response.status_code == 400
    assert response.json() == {
        "message": "title: This field is required and is missing from the request.",
        "errors": {"title": ["This field is required and is missing from the request."]},
    }


def test_a_taken_name_is_a_409(api, pd_connection):
    response = api.post(
        "/api/v1/pagerduty/connections/", {"name": "default", "api_key": "k-0123456789", "from_email": "a@example.com"}
    )
    assert response.status_code == 409
    assert response.json()["errors"]["name"] == ["PagerDuty connection with this name already exists."]


def test_stored_bodies_are_cut_with_a_marker_and_lose_their_nul_characters(pd, pd_connection, settings):
    """A 1 MB answer from PagerDuty is kept as its first 64 KiB of JSON text, saying so."""
    make_runbook()
    huge = {"error": {"message": "Internal error", "trace": "t" * 1_000_000}}
    pd.add(responses.POST, f"{PD_URL}/incidents", status=400, json=huge)
    incident = IncidentFactory()
    api_user = get_user_model().objects.create_superuser("admin2", "a@example.com", "pw-admin-123456")
    client = APIClient()
    client.force_authenticate(api_user)
    with TestCase.captureOnCommitCallbacks(execute=True):
        client.patch(f"/api/v1/incidents/{incident.pk}/", {"status": "Investigating"}, format="json")
    step = StepRun.objects.get()
    exchange = StepRunExchange.objects.get()
    assert step.status == "failed" and step.error.startswith("PagerDuty 400: Internal error")
    for stored in (exchange.response_body, step.response["body"]):
        assert isinstance(stored, str)
        assert stored.endswith(f"… [truncated: 1,000,053 characters, the first {STORED_BODY_MAX_CHARS:,} kept]")
        assert stored.startswith('{"error": {"message": "Internal error", "trace": "ttt')
    # NUL, which PostgreSQL's jsonb refuses, is replaced rather than failing the write.
    StepRunExchange.objects.filter(pk=exchange.pk).update(response_body={"text": "a\x00b"})
    exchange.refresh_from_db()
    assert exchange.response_body == {"text": "a\N{REPLACEMENT CHARACTER}b"}
    assert json.dumps(StepRunExchange.objects.get(pk=exchange.pk).request_body)
