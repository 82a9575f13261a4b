"""The "done means" sizes: 9,000 users at ≤ 1.1× the minimum requests, and 12,000 users past the
10,000-offset cap, imported completely. Requests are counted by the stand-in, not by us."""

import math

from django.db import connection as db
from django.test.utils import CaptureQueriesContext

from apps.oncall.models import OncallSchedule, OncallTeam, OncallUser, SyncRun, TeamMembership

BIG = {"teams": 150, "schedules": 600, "escalation_policies": 300, "services": 400}


def minimum_requests(users: int) -> int:
    sizes = {"users": users, **BIG}
    return sum(math.ceil(n / 100) for n in sizes.values()) + BIG["schedules"]


def pages(users: int) -> int:
    return sum(math.ceil(n / 100) for n in {"users": users, **BIG}.values())


def test_9000_users_at_the_minimum_of_requests_and_queries_per_page(sandbox_connection, plan_run, apply_run, sandbox):
    sandbox.seed(users=9000, **BIG)
    sandbox.state.reset_requests()
    with CaptureQueriesContext(db) as planning:
        run = plan_run(sandbox_connection)
    assert run.status == SyncRun.Status.PLANNED, run.error
    made = len(sandbox.state.requests)
    assert made <= 1.1 * minimum_requests(9000), (made, minimum_requests(9000))
    assert run.plan["fetch"]["requests"] == made and run.plan["fetch"]["minimum"] == minimum_requests(9000)
    # Reading our (empty) tables and storing the plan: a handful of queries, plus throttled progress writes.
    assert len(planning) <= 40 + run.plan["fetch"]["requests"] // 10

    with CaptureQueriesContext(db) as applying:
        run = apply_run(run)
    assert run.status == SyncRun.Status.APPLIED, run.error
    assert OncallUser.objects.count() == 9000 and OncallSchedule.objects.count() == 600
    # Bounded per page of 100, whatever the page holds (9,000 users + memberships + layers + entries …).
    assert len(applying) <= 16 * pages(9000) + 40, len(applying)

    with CaptureQueriesContext(db) as replanning:
        again = plan_run(sandbox_connection)
    assert all(s["counts"]["update"] == s["counts"]["create"] == 0 for s in again.plan["resources"].values())
    # Re-reading 10,000+ rows with their children: chunks of 2,000, not one query per object.
    assert len(replanning) <= 60 + again.plan["fetch"]["requests"] // 10, len(replanning)


def test_12000_users_past_the_offset_cap_are_all_imported(sandbox_connection, plan_run, apply_run, sandbox):
    sandbox.seed(users=12_000, teams=150, schedules=20, escalation_policies=10, services=10)
    run = plan_run(sandbox_connection, resources=["teams", "users"])
    assert run.status == SyncRun.Status.PLANNED, run.error
    users = run.plan["fetch"]["by_resource"]["users"]
    assert users["partitioned"] and users["total"] == users["objects"] == 12_000 and users["unreachable"] == 0
    assert users["partition_requests"] > 0 and users["extra_requests"] == users["requests"] - 120
    assert "incomplete" not in [w["code"] for w in run.plan["warnings"]]
    # No offset past the cap was ever asked for.
    for request in sandbox.state.requests:
        offset = int((request["query"].get("offset") or ["0"])[0])
        assert offset + int((request["query"].get("limit") or ["25"])[0]) <= 10_000

    run = apply_run(run)
    assert OncallUser.objects.filter(connection=sandbox_connection).count() == 12_000
    assert OncallTeam.objects.count() == 150
    expected_memberships = sum(len(u["teams"]) for u in sandbox.state.users.values())
    assert TeamMembership.objects.count() == expected_memberships
    assert run.report["fetch"]["by_resource"]["users"]["extra_requests"] == users["extra_requests"]
