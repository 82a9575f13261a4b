"""Real processes: PostgreSQL, the Redis broker, a Celery worker subprocess, the PagerDuty stand-in.

Skipped with the reason when PostgreSQL or Redis is not configured (a laptop); under CI=true a
missing service fails instead, so a green CI always means these ran.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from apps.pagerduty.services import connection_upsert
from apps.runbooks.models import RunbookRun
from apps.sandbox import SandboxServer, SandboxState, seed_account
from bench._stack import Procfile, RedisServer, child_pids
from config.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "runbooks"
# One private queue per test session: Celery caches its routing, so the name must not change.
QUEUE = f"test-{uuid.uuid4().hex[:8]}"


def _redis_problem(url: str) -> str | None:
    """Why Redis at `url` cannot be used (it must answer PING: an open port is not enough), or None."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping()
    except redis.RedisError as exc:
        return str(exc)
    return None


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: integration tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def real_services():
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        _unavailable("integration tests need PostgreSQL: set DATABASE_URL=postgres://…")
    broker = settings.CELERY_BROKER_URL
    if not broker.startswith("redis://"):
        _unavailable(f"integration tests need Redis: set REDIS_URL=redis://… (broker is {broker!r})")
    if problem := _redis_problem(broker):
        _unavailable(f"integration tests need Redis, and {broker} does not answer PING: {problem}")


class WorkerProcess:
    def __init__(self, process: subprocess.Popen, log: Path, queue: str):
        self.process, self.log, self.queue = process, log, queue

    def pool_children(self) -> list[int]:
        return child_pids(self.process.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def finished_tasks(self, name: str) -> int:
        return sum(1 for line in self.output().splitlines() if f"tasks.{name}[" in line and " succeeded in " in line)


def stack_env(tmp_path: Path, *, broker_url: str | None = None, **extra) -> dict:
    """The environment of a worker or beat process of these tests: the test database, the session's
    queue, short leases and backoffs."""
    db = connection.settings_dict
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "CELERY_BROKER_URL": broker_url or settings.CELERY_BROKER_URL,
        "CELERY_QUEUE": QUEUE,
        "RUNBOOK_RUN_LEASE_SECONDS": "3",
        "ONCALL_SYNC_LEASE_SECONDS": "3",
        "PAGERDUTY_BACKOFF_BASE_SECONDS": "0.2",
        "PAGERDUTY_BACKOFF_CAP_SECONDS": "1",
        "VAR_DIR": str(tmp_path / "var"),
        "PYTHONUNBUFFERED": "1",
        **{key: str(value) for key, value in extra.items()},
    }


@pytest.fixture
def celery_worker_process(real_services, transactional_db, tmp_path):
    """A real `celery worker` on a private queue, reading the test database."""
    queue = QUEUE
    env = stack_env(tmp_path)
    log = tmp_path / "worker.log"
    process = subprocess.Popen(
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
            "1",
            "-Q",
            queue,
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    previous_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    worker = WorkerProcess(process, log, queue)
    deadline = time.monotonic() + 60
    while "ready." not in worker.output():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"celery worker did not start:\n{worker.output()}")
        time.sleep(0.2)
    yield worker
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    celery_app.conf.task_default_queue = previous_queue
    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def wait_for(predicate, *, timeout: float = 30, interval: float = 0.2, message: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")


@pytest.fixture
def sandbox():
    state = SandboxState(tokens={"sandbox-token"})
    seed_account(state, users=20, teams=3, schedules=4, escalation_policies=3, services=4, seed=7)
    with SandboxServer(state, host="127.0.0.1", port=0).start() as server:
        yield server, state


@pytest.fixture
def wired(celery_worker_process, sandbox):
    server, state = sandbox
    connection = connection_upsert(
        name="default", api_key="sandbox-token", from_email="sre@example.com", api_url=server.url
    )
    connection.service_mappings.create(service="", pagerduty_service_id="PSVC001")
    call_command("load_runbooks", str(RUNBOOKS))
    # A superuser: a transactional test's flush drops the groups the roles migration made.
    user = get_user_model().objects.create_superuser("integration", "integration@example.com", "pw-0123456789")
    api = APIClient()
    api.force_authenticate(user)
    return api, state, celery_worker_process


def create_incident(api, title, severity=1) -> str:
    """A SEV`severity` production incident owned by the stand-in's sre@example.com, through the API."""
    response = api.post(
        "/api/v1/incidents/",
        {"title": title, "severity": severity, "environment": "production", "owner": "sre@example.com"},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def upstream_for(state, incident_id) -> list[dict]:
    """The stand-in's incidents opened for one of ours (by the default incident key)."""
    with state.lock:
        return [i for i in state.incidents.values() if i["incident_key"] == f"ai-sre-{incident_id}"]


def runs_finished(incident_id, count):
    runs = list(RunbookRun.objects.filter(incident_id=incident_id))
    return len(runs) >= count and all(r.status in ("succeeded", "failed", "skipped") for r in runs) and runs


def _start_worker(tmp_path: Path, name: str, *, concurrency: int, extra_env: dict) -> WorkerProcess:
    """One more `celery worker` process on the session's queue, environment as celery_worker_process."""
    env = stack_env(tmp_path, **extra_env)
    log = tmp_path / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "prefork"]
        + ["--concurrency", str(concurrency), "-Q", QUEUE, "-n", f"{name}@%h"]
        + ["--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    worker = WorkerProcess(process, log, QUEUE)
    deadline = time.monotonic() + 60
    while "ready." not in worker.output():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"celery worker {name} did not start:\n{worker.output()}")
        time.sleep(0.2)
    return worker


@pytest.fixture
def more_workers(celery_worker_process, tmp_path):
    """Start further worker processes beside celery_worker_process, as production runs any number of them:
    `more_workers(concurrency=2, PAGERDUTY_MAX_ATTEMPTS=5)` returns the started WorkerProcess."""
    started: list[WorkerProcess] = []

    def start(concurrency: int = 1, **extra_env) -> WorkerProcess:
        worker = _start_worker(tmp_path, f"extra{len(started) + 1}", concurrency=concurrency, extra_env=extra_env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.process.send_signal(signal.SIGTERM)
    for worker in started:
        try:
            worker.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def all_runs_finished(incident_ids) -> bool:
    """True once every incident has at least one run and none is still pending or running."""
    runs = list(RunbookRun.objects.filter(incident_id__in=incident_ids).values_list("incident_id", "status"))
    return {str(i) for i, _ in runs} == {str(i) for i in incident_ids} and all(
        status in ("succeeded", "failed", "skipped", "cancelled") for _, status in runs
    )


def _publish_to(url: str) -> None:
    """Point this process's Celery app at another broker. The pools are kombu's, shared per broker
    URL: forget them rather than close them, so coming back to a URL finds its pool open."""
    celery_app.conf.broker_url = url
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def private_broker(real_services, tmp_path):
    """A `redis-server` of this test's own on a free port, which the test may restart or stop:
    this process publishes to it (API requests, tasks) for the duration of the test."""
    if shutil.which("redis-server") is None:
        _unavailable("broker restart tests need redis-server on PATH (apt-get install redis-server)")
    server = RedisServer(log=tmp_path / "redis.log").start()
    previous, previous_queue = celery_app.conf.broker_url, celery_app.conf.task_default_queue
    _publish_to(server.url)
    celery_app.conf.task_default_queue = QUEUE
    yield server
    _publish_to(previous)
    celery_app.conf.task_default_queue = previous_queue
    server.stop()


@pytest.fixture
def procfile(real_services, transactional_db, tmp_path):
    """Processes started with the Procfile's own commands (a worker with remote control, gossip and
    mingle on; beat), each in a session of its own, environment as celery_worker_process; pass
    CELERY_BROKER_URL=… to `procfile.worker(…)` for another broker."""
    started = Procfile(stack_env(tmp_path), tmp_path)
    yield started
    started.stop()
