"""PagerDuty v3 webhooks in: signature, storage, dedup. Processing happens on a worker (tasks).

The receiver has no login: the `X-PagerDuty-Signature` header is the authentication. It is
checked on the raw body before anything is parsed or stored, in the order DESIGN.md gives so
that a caller learns nothing it could not already know: unknown connection 404, body over
256 KB 413, no usable signature header 400, no matching signature 403, then dedup by
`X-Webhook-Id` (a redelivery answers 202 and changes nothing).
"""

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.core.queueing import enqueue
from apps.core.sql import CompiledQuery
from apps.pagerduty import tasks
from apps.pagerduty.models import PagerDutyConnection, WebhookDelivery
from apps.pagerduty.signals import webhook_event_received

logger = logging.getLogger(__name__)

# PagerDuty drops payloads over 256 KB; anything larger is not PagerDuty.
WEBHOOK_BODY_MAX = 256 * 1024
# One signature per secret PagerDuty signs with (two during a rotation): more is not PagerDuty.
SIGNATURES_MAX = 10
WEBHOOK_ID_MAX = 100

# Every incident event type PagerDuty documents (shared/pagerduty/README.md "Webhooks"): the
# default of a new subscription and what the mirror understands. Others are stored and ignored.
INCIDENT_EVENT_TYPES = (
    "incident.triggered",
    "incident.acknowledged",
    "incident.unacknowledged",
    "incident.resolved",
    "incident.reopened",
    "incident.reassigned",
    "incident.delegated",
    "incident.escalated",
    "incident.priority_updated",
    "incident.annotated",
    "incident.responder.added",
    "incident.responder.replied",
    "incident.status_update_published",
)


@dataclass
class WebhookAnswer:
    status: int
    message: str
    delivery: WebhookDelivery | None = None
    created: bool = False


def signature_for(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signatures_in(header: str) -> list[str]:
    """The v1 signatures of an `X-PagerDuty-Signature` header; other versions are ignored."""
    found = []
    for part in header.split(",")[: SIGNATURES_MAX * 2]:
        version, _, value = part.strip().partition("=")
        if version == "v1" and value:
            found.append(value.strip())
    return found[:SIGNATURES_MAX]


def signature_valid(*, body: bytes, signatures: list[str], secrets: list[str]) -> bool:
    """Any signature made with any secret. Every pair is compared, in constant time each."""
    expected = [signature_for(body, secret) for secret in secrets]
    matched = False
    for given in signatures:
        for wanted in expected:
            matched |= hmac.compare_digest(given.lower().encode(), wanted.encode())
    return matched


def _incident_id(event: dict) -> str:
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    if event.get("resource_type") == "incident" or data.get("type") == "incident":
        return str(data.get("id") or "")[:32]
    incident = data.get("incident") if isinstance(data.get("incident"), dict) else {}
    return str(incident.get("id") or "")[:32]


def _occurred_at(event: dict) -> datetime | None:
    try:
        return parse_datetime(str(event.get("occurred_at") or ""))
    except ValueError:
        return None


def webhook_receive(
    *, connection_name: str, body: bytes, signature_header: str | None, webhook_id: str
) -> WebhookAnswer:
    """Check, store and answer one delivery. The caller queues processing for a created delivery."""
    connection = PagerDutyConnection.objects.filter(name=connection_name).first()
    if connection is None:
        return WebhookAnswer(404, f"No PagerDuty connection named {connection_name[:100]!r}.")
    if len(body) > WEBHOOK_BODY_MAX:
        return WebhookAnswer(413, f"The body is over {WEBHOOK_BODY_MAX:,} bytes; PagerDuty sends at most that.")
    if not signature_header:
        return WebhookAnswer(400, "The X-PagerDuty-Signature header is missing.")
    signatures = signatures_in(signature_header)
    if not signatures:
        return WebhookAnswer(400, "The X-PagerDuty-Signature header holds no v1= signature.")
    secrets = connection.webhook_secrets
    if not secrets or not signature_valid(body=body, signatures=signatures, secrets=secrets):
        if not secrets:
            logger.warning("webhook for connection %s refused: it has no webhook secret", connection.name)
        return WebhookAnswer(403, "No valid signature for this connection's webhook secret.")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return WebhookAnswer(400, "The body is not JSON.")
    event = payload.get("event") if isinstance(payload, dict) else None
    if not isinstance(event, dict):
        return WebhookAnswer(400, 'The body has no "event" object.')
    # Same for every retry of one delivery; the event id stands in if a proxy dropped the header.
    webhook_id = (webhook_id or str(event.get("id") or "")).strip()[:WEBHOOK_ID_MAX]
    if not webhook_id:
        return WebhookAnswer(400, "Neither an X-Webhook-Id header nor an event id to tell redeliveries apart.")
    if WebhookDelivery.objects.filter(connection=connection, webhook_id=webhook_id).exists():
        return WebhookAnswer(202, "Already received; nothing changed.")
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                connection=connection,
                webhook_id=webhook_id,
                event_id=str(event.get("id") or "")[:100],
                event_type=str(event.get("event_type") or "")[:100],
                resource_type=str(event.get("resource_type") or "")[:50],
                occurred_at=_occurred_at(event),
                pagerduty_incident_id=_incident_id(event),
                payload=payload,
            )
    except IntegrityError:
        # The same delivery arrived twice at once: the other request stored it.
        return WebhookAnswer(202, "Already received; nothing changed.")
    return WebhookAnswer(202, "Accepted.", delivery, created=True)


# --- processing (on a worker) ----------------------------------------------------------------------

SWEEP = "the webhook recovery sweep processes the stored delivery once the broker is back"


def webhook_enqueue(delivery_id: int) -> None:
    """Queue processing once the delivery is committed; a broker that is away leaves it to the sweep."""
    transaction.on_commit(lambda: enqueue(tasks.process_webhook_delivery, delivery_id, recovery=SWEEP))


def webhook_process(*, delivery_id: int) -> str | None:
    """Apply one stored delivery once. The row lock makes a second delivery of the message wait,
    then find it processed and do nothing."""
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None or delivery.processed_at is not None:
            return None
        if delivery.event_type not in INCIDENT_EVENT_TYPES:
            outcome = f"ignored: event type {delivery.event_type!r} is not one this service acts on"
        else:
            answers = [answer for _, answer in webhook_event_received.send(sender=WebhookDelivery, delivery=delivery)]
            outcome = "; ".join(a for a in answers if a) or "nothing to do"
        delivery.processed_at = timezone.now()
        delivery.outcome = outcome[:300]
        delivery.save(update_fields=["processed_at", "outcome"])
        return delivery.outcome


def webhooks_recover(*, pending_after_seconds: int | None = None, max_age_hours: int = 24) -> int:
    """Re-queue stored deliveries nobody processed (broker away at receipt, worker lost)."""
    if pending_after_seconds is None:
        pending_after_seconds = settings.RUN_RECOVERY_PENDING_AFTER_SECONDS
    now = timezone.now()
    pending = list(
        WebhookDelivery.objects.filter(
            processed_at__isnull=True,
            received_at__lt=now - timedelta(seconds=pending_after_seconds),
            received_at__gt=now - timedelta(hours=max_age_hours),
        ).values_list("pk", flat=True)[:500]
    )
    for delivery_id in pending:
        tasks.process_webhook_delivery.delay(delivery_id)
    return len(pending)


def webhooks_replay_unlinked(*, connection: PagerDutyConnection, pagerduty_incident_id: str) -> int:
    """A link was just made: events PagerDuty sent before we knew the incident (its webhook can
    arrive before our create request's answer) are processed again, now that they have a home."""
    replay = [pk for (pk,) in _UNLINKED.rows(None, connection.pk, pagerduty_incident_id)]
    if replay:
        WebhookDelivery.objects.filter(pk__in=replay).update(processed_at=None, outcome="")
        for delivery_id in replay:
            webhook_enqueue(delivery_id)
    return len(replay)


NO_LINK = "no incident of ours is linked to this PagerDuty incident"
# Read after every link a step makes: compiled once per connection (apps.core.sql).
_UNLINKED = CompiledQuery(
    lambda _shape, connection_id, pd_incident_id: WebhookDelivery.objects.filter(
        connection_id=connection_id, pagerduty_incident_id=pd_incident_id, outcome=NO_LINK
    ).values_list("pk")[:100],
    -(2**62) + 51,
    "\x00pagerduty incident\x00",
)
