"""Runbook engine benchmark on the real stack: PostgreSQL, Redis, Celery worker processes and the
PagerDuty stand-in over loopback HTTP. Prints figures; asserts nothing.

    make bench            # or: .venv/bin/python bench/run.py [--latency 500 --storm 1000 --limited 100]

Falls back to SQLite and the filesystem broker (with a warning) when PostgreSQL or Redis is absent.
"""

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN_ID = uuid.uuid4().hex[:8]
WORKER_CONCURRENCY = 4


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def prepare_environment(var_dir: Path) -> dict:
    env = {"VAR_DIR": str(var_dir), "CELERY_QUEUE": f"bench-{RUN_ID}", "LOG_LEVEL": "WARNING"}
    if reachable(5432):
        import psycopg

        name = f"bench_runbooks_{RUN_ID}"
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{name}"
        env["_BENCH_PG_DB"] = name
    else:
        print("warning: PostgreSQL not reachable on 127.0.0.1:5432 — using SQLite (slower, not the production setup)")
    if reachable(6379):
        env["REDIS_URL"] = env["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/0"
    else:
        print("warning: Redis not reachable on 127.0.0.1:6379 — using the filesystem broker (polls once a second)")
    return env


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Workers:
    def __init__(self, env: dict, log: Path):
        self.env, self.log, self.process = env, log, None

    def start(self, **extra_env):
        env = {**os.environ, **self.env, **{k: str(v) for k, v in extra_env.items()}}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(WORKER_CONCURRENCY),
                "-Q",
                self.env["CELERY_QUEUE"],
                "--loglevel",
                "INFO",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while self.log.read_text(errors="replace").count(" ready.") < self.starts + 1:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"celery worker did not start; see {self.log}")
            time.sleep(0.2)
        self.starts += 1

    starts = 0

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=int, default=500, help="incidents for the latency measurement")
    parser.add_argument("--storm", type=int, default=1000, help="incidents in the storm (3 steps each)")
    parser.add_argument("--limited", type=int, default=100, help="incidents in the storm at PagerDuty's real limit")
    args = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=ROOT / "var" if (ROOT / "var").exists() else None))
    env = prepare_environment(var_dir)
    os.environ.update(env)
    # The bench process and the workers must agree; the shared client budget is set per phase.
    os.environ["PAGERDUTY_RATE_LIMIT_PER_MINUTE"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    workers = Workers(env, var_dir / "worker.log")
    try:
        run(args, workers)
    finally:
        workers.stop()
        if env.get("_BENCH_PG_DB"):
            from django.db import connections

            connections.close_all()
            drop_database(env["_BENCH_PG_DB"])


def run(args, workers):
    import requests
    from django.conf import settings

    from apps.incidents.services import incident_create, incident_update
    from apps.pagerduty.sandbox import SandboxServer, SandboxState, seed_account
    from apps.pagerduty.services import connection_upsert
    from apps.runbooks.models import FINISHED, RunbookRun
    from apps.runbooks.services import runbook_upsert_from_spec

    state = SandboxState(tokens={"sandbox-token"}, rate_limit_per_minute=1_000_000, contract=False)
    seed_account(state, users=50, teams=5, schedules=5, escalation_policies=5, services=5, seed=1)
    server = SandboxServer(state, host="127.0.0.1", port=0).start()
    connection = connection_upsert(
        name="default", api_key="sandbox-token", from_email="sre@example.com", api_url=server.url
    )
    connection.service_mappings.create(service="", pagerduty_service_id="PSVC001")
    common = {"from": "sre@example.com"}
    runbook_upsert_from_spec(
        spec={
            "slug": "bench-page",
            "name": "bench page",
            "trigger": {"on": "status_changed", "to": ["Investigating"]},
            "steps": [
                {
                    "key": "page",
                    "action": "pagerduty.create_incident",
                    "with": {**common, "responder_id": "PEP0001", "responder_type": "escalation_policy"},
                }
            ],
        }
    )
    runbook_upsert_from_spec(
        spec={
            "slug": "bench-storm",
            "name": "bench storm",
            "trigger": {"on": "status_changed", "to": ["Identified"]},
            "steps": [
                {"key": "page", "action": "pagerduty.create_incident", "with": {**common}},
                {
                    "key": "escalate",
                    "action": "pagerduty.add_responder",
                    "with": {
                        **common,
                        "incident_id": "{{steps.page.incident_id}}",
                        "responder_id": "PRESPND",
                        "responder_type": "user",
                        "requester_id": "PSREADM",
                    },
                },
                {
                    "key": "close",
                    "action": "pagerduty.resolve_incident",
                    "with": {**common, "incident_id": "{{steps.page.incident_id}}"},
                },
            ],
        }
    )
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(
        f"runbook engine benchmark — {date.today()} — CPython {platform.python_version()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, database {db}, "
        f"broker {settings.CELERY_BROKER_URL.split(':')[0]}, {WORKER_CONCURRENCY} worker processes"
    )
    workers.start(PAGERDUTY_RATE_LIMIT_PER_MINUTE=0)

    # 1. Latency: one status change at a time, from commit to PagerDuty receiving POST /incidents.
    incidents = [
        incident_create(title=f"latency {n}", severity=1, owner="sre@example.com") for n in range(args.latency)
    ]
    latencies, seen = [], 0
    for incident in incidents:
        key = f"ai-sre-{incident.id}"
        started = time.monotonic()
        incident_update(incident_id=incident.pk, status="Investigating")
        while True:
            new = state.requests[seen:]
            hit = next(
                (
                    r
                    for r in new
                    if r["method"] == "POST" and (r.get("json") or {}).get("incident", {}).get("incident_key") == key
                ),
                None,
            )
            if hit is not None:
                latencies.append((time.monotonic() - started) * 1000)
                seen = len(state.requests)
                break
            if time.monotonic() - started > 30:
                raise SystemExit(f"no POST /incidents for {key} after 30 s")
            time.sleep(0.0005)
    print(
        f"latency status change → PagerDuty request, {len(latencies)} incidents one at a time: "
        f"p50 {percentile(latencies, 50):.1f} ms, p95 {percentile(latencies, 95):.1f} ms, p99 {percentile(latencies, 99):.1f} ms"
    )

    def storm(count: int, label: str) -> float:
        state.reset()
        storm_incidents = [
            incident_create(title=f"{label} {n}", severity=2, owner="sre@example.com") for n in range(count)
        ]
        ids = [i.pk for i in storm_incidents]
        started = time.monotonic()
        for incident_id in ids:
            incident_update(incident_id=incident_id, status="Identified")
        while RunbookRun.objects.filter(incident_id__in=ids, status__in=FINISHED).count() < count:
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        runs = RunbookRun.objects.filter(incident_id__in=ids)
        failed = runs.exclude(status="succeeded").count()
        created = [
            r for r in state.requests if r["method"] == "POST" and r["path"] == "/incidents" and r["status"] == 201
        ]
        keys = [r["json"]["incident"]["incident_key"] for r in created]
        duplicates = len(keys) - len(set(keys))  # a second PagerDuty incident for the same one of ours
        throttled = sum(1 for r in state.requests if r["status"] == 429)
        total = len(state.requests)
        print(
            f"{label}: {count} incidents × 3 steps in {elapsed:.1f} s = {3 * count / elapsed:.1f} steps/s; "
            f"runs failed {failed}; duplicates {duplicates}; 429s seen {throttled}; "
            f"HTTP requests {total} for a minimum of {3 * count} (×{total / (3 * count):.2f}); "
            f"PagerDuty incidents {len(state.incidents)}"
        )
        return 3 * count / elapsed

    # 2. Storm with the limits raised: what the engine itself can do on this machine.
    ours = storm(args.storm, "storm (rate limits raised)")

    # 3. Floor: the same requests from a bare requests loop, same concurrency, no engine at all.
    state.reset()
    headers = {
        "Authorization": "Token token=sandbox-token",
        "Accept": "application/vnd.pagerduty+json;version=2",
        "Content-Type": "application/json",
        "From": "sre@example.com",
    }
    local = threading.local()

    def bare(n):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        made = session.post(
            f"{server.url}/incidents",
            headers=headers,
            timeout=10,
            json={
                "incident": {
                    "type": "incident",
                    "title": f"floor {n}",
                    "service": {"id": "PSVC001", "type": "service_reference"},
                    "urgency": "low",
                    "incident_key": f"floor-{RUN_ID}-{n}",
                }
            },
        ).json()["incident"]["id"]
        session.post(
            f"{server.url}/incidents/{made}/responder_requests",
            headers=headers,
            timeout=10,
            json={
                "requester_id": "PSREADM",
                "message": "m",
                "responder_request_targets": [
                    {"responder_request_target": {"id": "PRESPND", "type": "user_reference"}}
                ],
            },
        )
        session.put(
            f"{server.url}/incidents/{made}",
            headers=headers,
            timeout=10,
            json={"incident": {"type": "incident_reference", "status": "resolved"}},
        )

    started = time.monotonic()
    with ThreadPoolExecutor(WORKER_CONCURRENCY) as pool:
        list(pool.map(bare, range(args.storm)))
    floor = 3 * args.storm / (time.monotonic() - started)
    print(
        f"floor: the same {3 * args.storm} requests from a bare requests loop ({WORKER_CONCURRENCY} threads): "
        f"{floor:.1f} requests/s; engine/floor = {ours / floor:.2f}"
    )

    # 4. At PagerDuty's real limit (960/min per key) with the shared client budget on (900/min, burst 20).
    workers.stop()
    workers.start(PAGERDUTY_RATE_LIMIT_PER_MINUTE=900)
    state.rate_limit_per_minute = 960
    storm(args.limited, "storm at PagerDuty's limit (960/min, shared budget 900/min)")
    server.stop()


if __name__ == "__main__":
    main()
