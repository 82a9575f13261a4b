"""A connection's webhook subscription at PagerDuty: made, listed, pinged and removed from here, its
signing secret kept encrypted and write-only on the connection.

PagerDuty shows the secret once, in the answer to the create request: it is stored in the same
step. A subscription made in PagerDuty's own UI gives its secret to a person, who hands it over
through PAGERDUTY_WEBHOOK_SECRET (`--secret-from-env`). Subscribing again while one exists keeps
the old secret as the previous one, so deliveries signed with either are accepted during the switch.
"""

import contextlib
import logging
import os
import re

from django.db import transaction

from apps.core.api_fields import _LABEL, _OCTET, _PCHAR, _PORT
from apps.core.errors import DomainError
from apps.core.redaction import register_secret
from apps.pagerduty import payloads
from apps.pagerduty.client import RetryPolicy
from apps.pagerduty.errors import PagerDutyError, PagerDutyNotFound
from apps.pagerduty.models import PagerDutyConnection
from apps.pagerduty.services import connection_client
from apps.pagerduty.webhooks import INCIDENT_EVENT_TYPES

logger = logging.getLogger(__name__)

SECRET_ENV = "PAGERDUTY_WEBHOOK_SECRET"
URL_MAX = 500
SECRET_MAX = 200
PAGERDUTY_ID = re.compile(r"[A-Z0-9]{2,32}")
PAGERDUTY_ID_OR_BLANK = r"^(?:[A-Z0-9]{2,32})?\Z"


# Where PagerDuty may deliver: https to a host name or IPv4 address, http only to this machine
# (the local stand-in). One pattern for the validator and the API schema, read alike by Python
# and ECMAScript.
WEBHOOK_URL = re.compile(
    rf"^(?:https://(?:(?:{_LABEL}\.)+[A-Za-z]{{2,63}}|localhost|{_OCTET}(?:\.{_OCTET}){{3}})"
    rf"|http://(?:localhost|127\.0\.0\.1))(?::{_PORT})?(?:/{_PCHAR}*)?(?:\?(?:{_PCHAR}|\?)*)?\Z"
)


def webhook_url_problem(url) -> str | None:
    """Why PagerDuty could not (or should not) deliver to `url`, or None."""
    if not isinstance(url, str) or not url.strip():
        return "is empty"
    if len(url) > URL_MAX:
        return f"is {len(url)} characters long; the limit is {URL_MAX}"
    if not WEBHOOK_URL.match(url):
        return (
            "must be https://host[:port][/path] (no spaces, credentials or fragment); http is allowed only "
            "on localhost and 127.0.0.1"
        )
    return None


def _subscription_filter(*, service_id: str, team_id: str) -> tuple[str, str]:
    if service_id and team_id:
        raise DomainError("Give a service or a team to filter on, not both", field="service_id")
    for field, value in (("service_id", service_id), ("team_id", team_id)):
        if value and not PAGERDUTY_ID.fullmatch(value):
            raise DomainError(f"{field} {value[:40]!r} is not a PagerDuty id (like P1234AB)", field=field)
    if service_id:
        return "service_reference", service_id
    if team_id:
        return "team_reference", team_id
    return "account_reference", ""


def _keep_secret(connection: PagerDutyConnection, secret: str) -> None:
    register_secret(secret)
    current = connection.webhook_secret
    if current and current != secret:
        connection.webhook_secret_previous = current
    connection.webhook_secret = secret


def webhook_subscribe(
    *, connection: PagerDutyConnection, url: str, service_id: str = "", team_id: str = "", events=None
) -> dict:
    """Create the subscription at PagerDuty and keep its secret. Returns PagerDuty's subscription
    without the secret."""
    url = (url or "").strip()
    problem = webhook_url_problem(url)
    if problem:
        raise DomainError(f"The webhook URL {problem}", field="url")
    filter_type, filter_id = _subscription_filter(
        service_id=(service_id or "").strip(), team_id=(team_id or "").strip()
    )
    events = list(events or INCIDENT_EVENT_TYPES)
    unknown = [e for e in events if e not in INCIDENT_EVENT_TYPES]
    if unknown or len(events) > len(INCIDENT_EVENT_TYPES):
        raise DomainError(
            f"Unknown event types {unknown[:5]}; expected some of {', '.join(INCIDENT_EVENT_TYPES)}", field="events"
        )
    body = payloads.webhook_subscription_payload(
        url=url,
        events=sorted(set(events)),
        filter_type=filter_type,
        filter_id=filter_id,
        description=f"Runbook automation, connection {connection.name}",
    )
    client = connection_client(connection=connection, retry=RetryPolicy(max_attempts=2))
    subscription = client.create_webhook_subscription(body)
    secret = ((subscription.get("delivery_method") or {}).get("secret") or "").strip()
    if not secret:
        raise DomainError(
            f"PagerDuty created subscription {subscription['id']} but returned no signing secret, so its webhooks "
            f"could not be checked; remove it and subscribe again, or copy its secret into {SECRET_ENV} and use "
            "--secret-from-env",
            field="url",
        )
    with transaction.atomic():
        connection = PagerDutyConnection.objects.select_for_update().get(pk=connection.pk)
        _keep_secret(connection, secret)
        connection.webhook_subscription_id = str(subscription["id"])[:32]
        connection.save(
            update_fields=["webhook_secret", "webhook_secret_previous", "webhook_subscription_id", "updated_at"]
        )
    return _shown(subscription)


def webhook_secret_from_env(*, connection: PagerDutyConnection, subscription_id: str = "") -> None:
    """Keep the secret of a subscription made in PagerDuty's UI, read from PAGERDUTY_WEBHOOK_SECRET."""
    secret = (os.environ.get(SECRET_ENV) or "").strip()
    if not secret:
        raise DomainError(f"{SECRET_ENV} is not set or empty", field="secret")
    if len(secret) > SECRET_MAX or not secret.isprintable():
        raise DomainError(f"{SECRET_ENV} must be printable text of at most {SECRET_MAX} characters", field="secret")
    with transaction.atomic():
        connection = PagerDutyConnection.objects.select_for_update().get(pk=connection.pk)
        _keep_secret(connection, secret)
        if subscription_id:
            connection.webhook_subscription_id = subscription_id[:32]
        connection.save(
            update_fields=["webhook_secret", "webhook_secret_previous", "webhook_subscription_id", "updated_at"]
        )


def webhook_subscriptions_list(*, connection: PagerDutyConnection) -> list[dict]:
    client = connection_client(connection=connection, retry=RetryPolicy(max_attempts=2))
    return [_shown(s) for s in client.list_webhook_subscriptions()]


def webhook_ping(*, connection: PagerDutyConnection) -> str:
    if not connection.webhook_subscription_id:
        raise DomainError(f"Connection {connection.name!r} has no webhook subscription to ping", field="connection")
    client = connection_client(connection=connection, retry=RetryPolicy(max_attempts=2))
    client.ping_webhook_subscription(connection.webhook_subscription_id)
    return connection.webhook_subscription_id


def webhook_unsubscribe(*, connection: PagerDutyConnection, subscription_id: str = "") -> str:
    """Remove the subscription at PagerDuty (gone already counts as removed) and, when it was this
    connection's, forget its secrets. Returns the id removed."""
    subscription_id = subscription_id or connection.webhook_subscription_id
    if not subscription_id:
        raise DomainError(f"Connection {connection.name!r} has no webhook subscription", field="connection")
    client = connection_client(connection=connection, retry=RetryPolicy(max_attempts=2))
    with contextlib.suppress(PagerDutyNotFound):  # already gone is what we wanted
        client.delete_webhook_subscription(subscription_id)
    if subscription_id == connection.webhook_subscription_id:
        PagerDutyConnection.objects.filter(pk=connection.pk).update(
            webhook_subscription_id="", webhook_secret="", webhook_secret_previous=""
        )
        connection.webhook_subscription_id = connection.webhook_secret = connection.webhook_secret_previous = ""
    return subscription_id


def connection_delete(*, connection: PagerDutyConnection) -> str:
    """Delete a connection, its subscription at PagerDuty first: PagerDuty would otherwise keep
    delivering to a door that now answers 404. PagerDuty unreachable does not keep the connection
    alive (the subscription is then disabled by PagerDuty after three refusals); the message says so."""
    note = ""
    if connection.webhook_subscription_id:
        try:
            webhook_unsubscribe(connection=connection)
            note = f"Its webhook subscription {connection.webhook_subscription_id or ''} was removed at PagerDuty."
        except (PagerDutyError, DomainError) as exc:
            logger.warning(
                "connection %s deleted; its webhook subscription stays at PagerDuty: %s", connection.name, exc
            )
            note = f"Its webhook subscription could not be removed at PagerDuty ({exc}); remove it there."
    connection.delete()
    return note


def _shown(subscription: dict) -> dict:
    """A subscription as we show it: never its secret."""
    delivery = dict(subscription.get("delivery_method") or {})
    delivery.pop("secret", None)
    return {
        "id": subscription.get("id", ""),
        "url": delivery.get("url", ""),
        "events": subscription.get("events") or [],
        "filter": subscription.get("filter") or {},
        "active": subscription.get("active", True),
        "temporarily_disabled": bool(delivery.get("temporarily_disabled")),
        "description": subscription.get("description", ""),
    }
