"""Reliability drills on the real stack: a throwaway PostgreSQL database, a private Redis, the
Procfile's web (gunicorn), worker and beat processes under bin/respawn (as `make run` runs them)
and the PagerDuty stand-in having a bad day. Prints figures; asserts nothing.

    make drill                                   # = .venv/bin/python bench/drill.py
    .venv/bin/python bench/drill.py --runs 50 --drills kill     # a quick look

Every drill sends status changes through the REST API (a 3-step runbook: create the PagerDuty
incident, add a responder requested by the incident owner's email — a look-up, then a write —,
resolve) while the stand-in is slow, fails a share of requests before acting and loses the answer
to some after acting; then:
  faults   — nothing else;
  kill     — worker processes are SIGKILLed again and again, pool processes and main processes;
  broker   — Redis is SIGKILLed and started again, empty (no persistence), several times.

Figures per drill: runs succeeded / failed (with the reason) / stuck, duplicate pages, orphaned
PagerDuty incidents, time to settle after the last disruption, the API's answers (500s), worker
restarts. Done means 0 duplicates, 0 orphans, 0 stuck, 0 × 500, runs failed only where PagerDuty
refused. Latest figures: docs/reliability.md.
"""

import argparse
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stack import Procfile, RedisServer, create_database, drop_database, free_port, three_step_runbook  # noqa: E402

RUN_ID = uuid.uuid4().hex[:8]
QUEUE = f"drill-{RUN_ID}"
TOKEN = f"drill-{RUN_ID}"
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
STUCK_AFTER = 240  # seconds without a run finishing before a drill gives up on the rest
# Shorter than production so a drill settles in minutes; the figures say how long it took.
ENGINE = {
    "RUNBOOK_RUN_LEASE_SECONDS": 20,
    "RUN_RECOVERY_INTERVAL": 5,
    "RUN_RECOVERY_PENDING_AFTER_SECONDS": 15,
    "PAGERDUTY_TIMEOUT_SECONDS": 5,
    "PAGERDUTY_BACKOFF_BASE_SECONDS": 0.5,
    "PAGERDUTY_BACKOFF_CAP_SECONDS": 4,
    "PAGERDUTY_RATE_LIMIT_PER_MINUTE": 0,
}
FAULTS = {"latency_ms": 150, "error_rate": 0.3, "error_statuses": [500, 502, 503], "lost_answer_rate": 0.05}
WORKERS, CONCURRENCY = 2, 2
REFUSED = re.compile(r"PagerDuty [45]\d\d: ")


def progress(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


class Stack:
    """Everything one `make drill` starts, stopped and removed at the end."""

    def __init__(self, var_dir: Path):
        self.var_dir = var_dir
        self.database = f"drill_runbooks_{RUN_ID}"
        self.redis = RedisServer(log=var_dir / "redis.log")
        self.web_port = free_port()
        self.env: dict = {}
        self.procs: Procfile | None = None
        self.sandbox = None
        self.state = None

    def start(self) -> None:
        self.redis.start()
        database_url = create_database(POSTGRES_URL, self.database)
        self.env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": self.redis.url,
            "CELERY_BROKER_URL": self.redis.url,
            "CELERY_QUEUE": QUEUE,
            "VAR_DIR": str(self.var_dir),
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            "RESPAWN_DELAY": "1",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            **{k: str(v) for k, v in ENGINE.items()},
        }
        os.environ.update(self.env)
        os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
        import django

        django.setup()
        from django.core.management import call_command

        from apps.sandbox import SandboxServer, SandboxState, seed_account

        progress(f"migrating {database_url}")
        call_command("migrate", verbosity=0)
        self.state = SandboxState(tokens={TOKEN}, rate_limit_per_minute=1_000_000, contract=False)
        seed_account(self.state, users=20, teams=3, schedules=4, escalation_policies=3, services=4, seed=7)
        self.sandbox = SandboxServer(self.state, host="127.0.0.1", port=0).start()
        self.api_token = setup_data(self.sandbox.url)
        self.procs = Procfile(self.env, self.var_dir, respawn=True)
        progress("starting web, workers and beat (Procfile commands under bin/respawn)")
        self.procs.web(port=self.web_port)
        for n in range(WORKERS):
            self.procs.worker(f"worker{n}", queue=QUEUE, concurrency=CONCURRENCY)
        self.procs.beat()

    @property
    def workers(self) -> list[str]:
        return [f"worker{n}" for n in range(WORKERS)]

    def stop(self) -> None:
        if self.procs is not None:
            self.procs.stop()
        if self.sandbox is not None:
            self.sandbox.stop()
        if self.env:
            from django.db import connections

            connections.close_all()
            drop_database(POSTGRES_URL, self.database)
        self.redis.stop()


def setup_data(sandbox_url: str) -> str:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from apps.pagerduty.services import connection_upsert
    from apps.runbooks.services import runbook_upsert_from_spec

    connection = connection_upsert(name="default", api_key=TOKEN, from_email="sre@example.com", api_url=sandbox_url)
    connection.service_mappings.create(service="", pagerduty_service_id="PSVC001")
    # The requester is an email: the step looks it up (GET /users) before its write.
    spec = three_step_runbook(
        slug="drill",
        name="Drill: page, add a responder, resolve",
        to_status="Identified",
        requester_id="{{Activity.owner}}",
    )
    runbook_upsert_from_spec(spec=spec, comment="drill")
    user = get_user_model().objects.create_superuser("drill", password=uuid.uuid4().hex)
    return Token.objects.create(user=user).key


# --- one drill ---------------------------------------------------------------------------------------


class Api:
    """The REST API as a client sees it, counting every answer (and every failure to get one)."""

    def __init__(self, base: str, token: str):
        import requests

        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.answers: Counter = Counter()
        self.lock = threading.Lock()

    def call(self, method: str, path: str, body: dict) -> dict | None:
        import requests

        try:
            response = self.session.request(method, f"{self.base}{path}", json=body, timeout=30)
        except requests.RequestException as exc:
            with self.lock:
                self.answers[f"no answer ({type(exc).__name__})"] += 1
            return None
        with self.lock:
            self.answers[response.status_code] += 1
        return response.json() if response.headers.get("Content-Type", "").startswith("application/json") else None


def disrupt_kill(stack: Stack, stop: threading.Event, rng: random.Random, log: list) -> None:
    while not stop.wait(rng.uniform(2, 4)):
        name = rng.choice(stack.workers)
        pool, main = stack.procs.pool_pids(name), stack.procs.celery_pids(name)
        if pool and rng.random() < 0.7:
            victim, what = rng.choice(pool), "pool process"
        elif main:
            victim, what = main[0], "main process"
        else:
            continue
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            continue
        log.append((time.monotonic(), f"SIGKILL {name} {what}"))


def disrupt_broker(stack: Stack, stop: threading.Event, rng: random.Random, log: list) -> None:
    while not stop.wait(rng.uniform(4, 7)):
        down = rng.uniform(0.5, 3)
        stack.redis.restart(down_for=down)
        log.append((time.monotonic(), f"Redis SIGKILLed, back empty after {down:.1f} s"))


DISRUPTIONS = {"faults": None, "kill": disrupt_kill, "broker": disrupt_broker}


def run_drill(stack: Stack, name: str, runs: int, seed: int) -> dict:
    from apps.incidents.models import IncidentEvent
    from apps.runbooks.models import FINISHED, RunbookRun

    state = stack.state
    state.reset()
    state.set_faults({**FAULTS, "seed": seed})
    api = Api(f"http://127.0.0.1:{stack.web_port}", stack.api_token)
    ids = []
    for n in range(runs):
        created = api.call(
            "POST", "/api/v1/incidents/", {"title": f"{name} {n}", "severity": 2, "owner": "sre@example.com"}
        )
        ids.append(created["id"])
    while IncidentEvent.objects.filter(incident_id__in=ids, dispatched_at__isnull=True).exists():
        time.sleep(0.5)
    api.answers.clear()
    respawns_before = stack.procs.respawns()

    rng = random.Random(seed)
    stop = threading.Event()
    disruptions: list = []
    disrupt = DISRUPTIONS[name]
    thread = threading.Thread(target=disrupt, args=(stack, stop, rng, disruptions), daemon=True) if disrupt else None
    started = time.monotonic()
    if thread:
        thread.start()
    # Status changes arrive over about a minute, as in an incident storm, while the drill disrupts.
    pace = 60 / runs
    for incident_id in ids:
        api.call("PATCH", f"/api/v1/incidents/{incident_id}/", {"status": "Identified"})
        time.sleep(pace)
    last_change = time.monotonic()
    if thread:
        time.sleep(10)  # disruptions go on a little after the last change
        stop.set()
        thread.join()
    last_disruption = max([at for at, _ in disruptions], default=None)

    finished, progressed, last_finish = -1, time.monotonic(), time.monotonic()
    run_rows = RunbookRun.objects.filter(incident_id__in=ids)
    while True:
        done = run_rows.filter(status__in=FINISHED).count()
        if done != finished:
            finished, progressed = done, time.monotonic()
            last_finish = progressed
        if done >= runs and run_rows.count() >= runs:
            break
        if time.monotonic() - progressed > STUCK_AFTER:
            break
        time.sleep(0.5)
    return {
        "name": name,
        "runs": runs,
        "elapsed": last_finish - started,
        "after_changes": last_finish - last_change,
        "after_disruption": None if last_disruption is None else last_finish - last_disruption,
        "disruptions": disruptions,
        "api": dict(api.answers),
        "respawns": stack.procs.respawns() - respawns_before,
        **outcome(stack, ids),
    }


def _reason(error: str) -> str:
    """A failed step's error, short: PagerDuty's own words, or why the outcome stayed unknown."""
    if error.startswith("Outcome unknown"):
        looked = re.search(r"looking it up failed: ([^)]*)", error)
        return "Outcome unknown" + (f" (look-up failed: {looked.group(1)})" if looked else "")
    return error.split(" — ")[0][:120]


def outcome(stack: Stack, ids: list) -> dict:
    from apps.runbooks.models import FINISHED, PagerDutyIncidentLink, RunbookRun

    runs = list(RunbookRun.objects.filter(incident_id__in=ids).prefetch_related("step_runs__exchanges"))
    succeeded = sum(1 for r in runs if r.status == "succeeded")
    stuck = len(ids) - sum(1 for r in runs if r.status in FINISHED)
    reasons, not_refused = Counter(), 0
    for run in runs:
        if run.status != "failed":
            continue
        step = next(s for s in run.step_runs.all() if s.status == "failed")
        # Refused: the step ended on PagerDuty's own error answer ("PagerDuty 503: …"), not on
        # "Outcome unknown", a connection error or an internal error.
        not_refused += not REFUSED.match(step.error)
        reasons[f"{step.key}: {_reason(step.error)}"] += 1
    with stack.state.lock:
        upstream = [i for i in stack.state.incidents.values() if i["incident_key"].startswith("ai-sre-")]
        requests_seen = list(stack.state.requests)
    ours = {f"ai-sre-{i}" for i in ids}
    upstream = [i for i in upstream if i["incident_key"] in ours]
    keys = Counter(i["incident_key"] for i in upstream)
    linked = set(
        PagerDutyIncidentLink.objects.filter(incident_id__in=ids).values_list("pagerduty_incident_id", flat=True)
    )
    return {
        "succeeded": succeeded,
        "failed": len(runs) - succeeded - sum(1 for r in runs if r.status not in FINISHED),
        "reasons": reasons,
        "failed_not_refused": not_refused,
        "stuck": stuck,
        "duplicate_incidents": sum(n - 1 for n in keys.values()),
        "duplicate_responders": sum(max(0, len(i["responder_requests"]) - 1) for i in upstream),
        "orphans": sum(1 for i in upstream if i["id"] not in linked),
        "left_open": sum(1 for i in upstream if i["status"] != "resolved"),
        "pd_requests": len(requests_seen),
        "pd_faulted": sum(1 for r in requests_seen if r["fault"] == "error_rate"),
        "pd_lost": sum(1 for r in requests_seen if r["fault"] == "lost_answer"),
    }


def report(r: dict) -> str:
    api = ", ".join(f"{k}: {v}" for k, v in sorted(r["api"].items(), key=str))
    settled = f"the last run finished {r['after_changes']:.0f} s after the last status change"
    if r["after_disruption"] is not None:
        settled += f", {r['after_disruption']:.0f} s after the last disruption"
    lines = [
        f"{r['name']}: {r['runs']} runs in {r['elapsed']:.0f} s; {settled}",
        f"    runs succeeded {r['succeeded']}, failed {r['failed']}, stuck {r['stuck']}",
        f"    duplicate PagerDuty incidents {r['duplicate_incidents']}, duplicate responder requests "
        f"{r['duplicate_responders']}, orphaned PagerDuty incidents {r['orphans']} (open upstream: {r['left_open']})",
        f"    API answers during the drill: {api}; HTTP 500s: {r['api'].get(500, 0)}",
        f"    PagerDuty requests {r['pd_requests']} (failed before acting {r['pd_faulted']}, answer lost after acting "
        f"{r['pd_lost']}); disruptions {len(r['disruptions'])}; worker/beat restarts by respawn {r['respawns']}",
    ]
    for reason, count in r["reasons"].most_common():
        lines.append(f"    failed: {count} × {reason}")
    lines.append(f"    failed where PagerDuty did not refuse: {r['failed_not_refused']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="runs (incidents) per drill")
    parser.add_argument("--drills", default="faults,kill,broker", help="comma-separated: faults, kill, broker")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (printed where)")
    args = parser.parse_args()
    drills = [d.strip() for d in args.drills.split(",") if d.strip()]
    unknown = set(drills) - set(DISRUPTIONS)
    if unknown:
        parser.error(f"unknown drills {sorted(unknown)}; choose from {sorted(DISRUPTIONS)}")

    var_dir = Path(tempfile.mkdtemp(prefix=f"drill-{RUN_ID}-"))
    stack = Stack(var_dir)
    ok = False
    try:
        stack.start()
        print(f"Reliability drill, {date.today().isoformat()}: {os.cpu_count()} cores, PostgreSQL + private Redis")
        print(
            f"processes: web (gunicorn, 2), {WORKERS} × worker (--concurrency {CONCURRENCY}), beat — the Procfile's "
            "commands under bin/respawn"
        )
        print("engine: " + ", ".join(f"{k}={v}" for k, v in ENGINE.items()))
        print(
            f"stand-in: +{FAULTS['latency_ms']} ms per request, {FAULTS['error_rate']:.0%} answered "
            f"{'/'.join(map(str, FAULTS['error_statuses']))} before acting, {FAULTS['lost_answer_rate']:.0%} of the "
            "rest carried out and then the connection dropped"
        )
        for n, name in enumerate(drills):
            progress(f"drill {name}: {args.runs} runs")
            print(report(run_drill(stack, name, args.runs, args.seed + n)), flush=True)
        fatal = [
            f"{name}: {line.strip()}"
            for name, log in stack.procs.logs.items()
            for line in log.read_text(errors="replace").splitlines()
            if "Unrecoverable error" in line
        ]
        print(f"'Unrecoverable error' in the processes' logs: {len(fatal)}")
        for line in fatal:
            print(f"    {line}")
        ok = not args.keep_logs
    finally:
        stack.stop()
        if ok:
            shutil.rmtree(var_dir, ignore_errors=True)
        else:
            print(f"logs kept in {var_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
