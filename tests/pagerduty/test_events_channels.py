"""Events API v2 channels: the routing key is encrypted, write-only and redacted like an API key
and only sent to the events_url it was entered for; the test sends trigger then resolve with one
dedup key; the command, the admin and the API manage channels."""

import io
import json

import pytest
import responses
from django.core import management
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db import connection as db

from apps.core.encryption import secrets_rotate
from apps.pagerduty.client import PagerDutyEventsClient, RetryPolicy
from apps.pagerduty.errors import (
    PagerDutyBadRequest,
    PagerDutyDestinationRefused,
    PagerDutyError,
    PagerDutyUnexpectedAnswer,
)
from apps.pagerduty.models import Channel
from apps.pagerduty.services import channel_client, channel_test, channel_upsert

pytestmark = pytest.mark.django_db

EVENTS = "https://events.pagerduty.com/v2/enqueue"
ROUTING_KEY = "e93facc04764012d7bfb002500d5d1a6"
OTHER_KEY = "f00facc04764012d7bfb002500d5d1a7"
ACCEPTED = {"status": "success", "message": "Event processed"}


def accept(pd, times=1):
    def answer(request):
        return 202, {}, json.dumps({**ACCEPTED, "dedup_key": json.loads(request.body)["dedup_key"]})

    for _ in range(times):
        pd.add_callback(responses.POST, EVENTS, callback=answer, content_type="application/json")


@pytest.fixture
def channel(db):
    return channel_upsert(name="monitoring", routing_key=ROUTING_KEY, summary_prefix="[shop] ", default_source="shop")


# --- the key -------------------------------------------------------------------------------------


def test_routing_key_encrypted_at_rest_in_dumps_and_rotated(channel, settings):
    with db.cursor() as cursor:
        cursor.execute("SELECT routing_key FROM pagerduty_channel WHERE id = %s", [channel.pk])
        stored = cursor.fetchone()[0]
    assert stored.startswith("fernet:") and ROUTING_KEY not in stored
    assert Channel.objects.get().routing_key == ROUTING_KEY
    assert ROUTING_KEY not in repr(Channel.objects.get().routing_key)

    out = io.StringIO()
    management.call_command("dumpdata", "pagerduty.channel", stdout=out)
    dumped = out.getvalue()
    assert ROUTING_KEY not in dumped and '"routing_key": "fernet:' in dumped

    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    settings.FIELD_ENCRYPTION_KEYS = ["Z2V0LWEtbmV3LWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc=", old_key]
    report = {row["field"]: row for row in secrets_rotate()}
    assert report["pagerduty.Channel.routing_key"]["rotated"] == 1
    settings.FIELD_ENCRYPTION_KEYS = ["Z2V0LWEtbmV3LWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc="]
    assert Channel.objects.get().routing_key == ROUTING_KEY


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("short", "is 5 characters long; an Events API v2 routing key (integration key) is exactly 32"),
        ("e93facc04764012d 7bfb002500d5d1a", "contains whitespace"),
        ("u+abcdefghijklmnopqrst", "is 22 characters long"),
    ],
)
def test_a_key_that_cannot_be_a_routing_key_is_refused(db, key, problem):
    with pytest.raises(ValidationError) as caught:
        channel_upsert(name="x", routing_key=key)
    assert problem in str(caught.value.message_dict["routing_key"])


def test_changing_the_events_url_needs_the_key_again(channel, settings):
    settings.PAGERDUTY_ALLOWED_HOSTS = ["events.pagerduty.com", "events.eu.pagerduty.com"]
    with pytest.raises(ValidationError) as caught:
        channel_upsert(name="monitoring", events_url="https://events.eu.pagerduty.com")
    assert "enter the routing key (routing_key) again" in str(caught.value.message_dict["events_url"])
    moved = channel_upsert(name="monitoring", routing_key=OTHER_KEY, events_url="https://events.eu.pagerduty.com")
    assert (moved.events_url, Channel.objects.get().routing_key) == ("https://events.eu.pagerduty.com", OTHER_KEY)
    with pytest.raises(ValidationError) as caught:
        channel_upsert(name="evil", routing_key=ROUTING_KEY, events_url="https://attacker.example.com")
    assert "not in PAGERDUTY_ALLOWED_HOSTS" in str(caught.value.message_dict["events_url"])


def test_a_stored_url_no_longer_allowed_is_not_sent_to(channel, settings, pd):
    settings.PAGERDUTY_ALLOWED_HOSTS = ["events.eu.pagerduty.com"]
    with pytest.raises(PagerDutyDestinationRefused, match="routing key is not sent there"):
        channel_client(channel=channel)
    ok, message = channel_test(channel=channel)
    assert not ok and "not in PAGERDUTY_ALLOWED_HOSTS" in message
    assert not pd.calls


# --- the client ----------------------------------------------------------------------------------


def test_client_sends_the_key_in_the_body_only(pd):
    accept(pd)
    client = PagerDutyEventsClient(routing_key=ROUTING_KEY, retry=RetryPolicy(max_attempts=1))
    answer = client.enqueue({"event_action": "resolve", "dedup_key": "k", "routing_key": "spoofed"})
    assert answer["dedup_key"] == "k"
    request = pd.calls[0].request
    assert json.loads(request.body) == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "k"}
    assert (request.headers["Accept"], request.headers["Content-Type"]) == ("application/json", "application/json")
    # Nothing of ours beyond those two (requests adds its own transport headers): no Authorization,
    # no From, nothing else.
    assert set(request.headers) - {"User-Agent", "Accept-Encoding", "Connection", "Content-Length"} == {
        "Accept",
        "Content-Type",
    }


def test_client_400_carries_pagerduty_errors(pd):
    pd.add(
        responses.POST,
        EVENTS,
        status=400,
        json={"status": "invalid event", "message": "Event object is invalid", "errors": ["'dedup_key' is blank"]},
    )
    client = PagerDutyEventsClient(routing_key=ROUTING_KEY)
    with pytest.raises(PagerDutyBadRequest) as caught:
        client.enqueue({"event_action": "resolve", "dedup_key": "k"})
    assert caught.value.errors == ["'dedup_key' is blank"]
    assert str(caught.value).startswith("PagerDuty 400: Event object is invalid — 'dedup_key' is blank. What to do:")


def test_client_404_says_where_the_events_api_is(pd):
    pd.add(responses.POST, "http://127.0.0.1:9/v2/enqueue", status=404, body="")
    client = PagerDutyEventsClient(
        routing_key=ROUTING_KEY, events_url="http://127.0.0.1:9", retry=RetryPolicy(max_attempts=1)
    )
    with pytest.raises(PagerDutyError) as caught:
        client.enqueue({"event_action": "resolve", "dedup_key": "k"})
    assert caught.value.hint == (
        "What to do: http://127.0.0.1:9 does not serve the Events API; use https://events.pagerduty.com (US) "
        "or https://events.eu.pagerduty.com (EU)."
    )


def test_client_429_says_when_the_limit_resets(pd):
    pd.add(responses.POST, EVENTS, status=429, headers={"ratelimit-reset": "7"}, json={"status": "throttled"})
    client = PagerDutyEventsClient(routing_key=ROUTING_KEY, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(PagerDutyError) as caught:
        client.enqueue({"event_action": "resolve", "dedup_key": "k"})
    assert "limit per routing key was reached (about 120 events a minute); it resets in 7 s." in caught.value.hint


def test_client_refuses_an_accepted_answer_without_a_dedup_key(pd):
    answer = {"status": "success", "message": "x" * 300}
    pd.add(responses.POST, EVENTS, status=202, json=answer)
    client = PagerDutyEventsClient(routing_key=ROUTING_KEY)
    with pytest.raises(PagerDutyUnexpectedAnswer) as caught:
        client.enqueue({"event_action": "resolve", "dedup_key": "k"})
    assert str(caught.value).endswith(f"an accepted event without its dedup_key: {str(answer)[:200]!r}")


# --- the test: trigger, then resolve, one dedup key --------------------------------------------


def test_channel_test_sends_trigger_then_resolve_with_one_dedup_key(channel, pd):
    accept(pd, times=2)
    ok, message = channel_test(channel=channel)
    assert ok, message
    trigger, resolve = (json.loads(call.request.body) for call in pd.calls)
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] and trigger["dedup_key"] in message
    assert trigger["routing_key"] == resolve["routing_key"] == ROUTING_KEY
    assert trigger["payload"]["summary"].startswith("[shop] Test event")
    assert (trigger["payload"]["source"], trigger["payload"]["severity"]) == ("shop", "info")
    stored = Channel.objects.get()
    assert stored.last_test_ok is True and stored.last_tested_at is not None


def test_channel_test_failure_says_what_pagerduty_said(channel, pd):
    pd.add(responses.POST, EVENTS, status=400, json={"status": "invalid event", "message": "Invalid routing key"})
    ok, message = channel_test(channel=channel)
    assert not ok and "PagerDuty 400: Invalid routing key" in message
    assert len(pd.calls) == 1  # no resolve after a refused trigger
    assert Channel.objects.get().last_test_ok is False


# --- the command ---------------------------------------------------------------------------------


def test_command_creates_from_env_and_tests(db, pd, monkeypatch, settings):
    settings.SITE_URL = "https://rba.example.com"
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", f"  {ROUTING_KEY}\n")
    monkeypatch.setenv("PAGERDUTY_EVENTS_URL", "https://events.pagerduty.com")
    accept(pd, times=2)
    out = io.StringIO()
    management.call_command("pagerduty_channel", "alerts", "--from-env", "--prefix", "[x] ", "--test", stdout=out)
    channel = Channel.objects.get(name="alerts")
    assert (channel.routing_key, channel.default_source, channel.summary_prefix) == (
        ROUTING_KEY,
        "rba.example.com",
        "[x] ",
    )
    assert ROUTING_KEY not in out.getvalue()
    assert "Sent a trigger and a resolve" in out.getvalue()
    assert [json.loads(c.request.body)["event_action"] for c in pd.calls] == ["trigger", "resolve"]

    # Re-running without the key keeps it and the settings not given.
    monkeypatch.delenv("PAGERDUTY_ROUTING_KEY")
    management.call_command("pagerduty_channel", "alerts", "--source", "web", stdout=io.StringIO())
    channel.refresh_from_db()
    assert (channel.routing_key, channel.default_source, channel.summary_prefix) == (ROUTING_KEY, "web", "[x] ")


def test_command_without_a_key_says_so(db, monkeypatch):
    monkeypatch.delenv("PAGERDUTY_ROUTING_KEY", raising=False)
    with pytest.raises(CommandError, match="PAGERDUTY_ROUTING_KEY is not set"):
        management.call_command("pagerduty_channel", "alerts", "--from-env")


# --- the API and the admin -----------------------------------------------------------------------


def test_api_key_is_write_only_and_viewers_read_without_it(channel, role_user, pd):
    from rest_framework.test import APIClient

    viewer, admin = APIClient(), APIClient()
    viewer.force_authenticate(role_user("Viewers"))
    admin.force_authenticate(role_user("PagerDuty admins"))
    listed = viewer.get("/api/v1/pagerduty/channels/")
    assert listed.status_code == 200
    row = listed.json()["results"][0] if "results" in listed.json() else listed.json()[0]
    assert row["name"] == "monitoring" and row["has_routing_key"] is True and "routing_key" not in row
    assert ROUTING_KEY not in listed.content.decode()
    assert viewer.post("/api/v1/pagerduty/channels/", {"name": "x"}, format="json").status_code == 403

    created = admin.post(
        "/api/v1/pagerduty/channels/",
        {"name": "ops", "routing_key": OTHER_KEY, "summary_prefix": "[ops] "},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert OTHER_KEY not in created.content.decode()
    pk = created.json()["id"]
    assert Channel.objects.get(pk=pk).summary_prefix == "[ops] "  # the space before the summary is kept
    moved = admin.patch(f"/api/v1/pagerduty/channels/{pk}/", {"events_url": "http://127.0.0.1:9"}, format="json")
    assert moved.status_code == 400 and "enter the routing key (routing_key) again" in json.dumps(moved.json())
    short = admin.post("/api/v1/pagerduty/channels/", {"name": "bad", "routing_key": "abc"}, format="json")
    assert short.status_code == 400 and "routing_key" in json.dumps(short.json())

    accept(pd, times=2)
    tested = admin.post(f"/api/v1/pagerduty/channels/{channel.pk}/test/")
    assert tested.status_code == 200 and tested.json()["ok"] is True
    assert [json.loads(c.request.body)["event_action"] for c in pd.calls] == ["trigger", "resolve"]


def test_admin_form_never_renders_the_key_and_tests(channel, client, role_user, pd):
    client.force_login(role_user("PagerDuty admins"))
    page = client.get(f"/admin/pagerduty/channel/{channel.pk}/change/").content.decode()
    assert ROUTING_KEY not in page and "stored (encrypted)" in page and "Test channel" in page
    changed = client.post(
        f"/admin/pagerduty/channel/{channel.pk}/change/",
        {
            "events_url": "https://events.pagerduty.com",
            "summary_prefix": "[new] ",
            "default_source": "",
            "new_routing_key": "",
        },
    )
    assert changed.status_code == 302
    assert Channel.objects.get().summary_prefix == "[new] " and Channel.objects.get().routing_key == ROUTING_KEY
    accept(pd, times=2)
    tested = client.post(f"/admin/pagerduty/channel/{channel.pk}/test/", follow=True)
    assert "Sent a trigger and a resolve" in tested.content.decode()


def test_channel_changes_are_audited_without_the_key(channel):
    from auditlog.models import LogEntry

    channel_upsert(name="monitoring", routing_key=OTHER_KEY, summary_prefix="[new] ")
    entries = list(LogEntry.objects.get_for_object(channel).order_by("pk"))
    assert entries[0].changes["routing_key"] == ["(empty)", "(secret set)"]
    assert entries[-1].changes["routing_key"] == ["(secret set)", "(secret set)"]
    assert entries[-1].changes["summary_prefix"] == ["[shop] ", "[new] "]
    dump = json.dumps(list(LogEntry.objects.values()), default=str)
    assert ROUTING_KEY not in dump and OTHER_KEY not in dump


def test_the_client_itself_refuses_a_host_not_allowed(settings, pd):
    settings.PAGERDUTY_ALLOWED_HOSTS = ["events.pagerduty.com"]
    client = PagerDutyEventsClient(routing_key=ROUTING_KEY, events_url="https://attacker.example.com")
    with pytest.raises(PagerDutyDestinationRefused, match="Refusing to send the PagerDuty routing key: events_url"):
        client.enqueue({"event_action": "resolve", "dedup_key": "k"})
    assert not pd.calls


def test_a_loaded_routing_key_is_scrubbed_from_log_text(channel):
    from apps.core.redaction import redact_text

    loaded = Channel.objects.get().routing_key  # reading it registers it for redaction
    assert redact_text(f"event refused for {loaded}") == "event refused for ***redacted***"


def test_demo_setup_points_the_monitoring_channel_at_the_stand_in(db, pd, fast_retries, monkeypatch):
    monkeypatch.delenv("PAGERDUTY_API_KEY", raising=False)
    monkeypatch.delenv("PAGERDUTY_ROUTING_KEY", raising=False)
    monkeypatch.setenv("PAGERDUTY_SANDBOX_URL", "http://127.0.0.1:8765")
    management.call_command("demo_setup", stdout=io.StringIO())
    from apps.sandbox import CHECKOUT_INTEGRATION_KEY

    channel = Channel.objects.get(name="monitoring")
    # The stand-in's checkout service integration: events sent through the channel open incidents there.
    assert (channel.events_url, channel.routing_key) == ("http://127.0.0.1:8765", CHECKOUT_INTEGRATION_KEY)
