"""`make run` as a person uses it: in a terminal, then Ctrl-C, then again.

Driven through a real pseudo-terminal, so Ctrl-C is the terminal's SIGINT to its foreground
process group (make included), exactly as at a keyboard. Private ports and var dir; the venv is
used as installed (STAMP points at a fresh file, so make installs nothing).
"""

import contextlib
import fcntl
import json
import os
import pty
import shutil
import signal
import socket
import subprocess
import termios
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from bench._stack import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e
CRASH_WORDS = ("Segmentation fault", "Traceback", "Error", "Interrupt", "Terminated", "killing", "Killed")


class Terminal:
    """`make run` on a pseudo-terminal of its own; the output is collected as it comes."""

    def __init__(self, env: dict, stamp: Path, port: int, sandbox_port: int):
        master, slave = pty.openpty()

        def controlling_terminal():
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"STAMP={stamp}", f"PORT={port}", f"SANDBOX_PORT={sandbox_port}"],
            cwd=ROOT,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=controlling_terminal,
        )
        os.close(slave)
        self.master, self.output = master, ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.output += data.decode(errors="replace").replace("\r\n", "\n")

    def wait_for(self, text: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.process.poll() is None, f"make run exited ({self.process.returncode}):\n{self.output}"
            assert time.monotonic() < deadline, f"{text!r} not printed:\n{self.output}"
            time.sleep(0.2)

    def close(self) -> None:
        """After a failed assertion: stop what is still running (Ctrl-C, then SIGKILL to what is left)."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self.ctrl_c(timeout=60)

    def ctrl_c(self, timeout: float = 90) -> int:
        os.write(self.master, b"\x03")
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.reader.join(timeout=5)
            os.close(self.master)


def manage(env: dict, code: str) -> str:
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_until(predicate, message: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message
        time.sleep(0.3)


def left_behind(var_dir: Path) -> list[str]:
    """Live processes started for this test's var dir (every child gets VAR_DIR in its environment)."""
    marker = f"VAR_DIR={var_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{entry.name}: {command}")
        except OSError:
            continue
    return found


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_make_run_then_ctrl_c_then_again(tmp_path, request):
    if not (ROOT / ".venv" / "bin" / "python").exists() or shutil.which("make") is None:
        pytest.skip("make run needs `make` and the project's .venv (make install)")
    stamp = tmp_path / "stamp"
    stamp.touch()  # newer than pyproject.toml: make installs nothing
    var_dir = tmp_path / "var"
    port, sandbox_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PAGERDUTY_API_KEY", "DJANGO_SETTINGS_MODULE")
        and not k.startswith(("PYTEST", "LOG_LEVEL"))
    }
    env.update(VAR_DIR=str(var_dir), TERM="dumb", RUN_STOP_TIMEOUT="60")
    root_before = {p.name for p in ROOT.iterdir()}
    admin_line = f"Admin: http://localhost:{port}/admin/"
    stand_in = f"http://127.0.0.1:{sandbox_port}"
    terminals = []

    def start() -> Terminal:
        terminals.append(Terminal(env, stamp, port, sandbox_port))
        return terminals[-1]

    def cleanup():  # only matters when an assertion failed midway
        for terminal in terminals:
            terminal.close()
        for line in left_behind(var_dir):
            with contextlib.suppress(OSError):
                os.kill(int(line.split(":")[0]), signal.SIGKILL)

    request.addfinalizer(cleanup)

    # 1. First start: demo data; the demo incident pages the stand-in.
    run = start()
    run.wait_for(admin_line)
    time.sleep(1)
    assert [line for line in run.output.splitlines() if line.strip()][-1].startswith(admin_line)
    wait_until(lambda: get_json(f"{stand_in}/_sandbox/state")["incidents"], "the demo never paged the stand-in")
    paged = get_json(f"{stand_in}/_sandbox/state")["incidents"]
    # Static files are served without access-log lines; pages are logged.
    urllib.request.urlopen(f"http://127.0.0.1:{port}/static/admin/css/base.css", timeout=5).read()
    urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=5).read()
    wait_until(lambda: '"GET /admin/login/ HTTP/1.1" 200' in run.output, "no access line for a page")
    assert "/static/admin/css/base.css" not in run.output
    # An admin edit to an example runbook (the admin's save: the change, then a version by its author).
    manage(
        {**env, "PYTHONPATH": str(ROOT)},
        "from django.contrib.auth.models import User; from apps.runbooks.models import Runbook;"
        "from apps.runbooks.versions import runbook_version_ensure;"
        "r = Runbook.objects.get(slug='page-on-critical'); r.name = 'Page on-call, tuned'; r.save();"
        "runbook_version_ensure(runbook=r, user=User.objects.get(username='admin'), comment='tuned')",
    )

    assert run.ctrl_c() == 0, run.output
    first = run.output
    assert not [word for word in CRASH_WORDS if word in first.split(admin_line)[1]], first
    assert "Stopped." in first
    assert left_behind(var_dir) == []
    assert not listening(port) and not listening(sandbox_port)

    # 2. Again: the edit is kept (and said so), the stand-in remembers the incident it opened.
    run = start()
    run.wait_for(admin_line)
    assert "kept page-on-critical: changed since it was loaded (version 2 by admin" in run.output
    assert f"state: {len(paged)} incidents restored" in run.output
    assert get_json(f"{stand_in}/_sandbox/state")["incidents"][0]["id"] == paged[0]["id"]
    # Resolving the demo incident resolves the PagerDuty incident opened before the restart.
    manage(
        {**env, "PYTHONPATH": str(ROOT)},
        "from apps.incidents.models import Incident; from apps.incidents.services import incident_update;"
        "i = Incident.objects.get(status='Investigating', severity=1); incident_update(incident_id=i.pk, status='Resolved')",
    )
    wait_until(
        lambda: get_json(f"{stand_in}/_sandbox/state")["incidents"][0]["status"] == "resolved",
        "the PagerDuty incident opened before the restart was not resolved after it",
    )
    assert (
        manage(
            {**env, "PYTHONPATH": str(ROOT)},
            "from apps.runbooks.models import RunbookRun; print(RunbookRun.objects.get(runbook__slug='resolve-on-closure').status)",
        )
        == "succeeded"
    )

    assert run.ctrl_c() == 0, run.output
    assert not [word for word in CRASH_WORDS if word in run.output.split(admin_line)[1]], run.output
    assert left_behind(var_dir) == []
    # The embedded broker keeps its files under var/: nothing new beside the code.
    assert {p.name for p in ROOT.iterdir()} == root_before
    assert (var_dir / "broker" / "control").is_dir()
