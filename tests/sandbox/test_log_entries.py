"""The stand-in's GET /incidents/{id}/log_entries: what happened to an incident, by whom and
through which channel, newest first, within a time window, paged (requests checked against the
official spec by the stand-in itself)."""

from datetime import UTC, datetime, timedelta

import requests

from apps.sandbox import ADMIN_EMAIL, RESPONDER_EMAIL, RESPONDER_USER_ID

from .conftest import require_spec


def _iso(dt):
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_log_entries_record_trigger_acknowledge_note_responders_and_resolve(api, sandbox, sandbox_state):
    require_spec()
    incident = api.create_incident().json()["incident"]
    control = f"{sandbox.url}/_sandbox/incidents/{incident['id']}"
    assert requests.post(f"{control}/acknowledge", json={"user": RESPONDER_EMAIL}, timeout=5).status_code == 200
    assert api.post(f"/incidents/{incident['id']}/notes", {"note": {"content": "rolling back"}}).status_code == 200
    asked = api.post(
        f"/incidents/{incident['id']}/responder_requests",
        {
            "requester_id": RESPONDER_USER_ID,
            "message": "Need the DBA",
            "responder_request_targets": [
                {"responder_request_target": {"id": RESPONDER_USER_ID, "type": "user_reference"}}
            ],
        },
    )
    assert asked.status_code == 200, asked.text
    assert requests.post(f"{control}/resolve", json={"user": RESPONDER_EMAIL}, timeout=5).status_code == 200

    answer = api.get(f"/incidents/{incident['id']}/log_entries", params={"include[]": "channels"})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    entries = list(reversed(body["log_entries"]))  # newest first, as PagerDuty lists them
    assert [e["type"] for e in entries] == [
        "trigger_log_entry",
        "acknowledge_log_entry",
        "annotate_log_entry",
        "assign_log_entry",
        "resolve_log_entry",
    ]
    assert entries[0]["id"] == incident["first_trigger_log_entry"]["id"]
    admin_id = sandbox_state._users_by_email[ADMIN_EMAIL.lower()]
    assert [e["agent"]["id"] for e in entries] == [
        admin_id,
        RESPONDER_USER_ID,
        admin_id,
        RESPONDER_USER_ID,
        RESPONDER_USER_ID,
    ]
    assert [e["channel"]["type"] for e in entries] == ["api", "website", "api", "api", "website"]
    assert entries[2]["note"] == "rolling back" and entries[3]["note"] == "Need the DBA"
    for entry in entries:
        assert entry["incident"]["id"] == incident["id"] and entry["created_at"].endswith("Z")
        assert entry["channel"]["summary"]
    assert (body["limit"], body["offset"], body["more"]) == (25, 0, False)

    # Without include[]=channels the channel is only its type.
    plain = api.get(f"/incidents/{incident['id']}/log_entries").json()["log_entries"]
    assert all(set(e["channel"]) == {"type"} for e in plain)


def test_log_entries_page_and_filter_by_window(api, sandbox):
    require_spec()
    incident = api.create_incident().json()["incident"]
    for n in range(3):
        assert api.post(f"/incidents/{incident['id']}/notes", {"note": {"content": f"note {n}"}}).status_code == 200
    path = f"/incidents/{incident['id']}/log_entries"
    now = datetime.now(UTC)
    window = {"since": _iso(now - timedelta(hours=1)), "until": _iso(now + timedelta(minutes=1))}

    first = api.get(path, params={**window, "limit": 3, "offset": 0}).json()
    second = api.get(path, params={**window, "limit": 3, "offset": 3}).json()

    assert first["more"] is True and second["more"] is False
    assert len(first["log_entries"]) + len(second["log_entries"]) == 4
    earlier = {"since": _iso(now - timedelta(days=3)), "until": _iso(now - timedelta(days=2))}
    assert api.get(path, params=earlier).json()["log_entries"] == []
    backwards = api.get(path, params={"since": window["until"], "until": window["since"]})
    assert backwards.status_code == 400
    assert api.get("/incidents/PNOPE99/log_entries").status_code == 404
    assert api.get(path, params={"include[]": "bogus"}).status_code == 400
