"""The key stays home: every way of pointing a connection elsewhere, tried as an attacker would.

The attacker's host is a real HTTP server on loopback (`listener`); the PagerDuty mock lets requests
to it through, so a leak would reach it. Each test ends with the listener having received nothing;
the control test shows that it does receive what is legitimately sent to it.
"""

import os

import pytest
import responses
from django.core.management import CommandError, call_command

from apps.oncall import services as oncall_services
from apps.pagerduty.client import PagerDutyClient
from apps.pagerduty.errors import PagerDutyDestinationRefused
from apps.pagerduty.models import PagerDutyConnection
from apps.runbooks.models import StepRun
from tests.conftest import API_KEY, PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import add_create_ok, make_runbook
from tests.runbooks.test_engine import change_status

pytestmark = pytest.mark.django_db
NEW_KEY = "y_NbAkKc66ryYTWUXYEu"


@pytest.fixture
def pd_open(pd, listener):
    """PagerDuty answers at pd.test; anything addressed to the listener really goes out to it."""
    pd.add_passthru(listener.url)
    pd.add(responses.GET, f"{PD_URL}/abilities", json={"abilities": ["teams"]})
    return pd


def stored(connection) -> PagerDutyConnection:
    return PagerDutyConnection.objects.get(pk=connection.pk)


@pytest.mark.parametrize("field", ["api_url", "events_url"])
def test_api_patch_of_a_url_without_the_key_is_refused_then_test_goes_home(
    root_api, pd_open, pd_connection, listener, field
):
    before = getattr(stored(pd_connection), field)
    response = root_api.patch(
        f"/api/v1/pagerduty/connections/{pd_connection.pk}/", {field: listener.url}, format="json"
    )
    assert response.status_code == 400, response.json()
    errors = response.json()["errors"]
    assert list(errors) == [field]
    assert "enter the API key (api_key) again in the same request" in errors[field][0]
    assert response.json()["message"].startswith(f"{field}: Changing {field} would send the stored API key")
    assert getattr(stored(pd_connection), field) == before

    test = root_api.post(f"/api/v1/pagerduty/connections/{pd_connection.pk}/test/")
    assert test.status_code == 200 and test.json()["ok"] is True
    assert [c.request.url for c in pd_open.calls] == [f"{PD_URL}/abilities"]
    assert listener.requests == []


def test_api_patch_with_a_key_to_a_host_outside_the_allowed_list_is_refused(root_api, pd_open, pd_connection, listener):
    response = root_api.patch(
        f"/api/v1/pagerduty/connections/{pd_connection.pk}/",
        {"api_url": "https://pagerduty.attacker.example", "api_key": NEW_KEY},
        format="json",
    )
    assert response.status_code == 400
    assert "PAGERDUTY_ALLOWED_HOSTS" in response.json()["errors"]["api_url"][0]
    assert stored(pd_connection).api_key == API_KEY
    assert root_api.post(f"/api/v1/pagerduty/connections/{pd_connection.pk}/test/").json()["ok"] is True
    assert listener.requests == []


def test_admin_change_of_the_url_without_the_key_is_refused_then_test_goes_home(
    root_admin, pd_open, pd_connection, listener
):
    page = root_admin.post(
        f"/admin/pagerduty/pagerdutyconnection/{pd_connection.pk}/change/",
        {
            "new_api_key": "",
            "from_email": "sre@example.com",
            "api_url": listener.url,
            "events_url": "https://events.pagerduty.com",
            "subdomain": "",
            "service_mappings-TOTAL_FORMS": "0",
            "service_mappings-INITIAL_FORMS": "0",
        },
    )
    assert page.status_code == 200
    assert "Changing api_url would send the stored API key" in page.content.decode()
    assert stored(pd_connection).api_url == PD_URL

    root_admin.post(f"/admin/pagerduty/pagerdutyconnection/{pd_connection.pk}/test/")
    assert stored(pd_connection).last_test_ok is True
    assert listener.requests == []


def test_command_cannot_move_a_stored_key(pd_open, pd_connection, listener, monkeypatch):
    monkeypatch.delenv("PAGERDUTY_API_KEY", raising=False)
    monkeypatch.setenv("PAGERDUTY_API_URL", listener.url)
    for args in (["--api-url", listener.url], ["--from-env"], ["--events-url", listener.url]):
        with pytest.raises(CommandError) as err:
            call_command("pagerduty_connect", "default", *args, "--test")
        assert "Changing" in str(err.value) and "PAGERDUTY_API_KEY" in str(err.value)
    assert stored(pd_connection).api_url == PD_URL
    assert listener.requests == []


def test_a_runbook_run_after_a_refused_url_change_pages_the_real_host(
    root_api, pd_open, pd_connection, listener, django_capture_on_commit_callbacks
):
    make_runbook()
    add_create_ok(pd_open)
    response = root_api.patch(
        f"/api/v1/pagerduty/connections/{pd_connection.pk}/", {"api_url": listener.url}, format="json"
    )
    assert response.status_code == 400
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    assert StepRun.objects.get().status == "succeeded"
    assert [(c.request.method, c.request.url) for c in pd_open.calls] == [("POST", f"{PD_URL}/incidents")]
    assert pd_open.calls[0].request.headers["Authorization"] == f"Token token={API_KEY}"
    assert listener.requests == []


def test_a_url_changed_behind_the_models_back_is_not_used(
    root_api, pd_open, pd_connection, listener, settings, django_capture_on_commit_callbacks
):
    """A row edited in the database, or a host dropped from PAGERDUTY_ALLOWED_HOSTS since: the client
    and connection_client check again, so runs, tests and raw clients send nothing."""
    settings.PAGERDUTY_ALLOWED_HOSTS = ["pd.test"]
    PagerDutyConnection.objects.filter(pk=pd_connection.pk).update(api_url=listener.url)
    make_runbook()
    change_status(IncidentFactory(), "Investigating", django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert step.status == "failed"
    assert "'127.0.0.1', which is not in PAGERDUTY_ALLOWED_HOSTS" in step.error
    assert "the stored API key is not sent there" in step.error

    test = root_api.post(f"/api/v1/pagerduty/connections/{pd_connection.pk}/test/")
    assert (
        test.status_code == 200
        and test.json()["ok"] is False
        and "not in PAGERDUTY_ALLOWED_HOSTS" in test.json()["message"]
    )
    with pytest.raises(PagerDutyDestinationRefused):
        PagerDutyClient(api_key=API_KEY, api_url=listener.url).test_connection()
    assert pd_open.calls == [] or all(listener.url not in c.request.url for c in pd_open.calls)
    assert listener.requests == []


def test_an_oncall_sync_from_a_refused_url_fails_saying_why(pd_connection, listener, settings):
    settings.PAGERDUTY_ALLOWED_HOSTS = ["pd.test"]
    PagerDutyConnection.objects.filter(pk=pd_connection.pk).update(api_url=listener.url)
    run = oncall_services.sync_run_create(connection=stored(pd_connection), options={})
    run = oncall_services.sync_run_plan(sync_run_id=run.pk)
    assert run.status == "failed"
    assert "not in PAGERDUTY_ALLOWED_HOSTS" in run.error
    assert listener.requests == []


def test_a_redirect_is_not_followed(pd, pd_connection, listener):
    pd.add_passthru(listener.url)
    pd.add(responses.GET, f"{PD_URL}/abilities", status=302, headers={"Location": f"{listener.url}/abilities"})
    client = PagerDutyClient(api_key=API_KEY, api_url=PD_URL)
    with pytest.raises(Exception, match="redirect to .* not followed"):
        client.test_connection()
    assert listener.requests == []


def test_control_the_listener_receives_what_is_legitimately_sent(root_api, pd_open, pd_connection, listener):
    """With the key entered in the same request the URL may change: the new key, never the stored one,
    goes to the new host. Shows the listener and the passthrough work, so the tests above can fail."""
    response = root_api.patch(
        f"/api/v1/pagerduty/connections/{pd_connection.pk}/",
        {"api_url": listener.url, "api_key": NEW_KEY},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert root_api.post(f"/api/v1/pagerduty/connections/{pd_connection.pk}/test/").json()["ok"] is True
    assert [(r["method"], r["path"]) for r in listener.requests] == [("GET", "/abilities")]
    assert listener.requests[0]["headers"]["Authorization"] == f"Token token={NEW_KEY}"
    assert all(API_KEY not in str(r) for r in listener.requests)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("javascript:alert(1)", "scheme"),
        ("ftp://api.pagerduty.com", "scheme ftp:"),
        ("http://api.pagerduty.com", "https is required"),
        ("https://api.pagerduty.com:99999", "cannot be parsed"),
        ("https://user:pw@api.pagerduty.com", "credentials"),
        ("https://[::1", "cannot be parsed"),
        ("https://evil.example", "not in PAGERDUTY_ALLOWED_HOSTS"),
    ],
)
def test_bad_urls_are_400_naming_the_field_never_500(root_api, pd_connection, url, says):
    response = root_api.post(
        "/api/v1/pagerduty/connections/",
        {"name": "other", "api_key": NEW_KEY, "from_email": "a@b.co", "api_url": url},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert "api_url" in response.json()["errors"]
    assert any(says in message for message in response.json()["errors"]["api_url"]), response.json()
    assert not PagerDutyConnection.objects.filter(name="other").exists()


def test_pagerduty_connect_names_a_refused_url(pd_connection, monkeypatch):
    monkeypatch.setenv("PAGERDUTY_API_KEY", NEW_KEY)
    with pytest.raises(CommandError, match=r"api_url: This URL uses http; https is required"):
        call_command("pagerduty_connect", "default", "--api-url", "http://api.pagerduty.com")
    assert os.environ["PAGERDUTY_API_KEY"] == NEW_KEY
    assert stored(pd_connection).api_key == API_KEY
