"""The worker heartbeat: beat sends `heartbeat` every HEARTBEAT_INTERVAL seconds; a worker that
becomes ready sends one at once, so /healthz turns healthy as soon as a worker consumes."""

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.utils import timezone

from apps.ops.models import Heartbeat

logger = logging.getLogger(__name__)
WORKER = "worker"


@shared_task(bind=True, ignore_result=True)
def heartbeat(self) -> None:
    Heartbeat.objects.update_or_create(
        name=WORKER, defaults={"at": timezone.now(), "hostname": (self.request.hostname or "")[:255]}
    )


@worker_ready.connect
def beat_on_ready(sender=None, **kwargs):
    try:
        heartbeat.delay()
    except Exception as exc:  # a broker hiccup at start must not take the worker down
        logger.warning("could not queue the first heartbeat: %s", exc)
