"""Real processes for the benchmark, the reliability drill and the broker tests: a private
`redis-server`, a throwaway PostgreSQL database, and `celery`/`gunicorn` processes started with
the Procfile's commands (optionally under bin/respawn, as `make run` does).

Nothing here touches a server it did not start: Redis runs on a free port of its own, databases
get a name of their own and are dropped by name, processes are stopped by the pid they got.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
RESPAWN = ROOT / "bin" / "respawn"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, timeout: float = 30, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.1)


class RedisServer:
    """A private `redis-server` on its own port with no persistence: a restart loses every queue,
    as a broker without AOF does when it crashes."""

    def __init__(self, port: int | None = None, log: Path | None = None):
        self.port = port or free_port()
        self.log = log
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        out = self.log.open("a") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--daemonize", "no"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=10, process=self.process)
        return self

    def stop(self, *, abrupt: bool = True) -> None:
        """SIGKILL by default: the broker vanishes mid-conversation, as in a crash."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if abrupt else signal.SIGTERM)
        self.process.wait(timeout=10)
        self.process = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()
        self.restarts += 1

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- PostgreSQL ------------------------------------------------------------------------------------


def create_database(server_url: str, name: str) -> str:
    """CREATE DATABASE on the server of `server_url` (postgres://… of any database); returns its URL."""
    with psycopg.connect(server_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0].replace("postgresql://", "postgres://", 1) + f"/{name}"


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- data --------------------------------------------------------------------------------------------


def three_step_runbook(*, slug: str, name: str, to_status: str, requester_id: str) -> dict:
    """A runbook spec firing on → `to_status`: create the PagerDuty incident, ask PRESPND (a user of
    the stand-in) to respond, resolve. `requester_id` an id skips the look-up, an email makes one."""
    sender = {"from": "{{Activity.owner}}"}
    return {
        "slug": slug,
        "name": name,
        "trigger": {"on": "status_changed", "to": [to_status]},
        "steps": [
            {"key": "page", "action": "pagerduty.create_incident", "with": sender},
            {
                "key": "escalate",
                "action": "pagerduty.add_responder",
                "with": {
                    **sender,
                    "incident_id": "{{steps.page.incident_id}}",
                    "responder_id": "PRESPND",
                    "responder_type": "user",
                    "requester_id": requester_id,
                },
            },
            {
                "key": "close",
                "action": "pagerduty.resolve_incident",
                "with": {**sender, "incident_id": "{{steps.page.incident_id}}"},
            },
        ],
    }


# --- Procfile processes ----------------------------------------------------------------------------


def child_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Procfile:
    """Processes started with the Procfile's commands, each in a session of its own (so a signal
    to the group reaches what it started), logs in `log_dir`."""

    def __init__(self, env: dict, log_dir: Path, *, respawn: bool = False):
        self.env, self.log_dir, self.respawn = env, log_dir, respawn
        self.running: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def spawn(self, name: str, argv: list[str], *, ready: str | None = None, port: int | None = None, **extra_env):
        env = {**os.environ, **self.env, **{k: str(v) for k, v in extra_env.items()}}
        log = self.log_dir / f"{name}.log"
        command = ([str(RESPAWN)] if self.respawn else []) + argv
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.running[name], self.logs[name] = process, log
        deadline = time.monotonic() + 90
        if port is not None:
            wait_for_port(port, timeout=90, process=process)
        while ready is not None and ready not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log}")
            time.sleep(0.2)
        return process

    def worker(self, name: str, *, queue: str, concurrency: int = 2, **extra_env):
        argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO"]
        argv += ["--concurrency", str(concurrency), "-Q", queue, "-n", f"{name}@%h"]
        return self.spawn(name, argv, ready=" ready.", **extra_env)

    def beat(self, name: str = "beat", **extra_env):
        schedule = self.log_dir / f"{name}-schedule"
        argv = [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO", "-s", str(schedule)]
        return self.spawn(name, argv, ready="beat: Starting", **extra_env)

    def web(self, name: str = "web", *, port: int, workers: int = 2, **extra_env):
        argv = [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}"]
        argv += ["--workers", str(workers), "--access-logfile", "-"]
        return self.spawn(name, argv, port=port, **extra_env)

    def celery_pids(self, name: str) -> list[int]:
        """The `celery` main process of `name` (below bin/respawn, when respawning)."""
        process = self.running[name]
        return child_pids(process.pid) if self.respawn else [process.pid]

    def pool_pids(self, name: str) -> list[int]:
        return [child for pid in self.celery_pids(name) for child in child_pids(pid)]

    def respawns(self, name: str | None = None) -> int:
        """How many times bin/respawn started a process again because it had exited on its own."""
        names = [name] if name else list(self.logs)
        return sum(self.logs[n].read_text(errors="replace").count("respawn: ") for n in names if n in self.logs)

    def stop(self, name: str | None = None, *, timeout: float = 60) -> None:
        names = [name] if name else list(self.running)
        for n in names:
            process = self.running[n]
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for n in names:
            process = self.running.pop(n)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
