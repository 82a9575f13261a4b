"""Live on-call from PagerDuty (the stand-in over real HTTP): shifts as /oncalls has them, overrides by id,
next shifts, contact methods, coverage gaps, the API door and its refusals."""

from datetime import UTC, datetime, timedelta

import pytest
import requests
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from apps.core.errors import DomainError
from apps.oncall import services
from apps.oncall.live import oncall_live_fetch
from apps.oncall.models import OncallSchedule
from apps.pagerduty.services import connection_upsert
from apps.sandbox import (
    ADMIN_USER_ID,
    CHECKOUT_ESCALATION_POLICY_ID,
    CHECKOUT_SCHEDULE_ID,
    RESPONDER_USER_ID,
    SandboxServer,
    SandboxState,
    seed_account,
)
from apps.sandbox import schedules as sched
from tests.oncall.conftest import NOW, SMALL, TOKEN


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Frozen:
    """A stand-in whose clock is NOW, so "90 days ahead" and the windows below mean the same on every run."""

    def __init__(self, clock):
        self.state = seed_account(SandboxState(tokens={TOKEN}, rate_limit_per_minute=100_000, clock=clock), **SMALL)
        self.server = SandboxServer(self.state, host="127.0.0.1", port=0)

    def oncalls(self, **params) -> list[dict]:
        """What PagerDuty (the stand-in) itself answers, page by page, for comparison."""
        out, offset = [], 0
        headers = {"Authorization": f"Token token={TOKEN}", "Accept": "application/vnd.pagerduty+json;version=2"}
        while True:
            body = requests.get(
                f"{self.server.url}/oncalls",
                params={**params, "limit": 100, "offset": offset},
                headers=headers,
                timeout=10,
            ).json()
            out += body["oncalls"]
            if not body["more"]:
                return out
            offset += 100

    def add_override(self, schedule_id, override_id, start, end, user_id, v3=False):
        schedules = self.state.schedules_v3 if v3 else self.state.schedules
        with self.state.lock:
            schedules[schedule_id]["_overrides"].append(
                {"id": override_id, "start": iso(start), "end": iso(end), "user": self.state.user_ref(user_id)}
            )


@pytest.fixture
def frozen(db):
    stand_in = Frozen(lambda: NOW)
    with stand_in.server.start():
        yield stand_in


@pytest.fixture
def live_connection(frozen, plan_run, apply_run):
    connection = connection_upsert(
        name="default", api_key=TOKEN, from_email="sre@example.com", api_url=frozen.server.url
    )
    apply_run(plan_run(connection))
    return connection


def fetch(connection, **kwargs):
    return oncall_live_fetch(connection=connection, now=NOW, **kwargs)


def test_a_future_window_matches_oncalls_with_overrides_labelled_by_id(live_connection, frozen):
    since, until = NOW + timedelta(days=7), NOW + timedelta(days=9)
    frozen.add_override(
        CHECKOUT_SCHEDULE_ID, "POVR001", NOW + timedelta(days=8), NOW + timedelta(days=8, hours=8), RESPONDER_USER_ID
    )
    frozen.state.reset_requests()
    live = fetch(live_connection, since=since, until=until, escalation_policy_ids=[CHECKOUT_ESCALATION_POLICY_ID])
    sent = list(frozen.state.requests)

    expected = frozen.oncalls(
        since=iso(since),
        until=iso(until),
        time_zone="UTC",
        **{"escalation_policy_ids[]": CHECKOUT_ESCALATION_POLICY_ID},
    )
    got = sorted((s.escalation_level, s.user_id, s.schedule_id, s.start, s.end) for s in live.shifts)
    want = sorted(
        (
            e["escalation_level"],
            e["user"]["id"],
            (e["schedule"] or {}).get("id"),
            sched.parse_time(e["start"]) if e["start"] else None,
            sched.parse_time(e["end"]) if e["end"] else None,
        )
        for e in expected
    )
    assert got == want and len(got) >= 3
    [override] = [s for s in live.shifts if s.is_override]
    assert (override.user_id, override.start, override.end) == (
        RESPONDER_USER_ID,
        NOW + timedelta(days=8),
        NOW + timedelta(days=8, hours=8),
    )
    assert [o.id for o in override.overrides] == ["POVR001"]
    assert not any(s.is_override for s in live.shifts if s is not override)
    # The responder is also named directly on level 2: permanent, no start or end.
    assert any(s.permanent and s.escalation_level == 2 and s.user_id == RESPONDER_USER_ID for s in live.shifts)

    # What PagerDuty was asked: the on-calls for the window and the policy, then the schedule's overrides by id.
    asked = [(r["method"], r["path"], r["query"]) for r in sent]
    oncalls = asked[0]
    assert oncalls[:2] == ("GET", "/oncalls")
    assert oncalls[2]["since"] == [iso(since)] and oncalls[2]["until"] == [iso(until)]
    assert oncalls[2]["escalation_policy_ids[]"] == [CHECKOUT_ESCALATION_POLICY_ID]
    [overrides] = [q for m, p, q in asked if p == f"/schedules/{CHECKOUT_SCHEDULE_ID}/overrides"]
    assert overrides["since"] == [iso(since)] and overrides["until"] == [iso(until)]
    assert live.requests == len(sent)


def test_next_shift_and_contact_methods_of_each_person(live_connection, frozen):
    live = fetch(live_connection, escalation_policy_ids=[CHECKOUT_ESCALATION_POLICY_ID])
    people = {p.user_id: p for p in live.people}
    on_now = next(s for s in live.shifts if s.escalation_level == 1 and s.covers(NOW))
    person = people[on_now.user_id]
    # Weekly rotation of two: their next shift is the week after next, right after the other person's.
    upcoming = frozen.oncalls(
        since=iso(on_now.end), until=iso(NOW + timedelta(days=60)), time_zone="UTC", **{"user_ids[]": on_now.user_id}
    )
    first = min(
        (e for e in upcoming if e["start"] and sched.parse_time(e["start"]) >= on_now.end), key=lambda e: e["start"]
    )
    assert person.next_shift.start == sched.parse_time(first["start"]) == on_now.end + timedelta(days=7)
    emails = [c["address"] for c in person.contact_methods if c["type"] == "email"]
    assert person.imported and person.email in emails
    assert all(c["address"] == "" for c in person.contact_methods if c["type"] == "push")


def test_a_gap_is_flagged_for_the_schedule_and_the_level(live_connection, frozen):
    # Checkout primary only covers office hours from now on: nights are nobody's.
    with frozen.state.lock:
        frozen.state.schedules[CHECKOUT_SCHEDULE_ID]["schedule_layers"][0]["restrictions"] = [
            {"type": "daily_restriction", "start_time_of_day": "09:00:00", "duration_seconds": 8 * 3600}
        ]
    night = datetime(2026, 11, 24, 22, 0, tzinfo=UTC)
    live = fetch(live_connection, since=night, until=night, escalation_policy_ids=[CHECKOUT_ESCALATION_POLICY_ID])
    kinds = {(g.kind, g.schedule_id or g.escalation_level) for g in live.gaps}
    # Level 2 names the responder directly, so it is never empty.
    assert kinds == {("schedule", CHECKOUT_SCHEDULE_ID), ("escalation_level", 1)}

    day = fetch(
        live_connection,
        since=datetime(2026, 11, 24, 0, 0, tzinfo=UTC),
        until=datetime(2026, 11, 25, 0, 0, tzinfo=UTC),
        schedule_ids=[CHECKOUT_SCHEDULE_ID],
    )
    [gap] = day.gaps
    assert gap.kind == "schedule" and [(a.hour, b.hour) for a, b in gap.intervals] == [(0, 9), (17, 0)]


def test_v3_schedule_overrides_are_read_from_the_v3_endpoint(live_connection, frozen):
    v3_id = next(iter(frozen.state.schedules_v3))
    with frozen.state.lock:
        policy = frozen.state.escalation_policies[CHECKOUT_ESCALATION_POLICY_ID]
        policy["escalation_rules"][0]["targets"] = [{"id": v3_id, "type": "schedule_v3_reference", "summary": "v3"}]
    frozen.add_override(v3_id, "POVRV3A", NOW + timedelta(hours=1), NOW + timedelta(hours=3), ADMIN_USER_ID, v3=True)
    live = fetch(
        live_connection,
        since=NOW + timedelta(hours=2),
        until=NOW + timedelta(hours=2),
        escalation_policy_ids=[policy["id"]],
    )
    [shift] = [s for s in live.shifts if s.schedule_id == v3_id]
    assert shift.schedule_type == "schedule_v3" and shift.user_id == ADMIN_USER_ID
    assert [o.id for o in shift.overrides] == ["POVRV3A"] and shift.overrides[0].replaces_user_id
    assert any(r["path"] == f"/v3/schedules/{v3_id}/overrides" for r in frozen.state.requests)


def test_beside_the_imported_snapshot(live_connection, frozen):
    live = fetch(live_connection, schedule_ids=[CHECKOUT_SCHEDULE_ID])
    [row] = live.snapshot
    assert row["imported"] and row["agrees"] is True and row["on_call"] == row["live_on_call"]
    # PagerDuty changes after the sync: the live answer moves, the snapshot says it no longer agrees.
    [on_call] = row["on_call"]
    other = RESPONDER_USER_ID if on_call == ADMIN_USER_ID else ADMIN_USER_ID
    frozen.add_override(CHECKOUT_SCHEDULE_ID, "POVR002", NOW - timedelta(hours=1), NOW + timedelta(hours=1), other)
    [row] = fetch(live_connection, schedule_ids=[CHECKOUT_SCHEDULE_ID]).snapshot
    assert row["agrees"] is False and row["live_on_call"] == [other] and row["on_call"] == [on_call]


@pytest.mark.parametrize(
    ("kwargs", "window", "words"),
    [
        ({"since": NOW, "until": NOW + timedelta(days=91)}, (NOW, NOW + timedelta(days=90)), "at most 90 days"),
        (
            {"since": NOW + timedelta(days=60), "until": NOW + timedelta(days=95)},
            (NOW + timedelta(days=60), NOW + timedelta(days=90)),
            "90 days ahead",
        ),
        ({"since": NOW, "until": NOW - timedelta(hours=1)}, (NOW, NOW), "before since"),
    ],
)
def test_a_window_pagerduty_cannot_compute_is_narrowed_and_the_answer_says_so(
    live_connection, frozen, kwargs, window, words
):
    live = fetch(live_connection, **kwargs)
    assert (live.since, live.until) == window
    assert any(words in note for note in live.notes)
    asked = next(r for r in frozen.state.requests if r["path"] == "/oncalls")
    assert asked["query"]["since"] == [iso(window[0])] and asked["query"]["until"] == [iso(window[1])]


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"since": NOW.replace(tzinfo=None)}, "since", "zone"),
        ({"schedule_ids": ["nope"]}, "schedule_ids", "Not PagerDuty ids"),
        ({"escalation_policy_ids": [f"PEP{i:04d}" for i in range(51)]}, "escalation_policy_ids", "At most 50"),
    ],
)
def test_bad_windows_and_ids_are_refused_before_asking_pagerduty(live_connection, frozen, kwargs, field, words):
    frozen.state.reset_requests()
    with pytest.raises(DomainError, match=words) as raised:
        fetch(live_connection, **kwargs)
    assert raised.value.field == field
    assert frozen.state.requests == []


# --- the API door: GET /api/v1/oncall/now/ --------------------------------------------------------------


@pytest.fixture
def stand_in(db):
    """A stand-in on the real clock: the API computes "now" itself."""
    stand_in = Frozen(None)
    with stand_in.server.start():
        yield stand_in


@pytest.fixture
def api_connection(stand_in, make_client):
    connection = connection_upsert(
        name="default", api_key=TOKEN, from_email="sre@example.com", api_url=stand_in.server.url
    )
    run = services.sync_run_create(connection=connection, options={})
    run = services.sync_run_plan(sync_run_id=run.pk, client=make_client(connection))
    services.sync_run_request_apply(sync_run_id=run.pk)
    services.sync_run_apply(sync_run_id=run.pk)
    return connection


def viewer() -> APIClient:
    user, _ = User.objects.get_or_create(username="viewer")
    user.groups.add(Group.objects.get(name="Viewers"))
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_api_now_answers_live_with_gaps_people_and_the_snapshot(api_connection, stand_in, fast_retries):
    body = viewer().get("/api/v1/oncall/now/", {"escalation_policy_ids": CHECKOUT_ESCALATION_POLICY_ID}).json()
    assert body["source"] == "pagerduty" and body["since"] == body["until"]
    levels = sorted({(e["escalation_level"], e["user"]["id"]) for e in body["oncalls"]})
    assert (2, RESPONDER_USER_ID) in levels and any(level == 1 for level, _ in levels)
    assert {p["user"]["id"] for p in body["people"]} == {uid for _, uid in levels}
    assert body["gaps"] == [] and body["snapshot"][0]["schedule"]["id"] == CHECKOUT_SCHEDULE_ID
    assert OncallSchedule.objects.get(pagerduty_id=CHECKOUT_SCHEDULE_ID).synced_at is not None


def test_api_now_flags_a_gap(api_connection, stand_in, fast_retries):
    with stand_in.state.lock:
        stand_in.state.schedules[CHECKOUT_SCHEDULE_ID]["schedule_layers"][0]["users"] = []
    body = viewer().get("/api/v1/oncall/now/", {"escalation_policy_ids[]": CHECKOUT_ESCALATION_POLICY_ID}).json()
    gaps = {(g["kind"], (g.get("schedule") or {}).get("id") or g.get("escalation_level")) for g in body["gaps"]}
    assert gaps == {("schedule", CHECKOUT_SCHEDULE_ID), ("escalation_level", 1)}


def test_api_now_narrows_a_long_window_and_refuses_what_is_not_a_time(api_connection, stand_in, fast_retries):
    since = datetime.now(UTC).replace(microsecond=0)
    response = viewer().get("/api/v1/oncall/now/", {"since": iso(since), "until": iso(since + timedelta(days=100))})
    assert response.status_code == 200
    body = response.json()
    assert body["until"] == iso(since + timedelta(days=90)) and any("90 days" in n for n in body["notes"])
    response = viewer().get("/api/v1/oncall/now/", {"since": "tomorrow"})
    assert response.status_code == 400 and "ISO 8601" in response.json()["message"]
    response = viewer().get("/api/v1/oncall/now/", {"connection": "nope"})
    assert response.status_code == 404 and "No PagerDuty connection" in response.json()["message"]


def test_api_now_when_pagerduty_fails_answers_the_imported_snapshot_and_why(
    api_connection, stand_in, fast_retries, settings
):
    settings.PAGERDUTY_MAX_ATTEMPTS = 2
    stand_in.state.add_script({"method": "GET", "path": "/oncalls", "status": 503, "times": 2})
    response = viewer().get("/api/v1/oncall/now/")
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "snapshot" and body["oncalls"] == [] and body["fetched_at"] is None
    assert "PagerDuty did not answer" in body["notes"][0] and "503" in body["notes"][0]
    snapshot = {row["schedule"]["id"]: row for row in body["snapshot"]}
    assert snapshot[CHECKOUT_SCHEDULE_ID]["imported"] is True


def test_api_now_waits_seconds_not_minutes_when_pagerduty_hangs(api_connection, stand_in, settings):
    # A page someone waits on: two short attempts, not the five 10-second tries a worker's step gets.
    settings.PAGERDUTY_INTERACTIVE_TIMEOUT_SECONDS = 0.3
    assert settings.PAGERDUTY_MAX_ATTEMPTS == 5
    stand_in.state.reset_requests()
    stand_in.state.add_script({"method": "GET", "path": "/oncalls", "status": 503, "delay_ms": 1500, "times": 5})
    response = viewer().get("/api/v1/oncall/now/")
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "snapshot" and "PagerDuty did not answer" in body["notes"][0]
    assert "timeout" in body["notes"][0]
    assert [r["path"] for r in stand_in.state.requests].count("/oncalls") == 2


def test_api_now_needs_the_permission_to_read_oncall_data(api_connection, stand_in):
    stand_in.state.reset_requests()
    assert APIClient().get("/api/v1/oncall/now/").status_code in (401, 403)
    nobody = APIClient()
    nobody.force_authenticate(User.objects.create_user("nobody", password="pw-123456789"))
    assert nobody.get("/api/v1/oncall/now/").status_code == 403
    assert stand_in.state.requests == []
