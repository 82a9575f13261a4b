"""The stand-in's webhooks: subscriptions valid per the spec, deliveries signed and retried over
real HTTP, the bad-signature switch, and the controls that act as a person in PagerDuty would."""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from apps.sandbox import RESPONDER_EMAIL, RESPONDER_USER_ID
from apps.sandbox.webhooks import EVENT_TYPES


class Receiver:
    """Our side of the wire: records each delivery, answers the statuses queued in `answers`."""

    def __init__(self):
        self.received: list[dict] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                status = receiver.answers.pop(0) if receiver.answers else 202
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/pagerduty/default/"

    def wait_for(self, count: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


def subscribe(api, url, **extra) -> dict:
    body = {
        "webhook_subscription": {
            "type": "webhook_subscription",
            "delivery_method": {"type": "http_delivery_method", "url": url},
            "events": list(EVENT_TYPES),
            "filter": {"type": "account_reference"},
            **extra,
        }
    }
    answer = api.post("/webhook_subscriptions", body)
    assert answer.status_code == 200, answer.text
    return answer.json()["webhook_subscription"]


def valid(delivery, secret) -> bool:
    expected = hmac.new(secret.encode(), delivery["body"], hashlib.sha256).hexdigest()
    given = [p.strip().removeprefix("v1=") for p in delivery["headers"]["x-pagerduty-signature"].split(",")]
    return any(hmac.compare_digest(g, expected) for g in given)


def test_a_subscription_receives_signed_events_for_api_changes(api, sandbox, receiver):
    subscription = subscribe(api, receiver.url)
    secret = subscription["delivery_method"]["secret"]
    assert secret and subscription["id"]
    listed = api.get("/webhook_subscriptions").json()["webhook_subscriptions"]
    assert [s["delivery_method"]["secret"] for s in listed] == [None]  # only the create answer shows it

    incident = api.create_incident().json()["incident"]
    api.resolve(incident["id"])

    triggered, resolved = receiver.wait_for(2)
    for delivery in (triggered, resolved):
        assert valid(delivery, secret)
        assert delivery["headers"]["x-webhook-id"] and delivery["headers"]["content-type"] == "application/json"
    events = [json.loads(d["body"])["event"] for d in (triggered, resolved)]
    assert [e["event_type"] for e in events] == ["incident.triggered", "incident.resolved"]
    assert events[1]["data"]["id"] == incident["id"] and events[1]["data"]["status"] == "resolved"
    assert events[1]["agent"]["type"] == "user_reference"


def test_a_person_acknowledges_notes_and_resolves_in_the_stand_in(api, sandbox, receiver):
    secret = subscribe(api, receiver.url)["delivery_method"]["secret"]
    incident = api.create_incident().json()["incident"]
    control = f"{sandbox.url}/_sandbox/incidents/{incident['id']}"

    assert requests.post(f"{control}/acknowledge", json={"user": RESPONDER_EMAIL}, timeout=5).status_code == 200
    escalated = requests.post(f"{control}/escalate", json={"user": RESPONDER_EMAIL}, timeout=5)
    assert escalated.status_code == 200, escalated.text
    assert requests.post(f"{control}/note", json={"content": "rolled back"}, timeout=5).status_code == 200
    assert requests.post(f"{control}/resolve", json={}, timeout=5).status_code == 200
    refused = requests.post(f"{control}/explode", json={}, timeout=5)
    assert refused.status_code == 400 and "acknowledge, resolve, escalate or note" in refused.text

    deliveries = receiver.wait_for(5)
    events = [json.loads(d["body"])["event"] for d in deliveries]
    assert [e["event_type"] for e in events] == [
        "incident.triggered",
        "incident.acknowledged",
        "incident.escalated",
        "incident.annotated",
        "incident.resolved",
    ]
    assert events[1]["agent"]["id"] == RESPONDER_USER_ID
    assert events[2]["agent"]["id"] == RESPONDER_USER_ID and events[2]["data"]["id"] == incident["id"]
    assert events[3]["data"]["content"] == "rolled back" and events[3]["data"]["incident"]["id"] == incident["id"]
    assert all(valid(d, secret) for d in deliveries)


def test_a_delivery_is_retried_with_the_same_webhook_id(api, sandbox, receiver):
    subscribe(api, receiver.url)
    requests.post(f"{sandbox.url}/_sandbox/webhooks", json={"retry_delays": [0.05, 0.05]}, timeout=5)
    receiver.answers = [503, 429, 202]

    api.create_incident()

    first, second, third = receiver.wait_for(3)
    assert first["headers"]["x-webhook-id"] == second["headers"]["x-webhook-id"] == third["headers"]["x-webhook-id"]
    [record] = requests.get(f"{sandbox.url}/_sandbox/webhooks", timeout=5).json()["deliveries"]
    assert [a["status"] for a in record["attempts"]] == [503, 429, 202] and record["delivered"] is True


def test_the_bad_signature_switch_and_unsubscribing(api, sandbox, receiver):
    subscription = subscribe(api, receiver.url)
    requests.post(f"{sandbox.url}/_sandbox/webhooks", json={"bad_signature": True}, timeout=5)
    api.create_incident(key="one")
    [forged] = receiver.wait_for(1)
    assert not valid(forged, subscription["delivery_method"]["secret"])

    assert api.post(f"/webhook_subscriptions/{subscription['id']}/ping").status_code == 202
    assert json.loads(receiver.wait_for(2)[1]["body"])["event"]["event_type"] == "pagey.ping"
    assert api.session.delete(f"{sandbox.url}/webhook_subscriptions/{subscription['id']}", timeout=5).status_code == 204
    api.create_incident(key="two")
    time.sleep(0.3)
    assert len(receiver.received) == 2


def test_a_subscription_request_the_spec_refuses_is_refused(api, sandbox):
    answer = api.post("/webhook_subscriptions", {"webhook_subscription": {"type": "webhook_subscription"}})
    assert answer.status_code == 400
