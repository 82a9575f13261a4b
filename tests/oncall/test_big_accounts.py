"""The "done means" sizes, against the stand-in's realistic accounts (names in many scripts, accents,
one-word names, bots, a shared email domain, teams of very uneven size, people in no team).
Requests are counted by the stand-in, not by us."""

import math

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext

from apps.oncall.models import OncallSchedule, OncallTeam, OncallUser, SyncRun, TeamMembership

BIG = {"teams": 150, "schedules": 600, "escalation_policies": 300, "services": 400}


pytestmark = pytest.mark.scale


def minimum_requests(state, resources=("users", "teams", "schedules", "escalation_policies", "services")) -> int:
    """One page per 100 objects of each list, plus one read per schedule (classic and v3)."""
    counts = state.counts()
    total = sum(math.ceil(counts[r] / 100) for r in resources)
    if "schedules" in resources:
        total += counts["schedules"] + math.ceil(counts["schedules_v3"] / 100) + counts["schedules_v3"]
    return total


def pages(state) -> int:
    counts = state.counts()
    return sum(math.ceil(counts[r] / 100) for r in ("users", "teams", "schedules", "escalation_policies", "services"))


def assert_offsets_within_the_cap(requests):
    for request in requests:
        offset = int((request["query"].get("offset") or ["0"])[0])
        assert offset + int((request["query"].get("limit") or ["25"])[0]) <= 10_000


def test_9000_users_at_the_minimum_of_requests_and_queries_per_page(sandbox_connection, plan_run, apply_run, sandbox):
    state = sandbox.seed(users=9000, **BIG)
    state.reset_requests()
    with CaptureQueriesContext(db) as planning:
        run = plan_run(sandbox_connection)
    assert run.status == SyncRun.Status.PLANNED, run.error
    made = len(state.requests)
    assert made == minimum_requests(state), (made, minimum_requests(state))
    assert run.plan["fetch"]["requests"] == made and run.plan["fetch"]["minimum"] == minimum_requests(state)
    # Reading our (empty) tables and storing the plan: a handful of queries, plus throttled progress writes.
    assert len(planning) <= 40 + run.plan["fetch"]["requests"] // 10

    with CaptureQueriesContext(db) as applying:
        run = apply_run(run)
    assert run.status == SyncRun.Status.APPLIED, run.error
    assert OncallUser.objects.count() == 9000
    assert OncallSchedule.objects.count() == 600 + state.counts()["schedules_v3"]
    # Bounded per page of 100, whatever the page holds (9,000 users + memberships + layers + entries …).
    assert len(applying) <= 16 * pages(state) + 40, len(applying)

    with CaptureQueriesContext(db) as replanning:
        again = plan_run(sandbox_connection)
    assert all(s["counts"]["update"] == s["counts"]["create"] == 0 for s in again.plan["resources"].values())
    # Re-reading 10,000+ rows with their children: chunks of 2,000, not one query per object.
    assert len(replanning) <= 60 + again.plan["fetch"]["requests"] // 10, len(replanning)


def test_realistic_12000_users_import_completely_within_1_3_times_the_minimum(
    sandbox_connection, plan_run, apply_run, sandbox
):
    state = sandbox.seed(users=12_000, **BIG, seed=42)
    state.reset_requests()
    run = plan_run(sandbox_connection)
    assert run.status == SyncRun.Status.PLANNED, run.error
    made = len(state.requests)
    assert made <= 1.3 * minimum_requests(state), (made, minimum_requests(state))
    users = run.plan["fetch"]["by_resource"]["users"]
    assert users["partitioned"] and users["total"] == users["objects"] == 12_000 and users["unreachable"] == 0
    # The users past the cap cost at most 30 % over their own minimum, too.
    assert users["requests"] <= 1.3 * math.ceil(12_000 / 100), users
    assert "incomplete" not in [w["code"] for w in run.plan["warnings"]]
    assert_offsets_within_the_cap(state.requests)

    run = apply_run(run)
    assert run.status == SyncRun.Status.APPLIED, run.error
    assert set(OncallUser.objects.values_list("pagerduty_id", flat=True)) == set(state.users)
    expected_memberships = sum(len(u["teams"]) for u in state.users.values())
    assert TeamMembership.objects.count() == expected_memberships
    assert run.report["fetch"]["by_resource"]["users"]["extra_requests"] == users["extra_requests"]


@pytest.mark.parametrize(("users", "teams", "seed"), [(15_000, 60, 7), (10_400, 300, 3)])
def test_other_accounts_past_the_cap_are_complete_too(
    sandbox_connection, plan_run, apply_run, sandbox, users, teams, seed
):
    """Not tuned to one list: other seeds, sizes and team counts."""
    state = sandbox.seed(users=users, teams=teams, schedules=20, escalation_policies=10, services=10, seed=seed)
    state.reset_requests()
    run = plan_run(sandbox_connection, resources=["teams", "users"])
    assert run.status == SyncRun.Status.PLANNED, run.error
    fetched = run.plan["fetch"]["by_resource"]["users"]
    assert fetched["objects"] == users and fetched["unreachable"] == 0
    assert fetched["requests"] <= 1.3 * math.ceil(users / 100), fetched
    assert_offsets_within_the_cap(state.requests)
    apply_run(run)
    assert OncallUser.objects.filter(connection=sandbox_connection).count() == users
    assert OncallTeam.objects.count() == teams
