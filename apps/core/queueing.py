"""Queue a Celery task for work whose change is already committed.

The database is the record of what is left to do: an event not yet dispatched, a pending run, a
run whose lease expired are all found again by the recovery sweep. So when the broker cannot take
the message (Redis restarting, unreachable), the committed change stands, the failure is logged,
and the caller goes on: a saved status change is never answered with a 500 because of the broker.
"""

import logging

from kombu.exceptions import ConnectionError as KombuConnectionError
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# What publishing raises when the broker is away: Celery wraps transport errors in kombu's
# OperationalError after its publish retries; the rest can surface from a connection pool.
BROKER_ERRORS = (OperationalError, KombuConnectionError, RedisError, OSError)


def enqueue(task, *args, recovery: str, countdown: float | None = None) -> bool:
    """`task.delay(*args)` (after `countdown` seconds, if given); on a broker error log it, naming what
    will pick the work up, and return False."""
    try:
        if countdown:
            task.apply_async(args, countdown=countdown)
        else:
            task.delay(*args)
    except BROKER_ERRORS as exc:
        logger.warning(
            "broker unavailable, %s%r not queued (%s: %s); %s",
            task.name,
            args,
            type(exc).__name__,
            exc,
            recovery,
        )
        return False
    return True
