"""Webhooks in: the receiver's refusals in DESIGN.md's order, storage and dedup, the mirror on the
incident link, the timeline, ordering by occurred_at, the resolve option, and echoes of our own
changes firing nothing."""

import hashlib
import hmac
import json
import logging
import uuid
from datetime import timedelta

import pytest
import responses
from django.utils import timezone

from apps.incidents.models import IncidentEvent, IncidentEventKind
from apps.incidents.services import incident_update
from apps.pagerduty.models import WebhookDelivery
from apps.pagerduty.signals import webhook_event_received
from apps.pagerduty.webhooks import WEBHOOK_BODY_MAX, webhook_process, webhooks_recover
from apps.runbooks.models import PagerDutyIncidentLink, RunbookRun
from tests.conftest import PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import PAGE_STEP, add_create_ok, make_runbook, pd_incident, writes

pytestmark = pytest.mark.django_db

SECRET = "whsec-current-0123456789abcdef"
OLD_SECRET = "whsec-previous-fedcba9876543210"
URL = "/webhooks/pagerduty/default/"
RESOLVE_STEP = {
    "key": "resolve",
    "action": "pagerduty.resolve_incident",
    "connection": "default",
    "with": {"from": "sre@example.com", "resolution": "Resolved in {{Activity.short_id}}"},
}


@pytest.fixture
def connection(pd_connection):
    pd_connection.webhook_secret = SECRET
    pd_connection.save()
    return pd_connection


@pytest.fixture
def linked(connection):
    incident = IncidentFactory(status="Investigating")
    link = PagerDutyIncidentLink.objects.create(
        incident=incident,
        connection=connection,
        pagerduty_incident_id="Q1ABCDEF",
        incident_key="k",
        service_id="P1234AB",
    )
    return incident, link


def event(
    event_type="incident.acknowledged", *, status=None, at=None, incident_id="Q1ABCDEF", agent="Alice Ng", **data
):
    at = at or timezone.now()
    incident = {
        "id": incident_id,
        "type": "incident",
        "number": 7,
        "status": status
        or {"incident.resolved": "resolved", "incident.triggered": "triggered"}.get(event_type, "acknowledged"),
        "title": "Checkout errors",
        "urgency": "high",
        "priority": {"id": "PPRIO01", "type": "priority_reference", "summary": "P1"},
        "assignees": [{"id": "PUSER01", "type": "user_reference", "summary": "Alice Ng"}],
        "html_url": f"https://acme.pagerduty.com/incidents/{incident_id}",
        **data,
    }
    return {
        "event": {
            "id": uuid.uuid4().hex,
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": at.isoformat().replace("+00:00", "Z"),
            "agent": {"id": "PUSER01", "type": "user_reference", "summary": agent},
            "client": None,
            "data": incident,
        }
    }


def sign(body: bytes, secret: str) -> str:
    """PagerDuty's v1 signature, computed here rather than by the code under test: HMAC-SHA256 of the
    raw body with the secret, in hex."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(client, payload, *, secrets=(SECRET,), webhook_id=None, url=URL, header=None, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {} if webhook_id is False else {"HTTP_X_WEBHOOK_ID": webhook_id or uuid.uuid4().hex}
    if header is None:
        header = ",".join(f"v1={sign(body, s)}" for s in secrets)
    if header is not False:
        headers["HTTP_X_PAGERDUTY_SIGNATURE"] = header
    return client.post(url, body, content_type="application/json", **headers)


def deliver(client, capture, payload, **kwargs):
    with capture(execute=True):
        response = post(client, payload, **kwargs)
    return response


def pagerduty_events(incident):
    return list(IncidentEvent.objects.filter(incident=incident, kind=IncidentEventKind.PAGERDUTY_EVENT))


# --- the receiver ------------------------------------------------------------------------------


def test_signed_webhook_is_stored_processed_and_mirrored(client, linked, django_capture_on_commit_callbacks):
    incident, link = linked
    response = deliver(client, django_capture_on_commit_callbacks, event(agent="Alice Ng"))

    assert (response.status_code, response.json()["message"]) == (202, "Accepted.")
    delivery = WebhookDelivery.objects.get()
    assert delivery.event_type == "incident.acknowledged" and delivery.processed_at is not None
    link.refresh_from_db()
    assert (link.status, link.urgency, link.priority) == ("acknowledged", "high", "P1")
    assert link.assignees == [{"id": "PUSER01", "summary": "Alice Ng"}]
    assert link.last_event_type == "incident.acknowledged" and link.mirrored_at is not None
    [entry] = pagerduty_events(incident)
    assert entry.actor == "Alice Ng"
    assert entry.pagerduty_event_type == "incident.acknowledged"
    assert entry.details["agent_id"] == "PUSER01" and entry.details["status"] == "acknowledged"


MISSING = "The X-PagerDuty-Signature header is missing."
NO_V1 = "The X-PagerDuty-Signature header holds no v1= signature."
BAD_SIGNATURE = "No valid signature for this connection's webhook secret."
TOO_LARGE = "The body is over 262,144 bytes; PagerDuty sends at most that."


@pytest.mark.parametrize(
    "case, expected, message",
    [
        ("unknown connection", 404, "No PagerDuty connection named 'nope'."),
        ("too large", 413, TOO_LARGE),
        ("no header", 400, MISSING),
        ("no v1 entry", 400, NO_V1),
        ("wrong signature", 403, BAD_SIGNATURE),
        ("signed with another secret", 403, BAD_SIGNATURE),
        ("unknown connection, too large, unsigned", 404, "No PagerDuty connection named 'nope'."),
        ("too large and unsigned", 413, TOO_LARGE),
        ("signed, not JSON", 400, "The body is not JSON."),
        ("signed, a JSON list", 400, 'The body has no "event" object.'),
        ("signed, no event", 400, 'The body has no "event" object.'),
    ],
)
def test_refusals_in_the_documented_order_change_nothing(
    client, linked, case, expected, message, django_capture_on_commit_callbacks
):
    payload = event()
    kwargs = {}
    if "unknown connection" in case:
        kwargs["url"] = "/webhooks/pagerduty/nope/"
    if "too large" in case:
        kwargs["raw"] = json.dumps({**payload, "pad": "x" * WEBHOOK_BODY_MAX}).encode()
    if case == "no header" or "unsigned" in case:
        kwargs["header"] = False
    if case == "no v1 entry":
        kwargs["header"] = "v0=abc, v2=def"
    if case == "wrong signature":
        kwargs["header"] = "v1=" + "0" * 64
    if case == "signed with another secret":
        kwargs["secrets"] = ("someone-elses-secret",)
    if case == "signed, not JSON":
        kwargs["raw"] = b"event=incident.acknowledged"
    if case == "signed, a JSON list":
        kwargs["raw"] = json.dumps([payload["event"]]).encode()
    if case == "signed, no event":
        kwargs["raw"] = json.dumps({"messages": [payload["event"]]}).encode()
    response = deliver(client, django_capture_on_commit_callbacks, payload, **kwargs)

    assert response.status_code == expected
    assert response.json()["message"] == message
    assert not WebhookDelivery.objects.exists()
    assert not pagerduty_events(linked[0])
    linked[1].refresh_from_db()
    assert linked[1].status == "triggered"


def test_an_unknown_connection_name_is_echoed_cut_to_100_characters(client, db, django_capture_on_commit_callbacks):
    name = "n" * 150
    response = deliver(client, django_capture_on_commit_callbacks, event(), url=f"/webhooks/pagerduty/{name}/")
    assert response.status_code == 404
    assert response.json()["message"] == f"No PagerDuty connection named '{'n' * 100}'."


def test_the_log_says_when_a_refusal_is_a_missing_secret(
    client, connection, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.WARNING, logger="apps.pagerduty.webhooks")
    deliver(client, django_capture_on_commit_callbacks, event(), secrets=("someone-elses-secret",))
    assert not [r for r in caplog.records if r.name == "apps.pagerduty.webhooks"]  # a bad signature: no secret to blame

    connection.webhook_secret = ""
    connection.save()
    deliver(client, django_capture_on_commit_callbacks, event(), secrets=("",))
    [warning] = [r for r in caplog.records if r.name == "apps.pagerduty.webhooks"]
    assert warning.getMessage() == "webhook for connection default refused: it has no webhook secret"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("v1={good},v1={other}", 202),  # PagerDuty's own form during a rotation: no spaces
        ("v1={other}, v1={good}", 202),
        ("v1=={good}", 403),
        (",".join(["v0=x"] * 19 + ["v1={good}"]), 202),
        (",".join(["v0=x"] * 20 + ["v1={good}"]), 400),  # only the first 20 entries are read
    ],
    ids=["comma", "comma-space", "double-equals", "20th-entry", "21st-entry"],
)
def test_the_signature_header_is_read_as_pagerduty_writes_it(
    client, linked, header, expected, django_capture_on_commit_callbacks
):
    body = json.dumps(event()).encode()
    header = header.format(good=sign(body, SECRET), other=sign(body, "whsec-other-0000000000"))
    response = deliver(client, django_capture_on_commit_callbacks, None, raw=body, header=header)
    assert response.status_code == expected


def test_a_connection_without_a_secret_refuses_every_webhook(client, pd_connection, django_capture_on_commit_callbacks):
    response = deliver(client, django_capture_on_commit_callbacks, event(), secrets=("",))
    assert response.status_code == 403
    assert not WebhookDelivery.objects.exists()


def test_during_a_rotation_either_secret_and_any_v1_entry_is_accepted(
    client, linked, django_capture_on_commit_callbacks
):
    connection = linked[1].connection
    connection.webhook_secret, connection.webhook_secret_previous = "whsec-new-0000000000", SECRET
    connection.save()

    old_only = deliver(client, django_capture_on_commit_callbacks, event(), secrets=(SECRET,))
    body = json.dumps(event()).encode()
    mixed = deliver(
        client,
        django_capture_on_commit_callbacks,
        None,
        raw=body,
        header=f"v1={'f' * 64}, v0=ignored, v1={sign(body, 'whsec-new-0000000000')}",
    )
    assert (old_only.status_code, mixed.status_code) == (202, 202)
    assert WebhookDelivery.objects.count() == 2


def test_a_redelivery_answers_202_and_changes_nothing(client, linked, django_capture_on_commit_callbacks):
    payload = event()
    first = deliver(client, django_capture_on_commit_callbacks, payload, webhook_id="wh-1")
    again = deliver(client, django_capture_on_commit_callbacks, payload, webhook_id="wh-1")

    assert (first.status_code, again.status_code) == (202, 202)
    assert "nothing changed" in again.json()["message"]
    assert WebhookDelivery.objects.count() == 1
    assert len(pagerduty_events(linked[0])) == 1


def test_a_redelivered_task_message_processes_once(client, linked, django_capture_on_commit_callbacks):
    deliver(client, django_capture_on_commit_callbacks, event())
    delivery = WebhookDelivery.objects.get()
    assert webhook_process(delivery_id=delivery.pk) is None  # already processed: a no-op
    assert webhook_process(delivery_id=delivery.pk + 1000) is None  # gone: a no-op
    assert len(pagerduty_events(linked[0])) == 1


def test_an_older_event_arriving_late_does_not_roll_the_mirror_back(client, linked, django_capture_on_commit_callbacks):
    incident, link = linked
    now = timezone.now()
    deliver(client, django_capture_on_commit_callbacks, event("incident.resolved", at=now))
    deliver(client, django_capture_on_commit_callbacks, event("incident.acknowledged", at=now - timedelta(minutes=1)))

    link.refresh_from_db()
    assert link.status == "resolved"
    assert link.last_event_type == "incident.resolved"
    late = pagerduty_events(incident)[-1]
    assert late.pagerduty_event_type == "incident.acknowledged" and late.details["superseded"] is True
    assert late.dispatched_at is not None  # recorded, fires nothing


def test_unknown_event_types_are_stored_and_ignored(client, linked, django_capture_on_commit_callbacks):
    payload = event()
    payload["event"]["event_type"] = "incident.conference_bridge.updated"
    response = deliver(client, django_capture_on_commit_callbacks, payload)

    assert response.status_code == 202
    delivery = WebhookDelivery.objects.get()
    assert delivery.outcome.startswith("ignored") and delivery.processed_at is not None
    assert not pagerduty_events(linked[0])


def test_the_sweep_processes_what_the_broker_never_got(client, linked, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):  # the message is lost
        post(client, event())
    delivery = WebhookDelivery.objects.get()
    assert delivery.processed_at is None
    WebhookDelivery.objects.filter(pk=delivery.pk).update(received_at=timezone.now() - timedelta(minutes=5))

    assert webhooks_recover() == 1
    delivery.refresh_from_db()
    assert delivery.processed_at is not None
    assert len(pagerduty_events(linked[0])) == 1


@pytest.mark.parametrize(
    ("event_fields", "stored"),
    [
        ({"resource_type": "incident", "data": {"id": "QINC1", "type": "incident"}}, "QINC1"),
        ({"resource_type": "incident", "data": {"id": "QINC2"}}, "QINC2"),
        ({"resource_type": "", "data": {"id": "QINC3", "type": "incident"}}, "QINC3"),
        (
            {
                "resource_type": "incident_note",
                "data": {"id": "PNOTE1", "type": "incident_note", "incident": {"id": "QINC4", "type": "incident"}},
            },
            "QINC4",
        ),
        ({"resource_type": "incident", "data": {"type": "incident"}}, ""),
        ({"resource_type": "incident_note", "data": {"id": "PNOTE2", "type": "incident_note"}}, ""),
        ({"resource_type": "incident_note", "data": {"id": "PNOTE3", "incident": "QINC5"}}, ""),
        ({"resource_type": "incident", "data": "QINC6"}, ""),
        ({"resource_type": "incident", "data": {"id": "Q" * 40, "type": "incident"}}, "Q" * 32),
        ({"resource_type": "incident_note", "data": {"incident": {"id": "R" * 40}}}, "R" * 32),
    ],
    ids=[
        "incident",
        "no-data-type",
        "no-resource-type",
        "note",
        "no-id",
        "note-no-incident",
        "incident-not-object",
        "data-not-object",
        "long-id",
        "long-note-incident-id",
    ],
)
def test_the_delivery_records_which_pagerduty_incident_it_is_about(
    client, connection, event_fields, stored, django_capture_on_commit_callbacks
):
    payload = event()
    payload["event"].update(event_fields)
    with django_capture_on_commit_callbacks(execute=False):
        assert post(client, payload).status_code == 202
    assert WebhookDelivery.objects.get().pagerduty_incident_id == stored


def test_a_delivery_keeps_the_events_own_ids_and_type_cut_to_their_columns(
    client, connection, django_capture_on_commit_callbacks
):
    payload = event()
    payload["event"].update(id="E" * 150, event_type="incident." + "t" * 150, resource_type="r" * 80)
    with django_capture_on_commit_callbacks(execute=False):
        post(client, payload, webhook_id="wh-" + "w" * 150)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.webhook_id, delivery.event_id) == ("wh-" + "w" * 97, "E" * 100)
    assert (delivery.event_type, delivery.resource_type) == (("incident." + "t" * 150)[:100], "r" * 50)

    bare = event()
    bare["event"].update(id=None, event_type=None, resource_type=None)
    with django_capture_on_commit_callbacks(execute=False):
        post(client, bare, webhook_id="wh-bare")
    delivery = WebhookDelivery.objects.get(webhook_id="wh-bare")
    assert (delivery.event_id, delivery.event_type, delivery.resource_type) == ("", "", "")


def test_without_an_x_webhook_id_the_event_id_tells_redeliveries_apart(
    client, connection, django_capture_on_commit_callbacks
):
    payload = event()
    first = deliver(client, django_capture_on_commit_callbacks, payload, webhook_id=False)
    again = deliver(client, django_capture_on_commit_callbacks, payload, webhook_id=False)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["message"] == "Already received; nothing changed."
    assert list(WebhookDelivery.objects.values_list("webhook_id", flat=True)) == [payload["event"]["id"]]

    anonymous = event()
    del anonymous["event"]["id"]
    response = deliver(client, django_capture_on_commit_callbacks, anonymous, webhook_id=False)
    assert (response.status_code, response.json()["message"]) == (
        400,
        "Neither an X-Webhook-Id header nor an event id to tell redeliveries apart.",
    )
    assert WebhookDelivery.objects.count() == 1


def test_the_same_webhook_id_on_two_connections_is_two_deliveries(
    client, connection, django_capture_on_commit_callbacks
):
    from apps.pagerduty.services import connection_upsert

    other = connection_upsert(name="eu", api_key="u+other-key-0123456789", from_email="a@b.co", api_url=PD_URL)
    other.webhook_secret = SECRET
    other.save()
    payload = event()
    for url in (URL, "/webhooks/pagerduty/eu/"):
        response = deliver(client, django_capture_on_commit_callbacks, payload, webhook_id="wh-same", url=url)
        assert (response.status_code, response.json()["message"]) == (202, "Accepted.")
    assert sorted(WebhookDelivery.objects.values_list("connection__name", flat=True)) == ["default", "eu"]


def test_a_redelivery_racing_the_first_is_answered_by_the_unique_constraint(
    client, connection, monkeypatch, django_capture_on_commit_callbacks
):
    from apps.pagerduty import tasks

    payload = event()
    deliver(client, django_capture_on_commit_callbacks, payload, webhook_id="wh-race")
    queued = []
    monkeypatch.setattr(tasks.process_webhook_delivery, "delay", queued.append)
    # The other request commits between this one's look-up and its insert: the look-up finds nothing.
    monkeypatch.setattr(WebhookDelivery.objects, "filter", lambda **kwargs: WebhookDelivery.objects.none())
    response = deliver(client, django_capture_on_commit_callbacks, payload, webhook_id="wh-race")
    assert (response.status_code, response.json()["message"]) == (202, "Already received; nothing changed.")
    assert WebhookDelivery.objects.count() == 1 and queued == []


@pytest.fixture
def receivers():
    """The mirror swapped for receivers a test defines, restored after it."""
    from apps.runbooks import mirror

    webhook_event_received.disconnect(dispatch_uid="runbooks.webhook_mirror")
    added = []

    def connect(answer, **kwargs):
        def receiver(sender, *, delivery, **_):
            return answer

        added.append((receiver, kwargs))
        webhook_event_received.connect(receiver, weak=False, **kwargs)

    yield connect
    for receiver, kwargs in added:
        assert webhook_event_received.disconnect(receiver, **kwargs)
    webhook_event_received.connect(mirror.webhook_mirror, dispatch_uid="runbooks.webhook_mirror")


def stored_delivery(connection, event_type="incident.acknowledged"):
    delivery = WebhookDelivery.objects.create(connection=connection, webhook_id=uuid.uuid4().hex, event_type=event_type)
    return delivery


def test_the_outcome_joins_what_every_receiver_said(connection, receivers):
    receivers("mirrored on INC-1", sender=WebhookDelivery)
    receivers(None)
    receivers("noted")
    delivery = stored_delivery(connection)
    assert webhook_process(delivery_id=delivery.pk) == "mirrored on INC-1; noted"
    delivery.refresh_from_db()
    assert delivery.outcome == "mirrored on INC-1; noted" and delivery.processed_at is not None
    assert webhook_process(delivery_id=delivery.pk) is None  # processed once


def test_an_outcome_nobody_gave_says_so_and_a_long_one_is_cut(connection, receivers):
    receivers("")
    quiet = stored_delivery(connection)
    assert webhook_process(delivery_id=quiet.pk) == "nothing to do"
    receivers("x" * 400)
    long = stored_delivery(connection)
    webhook_process(delivery_id=long.pk)
    long.refresh_from_db()
    assert long.outcome == "x" * 300


def test_a_delivery_stored_while_the_broker_is_away_is_left_to_the_sweep(
    client, linked, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    from apps.pagerduty import tasks

    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.process_webhook_delivery, "delay", refuse)
    response = deliver(client, django_capture_on_commit_callbacks, event())
    assert response.status_code == 202
    assert WebhookDelivery.objects.get().processed_at is None
    [warning] = [r for r in caplog.records if r.name == "apps.core.queueing"]
    assert warning.getMessage().endswith(
        "; the webhook recovery sweep processes the stored delivery once the broker is back"
    )


def test_the_sweep_queues_only_stale_unprocessed_deliveries_of_the_last_day(connection, monkeypatch, settings):
    """Just received: the receiver's own message may still be on its way. Processed: done. Older
    than a day: PagerDuty's state has moved on. Only what lies between is queued again."""
    from apps.pagerduty import tasks

    settings.RUN_RECOVERY_PENDING_AFTER_SECONDS = 60
    queued = []
    monkeypatch.setattr(tasks.process_webhook_delivery, "delay", queued.append)
    now = timezone.now()
    ages = {
        "fresh": timedelta(seconds=30),
        "stale": timedelta(minutes=2),
        "done": timedelta(minutes=2),
        "almost-a-day": timedelta(hours=23, minutes=50),
        "over-a-day": timedelta(hours=24, minutes=30),
    }
    ids = {}
    for name, age in ages.items():
        delivery = WebhookDelivery.objects.create(connection=connection, webhook_id=name)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            received_at=now - age, processed_at=now if name == "done" else None
        )
        ids[name] = delivery.pk

    assert webhooks_recover() == 2
    assert sorted(queued) == sorted([ids["stale"], ids["almost-a-day"]])


def test_one_sweep_queues_at_most_500(connection, monkeypatch):
    from apps.pagerduty import tasks

    queued = []
    monkeypatch.setattr(tasks.process_webhook_delivery, "delay", queued.append)
    WebhookDelivery.objects.bulk_create(WebhookDelivery(connection=connection, webhook_id=f"w{i}") for i in range(501))
    WebhookDelivery.objects.update(received_at=timezone.now() - timedelta(hours=1))

    assert webhooks_recover() == 500
    assert len(set(queued)) == 500


def test_notes_and_responder_replies_reach_the_timeline(client, linked, django_capture_on_commit_callbacks):
    note = event("incident.annotated")
    note["event"]["resource_type"] = "incident_note"
    note["event"]["data"] = {
        "type": "incident_note",
        "id": "PNOTE01",
        "content": "Rolled back deploy 42",
        "incident": {"id": "Q1ABCDEF", "type": "incident_reference"},
    }
    deliver(client, django_capture_on_commit_callbacks, note)

    [entry] = pagerduty_events(linked[0])
    assert entry.details["note"] == "Rolled back deploy 42" and entry.actor == "Alice Ng"
    linked[1].refresh_from_db()
    assert linked[1].status == "triggered"  # a note changes no status


# --- the resolve option and echoes ----------------------------------------------------------------


def test_pagerduty_resolve_resolves_our_incident_only_with_the_option(
    client, linked, django_capture_on_commit_callbacks
):
    incident, link = linked
    deliver(client, django_capture_on_commit_callbacks, event("incident.resolved"))
    incident.refresh_from_db()
    assert incident.status == "Investigating"  # off by default

    link.connection.pagerduty_resolve_resolves_incident = True
    link.connection.save()
    deliver(client, django_capture_on_commit_callbacks, event("incident.reopened", status="triggered"))
    deliver(client, django_capture_on_commit_callbacks, event("incident.resolved", agent="Bob Ray"))
    incident.refresh_from_db()
    assert incident.status == "Resolved"
    change = incident.events.get(kind="status_changed", to_status="Resolved")
    assert change.actor == "PagerDuty: Bob Ray"


def test_pagerduty_resolve_with_the_option_runs_closure_runbooks_that_send_nothing(
    client, pd, linked, django_capture_on_commit_callbacks
):
    incident, link = linked
    link.connection.pagerduty_resolve_resolves_incident = True
    link.connection.save()
    make_runbook("resolve-on-closure", steps=[RESOLVE_STEP], trigger={"on": "status_changed", "to": ["Resolved"]})

    deliver(client, django_capture_on_commit_callbacks, event("incident.resolved"))

    incident.refresh_from_db()
    assert incident.status == "Resolved"
    run = RunbookRun.objects.get()
    assert run.status == "succeeded"
    assert run.step_runs.get().outputs["already_resolved"] is True
    assert len(pd.calls) == 0  # PagerDuty said it is resolved: nothing to send


def test_our_resolve_echoed_by_pagerduty_fires_nothing_more(client, pd, linked, django_capture_on_commit_callbacks):
    """The loop: our incident Resolved → our step resolves in PagerDuty → PagerDuty's webhook
    comes back → recorded as the echo of that step, and nothing more is sent or started."""
    incident, link = linked
    link.connection.pagerduty_resolve_resolves_incident = True
    link.connection.save()
    make_runbook("resolve-on-closure", steps=[RESOLVE_STEP], trigger={"on": "status_changed", "to": ["Resolved"]})
    pd.add(responses.PUT, f"{PD_URL}/incidents/Q1ABCDEF", json={"incident": pd_incident(status="resolved")})

    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Resolved", actor="alice")
    assert writes(pd) == [("PUT", "/incidents/Q1ABCDEF")]
    step = RunbookRun.objects.get().step_runs.get()

    deliver(client, django_capture_on_commit_callbacks, event("incident.resolved", agent="SRE Bot"))

    assert writes(pd) == [("PUT", "/incidents/Q1ABCDEF")]
    assert RunbookRun.objects.count() == 1
    [echo] = pagerduty_events(incident)
    assert echo.details["echo_of_step"] == {"run": step.run_id, "step": "resolve"}
    assert echo.dispatched_at is not None
    assert incident.events.filter(kind="status_changed").count() == 1
    link.refresh_from_db()
    assert link.status == "resolved" and link.sent_status == ""


def test_an_event_that_came_before_the_link_is_applied_once_the_step_links_it(
    client, pd, connection, django_capture_on_commit_callbacks
):
    """PagerDuty's incident.triggered can arrive before the answer to our create request."""
    incident = IncidentFactory()
    make_runbook(steps=[PAGE_STEP])
    deliver(client, django_capture_on_commit_callbacks, event("incident.triggered"))
    assert WebhookDelivery.objects.get().outcome == "no incident of ours is linked to this PagerDuty incident"

    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Investigating", actor="alice")

    delivery = WebhookDelivery.objects.get()
    assert "echo of our step" in delivery.outcome
    [entry] = pagerduty_events(incident)
    assert entry.details["echo_of_step"]["step"] == "page"


def test_a_new_link_replays_only_its_own_unlinked_deliveries_at_most_100(connection, monkeypatch):
    from apps.pagerduty import webhooks
    from apps.pagerduty.services import connection_upsert
    from apps.pagerduty.webhooks import NO_LINK, webhooks_replay_unlinked

    other = connection_upsert(name="eu", api_key="u+other-key-0123456789", from_email="a@b.co", api_url=PD_URL)
    queued = []
    monkeypatch.setattr(webhooks, "webhook_enqueue", queued.append)
    now = timezone.now()

    def stored(webhook_id, *, on=connection, incident="QLINKED", outcome=NO_LINK):
        return WebhookDelivery.objects.create(
            connection=on, webhook_id=webhook_id, pagerduty_incident_id=incident, outcome=outcome, processed_at=now
        )

    ours = [stored(f"ours-{n}") for n in range(101)]
    others = [
        stored("other-incident", incident="QOTHER"),
        stored("other-connection", on=other),
        stored("applied", outcome="acknowledged on INC-7"),
    ]

    assert webhooks_replay_unlinked(connection=connection, pagerduty_incident_id="QLINKED") == 100
    assert len(set(queued)) == 100 and set(queued) <= {d.pk for d in ours}
    reopened = WebhookDelivery.objects.filter(pk__in=queued)
    assert set(reopened.values_list("processed_at", "outcome")) == {(None, "")}
    for delivery in others:
        delivery.refresh_from_db()
        assert delivery.processed_at == now and delivery.pk not in queued


# --- never trust a stale link -----------------------------------------------------------------------


def test_resolved_in_pagerduty_the_next_sev1_change_pages_a_new_incident(
    client, pd, connection, django_capture_on_commit_callbacks
):
    make_runbook(steps=[PAGE_STEP], trigger={"on": "status_changed", "to": ["Investigating", "Identified"]})
    incident = IncidentFactory(severity=1)
    add_create_ok(pd, incident_id="Q1ABCDEF", key=f"ai-sre-{incident.id}")
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Investigating", actor="alice")
    assert writes(pd) == [("POST", "/incidents")]

    deliver(client, django_capture_on_commit_callbacks, event("incident.resolved", agent="Alice Ng"))

    pd.replace(responses.POST, f"{PD_URL}/incidents", json={"incident": pd_incident("Q2NEWONE", number=8)}, status=201)
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Identified", actor="alice")

    assert writes(pd) == [("POST", "/incidents"), ("POST", "/incidents")]
    second = RunbookRun.objects.order_by("created_at").last().step_runs.get()
    assert second.outputs["incident_id"] == "Q2NEWONE" and second.outputs["deduplicated"] is False
    assert set(PagerDutyIncidentLink.objects.values_list("pagerduty_incident_id", "status")) == {
        ("Q1ABCDEF", "resolved"),
        ("Q2NEWONE", "triggered"),
    }


def test_without_a_webhook_pagerduty_is_asked_before_a_link_is_reused(
    pd, connection, django_capture_on_commit_callbacks
):
    make_runbook(steps=[PAGE_STEP], trigger={"on": "status_changed", "to": ["Investigating", "Identified"]})
    incident = IncidentFactory(severity=1)
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Investigating", actor="alice")
    pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", json={"incident": pd_incident(status="resolved")})
    pd.replace(responses.POST, f"{PD_URL}/incidents", json={"incident": pd_incident("Q2NEWONE")}, status=201)

    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Identified", actor="alice")

    assert [c.request.method for c in pd.calls] == ["POST", "GET", "POST"]
    assert PagerDutyIncidentLink.objects.get(pagerduty_incident_id="Q1ABCDEF").status == "resolved"


def test_add_responder_to_an_incident_pagerduty_resolved_fails_without_sending(
    client, pd, linked, django_capture_on_commit_callbacks
):
    incident, _ = linked
    deliver(client, django_capture_on_commit_callbacks, event("incident.resolved"))
    step = {
        "key": "escalate",
        "action": "pagerduty.add_responder",
        "connection": "default",
        "with": {
            "from": "sre@example.com",
            "responder_id": "PEP5678",
            "responder_type": "escalation_policy",
            "requester_id": "PREQ001",
            "message": "join",
        },
    }
    make_runbook(steps=[step], trigger={"on": "status_changed", "to": ["Identified"]})

    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Identified", actor="alice")

    failed = RunbookRun.objects.get().step_runs.get()
    assert failed.status == "failed" and "is resolved" in failed.error
    assert writes(pd) == []


# --- where people see it --------------------------------------------------------------------------


def test_the_api_and_the_incident_page_show_pagerduty_state_and_events(
    client, root_api, root_admin, linked, django_capture_on_commit_callbacks
):
    incident, _ = linked
    deliver(client, django_capture_on_commit_callbacks, event(agent="Alice Ng"))

    answer = root_api.get(f"/api/v1/incidents/{incident.short_id}/").json()
    [pagerduty] = answer["pagerduty_incidents"]
    assert pagerduty["pagerduty_incident_id"] == "Q1ABCDEF" and pagerduty["connection"] == "default"
    assert (pagerduty["status"], pagerduty["urgency"], pagerduty["priority"]) == ("acknowledged", "high", "P1")
    assert pagerduty["assignees"] == [{"id": "PUSER01", "summary": "Alice Ng"}]
    assert pagerduty["last_event_type"] == "incident.acknowledged" and pagerduty["mirrored_at"]
    acknowledged = answer["events"][-1]
    assert (acknowledged["kind"], acknowledged["pagerduty_event_type"], acknowledged["actor"]) == (
        "pagerduty_event",
        "incident.acknowledged",
        "Alice Ng",
    )

    page = root_admin.get(f"/admin/incidents/incident/{incident.pk}/change/").content.decode()
    assert "incident.acknowledged" in page and "Alice Ng" in page and "as PagerDuty last said" in page


@pytest.mark.parametrize("size, expected", [(256 * 1024, 202), (256 * 1024 + 1, 413)])
def test_the_body_limit_is_pagerdutys_own_256_kb(client, linked, size, expected, django_capture_on_commit_callbacks):
    # Literal sizes, not WEBHOOK_BODY_MAX: PagerDuty drops payloads over 256 KB, so one of exactly
    # that size is PagerDuty's to send and must be taken; a byte more is not PagerDuty.
    payload = event()
    payload["pad"] = ""
    payload["pad"] = "x" * (size - len(json.dumps(payload).encode()))
    body = json.dumps(payload).encode()
    assert len(body) == size

    response = deliver(client, django_capture_on_commit_callbacks, payload, raw=body)

    assert response.status_code == expected
    assert WebhookDelivery.objects.count() == (1 if expected == 202 else 0)
