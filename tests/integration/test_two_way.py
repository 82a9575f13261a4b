"""Two-way PagerDuty on the real stack: gunicorn receives the stand-in's signed webhooks over HTTP,
Redis carries them to a real Celery worker, PostgreSQL holds the mirror. Nothing is mocked.

page → a person acknowledges in the stand-in → our link and timeline show it → the person resolves
in the stand-in → with "PagerDuty resolve resolves our incident" on, ours is Resolved, and the
resolve-on-closure runbook sends nothing to PagerDuty (it already knows).
"""

import re
import socket
import subprocess
import sys
import time

import pytest
import requests

from apps.incidents.models import Incident, IncidentEvent
from apps.pagerduty.models import PagerDutyConnection, WebhookDelivery
from apps.pagerduty.subscriptions import webhook_subscribe
from apps.runbooks.models import PagerDutyIncidentLink, RunbookRun
from apps.sandbox import RESPONDER_EMAIL
from tests.integration.conftest import ROOT, create_incident, runs_finished, stack_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(240)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def web(wired, tmp_path):
    """gunicorn (the Procfile's web process) on the session's broker and queue, so what it stores
    is processed by the test's worker."""
    port = _free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1", "--timeout", "60"],
        cwd=ROOT,
        env=stack_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"gunicorn did not start: {(tmp_path / 'gunicorn.log').read_text()[-2000:]}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
    log.close()


def _writes(state):
    return [(r["method"], r["path"]) for r in state.requests if r["method"] != "GET"]


def _timed(predicate, message):
    started = time.monotonic()
    value = wait_for(predicate, timeout=30, interval=0.05, message=message)
    return value, time.monotonic() - started


def test_acknowledge_and_resolve_in_pagerduty_come_back_to_us(wired, sandbox, web):
    api, state, worker = wired
    server, _ = sandbox
    connection = PagerDutyConnection.objects.get(name="default")
    webhook_subscribe(connection=connection, url=f"{web}/webhooks/pagerduty/default/")
    PagerDutyConnection.objects.filter(pk=connection.pk).update(pagerduty_resolve_resolves_incident=True)

    incident_id = create_incident(api, "Checkout down")
    api.patch(f"/api/v1/incidents/{incident_id}/", {"status": "Investigating"}, format="json")
    wait_for(lambda: runs_finished(incident_id, 1), message=f"page run\n{worker.output()}")
    link = PagerDutyIncidentLink.objects.get(incident_id=incident_id)
    # The stand-in's incident.triggered reports our own create back: recorded as its echo.
    echo = wait_for(
        lambda: IncidentEvent.objects.filter(
            incident_id=incident_id, pagerduty_event_type="incident.triggered"
        ).first(),
        message="the echo of our page",
    )
    assert echo.details["echo_of_step"]["step"] == "page" and echo.dispatched_at is not None

    control = f"{server.url}/_sandbox/incidents/{link.pagerduty_incident_id}"
    asked = time.monotonic()
    requests.post(f"{control}/acknowledge", json={"user": RESPONDER_EMAIL}, timeout=5).raise_for_status()
    acknowledged, _ = _timed(
        lambda: IncidentEvent.objects.filter(
            incident_id=incident_id, pagerduty_event_type="incident.acknowledged"
        ).first(),
        "the acknowledgement on our timeline",
    )
    ack_seconds = time.monotonic() - asked
    link.refresh_from_db()
    assert link.status == "acknowledged" and link.assignees
    assert acknowledged.actor == state.users[state._users_by_email[RESPONDER_EMAIL]]["name"]
    print(f"\nacknowledged in the stand-in → on our timeline in {ack_seconds * 1000:.0f} ms")

    asked = time.monotonic()
    requests.post(f"{control}/resolve", json={"user": RESPONDER_EMAIL}, timeout=5).raise_for_status()
    wait_for(lambda: Incident.objects.get(pk=incident_id).status == "Resolved", message="our incident resolved")
    print(f"resolved in the stand-in → our incident Resolved in {(time.monotonic() - asked) * 1000:.0f} ms")
    closure = wait_for(
        lambda: RunbookRun.objects.filter(
            incident_id=incident_id, runbook__slug="resolve-on-closure", status="succeeded"
        ).first(),
        message=f"the closure run\n{worker.output()}",
    )
    assert closure.step_runs.get().outputs["already_resolved"] is True
    assert _writes(state) == [("POST", "/webhook_subscriptions"), ("POST", "/incidents")]  # nothing more sent
    assert WebhookDelivery.objects.filter(processed_at__isnull=True).count() == 0
    assert Incident.objects.get(pk=incident_id).events.get(to_status="Resolved").actor.startswith("PagerDuty: ")

    # The post-mortem draft: every step in order, each with who did it and when (UTC). PagerDuty's
    # log is read live from the stand-in and merged with the webhooks that told us the same.
    markdown = api.get(f"/api/v1/incidents/{incident_id}/timeline/?format=markdown")
    assert markdown.status_code == 200 and markdown["Content-Type"].startswith("text/markdown")
    text = markdown.content.decode()
    rows = [row for row in text.splitlines() if re.match(r"\| \d+ \|", row)]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    for row in cells:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", row[1]) and row[4] not in ("", "—"), row
    responder = state.users[state._users_by_email[RESPONDER_EMAIL]]["name"]
    expected = [
        ("Incident created", None),
        ("→ Investigating", None),
        ("(pagerduty.create_incident) succeeded", "runbook "),
        (f": acknowledged by {responder}", responder),
        (f": resolved by {responder}", responder),
        ("Investigating → Resolved", "PagerDuty: "),
        ("(pagerduty.resolve_incident) succeeded", "runbook resolve-on-closure"),
    ]
    found = []
    for what, who in expected:
        index = next((i for i, row in enumerate(cells) if what in row[3]), None)
        assert index is not None, f"{what!r} missing from\n{text}"
        assert who is None or cells[index][4].startswith(who), cells[index]
        found.append(index)
    assert found == sorted(found), text
    assert [row[1] for row in cells] == sorted(row[1] for row in cells)
    assert not [row for row in cells if "log_entry" in row[3]]  # each change once, not twice


def test_a_forged_delivery_is_refused_and_changes_nothing(wired, sandbox, web):
    api, state, worker = wired
    server, _ = sandbox
    connection = PagerDutyConnection.objects.get(name="default")
    webhook_subscribe(connection=connection, url=f"{web}/webhooks/pagerduty/default/")
    requests.post(f"{server.url}/_sandbox/webhooks", json={"bad_signature": True, "retry_delays": []}, timeout=5)

    incident_id = create_incident(api, "Search slow")
    api.patch(f"/api/v1/incidents/{incident_id}/", {"status": "Investigating"}, format="json")
    wait_for(lambda: runs_finished(incident_id, 1), message="page run")
    delivery = wait_for(
        lambda: [
            d for d in requests.get(f"{server.url}/_sandbox/webhooks", timeout=5).json()["deliveries"] if d["attempts"]
        ],
        message="the forged delivery",
    )[0]
    assert [a["status"] for a in delivery["attempts"]] == [403]
    assert not WebhookDelivery.objects.exists()
