from datetime import UTC, datetime, timedelta

import pytest

from apps.sandbox import ADMIN_USER_ID, CHECKOUT_ESCALATION_POLICY_ID, CHECKOUT_SCHEDULE_ID, RESPONDER_USER_ID
from apps.sandbox import schedules as sched

A, B, C = ({"id": uid, "type": "user_reference", "summary": uid} for uid in ("PAAAAAA", "PBBBBBB", "PCCCCCC"))
WEEK = 7 * 86400
DAY = 86400


def t(text: str) -> datetime:
    return sched.parse_time(text)


def layer(users, turn, start="2024-01-01T00:00:00Z", virtual_start=None, restrictions=(), end=None):
    return {
        "start": start,
        "end": end,
        "rotation_virtual_start": virtual_start or start,
        "rotation_turn_length_seconds": turn,
        "users": [{"user": u} for u in users],
        "restrictions": list(restrictions),
    }


def rendered(spans):
    return [(s.user_id, sched.format_time(s.start), sched.format_time(s.end)) for s in spans]


def test_weekly_rotation_of_three_users():
    spans = sched.layer_spans(layer([A, B, C], WEEK), t("2024-01-01T00:00:00Z"), t("2024-01-29T00:00:00Z"))
    assert rendered(spans) == [
        ("PAAAAAA", "2024-01-01T00:00:00Z", "2024-01-08T00:00:00Z"),
        ("PBBBBBB", "2024-01-08T00:00:00Z", "2024-01-15T00:00:00Z"),
        ("PCCCCCC", "2024-01-15T00:00:00Z", "2024-01-22T00:00:00Z"),
        ("PAAAAAA", "2024-01-22T00:00:00Z", "2024-01-29T00:00:00Z"),
    ]


def test_window_cuts_turns_and_rotation_counts_from_the_virtual_start():
    spans = sched.layer_spans(layer([A, B, C], WEEK), t("2024-01-10T12:00:00Z"), t("2024-01-17T00:00:00Z"))
    assert rendered(spans) == [
        ("PBBBBBB", "2024-01-10T12:00:00Z", "2024-01-15T00:00:00Z"),
        ("PCCCCCC", "2024-01-15T00:00:00Z", "2024-01-17T00:00:00Z"),
    ]
    # A year later the rotation is still counted from rotation_virtual_start: 52 weeks = 17 cycles + 1.
    later = sched.layer_spans(layer([A, B, C], WEEK), t("2024-12-30T00:00:00Z"), t("2024-12-31T00:00:00Z"))
    assert [s.user_id for s in later] == ["PBBBBBB"]


def test_layer_start_after_virtual_start_and_layer_end():
    the_layer = layer(
        [A, B, C],
        WEEK,
        start="2024-01-10T00:00:00Z",
        virtual_start="2024-01-01T00:00:00Z",
        end="2024-01-16T00:00:00Z",
    )
    spans = sched.layer_spans(the_layer, t("2024-01-01T00:00:00Z"), t("2024-02-01T00:00:00Z"))
    assert rendered(spans) == [
        ("PBBBBBB", "2024-01-10T00:00:00Z", "2024-01-15T00:00:00Z"),
        ("PCCCCCC", "2024-01-15T00:00:00Z", "2024-01-16T00:00:00Z"),
    ]


def test_daily_restriction_9_to_17():
    business_hours = {"type": "daily_restriction", "start_time_of_day": "09:00:00", "duration_seconds": 8 * 3600}
    spans = sched.layer_spans(
        layer([A, B], DAY, restrictions=[business_hours]), t("2024-01-01T00:00:00Z"), t("2024-01-04T00:00:00Z")
    )
    assert rendered(spans) == [
        ("PAAAAAA", "2024-01-01T09:00:00Z", "2024-01-01T17:00:00Z"),
        ("PBBBBBB", "2024-01-02T09:00:00Z", "2024-01-02T17:00:00Z"),
        ("PAAAAAA", "2024-01-03T09:00:00Z", "2024-01-03T17:00:00Z"),
    ]
    assert sched.coverage_percentage(spans, t("2024-01-01T00:00:00Z"), t("2024-01-04T00:00:00Z")) == 33.33


def test_weekly_rotation_with_daily_restriction_and_turn_handoff_inside_a_window():
    business_hours = {"type": "daily_restriction", "start_time_of_day": "09:00:00", "duration_seconds": 8 * 3600}
    # Hand-off at noon on Monday 2024-01-08: the restriction window is split between A and B.
    the_layer = layer([A, B, C], WEEK, start="2024-01-01T12:00:00Z", restrictions=[business_hours])
    spans = sched.layer_spans(the_layer, t("2024-01-08T00:00:00Z"), t("2024-01-09T00:00:00Z"))
    assert rendered(spans) == [
        ("PAAAAAA", "2024-01-08T09:00:00Z", "2024-01-08T12:00:00Z"),
        ("PBBBBBB", "2024-01-08T12:00:00Z", "2024-01-08T17:00:00Z"),
    ]


def test_restrictions_follow_the_schedule_time_zone_across_dst():
    nine_local = {"type": "daily_restriction", "start_time_of_day": "09:00:00", "duration_seconds": 3600}
    zone = sched.get_zone("America/New_York")
    spans = sched.layer_spans(
        layer([A], DAY, restrictions=[nine_local]), t("2024-03-09T00:00:00Z"), t("2024-03-12T00:00:00Z"), zone
    )
    # 09:00 EST is 14:00Z; after the 2024-03-10 switch 09:00 EDT is 13:00Z.
    assert [sched.format_time(s.start) for s in spans] == [
        "2024-03-09T14:00:00Z",
        "2024-03-10T13:00:00Z",
        "2024-03-11T13:00:00Z",
    ]
    assert sched.format_time(spans[0].start, zone) == "2024-03-09T09:00:00-05:00"


def test_weekly_restriction_monday_to_friday():
    weekdays = {
        "type": "weekly_restriction",
        "start_day_of_week": 1,
        "start_time_of_day": "09:00:00",
        "duration_seconds": 4 * DAY + 8 * 3600,
    }
    spans = sched.layer_spans(
        layer([A], WEEK, restrictions=[weekdays]), t("2024-01-05T00:00:00Z"), t("2024-01-16T00:00:00Z")
    )
    assert rendered(spans) == [
        ("PAAAAAA", "2024-01-05T00:00:00Z", "2024-01-05T17:00:00Z"),
        ("PAAAAAA", "2024-01-08T09:00:00Z", "2024-01-12T17:00:00Z"),
        ("PAAAAAA", "2024-01-15T09:00:00Z", "2024-01-16T00:00:00Z"),
    ]


def test_single_user_turns_merge_into_one_entry():
    spans = sched.layer_spans(layer([A], DAY), t("2024-01-01T00:00:00Z"), t("2024-01-05T00:00:00Z"))
    assert rendered(spans) == [("PAAAAAA", "2024-01-01T00:00:00Z", "2024-01-05T00:00:00Z")]


def test_final_schedule_later_layers_win_then_overrides():
    business_hours = {"type": "daily_restriction", "start_time_of_day": "09:00:00", "duration_seconds": 8 * 3600}
    schedule = {
        "time_zone": "UTC",
        "schedule_layers": [layer([A], WEEK), layer([B], WEEK, restrictions=[business_hours])],
        "_overrides": [{"start": "2024-01-02T10:00:00Z", "end": "2024-01-02T11:00:00Z", "user": C}],
    }
    since, until = t("2024-01-01T00:00:00Z"), t("2024-01-03T00:00:00Z")
    assert rendered(sched.final_spans(schedule, since, until)) == [
        ("PAAAAAA", "2024-01-01T00:00:00Z", "2024-01-01T09:00:00Z"),
        ("PBBBBBB", "2024-01-01T09:00:00Z", "2024-01-01T17:00:00Z"),
        ("PAAAAAA", "2024-01-01T17:00:00Z", "2024-01-02T09:00:00Z"),
        ("PBBBBBB", "2024-01-02T09:00:00Z", "2024-01-02T10:00:00Z"),
        ("PCCCCCC", "2024-01-02T10:00:00Z", "2024-01-02T11:00:00Z"),
        ("PBBBBBB", "2024-01-02T11:00:00Z", "2024-01-02T17:00:00Z"),
        ("PAAAAAA", "2024-01-02T17:00:00Z", "2024-01-03T00:00:00Z"),
    ]
    out = sched.render_schedule(schedule, since, until, sched.get_zone("UTC"))
    assert out["final_schedule"]["rendered_coverage_percentage"] == 100.0
    assert out["schedule_layers"][1]["rendered_coverage_percentage"] == pytest.approx(33.33)
    assert out["overrides_subschedule"]["rendered_schedule_entries"][0]["user"]["id"] == "PCCCCCC"
    empty = sched.render_schedule(schedule, None, None, sched.get_zone("UTC"))
    assert empty["final_schedule"]["rendered_schedule_entries"] == []
    assert empty["final_schedule"]["rendered_coverage_percentage"] is None


def test_gaps_stay_uncovered():
    night = {"type": "daily_restriction", "start_time_of_day": "22:00:00", "duration_seconds": 4 * 3600}
    schedule = {"time_zone": "UTC", "schedule_layers": [layer([A], DAY, restrictions=[night])]}
    spans = sched.final_spans(schedule, t("2024-01-01T00:00:00Z"), t("2024-01-02T00:00:00Z"))
    assert rendered(spans) == [
        ("PAAAAAA", "2024-01-01T00:00:00Z", "2024-01-01T02:00:00Z"),
        ("PAAAAAA", "2024-01-01T22:00:00Z", "2024-01-02T00:00:00Z"),
    ]
    assert sched.user_on_call(schedule, t("2024-01-01T12:00:00Z")) is None
    assert sched.user_on_call(schedule, t("2024-01-01T23:00:00Z"))["id"] == "PAAAAAA"


# -- over HTTP -------------------------------------------------------------------------------------


def test_get_schedule_renders_the_window(api):
    params = {"since": "2024-01-01T00:00:00Z", "until": "2024-01-22T00:00:00Z", "time_zone": "UTC"}
    schedule = api.get(f"/schedules/{CHECKOUT_SCHEDULE_ID}", params).json()["schedule"]
    assert schedule["time_zone"] == "UTC"
    entries = schedule["final_schedule"]["rendered_schedule_entries"]
    assert [(e["user"]["id"], e["start"], e["end"]) for e in entries] == [
        (ADMIN_USER_ID, "2024-01-01T00:00:00Z", "2024-01-08T00:00:00Z"),
        (RESPONDER_USER_ID, "2024-01-08T00:00:00Z", "2024-01-15T00:00:00Z"),
        (ADMIN_USER_ID, "2024-01-15T00:00:00Z", "2024-01-22T00:00:00Z"),
    ]
    assert entries[0]["user"]["type"] == "user_reference" and entries[0]["user"]["summary"] == "Demo SRE"
    assert schedule["final_schedule"]["rendered_coverage_percentage"] == 100.0
    layer_out = schedule["schedule_layers"][0]
    assert layer_out["rotation_turn_length_seconds"] == WEEK
    assert layer_out["rendered_schedule_entries"] == entries


def test_get_schedule_without_window_has_empty_entries(api):
    schedule = api.get(f"/schedules/{CHECKOUT_SCHEDULE_ID}").json()["schedule"]
    assert schedule["final_schedule"]["rendered_schedule_entries"] == []
    assert schedule["schedule_layers"][0]["rendered_schedule_entries"] == []
    only_since = api.get(f"/schedules/{CHECKOUT_SCHEDULE_ID}", {"since": "2024-01-01T00:00:00Z"}).json()["schedule"]
    assert only_since["final_schedule"]["rendered_schedule_entries"][-1]["end"] == "2024-01-15T00:00:00Z"


def test_get_schedule_in_another_time_zone(api):
    params = {"since": "2024-01-01T00:00:00Z", "until": "2024-01-02T00:00:00Z", "time_zone": "Asia/Tokyo"}
    entries = api.get(f"/schedules/{CHECKOUT_SCHEDULE_ID}", params).json()["schedule"]["final_schedule"]
    assert entries["rendered_schedule_entries"][0]["start"] == "2024-01-01T09:00:00+09:00"
    bad = api.get(f"/schedules/{CHECKOUT_SCHEDULE_ID}", {"time_zone": "Mars/Olympus"})
    assert bad.status_code == 400


def test_schedule_list_has_no_final_schedule(api, sandbox_state):
    page = api.get("/schedules", {"query": "checkout"}).json()
    assert [s["id"] for s in page["schedules"]] == [CHECKOUT_SCHEDULE_ID]
    assert "final_schedule" not in page["schedules"][0]
    assert api.get("/schedules/PNOPE00").status_code == 404


def test_oncalls_now_and_earliest(api, sandbox_state):
    now = sandbox_state.now()
    expected = sched.user_on_call(sandbox_state.schedules[CHECKOUT_SCHEDULE_ID], now)["id"]
    page = api.get("/oncalls", {"escalation_policy_ids[]": CHECKOUT_ESCALATION_POLICY_ID}).json()
    rows = [(o["escalation_level"], o["user"]["id"], (o["schedule"] or {}).get("id")) for o in page["oncalls"]]
    assert rows == [(1, expected, CHECKOUT_SCHEDULE_ID), (2, RESPONDER_USER_ID, None)]
    level_two = page["oncalls"][1]
    assert level_two["start"] is None and level_two["end"] is None
    shift = page["oncalls"][0]
    assert sched.parse_time(shift["start"]) <= now < sched.parse_time(shift["end"])

    until = sched.format_time(now + timedelta(days=28))
    params = {
        "schedule_ids[]": CHECKOUT_SCHEDULE_ID,
        "escalation_policy_ids[]": CHECKOUT_ESCALATION_POLICY_ID,
        "since": sched.format_time(now),
        "until": until,
    }
    shifts = api.get("/oncalls", params).json()["oncalls"]
    assert len(shifts) in (4, 5)
    assert {o["user"]["id"] for o in shifts} == {ADMIN_USER_ID, RESPONDER_USER_ID}
    earliest = api.get("/oncalls", {**params, "earliest": "true"}).json()["oncalls"]
    assert sorted(o["user"]["id"] for o in earliest) == sorted([ADMIN_USER_ID, RESPONDER_USER_ID])
    only_admin = api.get("/oncalls", {**params, "user_ids[]": ADMIN_USER_ID}).json()["oncalls"]
    assert {o["user"]["id"] for o in only_admin} == {ADMIN_USER_ID}


def test_oncalls_refuse_more_than_90_days_ahead(api):
    now = datetime.now(UTC)
    far = api.get("/oncalls", {"since": sched.format_time(now), "until": sched.format_time(now + timedelta(days=91))})
    assert far.status_code == 400
    assert "90 days" in far.json()["error"]["errors"][0]
    backwards = api.get(
        "/oncalls", {"since": sched.format_time(now), "until": sched.format_time(now - timedelta(days=1))}
    )
    assert backwards.status_code == 400
    ok = api.get("/oncalls", {"since": sched.format_time(now), "until": sched.format_time(now + timedelta(days=89))})
    assert ok.status_code == 200
