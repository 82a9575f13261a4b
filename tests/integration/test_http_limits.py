"""Body limits over real HTTP, through gunicorn (the `web` process of the Procfile).

The size check has two halves: a declared Content-Length over the limit is refused before a byte
of the body is read; a body streamed without one (Transfer-Encoding: chunked) is read up to the
limit and refused there. Both are shown on the wire, with a raw socket so the client keeps
sending after the server has answered, as a hostile client would.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.authtoken.models import Token

from apps.core.limits import MAX_REQUEST_BODY_BYTES
from apps.incidents.models import Incident
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def web(real_services, transactional_db, tmp_path):
    """gunicorn serving config.wsgi on a free port, reading the test database."""
    db = connection.settings_dict
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        # Runs an incident change would start are not this test's subject: no broker needed.
        "CELERY_BROKER_URL": "memory://",
        "VAR_DIR": str(tmp_path / "var"),
    }
    log = (tmp_path / "gunicorn.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1", "--timeout", "60"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"gunicorn did not start: {(tmp_path / 'gunicorn.log').read_text()[-2000:]}")
            time.sleep(0.2)
    user = get_user_model().objects.create_superuser("web", password="pw-web-123456")
    yield port, Token.objects.create(user=user).key
    process.terminate()
    process.wait(timeout=10)
    log.close()


def _exchange(port: int, head: str, chunks) -> tuple[int, dict]:
    """Send `head`, then the chunks while the server still listens; return (status, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the end: that is the point
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
    head_part, _, body = answer.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head_part.lower():
        body = _dechunk(body)
    return status, json.loads(body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def _chunked(body: bytes, piece: int = 64 * 1024):
    for start in range(0, len(body), piece):
        part = body[start : start + piece]
        yield b"%x\r\n%s\r\n" % (len(part), part)
    yield b"0\r\n\r\n"


def _head(token: str, *, length: int | None = None) -> str:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        "POST /api/v1/incidents/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Token {token}\r\nContent-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
    )


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(web):
    port, token = web
    status, body = _exchange(port, _head(token, length=50 * 1024 * 1024), [b"x" * 65536])
    assert status == 413
    assert body["message"] == (
        f"The request body is 52,428,800 bytes; the limit is {MAX_REQUEST_BODY_BYTES:,} bytes (1 MiB)."
    )


def test_a_streamed_body_over_the_limit_is_refused_at_the_limit(web):
    port, token = web
    payload = json.dumps({"title": "x", "summary": "s" * (2 * 1024 * 1024)}).encode()
    status, body = _exchange(port, _head(token), _chunked(payload))
    assert status == 413
    assert "more than 1,048,576 bytes (streamed)" in body["message"]
    assert Incident.objects.count() == 0


def test_a_streamed_body_within_the_limit_is_read_like_any_other(web):
    port, token = web
    status, body = _exchange(port, _head(token), _chunked(json.dumps({"title": "Sent in chunks"}).encode(), 5))
    assert status == 201, body
    assert Incident.objects.get().title == "Sent in chunks"
