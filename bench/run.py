"""Runbook engine benchmark on the real stack: a throwaway PostgreSQL database, Redis as the broker,
`celery worker` processes and the PagerDuty stand-in on loopback. Prints figures; asserts nothing.

    make bench                      # = .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --latency 100 --storm 200 --limited 200 --unbudgeted 0   # a quick look

Phases:
  1. latency: status change committed → the stand-in receives POST /incidents, one incident at a time,
     through the example runbook page-on-critical (p50/p95/p99);
  2. storm: incidents each firing a 3-step runbook (create → add responder → resolve) with the rate
     limits raised out of the way: steps/s, duplicates, 429s, requests vs. the minimum;
  3. floor: the same requests from a bare `requests` loop at the same concurrency, no engine;
  4. the storm again at PagerDuty's real limit (960/min per key), with the client's shared budget on
     (the shipped default) and, smaller, with it off, so the stand-in answers real 429s;
  5. three PagerDuty accounts (connections with keys of their own) stormed at once at the shipped
     budget: each must run at its own limit, none waiting on another's;
  6. embedded: the latency of phase 1 on the embedded default of `make run` (SQLite, filesystem
     broker, one worker), measured by bench/embedded.py in a process of its own.
Before the workers start, the bench counts the SQL statements of one 3-step run (in this process).

Needs PostgreSQL and Redis on 127.0.0.1 (BENCH_POSTGRES_URL, BENCH_REDIS_URL override the servers);
without them it falls back to SQLite and the filesystem broker and says so. The database is created
and dropped, the Celery queue and the API key are private to the run, so nothing else is touched.
"""

import argparse
import io
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stack import Procfile, create_database, drop_database, three_step_runbook  # noqa: E402

RUN_ID = uuid.uuid4().hex[:8]
# An API key of its own: the client's shared budget lives in Redis under a hash of the key, so
# this run neither borrows from nor spends the budget of anything else using the same Redis.
TOKEN = f"bench-{RUN_ID}"
QUEUE = f"bench-{RUN_ID}"
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ACCOUNTS = ("a", "b", "c")
PAGERDUTY_LIMIT = 960  # requests a minute per key, PagerDuty's REST limit
CLIENT_BUDGET = 900  # PAGERDUTY_RATE_LIMIT_PER_MINUTE as shipped
RAISED = 1_000_000  # a per-minute limit nothing here can reach
STUCK_AFTER = 180  # seconds without a run finishing before the bench gives up


def progress(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


# --- environment ---------------------------------------------------------------------------------


def prepare_environment(var_dir: Path) -> tuple[dict, str | None]:
    """The workers' and this process's environment, and the PostgreSQL database made for the run (if any)."""
    import psycopg
    import redis

    # The stand-in listens on loopback: the only host the bench's keys may be sent to.
    env = {
        "VAR_DIR": str(var_dir),
        "CELERY_QUEUE": QUEUE,
        "LOG_LEVEL": "WARNING",
        "PAGERDUTY_ALLOWED_HOSTS": "127.0.0.1",
    }
    database = f"bench_runbooks_{RUN_ID}"
    try:
        env["DATABASE_URL"] = create_database(POSTGRES_URL, database)
    except psycopg.Error as exc:
        print(
            f"warning: PostgreSQL unavailable at {POSTGRES_URL} ({exc}); using SQLite under {var_dir}, "
            "which serialises every write: figures will not reflect production"
        )
        env["DATABASE_URL"] = f"sqlite:///{var_dir / 'bench.sqlite3'}"
        database = None
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        env["REDIS_URL"] = env["CELERY_BROKER_URL"] = REDIS_URL
    except redis.RedisError as exc:
        print(
            f"warning: Redis unavailable at {REDIS_URL} ({exc}); using the filesystem broker, which polls "
            "once a second (latency figures will show it), and a client budget per worker process"
        )
        env["REDIS_URL"] = ""
        env["CELERY_BROKER_URL"] = "filesystem://"
    return env, database


def forget_queue() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).delete(QUEUE, f"_kombu.binding.{QUEUE}", f"_kombu.binding_permanent.{QUEUE}")


def server_versions(env: dict) -> str:
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            db = "PostgreSQL " + cursor.fetchone()[0].split()[0]
    else:
        import sqlite3

        db = f"SQLite {sqlite3.sqlite_version}"
    broker = "filesystem broker"
    if env["REDIS_URL"]:
        import redis

        broker = "Redis " + redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
    return f"{db}, {broker}"


class Workers:
    """N `celery -A config worker --concurrency C` processes, as the Procfile starts them."""

    def __init__(self, env: dict, var_dir: Path, processes: int, concurrency: int):
        self.procs = Procfile(env, var_dir)
        self.processes, self.concurrency = processes, concurrency
        self.starts = 0

    @property
    def slots(self) -> int:
        return self.processes * self.concurrency

    def start(self, **extra_env) -> None:
        self.stop()
        self.starts += 1
        for n in range(self.processes):
            self.procs.worker(
                f"bench{n}-{RUN_ID}-{self.starts}", queue=QUEUE, concurrency=self.concurrency, **extra_env
            )

    def stop(self) -> None:
        self.procs.stop()


# --- measurements --------------------------------------------------------------------------------


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int, tid: int | None = None, *, system_only: bool = False) -> float:
    """User + system CPU seconds of one process, or of one of its threads (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat")
        fields = stat.read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    utime, stime = int(fields[11]), int(fields[12])
    return (stime if system_only else utime + stime) / CLOCK_TICKS


def _pids_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def cpu_seconds(workers: "Workers") -> Counter:
    """CPU seconds used so far, by part of the stack: where a storm's time goes on two cores.
    PostgreSQL and Redis are every process of those servers (the bench keeps its connections, so
    their backends live through a phase). This process is split in two: its main thread (the status
    changes of the storm, the web side's work) and its other threads (the stand-in, and the bare
    loops of the floor)."""
    from bench._stack import child_pids

    totals: Counter = Counter()
    for process in workers.procs.running.values():
        main, pool = process.pid, child_pids(process.pid)
        totals["workers"] += sum(_process_cpu(pid) for pid in [main, *pool])
        totals["workers' main processes"] += _process_cpu(main)
        totals["workers' kernel time"] += sum(_process_cpu(pid, system_only=True) for pid in [main, *pool])
    totals["PostgreSQL"] = sum(_process_cpu(pid) for pid in _pids_named("postgres"))
    totals["Redis"] = sum(_process_cpu(pid) for pid in _pids_named("redis-server"))
    main = _process_cpu(os.getpid(), threading.main_thread().native_id)
    totals["status changes"] = main
    totals["stand-in (+ floor loops)"] = _process_cpu(os.getpid()) - main
    return totals


CPU_PARTS = ("workers", "PostgreSQL", "Redis", "status changes", "stand-in (+ floor loops)")


def cpu_line(used: Counter, units: int, unit: str) -> str:
    parts = ", ".join(f"{name} {1000 * used[name] / units:.2f}" for name in CPU_PARTS)
    whole = sum(used[name] for name in CPU_PARTS)
    inside = ", ".join(
        f"{name} {1000 * used[name] / units:.2f}" for name in ("workers' main processes", "workers' kernel time")
    )
    return f"CPU ms per {unit}: {parts}; all {1000 * whole / units:.2f} (of the workers': {inside})"


def percentile(values, p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def make_timed_state_class():
    from apps.sandbox import SandboxState

    class TimedState(SandboxState):
        """The stand-in, noting on this process's monotonic clock when each request arrived.

        The stand-in's own `time` field has one-second resolution; the handler's duration, taken
        from the moment the request was parsed, gives the arrival to the microsecond."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.awaited: dict[str, threading.Event] = {}
            self.arrivals: dict[str, float] = {}

        def record_request(self, record: dict) -> None:
            record["arrived"] = time.monotonic() - record["duration_ms"] / 1000
            super().record_request(record)
            if record["method"] == "POST" and record["path"] == "/incidents":
                key = ((record.get("json") or {}).get("incident") or {}).get("incident_key")
                waiting = self.awaited.get(key)
                if waiting is not None and key not in self.arrivals:
                    self.arrivals[key] = record["arrived"]
                    waiting.set()

    return TimedState


def wait_until_dispatched() -> None:
    """Let the workers drain the `created` events of incidents made for the next phase, untimed."""
    from apps.incidents.models import IncidentEvent

    deadline = time.monotonic() + STUCK_AFTER
    while IncidentEvent.objects.filter(dispatched_at__isnull=True).exists():
        if time.monotonic() > deadline:
            raise SystemExit("workers did not dispatch the incidents' events")
        time.sleep(0.2)


def latency_phase(state, count: int) -> dict:
    from django.db import transaction

    from apps.incidents.models import IncidentEvent
    from apps.incidents.services import incident_create, incident_update
    from apps.runbooks.models import RunbookRun, StepRunExchange

    state.reset()
    incidents = [
        incident_create(title=f"latency {n}", severity=1, environment="production", owner="sre@example.com")
        for n in range(count)
    ]
    wait_until_dispatched()
    latencies = []
    for n, incident in enumerate(incidents, 1):
        key = f"ai-sre-{incident.id}"
        arrived = state.awaited[key] = threading.Event()
        committed = []
        with transaction.atomic():
            # Registered before the incident service registers its own: runs first after the commit,
            # before the message to the broker is even published.
            transaction.on_commit(lambda stamps=committed: stamps.append(time.monotonic()))
            incident_update(incident_id=incident.pk, status="Investigating")
        if not arrived.wait(30):
            raise SystemExit(f"no POST /incidents for {incident.short_id} 30 s after its status change")
        latencies.append((state.arrivals[key] - committed[0]) * 1000)
        # One at a time: the next change waits until this run has written its outcome.
        while not RunbookRun.objects.filter(incident=incident, finished_at__isnull=False).exists():
            time.sleep(0.002)
        if n % 100 == 0:
            progress(f"latency: {n}/{count}")

    # Where the time went, from the rows the engine wrote (wall clock, same machine).
    hops = {"dispatch": [], "claim": [], "step": []}
    ids = [i.pk for i in incidents]
    events = dict(
        IncidentEvent.objects.filter(incident_id__in=ids, kind="status_changed").values_list(
            "incident_id", "created_at"
        )
    )
    for run in RunbookRun.objects.filter(incident_id__in=ids):
        first = StepRunExchange.objects.filter(step_run__run=run).order_by("id").first()
        sent = first.created_at.timestamp() - first.duration_ms / 1000
        hops["dispatch"].append((run.created_at - events[run.incident_id]).total_seconds() * 1000)
        hops["claim"].append((run.started_at - run.created_at).total_seconds() * 1000)
        hops["step"].append((sent - run.started_at.timestamp()) * 1000)
    return {
        "latencies": latencies,
        "hops": {name: statistics.median(values) for name, values in hops.items()},
        "failed": RunbookRun.objects.filter(incident_id__in=ids).exclude(status="succeeded").count(),
        "pd_incidents": len(state.incidents),
    }


def storm_phase(state, count: int, label: str, workers: "Workers | None" = None) -> dict:
    from apps.incidents.services import incident_create, incident_update
    from apps.runbooks.models import FINISHED, RunbookRun, StepRun, StepRunExchange

    state.reset()
    incidents = [incident_create(title=f"{label} {n}", severity=2, owner="sre@example.com") for n in range(count)]
    ids = [i.pk for i in incidents]
    wait_until_dispatched()
    cpu_before = cpu_seconds(workers) if workers else Counter()
    started = time.monotonic()
    for incident_id in ids:
        incident_update(incident_id=incident_id, status="Identified")
    changed = time.monotonic() - started
    runs = RunbookRun.objects.filter(incident_id__in=ids)
    finished, last_change, last_report = 0, time.monotonic(), time.monotonic()
    while finished < count:
        time.sleep(0.25)
        now_finished = runs.filter(status__in=FINISHED).count()
        if now_finished != finished:
            finished, last_change = now_finished, time.monotonic()
        if time.monotonic() - last_change > STUCK_AFTER:
            raise SystemExit(f"{label}: stuck at {finished}/{count} runs finished")
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            progress(f"{label}: {finished}/{count} runs finished after {last_report - started:.0f} s")
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(workers) - cpu_before if workers else Counter()

    with state.lock:
        received = list(state.requests)
        keys = Counter(i["incident_key"] for i in state.incidents.values())
    ours = {f"ai-sre-{i}" for i in ids}
    exchanges = StepRunExchange.objects.filter(step_run__run__incident_id__in=ids)
    return {
        "count": count,
        "elapsed": elapsed,
        "changes": changed,
        "steps_ok": StepRun.objects.filter(run__incident_id__in=ids, status="succeeded").count(),
        "failed": runs.exclude(status="succeeded").count(),
        "duplicates": sum(n - 1 for n in keys.values() if n > 1),
        "missing": len(ours - set(keys)),
        "requests": len(received),
        "throttled": sum(1 for r in received if r["status"] == 429),
        "server_errors": sum(1 for r in received if r["status"] >= 500),
        "lookups": sum(1 for r in received if r["method"] == "GET"),
        "attempts": exchanges.count(),
        "http_ms": statistics.mean(exchanges.values_list("duration_ms", flat=True) or [0]),
        "cpu": cpu,
    }


def queries_phase() -> dict:
    """The SQL statements of one 3-step run (bench-storm: create, add a responder, resolve), from
    the dispatch task picking the status change up to the run's end, executed in this process
    against the stand-in: what tests/runbooks/test_query_budget.py counts, on this database."""
    from unittest import mock

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.incidents.models import IncidentEvent
    from apps.incidents.services import incident_create, incident_update
    from apps.runbooks import tasks
    from apps.runbooks.services import event_dispatch

    counted = []
    # Twice: a worker's first run of a runbook reads its version, later ones find it remembered.
    for title in ("queries, first run", "queries"):
        published = []
        with mock.patch.object(tasks.dispatch_incident_event, "delay", published.append):
            incident = incident_create(title=title, severity=2, owner="sre@example.com")
            incident_update(incident_id=incident.pk, status="Identified")
        event = IncidentEvent.objects.get(incident=incident, kind="status_changed")
        for other in published:
            if other != event.pk:
                event_dispatch(event_id=other)  # the `created` event: matches nothing, is stamped dispatched
        with CaptureQueriesContext(connection) as queries:
            run = event_dispatch(event_id=event.pk)
        commits = sum(1 for q in queries.captured_queries if q["sql"] == "COMMIT")
        writes = sum(1 for q in queries.captured_queries if q["sql"].startswith(("INSERT", "UPDATE", "WITH")))
        # Outside a transaction every write commits on its own; the rest commit with COMMIT.
        in_transactions = _statements_in_transactions(queries.captured_queries)
        counted.append((len(queries), commits + writes - in_transactions, run.status if run else "not run"))
    (first, _, _), (statements, commits, status) = counted
    return {"queries": statements, "commits": commits, "status": status, "first": first}


def _statements_in_transactions(captured) -> int:
    """Writes between BEGIN and COMMIT (they share that transaction's commit)."""
    inside, count = False, 0
    for query in captured:
        sql = query["sql"]
        if sql == "BEGIN":
            inside = True
        elif sql in ("COMMIT", "ROLLBACK"):
            inside = False
        elif inside and sql.startswith(("INSERT", "UPDATE", "WITH")):
            count += 1
    return count


def setup_accounts(server) -> None:
    """A connection per account, each with a key of its own, and a runbook per account firing on
    → Monitoring for incidents of the service named after it."""
    from apps.pagerduty.services import connection_upsert
    from apps.runbooks.services import runbook_upsert_from_spec

    for account in ACCOUNTS:
        name = f"acct-{account}"
        connection = connection_upsert(
            name=name, api_key=f"{TOKEN}-{account}", from_email="sre@example.com", api_url=server.url
        )
        connection.service_mappings.create(service="", pagerduty_service_id="PSVC001")
        spec = three_step_runbook(
            slug=f"bench-{name}", name=f"Bench: account {account}", to_status="Monitoring", requester_id="PSREADM"
        )
        spec["conditions"] = {"services": [name]}
        for step in spec["steps"]:
            step["connection"] = name
        runbook_upsert_from_spec(spec=spec, comment="bench")


def accounts_phase(state, per_account: int, burst: int) -> dict:
    """Incidents of the three accounts' services, interleaved, all moved to Monitoring at once."""
    from apps.incidents.services import incident_create, incident_update
    from apps.runbooks.models import FINISHED, RunbookRun

    state.reset()
    incidents = [
        incident_create(title=f"account {account} {n}", severity=2, service=f"acct-{account}", owner="sre@example.com")
        for n in range(per_account)
        for account in ACCOUNTS
    ]
    ids = [i.pk for i in incidents]
    wait_until_dispatched()
    started = time.monotonic()
    for incident_id in ids:
        incident_update(incident_id=incident_id, status="Monitoring")
    runs = RunbookRun.objects.filter(incident_id__in=ids)
    finished, last_change = 0, time.monotonic()
    while finished < len(ids):
        time.sleep(0.25)
        now_finished = runs.filter(status__in=FINISHED).count()
        if now_finished != finished:
            finished, last_change = now_finished, time.monotonic()
        if time.monotonic() - last_change > STUCK_AFTER:
            raise SystemExit(f"accounts storm: stuck at {finished}/{len(ids)} runs finished")
    elapsed = time.monotonic() - started
    with state.lock:
        received = list(state.requests)
        keys = Counter(i["incident_key"] for i in state.incidents.values())
    per = {}
    for account in ACCOUNTS:
        token = f"Token token={TOKEN}-{account}"
        mine = sorted(
            (r for r in received if (r.get("headers") or {}).get("Authorization") == token), key=lambda r: r["arrived"]
        )
        arrivals = [r["arrived"] for r in mine]
        # The steady rate, after the budget's initial burst: what the account sustains.
        steady = (len(arrivals) - 1 - burst) / (arrivals[-1] - arrivals[burst]) * 60 if len(arrivals) > burst + 1 else 0
        per[account] = {
            "requests": len(mine),
            "throttled": sum(1 for r in mine if r["status"] == 429),
            "span": arrivals[-1] - arrivals[0] if arrivals else 0,
            "steady_per_minute": steady,
        }
    return {
        "incidents": len(ids),
        "elapsed": elapsed,
        "failed": runs.exclude(status="succeeded").count(),
        "duplicates": sum(n - 1 for n in keys.values() if n > 1),
        "missing": len({f"ai-sre-{i}" for i in ids} - set(keys)),
        "per": per,
    }


def storm_line(label: str, r: dict) -> str:
    minimum = 3 * r["count"]
    return (
        f"{label}: {r['count']} incidents × 3 steps in {r['elapsed']:.1f} s = {r['steps_ok'] / r['elapsed']:.1f} steps/s"
        f" (status changes issued in the first {r['changes']:.1f} s)\n"
        f"    runs not succeeded {r['failed']}; duplicates {r['duplicates']} (PagerDuty incidents beyond one per "
        f"incident; incidents never paged {r['missing']}); 429s seen {r['throttled']}; 5xx {r['server_errors']}\n"
        f"    HTTP requests {r['requests']} for a minimum of {minimum} (×{r['requests'] / minimum:.2f}; lookups "
        f"{r['lookups']}); mean HTTP exchange as the worker saw it {r['http_ms']:.1f} ms"
    )


def floor_phase(server, state, count: int, threads: int) -> float:
    """The storm's requests from plain `requests` sessions: what the HTTP alone costs on this machine."""
    import requests

    state.reset()
    headers = {
        "Authorization": f"Token token={TOKEN}",
        "Accept": "application/vnd.pagerduty+json;version=2",
        "Content-Type": "application/json",
        "From": "sre@example.com",
    }
    local = threading.local()

    def one(n: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        created = session.post(
            f"{server.url}/incidents",
            headers=headers,
            timeout=10,
            json={
                "incident": {
                    "type": "incident",
                    "title": f"SEV2: floor {n}",
                    "service": {"id": "PSVC001", "type": "service_reference"},
                    "urgency": "low",
                    "incident_key": f"floor-{RUN_ID}-{n}",
                    "body": {"type": "incident_body", "details": "floor"},
                }
            },
        )
        incident_id = created.json()["incident"]["id"]
        session.post(
            f"{server.url}/incidents/{incident_id}/responder_requests",
            headers=headers,
            timeout=10,
            json={
                "requester_id": "PSREADM",
                "message": "Please join",
                "responder_request_targets": [
                    {"responder_request_target": {"id": "PRESPND", "type": "user_reference"}}
                ],
            },
        ).raise_for_status()
        session.put(
            f"{server.url}/incidents/{incident_id}",
            headers=headers,
            timeout=10,
            json={"incident": {"type": "incident_reference", "status": "resolved", "resolution": "done"}},
        ).raise_for_status()

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(count)))
    elapsed = time.monotonic() - started
    assert len(state.requests) == 3 * count and all(r["status"] < 300 for r in state.requests)
    return 3 * count / elapsed


# --- the run -------------------------------------------------------------------------------------


def setup_data(server) -> None:
    from django.core.management import call_command

    from apps.pagerduty.services import connection_upsert
    from apps.runbooks.services import runbook_upsert_from_spec

    connection = connection_upsert(name="default", api_key=TOKEN, from_email="sre@example.com", api_url=server.url)
    connection.service_mappings.create(service="", pagerduty_service_id="PSVC001")
    call_command("load_runbooks", str(ROOT / "runbooks"), stdout=io.StringIO())
    # Ids rather than emails: no user look-ups, so the minimum is 3 requests a run.
    spec = three_step_runbook(
        slug="bench-storm", name="Bench: page, add a responder, resolve", to_status="Identified", requester_id="PSREADM"
    )
    runbook_upsert_from_spec(spec=spec, comment="bench")
    setup_accounts(server)


def run(args, env: dict, workers: Workers) -> None:
    from django.conf import settings

    from apps.sandbox import SandboxServer, seed_account

    # The OpenAPI check is off: on two cores it would compete with the workers for CPU.
    tokens = {TOKEN, *(f"{TOKEN}-{account}" for account in ACCOUNTS)}
    state = make_timed_state_class()(tokens=tokens, rate_limit_per_minute=RAISED, contract=False)
    seed_account(state, users=50, teams=5, schedules=5, escalation_policies=5, services=5, seed=1)
    server = SandboxServer(state, host="127.0.0.1", port=0).start()
    try:
        setup_data(server)
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        print(f"Runbook engine benchmark, {date.today().isoformat()}")
        print(
            f"machine: {os.cpu_count()} cores, {memory:.0f} GiB, CPython {platform.python_version()}, "
            f"{server_versions(env)}"
        )
        print(
            f"workers: {workers.processes} × `celery -A config worker --concurrency {workers.concurrency}` "
            f"({workers.slots} pool processes); PagerDuty stand-in in this process on {server.url} "
            "(OpenAPI check off)"
        )
        print(f"load average at the start (1, 5, 15 min): {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
        overall = time.monotonic()

        if args.queries:
            q = queries_phase()
            print(
                f"0. one 3-step run (create, add responder, resolve) from the dispatch task to its end: "
                f"{q['queries']} SQL statements, {q['commits']} commits (run {q['status']}; the worker's first run of "
                f"the runbook: {q['first']} statements)"
            )

        progress("starting workers (client budget raised out of the way)")
        workers.start(PAGERDUTY_RATE_LIMIT_PER_MINUTE=RAISED)
        if args.latency:
            progress(f"latency: {args.latency} incidents, one at a time")
            r = latency_phase(state, args.latency)
            lat, hops = r["latencies"], r["hops"]
            print(
                f"1. latency, status change committed → stand-in receives POST /incidents (example runbook "
                f"page-on-critical, {len(lat)} incidents one at a time): p50 {percentile(lat, 50):.1f} ms, "
                f"p95 {percentile(lat, 95):.1f} ms, p99 {percentile(lat, 99):.1f} ms, max {max(lat):.1f} ms\n"
                f"    medians per hop: event → run created (dispatch task) {hops['dispatch']:.1f} ms, run created → "
                f"claimed {hops['claim']:.1f} ms, claimed → request sent {hops['step']:.1f} ms; "
                f"runs not succeeded {r['failed']}, PagerDuty incidents {r['pd_incidents']}"
            )

        ours = None
        if args.storm:
            progress(f"storm: {args.storm} incidents, limits raised")
            r = storm_phase(state, args.storm, "storm", workers)
            ours = r["steps_ok"] / r["elapsed"]
            print(storm_line(f"2. storm, limits raised (stand-in {RAISED:,}/min, client budget {RAISED:,}/min)", r))
            print(f"    {cpu_line(r['cpu'], r['steps_ok'], 'step')}")
            progress("floor: the same requests from a bare requests loop")
            before = cpu_seconds(workers)
            floor = floor_phase(server, state, args.storm, workers.slots)
            used = cpu_seconds(workers) - before
            print(
                f"3. floor: the same {3 * args.storm} requests from bare requests.Session loops in {workers.slots} "
                f"threads, same stand-in: {floor:.1f} requests/s; engine / floor = {ours / floor:.2f}\n"
                f"    {cpu_line(used, 3 * args.storm, 'request')}"
            )

        state.rate_limit_per_minute = PAGERDUTY_LIMIT
        if args.limited:
            progress(f"storm at PagerDuty's limit: {args.limited} incidents, client budget {CLIENT_BUDGET}/min")
            workers.start(PAGERDUTY_RATE_LIMIT_PER_MINUTE=CLIENT_BUDGET)
            r = storm_phase(state, args.limited, "storm at the limit")
            print(
                storm_line(
                    f"4a. storm at PagerDuty's limit (stand-in {PAGERDUTY_LIMIT}/min per key, client budget "
                    f"{CLIENT_BUDGET}/min shared in Redis, burst {settings.PAGERDUTY_RATE_LIMIT_BURST}) — the shipped "
                    "configuration",
                    r,
                )
            )
        if args.unbudgeted:
            progress(f"storm at PagerDuty's limit, client budget off: {args.unbudgeted} incidents")
            workers.start(PAGERDUTY_RATE_LIMIT_PER_MINUTE=0)
            r = storm_phase(state, args.unbudgeted, "storm without budget")
            print(
                storm_line(
                    f"4b. storm at PagerDuty's limit (stand-in {PAGERDUTY_LIMIT}/min per key), client budget off: "
                    "the stand-in's 429s and their ratelimit-reset do the pacing",
                    r,
                )
            )
        if args.accounts:
            progress(
                f"three accounts at once: {args.accounts} incidents each, client budget {CLIENT_BUDGET}/min per key"
            )
            workers.start(PAGERDUTY_RATE_LIMIT_PER_MINUTE=CLIENT_BUDGET)
            burst = settings.PAGERDUTY_RATE_LIMIT_BURST
            r = accounts_phase(state, args.accounts, burst)
            together = sum(a["requests"] for a in r["per"].values()) / r["elapsed"]
            capacity = f"; the engine's own pace with limits raised (2.) was {ours:.1f} steps/s" if ours else ""
            print(
                f"5. three accounts at once (a connection and key each, stand-in {PAGERDUTY_LIMIT}/min per key, client "
                f"budget {CLIENT_BUDGET}/min per key, burst {burst}): {r['incidents']} incidents × 3 steps in "
                f"{r['elapsed']:.1f} s; runs not succeeded {r['failed']}; duplicates {r['duplicates']} (never paged "
                f"{r['missing']})\n    together {together:.1f} requests/s for a demand of "
                f"{len(ACCOUNTS) * CLIENT_BUDGET / 60:.1f}/s{capacity}"
            )
            for account, a in r["per"].items():
                print(
                    f"    account {account}: {a['requests']} requests in {a['span']:.1f} s, steady "
                    f"{a['steady_per_minute']:.0f}/min after the burst = {a['steady_per_minute'] / CLIENT_BUDGET:.1%} "
                    f"of its budget; 429s {a['throttled']}"
                )
        print(f"load average at the end (1, 5, 15 min): {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
        print(f"whole bench: {(time.monotonic() - overall) / 60:.1f} min")
    finally:
        server.stop()


def embedded_phase(count: int) -> None:
    """The embedded default (what `make run` uses), measured by bench/embedded.py in a process of
    its own: SQLite and the filesystem broker cannot share this process's settings."""
    progress(f"embedded: {count} incidents on SQLite and the filesystem broker")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "embedded.py"), "--count", str(count)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    print(done.stdout.strip() or f"embedded: failed (exit status {done.returncode}); see the messages above")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=int, default=500, help="incidents for the latency phase (0 skips)")
    parser.add_argument("--storm", type=int, default=1000, help="incidents in the raised-limit storm and the floor")
    parser.add_argument("--limited", type=int, default=1000, help="incidents in the storm at PagerDuty's limit")
    parser.add_argument(
        "--unbudgeted", type=int, default=400, help="incidents in the storm at the limit with the client budget off"
    )
    parser.add_argument(
        "--accounts", type=int, default=200, help="incidents per account in the three-account storm (0 skips)"
    )
    parser.add_argument("--embedded", type=int, default=50, help="incidents for the embedded-default latency (0 skips)")
    parser.add_argument(
        "--no-queries", dest="queries", action="store_false", help="skip counting one run's SQL statements"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker (Procfile default)")
    args = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix=f"bench-{RUN_ID}-"))
    env, database = prepare_environment(var_dir)
    os.environ.update(env)
    # The bench process sends no PagerDuty requests itself; the workers get their budget per phase.
    os.environ["PAGERDUTY_RATE_LIMIT_PER_MINUTE"] = "0"
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    from django.core.management import call_command

    workers = Workers(env, var_dir, args.workers, args.concurrency)
    ok = False
    try:
        progress(f"migrating {env['DATABASE_URL']}")
        call_command("migrate", verbosity=0)
        run(args, env, workers)
        ok = True
    finally:
        workers.stop()
        from django.db import connections

        connections.close_all()
        if database:
            drop_database(POSTGRES_URL, database)
        if env["REDIS_URL"]:
            forget_queue()
        if ok:
            shutil.rmtree(var_dir, ignore_errors=True)
        else:
            print(f"worker logs kept in {var_dir}", file=sys.stderr)
    if args.embedded:
        embedded_phase(args.embedded)


if __name__ == "__main__":
    main()
