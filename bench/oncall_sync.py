"""Benchmark: on-call sync of a realistic account from the PagerDuty stand-in.

    .venv/bin/python bench/oncall_sync.py [--users 9000] [--seed 42] [--teams 150] [--keep-db]

The stand-in's accounts are realistic (names in many scripts, accents, one-word names, bots, a shared
email domain, teams of very uneven size, people in no team); past 10,000 users the import partitions.

Uses a throwaway SQLite database under var/ (or DATABASE_URL when set: then it creates and drops
a `bench_oncall_…` database next to the configured one), starts the stand-in, plans and applies,
and prints requests made vs. the minimum, queries per 1,000 objects, and wall time.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("PAGERDUTY_ALLOWED_HOSTS", "127.0.0.1")  # the stand-in, on loopback

SIZES = {"teams": 150, "schedules": 600, "escalation_policies": 300, "services": 400}
TOKEN = "bench-token"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=9000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--teams", type=int, default=SIZES["teams"])
    parser.add_argument("--keep-db", action="store_true", help="leave the throwaway database behind")
    parser.add_argument(
        "--no-throttle",
        action="store_true",
        help="switch off the client's shared rate limiter (PAGERDUTY_RATE_LIMIT_PER_MINUTE) to time the work alone",
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.oncall import services
    from apps.oncall.models import SyncRun
    from apps.pagerduty.client import RetryPolicy
    from apps.pagerduty.services import connection_client, connection_upsert
    from apps.sandbox import SandboxServer, SandboxState, seed_account

    creation = connection.creation
    old_name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        name = str(Path(settings.VAR_DIR) / f"bench-oncall-{uuid.uuid4().hex[:8]}.sqlite3")
    else:
        name = f"bench_oncall_{uuid.uuid4().hex[:8]}"
    connection.settings_dict["TEST"]["NAME"] = name
    test_db = creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        sizes = {"users": args.users, **SIZES, "teams": args.teams}
        state = SandboxState(tokens={TOKEN}, rate_limit_per_minute=1_000_000, teams_ability=True)
        started = time.monotonic()
        seed_account(state, seed=args.seed, **sizes)
        seed_seconds = time.monotonic() - started
        with SandboxServer(state, host="127.0.0.1", port=0).start() as server:
            conn = connection_upsert(name="bench", api_key=TOKEN, from_email="sre@example.com", api_url=server.url)
            extra = {"throttle": None} if args.no_throttle else {}
            client = connection_client(connection=conn, retry=RetryPolicy(max_attempts=5), **extra)
            limit = "off" if client.throttle is None else f"{settings.PAGERDUTY_RATE_LIMIT_PER_MINUTE}/min"
            run = services.sync_run_create(connection=conn, options={}, trigger=SyncRun.Trigger.COMMAND)
            state.reset_requests()

            started = time.monotonic()
            throttled_before = client.throttled_seconds
            with CaptureQueriesContext(connection) as plan_queries:
                run = services.sync_run_plan(sync_run_id=run.pk, client=client)
            plan_seconds = time.monotonic() - started
            plan_throttled = client.throttled_seconds - throttled_before
            if run.status != SyncRun.Status.PLANNED:
                print(f"planning failed: {run.error}", file=sys.stderr)
                return 1
            requests_made = len(state.requests)

            services.sync_run_request_apply(sync_run_id=run.pk)
            started = time.monotonic()
            with CaptureQueriesContext(connection) as apply_queries:
                run = services.sync_run_apply(sync_run_id=run.pk)
            apply_seconds = time.monotonic() - started
            if run.status != SyncRun.Status.APPLIED:
                print(f"apply failed: {run.error}", file=sys.stderr)
                return 1

            # The same account again: everything unchanged, so the apply should write nothing.
            rerun = services.sync_run_create(connection=conn, options={}, trigger=SyncRun.Trigger.COMMAND)
            started = time.monotonic()
            with CaptureQueriesContext(connection) as replan_queries:
                rerun = services.sync_run_plan(sync_run_id=rerun.pk, client=client)
            replan_seconds = time.monotonic() - started
            services.sync_run_request_apply(sync_run_id=rerun.pk)
            started = time.monotonic()
            with CaptureQueriesContext(connection) as reapply_queries:
                rerun = services.sync_run_apply(sync_run_id=rerun.pk)
            reapply_seconds = time.monotonic() - started

        v3 = state.counts()["schedules_v3"]
        minimum = sum(math.ceil(n / 100) for n in sizes.values()) + sizes["schedules"] + math.ceil(v3 / 100) + v3
        objects = sum(sizes.values()) + v3
        pages = sum(math.ceil(n / 100) for n in sizes.values()) + math.ceil(v3 / 100)
        users = run.plan["fetch"]["by_resource"]["users"]
        users_minimum = math.ceil(sizes["users"] / 100)
        changed = sum(r["created"] + r["updated"] for r in rerun.report["resources"].values())
        print(
            f"on-call sync benchmark — {platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, database {connection.vendor}"
        )
        no_team = sum(1 for u in state.users.values() if not u["teams"])
        print(
            f"account: {', '.join(f'{n:,} {k}' for k, n in sizes.items())}, {v3} v3 schedules; seed {args.seed} "
            f"(seeded in {seed_seconds:.1f} s); {no_team:,} users in no team, largest team "
            f"{max(len(m) for m in state.team_members.values()):,} members"
        )
        print(f"requests made:        {requests_made}")
        print(
            f"minimum:              {minimum}  (ceil(n/100) list pages per type, classic and v3 schedules, "
            "+ one read per schedule)"
        )
        print(f"ratio:                {requests_made / minimum:.3f}")
        print(
            f"users:                {users['requests']} requests for {users['objects']:,} of {users['total']:,} "
            f"(minimum {users_minimum}, ratio {users['requests'] / users_minimum:.3f}); first 10,000 by offset "
            f"{users['prefix_requests']}, partitions {users['phase_requests'] or '—'}, partitions re-read from the "
            f"start {users['head_reads']}, unreachable {users['unreachable']}"
        )
        print(
            f"plan:                 {plan_seconds:.1f} s, {len(plan_queries)} queries "
            f"(client rate limiter {limit}; {plan_throttled:.1f} s of it spent waiting for budget)"
        )
        print(
            f"apply:                {apply_seconds:.1f} s, {len(apply_queries)} queries for {objects:,} objects "
            f"in {pages} pages = {1000 * len(apply_queries) / objects:.1f} queries per 1,000 objects"
        )
        print(
            f"re-sync, unchanged:   plan {replan_seconds:.1f} s ({len(replan_queries)} queries), "
            f"apply {reapply_seconds:.1f} s ({len(reapply_queries)} queries, {changed} objects written)"
        )
        return 0
    finally:
        if args.keep_db:
            print(f"kept database {test_db}")
        else:
            creation.destroy_test_db(old_name, verbosity=0, keepdb=False)


if __name__ == "__main__":
    sys.exit(main())
