"""The incident timeline: our events, runs and steps, PagerDuty's webhooks and its log entries in
one time-ordered list (JSON and a Markdown post-mortem draft); PagerDuty failing still answers."""

import re
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from django.utils import timezone

from apps.incidents.services import incident_record_pagerduty_event, incident_trigger_runbook, incident_update
from apps.pagerduty.services import connection_upsert
from apps.runbooks.models import PagerDutyIncidentLink, RunbookRun
from apps.runbooks.services import runbook_upsert_from_spec
from apps.runbooks.timeline import iso_z
from apps.sandbox import ADMIN_EMAIL, RESPONDER_EMAIL, SandboxServer, SandboxState, seed_account
from tests.conftest import PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import pd_incident

pytestmark = pytest.mark.django_db

LOG_URL = f"{PD_URL}/incidents/Q1ABCDEF/log_entries"


@pytest.fixture
def standin(db):
    state = SandboxState(tokens={"sandbox-token"})
    seed_account(state, users=20, teams=3, schedules=4, escalation_policies=3, services=4, seed=1)
    server = SandboxServer(state, port=0).start()
    connection = connection_upsert(name="default", api_key="sandbox-token", from_email=ADMIN_EMAIL, api_url=server.url)
    connection.service_mappings.create(service="", pagerduty_service_id="PSVC001")
    yield state, server
    server.stop()


@pytest.fixture
def linked(pd_connection):
    incident = IncidentFactory(status="Investigating", title="Checkout errors")
    link = PagerDutyIncidentLink.objects.create(
        incident=incident, connection=pd_connection, pagerduty_incident_id="Q1ABCDEF", incident_key="k"
    )
    return incident, link


def log_entry(entry_type, at, *, agent="Alice Ng", channel="website", entry_id="R1", **extra):
    return {
        "id": entry_id,
        "type": entry_type,
        "summary": f"{entry_type} by {agent}",
        "created_at": iso_z(at),
        "agent": {"id": "PUSER01", "type": "user_reference", "summary": agent},
        "channel": {"type": channel},
        "incident": {"id": "Q1ABCDEF", "type": "incident_reference"},
        **extra,
    }


def test_markdown_of_a_paged_acknowledged_resolved_incident_lists_every_step(
    standin, root_api, django_capture_on_commit_callbacks
):
    state, server = standin
    runbook, _ = runbook_upsert_from_spec(
        spec={
            "slug": "page-checkout",
            "name": "Page checkout",
            "trigger": {"on": "manual"},
            "steps": [{"key": "page", "action": "pagerduty.create_incident", "with": {"title": "{{Activity.title}}"}}],
        }
    )
    incident = IncidentFactory(severity=1, title="Checkout errors", status="Investigating")
    with django_capture_on_commit_callbacks(execute=True):
        incident_trigger_runbook(incident_id=incident.pk, runbook_slug=runbook.slug, actor="api:sam")
    run = RunbookRun.objects.get(incident=incident)
    assert run.status == "succeeded", run.error
    pd_id = PagerDutyIncidentLink.objects.get(incident=incident).pagerduty_incident_id
    # A person acknowledges, then resolves, in PagerDuty's UI (the stand-in's controls); PagerDuty
    # stamps to the second, so each happens in a second of its own, as they would in real life.
    for act in ("acknowledge", "resolve"):
        time.sleep(1.05)
        answer = requests.post(f"{server.url}/_sandbox/incidents/{pd_id}/{act}", json={"user": RESPONDER_EMAIL})
        assert answer.status_code == 200, answer.text
    time.sleep(1.05)
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Resolved", actor="api:sam")

    response = root_api.get(f"/api/v1/incidents/{incident.short_id}/timeline/?format=markdown")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    text = response.content.decode()
    assert text.startswith(f"# Post-mortem: {incident.short_id} Checkout errors")
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    responder = state.users[state._users_by_email[RESPONDER_EMAIL.lower()]]["name"]
    admin = state.users[state._users_by_email[ADMIN_EMAIL.lower()]]["name"]
    expected = [
        ("Incident created: Checkout errors", "—"),
        ("Asked to run runbook page-checkout", "api:sam"),
        ("Runbook Page checkout started", "runbook page-checkout (run by api:sam)"),
        ("Triggered through the API", admin),
        ("Step page (pagerduty.create_incident) succeeded", "runbook page-checkout (run by api:sam)"),
        ("Runbook Page checkout succeeded", "runbook page-checkout (run by api:sam)"),
        (f"Acknowledged by {responder}", responder),
        (f"Resolved by {responder}", responder),
        ("Status Investigating → Resolved", "api:sam"),
    ]
    assert len(rows) == len(expected), text
    times = []
    for row, (what, who) in zip(rows, expected, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert what in cells[3] and cells[4] == who, row
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", cells[1]), row
        times.append(cells[1])
    assert times == sorted(times)
    assert "- Opened: " in text and " UTC" in text
    # Every log entries request the stand-in received was checked against the official spec.
    [log_read] = state.find_requests("GET", f"/incidents/{pd_id}/log_entries")
    assert log_read["query"]["include[]"] == ["channels"]


def test_json_shape_merges_and_deduplicates_webhook_and_log_entry(root_api, pd, linked, settings):
    incident, _ = linked
    now = timezone.now()
    incident_record_pagerduty_event(
        incident=incident,
        event_type="incident.acknowledged",
        actor="Alice Ng",
        details={"incident_id": "Q1ABCDEF", "status": "acknowledged", "webhook_id": "w1", "agent_id": "PUSER01"},
        fires=False,
    )
    first = [log_entry("trigger_log_entry", now - timedelta(minutes=1), agent="Ops API", channel="api", entry_id="R0")]
    second = [
        log_entry("acknowledge_log_entry", now - timedelta(seconds=2), entry_id="R1"),
        log_entry("annotate_log_entry", timezone.now(), entry_id="R2", note="Rolling back"),
    ]
    pd.add(responses.GET, LOG_URL, json={"log_entries": first, "limit": 100, "offset": 0, "more": True})
    pd.add(responses.GET, LOG_URL, json={"log_entries": second, "limit": 100, "offset": 1, "more": False})

    answer = root_api.get(f"/api/v1/incidents/{incident.pk}/timeline/")

    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"incident", "entries", "notes"} and body["notes"] == []
    assert body["incident"]["short_id"] == incident.short_id
    entries = body["entries"]
    for entry in entries:
        assert set(entry) == {"at", "source", "kind", "actor", "summary", "details"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["at"])
    pagerduty = [e for e in entries if e["source"] == "pagerduty"]
    # The acknowledgement came both as a webhook and as a log entry: one entry, the webhook's.
    assert [e["kind"] for e in pagerduty] == ["incident.triggered", "incident.acknowledged", "incident.annotated"]
    ack = pagerduty[1]
    assert ack["actor"] == "Alice Ng" and ack["details"]["via"] == "webhook+log_entry"
    assert ack["details"]["log_entry_id"] == "R1" and ack["details"]["channel"] == "website"
    assert pagerduty[2]["details"]["note"] == "Rolling back"
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
    # Paged by offset with an explicit window and the channels included.
    calls = [parse_qs(urlsplit(c.request.url).query) for c in pd.calls]
    assert [c["offset"] for c in calls] == [["0"], ["1"]]
    for query in calls:
        assert query["include[]"] == ["channels"] and query["limit"] == ["100"] and query["time_zone"] == ["UTC"]
        assert query["since"] == [iso_z(incident.created_at - timedelta(minutes=5))]


def test_pagerduty_failing_still_answers_200_with_a_note(root_api, pd, linked, settings):
    incident, _ = linked
    settings.PAGERDUTY_INTERACTIVE_TIMEOUT_SECONDS = 0.5
    pd.add(responses.GET, LOG_URL, json={"error": {"message": "Internal", "code": 2000}}, status=500)

    answer = root_api.get(f"/api/v1/incidents/{incident.pk}/timeline/")

    assert answer.status_code == 200
    body = answer.json()
    assert len(pd.calls) == 2  # two attempts, then the answer without PagerDuty's log
    [note] = body["notes"]
    assert "Q1ABCDEF" in note and "could not be read" in note
    assert [e["kind"] for e in body["entries"]] == ["created"] or body["entries"] == []
    markdown = root_api.get(f"/api/v1/incidents/{incident.pk}/timeline/?format=markdown")
    assert markdown.status_code == 200 and "## Notes" in markdown.content.decode()


@pytest.mark.parametrize(
    "query, field",
    [
        ("since=yesterday", "since"),
        ("until=2026-11-23T09:00:00", "until"),
        ("since=2026-11-23T09:00:00Z&until=2026-11-22T09:00:00Z", "until"),
        ("since=2026-01-01T00:00:00Z&until=2026-11-22T09:00:00Z", "until"),
    ],
)
def test_bad_windows_are_refused_naming_the_field(root_api, linked, query, field):
    incident, _ = linked
    answer = root_api.get(f"/api/v1/incidents/{incident.pk}/timeline/?{query}")
    assert answer.status_code == 400
    assert field in str(answer.json())


def test_unknown_incident_is_404_and_no_role_is_403(root_api, role_user, linked, pd):
    incident, _ = linked
    assert root_api.get("/api/v1/incidents/INC-999999/timeline/").status_code == 404
    from rest_framework.test import APIClient

    nobody = APIClient()
    nobody.force_authenticate(role_user())
    assert nobody.get(f"/api/v1/incidents/{incident.pk}/timeline/").status_code == 403
    viewer = APIClient()
    viewer.force_authenticate(role_user("Viewers", username="viewer"))
    pd.add(responses.GET, LOG_URL, json={"log_entries": [], "limit": 100, "offset": 0, "more": False})
    assert viewer.get(f"/api/v1/incidents/{incident.pk}/timeline/").status_code == 200


def test_errors_are_json_even_when_markdown_was_asked_for(root_api, linked):
    incident, _ = linked
    answer = root_api.get(f"/api/v1/incidents/{incident.pk}/timeline/?format=markdown&since=soon")
    assert answer.status_code == 400 and answer["Content-Type"].startswith("application/json")
    assert "since" in answer.json()["errors"]


# --- the admin: the Timeline page and "Refresh from PagerDuty" ------------------------------------


def test_admin_timeline_page_shows_the_same_entries(root_admin, pd, linked):
    incident, _ = linked
    entry = log_entry("acknowledge_log_entry", timezone.now(), agent="Alice Ng")
    pd.add(responses.GET, LOG_URL, json={"log_entries": [entry], "limit": 100, "offset": 0, "more": False})

    change = root_admin.get(f"/admin/incidents/incident/{incident.pk}/change/").content.decode()
    assert 'id="rb-incident-timeline"' in change and 'id="rb-refresh-pagerduty"' in change
    page = root_admin.get(f"/admin/incidents/incident/{incident.pk}/timeline/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "acknowledge_log_entry by Alice Ng" in text and "Alice Ng" in text and "Incident created" in text
    markdown = root_admin.get(f"/admin/incidents/incident/{incident.pk}/timeline/?format=markdown")
    assert markdown["Content-Type"].startswith("text/markdown") and "| Alice Ng |" in markdown.content.decode()


def test_refresh_from_pagerduty_rereads_each_link(client, role_user, pd, linked):
    incident, link = linked
    pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", json={"incident": pd_incident(status="resolved")})
    client.force_login(role_user("Responders"))

    answer = client.post(f"/admin/incidents/incident/{incident.pk}/refresh-pagerduty/", follow=True)

    assert answer.status_code == 200
    assert "PagerDuty Q1ABCDEF: resolved" in answer.content.decode()
    link.refresh_from_db()
    assert link.status == "resolved" and link.mirrored_at is not None
    assert client.get(f"/admin/incidents/incident/{incident.pk}/refresh-pagerduty/").status_code == 405


def test_refresh_when_pagerduty_fails_says_so_and_keeps_the_link(client, role_user, pd, linked, settings):
    incident, link = linked
    settings.PAGERDUTY_INTERACTIVE_TIMEOUT_SECONDS = 0.5
    pd.add(responses.GET, f"{PD_URL}/incidents/Q1ABCDEF", json={"error": {"message": "down"}}, status=503)
    client.force_login(role_user("Responders"))
    answer = client.post(f"/admin/incidents/incident/{incident.pk}/refresh-pagerduty/", follow=True)
    assert answer.status_code == 200 and "could not be read" in answer.content.decode()
    assert len(pd.calls) == 2
    link.refresh_from_db()
    assert link.status == "triggered" and link.mirrored_at is None


def test_viewers_see_the_timeline_but_may_not_refresh(client, role_user, pd, linked):
    incident, _ = linked
    pd.add(responses.GET, LOG_URL, json={"log_entries": [], "limit": 100, "offset": 0, "more": False})
    client.force_login(role_user("Viewers"))
    change = client.get(f"/admin/incidents/incident/{incident.pk}/change/").content.decode()
    assert 'id="rb-incident-timeline"' in change and 'id="rb-refresh-pagerduty"' not in change
    assert client.get(f"/admin/incidents/incident/{incident.pk}/timeline/").status_code == 200
    assert client.post(f"/admin/incidents/incident/{incident.pk}/refresh-pagerduty/").status_code == 403
    assert len([c for c in pd.calls if "/log_entries" not in c.request.url]) == 0


def test_notes_are_merged_only_when_they_say_the_same(root_api, pd, linked):
    incident, _ = linked
    for note in ("Rolling back", "Paging the DBA"):
        incident_record_pagerduty_event(
            incident=incident,
            event_type="incident.annotated",
            actor="Alice Ng",
            details={"incident_id": "Q1ABCDEF", "note": note, "webhook_id": note},
            fires=False,
        )
    now = timezone.now()
    logged = [
        log_entry("annotate_log_entry", now, entry_id="R1", note="Rolling back"),
        log_entry("annotate_log_entry", now, entry_id="R2", note="Something else"),
    ]
    pd.add(responses.GET, LOG_URL, json={"log_entries": logged, "limit": 100, "offset": 0, "more": False})

    entries = root_api.get(f"/api/v1/incidents/{incident.pk}/timeline/").json()["entries"]

    notes = [(e["details"].get("note"), e["details"]["via"]) for e in entries if e["kind"] == "incident.annotated"]
    assert sorted(notes) == [
        ("Paging the DBA", "webhook"),
        ("Rolling back", "webhook+log_entry"),
        ("Something else", "log_entry"),
    ]
