"""The importer's HTTP behaviour, against `responses`: parameters, retries, 402, the offset cap."""

import json
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
import responses

from apps.oncall.importer import RESOURCE_TYPES, FetchOptions, Importer
from apps.pagerduty.client import PagerDutyClient, RetryPolicy
from apps.pagerduty.errors import PagerDutyPaymentRequired
from tests.oncall.conftest import NOW

URL = "https://pd.test"


def client(sleeps):
    return PagerDutyClient(
        api_key="k-123",
        api_url=URL,
        retry=RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_cap=0.05),
        sleep=sleeps.append,
        timeout=5,
    )


def options(*resources, **kwargs):
    return FetchOptions(resources=resources or RESOURCE_TYPES, since=NOW, until=NOW + timedelta(days=14), **kwargs)


def page(key, items, *, total=None, more=False):
    return {key: items, "limit": 100, "offset": 0, "more": more, "total": total}


def query(call):
    return parse_qs(urlparse(call.request.url).query)


@pytest.fixture
def pd():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def test_lists_at_limit_100_with_total_and_includes(pd):
    pd.get(f"{URL}/users", json=page("users", [{"id": "PU1", "name": "A", "teams": []}], total=1))
    snap = Importer(client([])).fetch(options("users"))
    q = query(pd.calls[0])
    assert q["limit"] == ["100"] and q["offset"] == ["0"] and q["total"] == ["true"]
    assert q["include[]"] == ["contact_methods", "teams"]
    assert [u["id"] for u in snap.objects["users"]] == ["PU1"]
    assert snap.fetch_report()["requests"] == 1 and snap.fetch_report()["minimum"] == 1


def test_pages_until_more_is_false(pd):
    first = [{"id": f"PU{i:04d}", "name": f"u{i}"} for i in range(100)]
    pd.get(f"{URL}/users", json=page("users", first, total=150, more=True))
    pd.get(f"{URL}/users", json=page("users", [{"id": "PU9999", "name": "last"}], total=150))
    snap = Importer(client([])).fetch(options("users"))
    assert [query(c)["offset"] for c in pd.calls] == [["0"], ["100"]]
    assert len(snap.objects["users"]) == 101


def test_each_schedule_fetched_once_with_a_fixed_utc_window(pd):
    pd.get(f"{URL}/schedules", json=page("schedules", [{"id": "PS1", "name": "S1"}, {"id": "PS2", "name": "S2"}]))
    for sid in ("PS1", "PS2"):
        pd.get(f"{URL}/schedules/{sid}", json={"schedule": {"id": sid, "name": sid, "schedule_layers": []}})
    pd.get(f"{URL}/v3/schedules", json=page("schedules", [], total=0))
    Importer(client([])).fetch(options("schedules"))
    details = [c for c in pd.calls if re.search(r"/schedules/PS\d", c.request.url)]
    assert len(details) == 2
    for call in details:
        q = query(call)
        assert q["since"] == ["2026-11-23T10:30:00Z"] and q["until"] == ["2026-12-07T10:30:00Z"]
        assert q["time_zone"] == ["UTC"]


def test_429_is_retried_after_ratelimit_reset(pd):
    pd.get(
        f"{URL}/services",
        status=429,
        json={"error": {"message": "Rate Limit Exceeded", "code": 2020}},
        headers={"ratelimit-limit": "960", "ratelimit-remaining": "0", "ratelimit-reset": "7"},
    )
    pd.get(f"{URL}/services", json=page("services", [{"id": "PSV1", "name": "API"}], total=1))
    sleeps = []
    snap = Importer(client(sleeps)).fetch(options("services"))
    assert sleeps == [7.0]
    assert [s["id"] for s in snap.objects["services"]] == ["PSV1"]
    # The retry is a request made, and counted as one.
    assert snap.requests_made == 2


def test_no_teams_ability_is_a_warning_and_the_rest_proceeds(pd):
    pd.get(
        f"{URL}/teams",
        status=402,
        json={"error": {"message": "Account does not have the abilities to perform the action", "code": 2014}},
    )
    pd.get(f"{URL}/users", json=page("users", [{"id": "PU1", "name": "A"}], total=1))
    snap = Importer(client([])).fetch(options("teams", "users"))
    assert snap.teams_ability is False
    assert snap.objects["teams"] == [] and snap.complete["teams"] is False
    assert [w["code"] for w in snap.warnings] == ["teams_ability_missing"]
    assert [u["id"] for u in snap.objects["users"]] == ["PU1"]


def test_team_filter_without_teams_ability_is_refused(pd):
    pd.get(f"{URL}/users", status=402, json={"error": {"message": "no ability", "code": 2014}})
    with pytest.raises(PagerDutyPaymentRequired, match="teams ability"):
        Importer(client([])).fetch(options("users", team_ids=("PTEAM01",)))


def test_what_cannot_be_reached_past_the_cap_is_reported(pd):
    """10,050 users, all named alike and in no team: no filter splits them, and the snapshot says so."""
    everyone = [{"id": f"P{i:06d}", "name": "Zed", "email": "zed@example.com"} for i in range(10_050)]

    def users(request):
        q = parse_qs(urlparse(request.url).query)
        offset, limit = int(q["offset"][0]), int(q["limit"][0])
        if offset + limit > 10_000:
            return 400, {}, '{"error": {"message": "Offset + limit must not exceed 10000", "code": 2001}}'
        text = (q.get("query") or [""])[0].lower()
        matching = [u for u in everyone if text in u["name"].lower() or text in u["email"]]
        body = page(
            "users", matching[offset : offset + limit], total=len(matching), more=offset + limit < len(matching)
        )
        return 200, {}, json.dumps(body)

    pd.add_callback(responses.GET, f"{URL}/users", callback=users)
    pd.get(f"{URL}/teams", json=page("teams", [], total=0))
    snap = Importer(client([])).fetch(options("users"))
    stats = snap.stats["users"]
    assert stats.partitioned and stats.unreachable == 10_050 - len(snap.objects["users"]) > 0
    assert snap.complete["users"] is False
    warning = next(w for w in snap.warnings if w["code"] == "incomplete")
    assert "10050" in warning["message"] and "missing" in warning["message"]
    # Bounded: the first 10,000 by offset (100 requests), then one probe per query that cannot help;
    # a query every name shares is not split further, so this stays far below 1,000 requests.
    assert snap.requests_made < 400


def test_v3_schedules_are_read_with_their_computed_shifts(pd):
    pd.get(f"{URL}/schedules", json=page("schedules", [], total=0))
    ref = {"id": "PV3A", "type": "schedule_v3_reference", "summary": "Shift based"}
    pd.get(f"{URL}/v3/schedules", json=page("schedules", [ref], total=1))
    shift = {
        "type": "computed_shift_assignment",
        "start_time": "2026-11-23T10:30:00Z",
        "end_time": "2026-11-24T10:30:00Z",
        "member": {"type": "user_member", "user_id": "PU1"},
        "source": {"type": "schedule_rotation", "rotation_id": "R1"},
    }
    detail = {
        "schedule": {
            "id": "PV3A",
            "type": "schedule_v3",
            "name": "Shift based",
            "time_zone": "UTC",
            "final_schedule": {
                "type": "final_schedule",
                "rendered_coverage_percentage": 100,
                "computed_shift_assignments": [shift],
            },
        }
    }
    pd.get(f"{URL}/v3/schedules/PV3A", json=detail)
    snap = Importer(client([])).fetch(options("schedules"))
    [v3] = snap.objects["schedules"]
    assert v3["type"] == "schedule_v3" and snap.v3_listed is True
    q = query(pd.calls[-1])
    assert q["include[]"] == ["final_schedule"] and q["since"] == ["2026-11-23T10:30:00Z"] and q["time_zone"] == ["UTC"]
    assert snap.fetch_report()["minimum"] == 1 + 1 + 1


@pytest.mark.parametrize("status", [403, 404])
def test_v3_schedules_unavailable_is_said_not_skipped(pd, status):
    pd.get(f"{URL}/schedules", json=page("schedules", [], total=0))
    pd.get(f"{URL}/v3/schedules", status=status, json={"error": {"message": "Not Found", "code": 2100}})
    snap = Importer(client([])).fetch(options("schedules"))
    assert snap.v3_listed is False
    [warning] = [w for w in snap.warnings if w["code"] == "schedule_v3_unavailable"]
    assert f"answered {status}" in warning["message"] and "not imported" in warning["message"]
