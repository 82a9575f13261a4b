"""Subscribing a connection to PagerDuty's webhooks: the command, the API door, the admin button;
the secret captured from the create answer, encrypted, never shown; removal with the connection."""

import io
import json

import pytest
import responses
from django.core.management import CommandError, call_command
from django.db import connection as db
from rest_framework.test import APIClient

from apps.pagerduty.models import PagerDutyConnection
from apps.pagerduty.webhooks import INCIDENT_EVENT_TYPES, signature_for, signature_valid
from tests.conftest import PD_URL

pytestmark = pytest.mark.django_db

SECRET = "whsec-from-pagerduty-7f3a9c"
HOOK = "https://runbooks.example.com/webhooks/pagerduty/default/"


def subscription(sub_id="PSUB001", *, secret=SECRET, url=HOOK, filter_=None):
    return {
        "webhook_subscription": {
            "id": sub_id,
            "type": "webhook_subscription",
            "active": True,
            "delivery_method": {
                "id": "PDM0001",
                "type": "http_delivery_method",
                "url": url,
                "secret": secret,
                "temporarily_disabled": False,
            },
            "description": "Runbook automation, connection default",
            "events": list(INCIDENT_EVENT_TYPES),
            "filter": filter_ or {"type": "account_reference"},
        }
    }


def stored_ciphertext(pk) -> str:
    with db.cursor() as cursor:
        cursor.execute("SELECT webhook_secret FROM pagerduty_pagerdutyconnection WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def run(*args) -> str:
    out = io.StringIO()
    call_command("pagerduty_webhooks", *args, stdout=out)
    return out.getvalue()


def test_subscribe_sends_the_documented_request_and_keeps_the_secret_encrypted(pd, pd_connection):
    pd.add(responses.POST, f"{PD_URL}/webhook_subscriptions", json=subscription())

    out = run("subscribe", "default", "--url", HOOK)

    [call] = pd.calls
    assert json.loads(call.request.body) == {
        "webhook_subscription": {
            "type": "webhook_subscription",
            "delivery_method": {"type": "http_delivery_method", "url": HOOK},
            "description": "Runbook automation, connection default",
            "events": sorted(INCIDENT_EVENT_TYPES),
            "filter": {"type": "account_reference"},
        }
    }
    assert call.request.headers["Authorization"].startswith("Token token=")
    connection = PagerDutyConnection.objects.get()
    assert (connection.webhook_secret, connection.webhook_subscription_id) == (SECRET, "PSUB001")
    assert SECRET not in stored_ciphertext(connection.pk)
    assert "PSUB001" in out and SECRET not in out


def test_subscribe_to_one_service_and_again_keeps_the_previous_secret_during_the_switch(pd, pd_connection):
    filter_ = {"type": "service_reference", "id": "PSVC001"}
    pd.add(responses.POST, f"{PD_URL}/webhook_subscriptions", json=subscription(filter_=filter_))
    run("subscribe", "default", "--url", HOOK, "--service-id", "PSVC001")
    assert json.loads(pd.calls[0].request.body)["webhook_subscription"]["filter"] == filter_

    pd.replace(responses.POST, f"{PD_URL}/webhook_subscriptions", json=subscription("PSUB002", secret="whsec-new-1"))
    run("subscribe", "default", "--url", HOOK)

    connection = PagerDutyConnection.objects.get()
    assert connection.webhook_secrets == ["whsec-new-1", SECRET]
    body = b'{"event": {}}'
    for secret in (SECRET, "whsec-new-1"):
        assert signature_valid(body=body, signatures=[signature_for(body, secret)], secrets=connection.webhook_secrets)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--url", "http://runbooks.example.com/webhooks/pagerduty/default/"], "http is allowed only on localhost"),
        (["--url", "https://user:pw@example.com/hook"], "no spaces, credentials"),
        (["--url", "ftp://x"], "must be https://"),
        (["--url", HOOK, "--service-id", "PSVC001", "--team-id", "PTEAM01"], "not both"),
        (["--url", HOOK, "--service-id", "nope nope"], "not a PagerDuty id"),
        (["--url", HOOK, "--event", "incident.exploded"], "Unknown event types"),
        ([], "--url is required"),
    ],
)
def test_bad_subscribe_arguments_are_refused_before_pagerduty_is_called(pd, pd_connection, args, message):
    with pytest.raises(CommandError, match=message):
        run("subscribe", "default", *args)
    assert len(pd.calls) == 0


def test_a_loopback_http_url_is_allowed_for_local_runs(pd, pd_connection):
    pd.add(responses.POST, f"{PD_URL}/webhook_subscriptions", json=subscription(url="http://127.0.0.1:8000/x/"))
    run("subscribe", "default", "--url", "http://127.0.0.1:8000/webhooks/pagerduty/default/")
    assert PagerDutyConnection.objects.get().webhook_secret == SECRET


def test_secret_from_env_for_a_subscription_made_in_pagerduty(pd, pd_connection, monkeypatch):
    monkeypatch.setenv("PAGERDUTY_WEBHOOK_SECRET", "  whsec-made-in-the-ui  ")
    out = run("subscribe", "default", "--secret-from-env", "--subscription-id", "PSUBUI1")
    connection = PagerDutyConnection.objects.get()
    assert (connection.webhook_secret, connection.webhook_subscription_id) == ("whsec-made-in-the-ui", "PSUBUI1")
    assert "whsec" not in out and len(pd.calls) == 0

    monkeypatch.setenv("PAGERDUTY_WEBHOOK_SECRET", "")
    with pytest.raises(CommandError, match="PAGERDUTY_WEBHOOK_SECRET is not set"):
        run("subscribe", "default", "--secret-from-env")


def test_list_ping_and_unsubscribe(pd, pd_connection):
    pd_connection.webhook_secret, pd_connection.webhook_subscription_id = SECRET, "PSUB001"
    pd_connection.save()
    listed = subscription()["webhook_subscription"]
    pd.add(responses.GET, f"{PD_URL}/webhook_subscriptions", json={"webhook_subscriptions": [listed], "more": False})
    pd.add(responses.POST, f"{PD_URL}/webhook_subscriptions/PSUB001/ping", status=202)
    pd.add(responses.DELETE, f"{PD_URL}/webhook_subscriptions/PSUB001", status=204)

    listing = run("list", "default")
    assert "PSUB001" in listing and "this connection's" in listing and SECRET not in listing
    run("ping", "default")
    run("unsubscribe", "default")

    assert [(c.request.method, c.request.url.split("?")[0]) for c in pd.calls] == [
        ("GET", f"{PD_URL}/webhook_subscriptions"),
        ("POST", f"{PD_URL}/webhook_subscriptions/PSUB001/ping"),
        ("DELETE", f"{PD_URL}/webhook_subscriptions/PSUB001"),
    ]
    connection = PagerDutyConnection.objects.get()
    assert (connection.webhook_secret, connection.webhook_secret_previous, connection.webhook_subscription_id) == (
        "",
        "",
        "",
    )


def test_the_api_door_subscribes_for_pagerduty_admins_only(pd, pd_connection, role_user):
    pd.add(responses.POST, f"{PD_URL}/webhook_subscriptions", json=subscription())
    url = f"/api/v1/pagerduty/connections/{pd_connection.pk}/webhook-subscription/"
    responder, admin = APIClient(), APIClient()
    responder.force_authenticate(role_user("Responders"))
    admin.force_authenticate(role_user("PagerDuty admins"))

    assert responder.post(url, {"url": HOOK}, format="json").status_code == 403
    refused = admin.post(url, {"url": "http://example.com/hook"}, format="json")
    assert refused.status_code == 400 and "url" in refused.json()["errors"]
    assert len(pd.calls) == 0

    made = admin.post(url, {"url": HOOK}, format="json")
    assert made.status_code == 201
    assert made.json()["subscription"]["id"] == "PSUB001" and SECRET not in made.content.decode()
    shown = admin.get(f"/api/v1/pagerduty/connections/{pd_connection.pk}/").json()
    assert shown["has_webhook_secret"] is True and shown["webhook_subscription_id"] == "PSUB001"
    assert SECRET not in json.dumps(shown)


def test_the_admin_button_subscribes(pd, pd_connection, root_admin):
    pd.add(responses.POST, f"{PD_URL}/webhook_subscriptions", json=subscription())
    url = f"/admin/pagerduty/pagerdutyconnection/{pd_connection.pk}/webhook-subscription/"
    change = root_admin.get(f"/admin/pagerduty/pagerdutyconnection/{pd_connection.pk}/change/").content.decode()
    assert url in change

    form = root_admin.get(url)
    assert form.status_code == 200 and "/webhooks/pagerduty/default/" in form.content.decode()
    done = root_admin.post(url, {"url": HOOK})
    assert done.status_code == 302
    assert PagerDutyConnection.objects.get().webhook_secret == SECRET


def test_deleting_a_connection_removes_its_subscription_upstream(pd, pd_connection, root_api):
    pd_connection.webhook_secret, pd_connection.webhook_subscription_id = SECRET, "PSUB001"
    pd_connection.save()
    pd.add(responses.DELETE, f"{PD_URL}/webhook_subscriptions/PSUB001", status=204)

    assert root_api.delete(f"/api/v1/pagerduty/connections/{pd_connection.pk}/").status_code == 204

    assert [(c.request.method, c.request.url) for c in pd.calls] == [
        ("DELETE", f"{PD_URL}/webhook_subscriptions/PSUB001")
    ]
    assert not PagerDutyConnection.objects.exists()


def test_a_subscription_whose_answer_was_lost_is_not_sent_again(pd, pd_connection, fast_retries):
    """PagerDuty may have made it: a second POST would make a second subscription, and every event
    would arrive twice. The person is told to look before subscribing again."""
    import requests

    pd.add(responses.POST, f"{PD_URL}/webhook_subscriptions", body=requests.ConnectionError("reset after sending"))
    pd.add(responses.POST, f"{PD_URL}/webhook_subscriptions", json=subscription())
    with pytest.raises(CommandError):
        run("subscribe", "default", "--url", HOOK)
    assert len(pd.calls) == 1
    assert PagerDutyConnection.objects.get().webhook_subscription_id == ""


def test_pagerduty_refusing_the_subscription_is_an_answer_not_an_error(pd, pd_connection, root_api):
    pd.add(
        responses.POST,
        f"{PD_URL}/webhook_subscriptions",
        status=403,
        json={"error": {"message": "Access Denied", "code": 2010}},
    )
    answer = root_api.post(
        f"/api/v1/pagerduty/connections/{pd_connection.pk}/webhook-subscription/", {"url": HOOK}, format="json"
    )
    assert answer.status_code == 200
    assert answer.json()["ok"] is False and "Access Denied" in answer.json()["message"]
    assert PagerDutyConnection.objects.get().webhook_secret == ""
