"""The stand-in's on-call reads beyond the basics: overrides by id, v3 (shift-based) schedules, and user
search matching name and email the way PagerDuty's does."""

from datetime import timedelta

import pytest

from apps.sandbox import ADMIN_USER_ID, CHECKOUT_SCHEDULE_ID, RESPONDER_USER_ID
from apps.sandbox import schedules as sched
from tests.sandbox.conftest import require_spec


def add_override(state, schedule, override_id, start, end, user_id):
    with state.lock:
        schedule["_overrides"].append({"id": override_id, "start": start, "end": end, "user": state.user_ref(user_id)})


def test_schedule_overrides_are_listed_by_window_cut_at_its_bounds(api, sandbox_state):
    schedule = sandbox_state.schedules[CHECKOUT_SCHEDULE_ID]
    add_override(sandbox_state, schedule, "POVR001", "2026-11-24T09:00:00Z", "2026-11-24T17:00:00Z", RESPONDER_USER_ID)
    add_override(sandbox_state, schedule, "POVR002", "2026-12-20T00:00:00Z", "2026-12-21T00:00:00Z", ADMIN_USER_ID)
    window = {"since": "2026-11-24T12:00:00Z", "until": "2026-12-01T00:00:00Z"}
    response = api.get(f"/schedules/{CHECKOUT_SCHEDULE_ID}/overrides", window)
    assert response.status_code == 200
    [override] = response.json()["overrides"]
    assert override["id"] == "POVR001" and override["user"]["id"] == RESPONDER_USER_ID
    # Cut at `since` unless overflow=true, like the rendered schedule.
    assert (override["start"], override["end"]) == ("2026-11-24T12:00:00Z", "2026-11-24T17:00:00Z")
    [whole] = api.get(f"/schedules/{CHECKOUT_SCHEDULE_ID}/overrides", {**window, "overflow": "true"}).json()[
        "overrides"
    ]
    assert whole["start"] == "2026-11-24T09:00:00Z"


def test_editable_overrides_are_future_ones_as_ids(api, sandbox_state):
    schedule = sandbox_state.schedules[CHECKOUT_SCHEDULE_ID]
    now = sandbox_state.now()
    past, future = now - timedelta(hours=2), now + timedelta(days=2)
    add_override(
        sandbox_state,
        schedule,
        "POVRPST",
        sched.format_time(past),
        sched.format_time(now + timedelta(hours=1)),
        ADMIN_USER_ID,
    )
    add_override(
        sandbox_state,
        schedule,
        "POVRFUT",
        sched.format_time(future),
        sched.format_time(future + timedelta(hours=8)),
        ADMIN_USER_ID,
    )
    window = {"since": sched.format_time(now - timedelta(days=1)), "until": sched.format_time(now + timedelta(days=7))}
    body = api.get(f"/schedules/{CHECKOUT_SCHEDULE_ID}/overrides", {**window, "editable": "true"}).json()
    assert body["overrides"] == [{"id": "POVRFUT"}]


def test_overrides_need_since_and_until(api):
    require_spec()
    response = api.get(f"/schedules/{CHECKOUT_SCHEDULE_ID}/overrides")
    assert response.status_code == 400
    assert "query.since" in " ".join(response.json()["error"]["errors"])
    assert (
        api.get(
            "/schedules/PNOSUCH/overrides", {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"}
        ).status_code
        == 404
    )


def test_v3_schedules_list_as_references_and_read_with_their_computed_shifts(api, sandbox_state):
    listed = api.get("/v3/schedules", {"total": "true", "limit": 100}).json()
    assert listed["total"] == len(sandbox_state.schedules_v3) > 0
    ref = listed["schedules"][0]
    assert ref["type"] == "schedule_v3_reference" and ref["self"].endswith(f"/v3/schedules/{ref['id']}")
    stored = sandbox_state.schedules_v3[ref["id"]]
    since, until = "2026-11-23T00:00:00Z", "2026-11-30T00:00:00Z"
    body = api.get(
        f"/v3/schedules/{ref['id']}",
        {"include[]": "final_schedule", "since": since, "until": until, "time_zone": "UTC"},
    ).json()["schedule"]
    assert body["type"] == "schedule_v3" and body["time_zone"] == stored["time_zone"]
    [rotation] = body["rotations"]
    [event] = rotation["events"]
    layer = stored["schedule_layers"][0]
    assert event["assignment_strategy"]["members"] == [
        {"type": "user_member", "user_id": u["user"]["id"]} for u in layer["users"]
    ]
    assert event["recurrence"][0].startswith("RRULE:FREQ=")
    # The computed shifts are who the stand-in's /oncalls says is on call: one truth for both.
    shifts = body["final_schedule"]["computed_shift_assignments"]
    expected = sched.final_spans(stored, sched.parse_time(since), sched.parse_time(until))
    assert [(s["start_time"], s["end_time"], s["member"]["user_id"]) for s in shifts] == [
        (sched.format_time(s.start), sched.format_time(s.end), s.user_id) for s in expected
    ]
    assert all(s["source"] == {"type": "schedule_rotation", "rotation_id": rotation["id"]} for s in shifts)
    # Without a window there is nothing to compute, as on PagerDuty.
    assert (
        "final_schedule"
        not in api.get(f"/v3/schedules/{ref['id']}", {"include[]": "final_schedule"}).json()["schedule"]
    )
    assert api.get("/v3/schedules/PNOSUCH").status_code == 404


def test_v3_overrides_say_whom_they_replace_and_show_in_the_final_schedule(api, sandbox_state):
    schedule_id = next(iter(sandbox_state.schedules_v3))
    schedule = sandbox_state.schedules_v3[schedule_id]
    start = sched.parse_time("2026-11-25T10:00:00Z")
    replaced = sched.layer_spans(schedule["schedule_layers"][0], start, start + timedelta(seconds=1))[0].user_id
    add_override(sandbox_state, schedule, "POVRV31", "2026-11-25T10:00:00Z", "2026-11-25T14:00:00Z", ADMIN_USER_ID)
    window = {"since": "2026-11-23T00:00:00Z", "until": "2026-11-30T00:00:00Z"}
    [shift] = [
        o for o in api.get(f"/v3/schedules/{schedule_id}/overrides", window).json()["overrides"] if o["id"] == "POVRV31"
    ]
    assert shift["overriding_member"] == {"type": "user_member", "user_id": ADMIN_USER_ID}
    assert shift["overridden_member"] == {"type": "user_member", "user_id": replaced}
    body = api.get(f"/v3/schedules/{schedule_id}", {**window, "include[]": "final_schedule", "time_zone": "UTC"}).json()
    overridden = [
        s
        for s in body["schedule"]["final_schedule"]["computed_shift_assignments"]
        if s["source"].get("override_id") == "POVRV31"
    ]
    assert [(s["start_time"], s["end_time"], s["member"]["user_id"]) for s in overridden] == [
        ("2026-11-25T10:00:00Z", "2026-11-25T14:00:00Z", ADMIN_USER_ID)
    ]
    assert overridden[0]["source"]["type"] == "schedule_rotation_override"


@pytest.mark.parametrize("query", ["sre@", "EXAMPLE.COM", "demo s", "Demo SRE"])
def test_user_query_matches_part_of_the_name_or_of_the_email_in_any_case(api, query):
    ids = [u["id"] for u in api.get("/users", {"query": query, "limit": 100}).json()["users"]]
    assert ADMIN_USER_ID in ids
    if query != "EXAMPLE.COM":
        assert RESPONDER_USER_ID not in ids


def test_user_query_total_counts_the_filtered_list(api, sandbox_state):
    body = api.get("/users", {"query": "@", "total": "true", "limit": 1}).json()
    assert body["total"] == len(sandbox_state.users) and body["more"] is True
