"""Latency on the embedded default (`make run` with no DATABASE_URL / REDIS_URL): SQLite under a
private var dir, Celery's filesystem broker, one `celery worker` as the Procfile starts it, the
stand-in in this process. Status change committed → the stand-in receives POST /incidents, one
incident at a time through the example runbook page-on-critical. Prints one figure; asserts nothing.

    .venv/bin/python bench/embedded.py --count 50      # also run (and printed) by `make bench`

Runs in a process of its own because Django's settings (database, broker) are fixed per process.
"""

import argparse
import io
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stack import Procfile  # noqa: E402

TOKEN = "sandbox-token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50, help="status changes, one at a time")
    args = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix="bench-embedded-"))
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PAGERDUTY_RATE_LIMIT_REDIS_URL", "CELERY_QUEUE"):
        os.environ.pop(name, None)
    env = {
        "VAR_DIR": str(var_dir),
        "LOG_LEVEL": "WARNING",
        "PAGERDUTY_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from apps.pagerduty.services import connection_upsert
    from apps.sandbox import SandboxServer, seed_account
    from bench.run import latency_phase, make_timed_state_class, percentile

    call_command("migrate", verbosity=0)
    state = make_timed_state_class()(tokens={TOKEN}, contract=False)
    seed_account(state, seed=1)
    server = SandboxServer(state, host="127.0.0.1", port=0).start()
    procs = Procfile(env, var_dir)
    ok = False
    try:
        connection = connection_upsert(name="default", api_key=TOKEN, from_email="sre@example.com", api_url=server.url)
        connection.service_mappings.create(service="", pagerduty_service_id="PSVC001")
        call_command("load_runbooks", str(ROOT / "runbooks"), stdout=io.StringIO())
        procs.worker(f"embedded-{uuid.uuid4().hex[:6]}", queue=settings.CELERY_TASK_DEFAULT_QUEUE)
        r = latency_phase(state, args.count)
        lat, hops = r["latencies"], r["hops"]
        interval = settings.CELERY_BROKER_TRANSPORT_OPTIONS["polling_interval"]
        print(
            f"embedded: status change → stand-in request (SQLite, filesystem broker polling every {interval * 1000:.0f} ms, "
            f"one worker, {len(lat)} incidents one at a time): p50 {percentile(lat, 50):.0f} ms, "
            f"p95 {percentile(lat, 95):.0f} ms, max {max(lat):.0f} ms; medians per hop: dispatch "
            f"{hops['dispatch']:.0f} ms (run created, first step claimed in the same task), request {hops['step']:.0f} ms; "
            f"runs not succeeded {r['failed']}",
            flush=True,
        )
        ok = True
    finally:
        procs.stop()
        server.stop()
        if ok:
            shutil.rmtree(var_dir, ignore_errors=True)
        else:
            print(f"worker log kept in {var_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
