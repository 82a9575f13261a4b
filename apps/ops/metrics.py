"""Prometheus metrics (prometheus-client), across processes.

Two kinds, because the service is several processes (gunicorn workers, Celery pool processes):

- **Events counted where they happen** — PagerDuty requests by answer, 429s, waits for the shared
  rate budget, step durations — are prometheus-client counters and a histogram. With
  PROMETHEUS_MULTIPROC_DIR set (a directory shared by the processes of one host, emptied when the
  service starts; `make run` uses var/metrics), every process writes its own file and /metrics adds
  them up, so a worker's requests show in the web process's answer. Without it (a single process,
  the tests) they live in the process's default registry.
- **State read at scrape time** — runs by status, queue depth, the heartbeat's age — is read from
  the database and the broker by `StateCollector` on each scrape: the same answer from any web
  process on any host, nothing to add up.
"""

import logging
import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

PAGERDUTY_REQUESTS = Counter(
    "pagerduty_requests",
    "HTTP requests sent to PagerDuty (every attempt and look-up), by method and answer: the status code, "
    "or 'error' when no answer came (timeout, connection dropped)",
    ["method", "status"],
)
PAGERDUTY_THROTTLED = Counter("pagerduty_throttled", "PagerDuty answers 429 Too Many Requests")
RATE_BUDGET_WAITS = Counter(
    "pagerduty_rate_budget_waits", "Requests that waited for a slot of the shared per-key rate budget"
)
RATE_BUDGET_WAIT_SECONDS = Counter(
    "pagerduty_rate_budget_wait_seconds", "Seconds requests spent waiting for the shared per-key rate budget"
)
STEP_DURATION = Histogram(
    "runbook_step_duration_seconds",
    "Runbook step duration, from start (or the write, after a crash) to finish, by action and outcome",
    ["action", "status"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def pagerduty_request(method: str, status: int | None) -> None:
    PAGERDUTY_REQUESTS.labels(method=method.upper(), status=str(status) if status else "error").inc()
    if status == 429:
        PAGERDUTY_THROTTLED.inc()


def rate_budget_waited(seconds: float) -> None:
    if seconds > 0:
        RATE_BUDGET_WAITS.inc()
        RATE_BUDGET_WAIT_SECONDS.inc(seconds)


def queue_depths() -> dict[str, int]:
    """Messages waiting in each queue the workers consume (the default queue), from the broker."""
    from django.conf import settings

    from config.celery import app

    depths = {}
    with app.connection_for_read(connect_timeout=2) as connection:
        channel = connection.default_channel
        for queue in (settings.CELERY_TASK_DEFAULT_QUEUE,):
            try:
                depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except Exception:  # a queue nobody declared yet holds nothing
                depths[queue] = 0
    return depths


class StateCollector:
    """Read at each scrape from the database and the broker."""

    def collect(self):
        from django.db.models import Count
        from django.utils import timezone

        from apps.ops.models import Heartbeat
        from apps.runbooks.models import RunbookRun, RunStatus

        runs = GaugeMetricFamily("runbook_runs", "Runbook runs stored, by status", labels=["status"])
        counted = dict(RunbookRun.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
        for status in sorted({*RunStatus.values, *counted}):
            runs.add_metric([status], counted.get(status, 0))
        yield runs

        beat = Heartbeat.objects.filter(name="worker").first()
        age = GaugeMetricFamily(
            "worker_heartbeat_age_seconds", "Seconds since a worker last executed the heartbeat task (absent: never)"
        )
        if beat is not None:
            age.add_metric([], max(0.0, (timezone.now() - beat.at).total_seconds()))
        yield age

        up = GaugeMetricFamily("broker_up", "1 when the broker answered this scrape")
        depth = GaugeMetricFamily("celery_queue_depth", "Messages waiting in the queue", labels=["queue"])
        try:
            depths = queue_depths()
        except Exception as exc:
            logger.warning("metrics: broker unavailable: %s", exc)
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
            for queue, n in depths.items():
                depth.add_metric([queue], n)
        yield up
        yield depth


def events_text() -> bytes:
    """The counters and histogram: added up over this host's processes in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def render() -> bytes:
    """The exposition text: the events counted by the processes, then the state read now."""
    state = CollectorRegistry(auto_describe=False)
    state.register(StateCollector())
    return events_text() + generate_latest(state)
