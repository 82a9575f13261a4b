"""bin/local-services, which `make test` asks which local servers to use: a server counts only when
it accepts the connection (PostgreSQL login, Redis PING), not when something merely listens."""

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(**env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, str(ROOT / "bin" / "local-services")],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_open_port_that_refuses_the_conversation_is_not_used():
    # Something listens (as PostgreSQL with password auth, or another program, would) but hangs up.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def hang_up():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        done = _run(
            LOCAL_POSTGRES_URL=f"postgres://postgres@127.0.0.1:{port}/test",
            LOCAL_REDIS_URL=f"redis://127.0.0.1:{port}/15",
        )
    finally:
        server.close()
    assert done.returncode == 0
    assert done.stdout == ""
    assert f"not using postgres://postgres@127.0.0.1:{port}/test: " in done.stderr
    assert f"not using redis://127.0.0.1:{port}/15: " in done.stderr


def test_variables_already_set_are_left_alone():
    done = _run(DATABASE_URL="postgres://elsewhere/db", REDIS_URL="redis://elsewhere/3")
    assert (done.stdout, done.stderr) == ("", "")


def test_redis_gets_a_database_of_its_own_by_default():
    source = (ROOT / "bin" / "local-services").read_text()
    assert '"redis://127.0.0.1:6379/15"' in source
    assert 'REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/15}"' in (ROOT / ".ci" / "run").read_text()
