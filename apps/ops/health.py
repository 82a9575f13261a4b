"""/healthz: can the service do its job right now? Database, broker, and a worker executing tasks."""

import logging

from django.conf import settings
from django.db import connection
from django.utils import timezone

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_broker() -> None:
    from config.celery import app

    with app.connection_for_write(connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1, timeout=3)


def worker_heartbeat_age() -> float | None:
    from apps.ops.models import Heartbeat

    beat = Heartbeat.objects.filter(name="worker").first()
    return None if beat is None else max(0.0, (timezone.now() - beat.at).total_seconds())


def health() -> tuple[bool, dict]:
    """(healthy, answer). The answer names each check ok/failing and nothing more: /healthz is
    public, so the reasons (hosts, errors) go to the log only."""
    checks, age = {}, None
    for name, check in (("database", check_database), ("broker", check_broker)):
        try:
            check()
        except Exception as exc:
            logger.warning("healthz: %s failing: %s: %s", name, type(exc).__name__, exc)
            checks[name] = "failing"
        else:
            checks[name] = "ok"
    if checks["database"] == "ok":
        age = worker_heartbeat_age()
    stale_after = settings.HEARTBEAT_STALE_AFTER_SECONDS
    checks["worker"] = "ok" if age is not None and age <= stale_after else "failing"
    if checks["worker"] != "ok" and checks["database"] == "ok":
        logger.warning(
            "healthz: worker failing: %s", "no heartbeat yet" if age is None else f"last heartbeat {age:.0f} s ago"
        )
    healthy = all(value == "ok" for value in checks.values())
    answer = {"status": "ok" if healthy else "failing", "checks": checks}
    if age is not None:
        answer["worker_heartbeat_age_seconds"] = round(age, 1)
    return healthy, answer
