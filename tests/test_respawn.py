"""bin/respawn, which `make run` puts the worker and beat under: a process that exits on its own is
started again; a stop request stops it for good and reaches the process."""

import os
import signal
import subprocess
import time
from pathlib import Path

from bench._stack import RESPAWN


def _wait(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_process_that_dies_is_started_again_and_a_stop_stops_it(tmp_path: Path):
    starts = tmp_path / "starts"
    stopped = tmp_path / "stopped"
    # Dies at once the first two times (as a worker does on an unrecoverable error), then stays up
    # until terminated, noting that it was.
    script = (
        f"echo x >> {starts}; [ $(wc -l < {starts}) -lt 3 ] && exit 3; "
        f"trap 'echo term > {stopped}; exit 0' TERM; while :; do sleep 0.05; done"
    )
    supervisor = subprocess.Popen(
        [str(RESPAWN), "sh", "-c", script],
        env={**os.environ, "RESPAWN_DELAY": "0.1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait(lambda: starts.exists() and len(starts.read_text().split()) == 3)
    time.sleep(0.3)
    assert supervisor.poll() is None
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=10) == 0
    assert stopped.read_text().strip() == "term"
    assert len(starts.read_text().split()) == 3  # not started again after the stop
    log = supervisor.stderr.read()
    assert log.count("exited with status 3; starting it again in 0.1s") == 2
