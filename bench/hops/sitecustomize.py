"""Loaded by bench/hops.py into the bench and worker processes (PYTHONPATH): notes, on the machine's
monotonic clock (one clock for every process), when each hop of the latency phase starts and ends.

Not part of the service: nothing imports it unless bench/hops.py puts this folder on PYTHONPATH.
Each process appends `<monotonic> <mark> <detail> <pid>` lines to $HOPS_DIR/<pid>.log."""

import functools
import os
import time

_DIR = os.environ.get("HOPS_DIR")
_file = None


def mark(what: str, detail: str = "") -> None:
    global _file
    if _file is None:
        _file = open(os.path.join(_DIR, f"{os.getpid()}.log"), "a", buffering=1)  # noqa: SIM115
    _file.write(f"{time.monotonic():.6f} {what} {detail or '-'} {os.getpid()}\n")


def wrap(owner, name: str, what: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        mark(f"{what}:in")
        try:
            return original(*args, **kwargs)
        finally:
            mark(f"{what}:out")

    setattr(owner, name, wrapper)


def _in_worker(**_):
    from django.db.backends import utils

    from apps.pagerduty import client
    from apps.runbooks import services

    wrap(services, "runs_create_for_event", "dispatch")
    wrap(services, "_run_create", "create")
    wrap(services._StepRecord, "mark_running", "running")
    wrap(client.PagerDutyClient, "_wait_for_budget", "budget")
    wrap(client.PagerDutySession, "send", "send")
    execute = utils.CursorWrapper._execute

    def traced(self, sql, *args, **kwargs):
        mark("sql:in", sql.split('"', 2)[0].strip().split(" ")[0] + ":" + (sql.split('"')[1] if '"' in sql else "?"))
        try:
            return execute(self, sql, *args, **kwargs)
        finally:
            mark("sql:out")

    utils.CursorWrapper._execute = traced
    from django.db.backends.base import base

    commit = base.BaseDatabaseWrapper._commit

    def traced_commit(self):
        mark("commit:in")
        try:
            return commit(self)
        finally:
            mark("commit:out")

    base.BaseDatabaseWrapper._commit = traced_commit


if _DIR:
    try:
        import http.server

        import kombu.messaging
        from celery import signals

        wrap(kombu.messaging.Producer, "publish", "publish")
        wrap(http.server.BaseHTTPRequestHandler, "parse_request", "arrive")
        signals.worker_process_init.connect(_in_worker, weak=False)
        signals.task_prerun.connect(lambda **_: mark("task"), weak=False)
    except ImportError:
        pass
