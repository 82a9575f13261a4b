import hashlib
import uuid
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core.errors import DomainError
from apps.pagerduty.client import PagerDutyClient, PagerDutyEventsClient, RetryPolicy
from apps.pagerduty.errors import PagerDutyDestinationRefused, PagerDutyError
from apps.pagerduty.models import DEFAULT_API_URL, DEFAULT_EVENTS_URL, Channel, PagerDutyConnection, events_url_for
from apps.pagerduty.payloads import SUMMARY_MAX_CHARS, event_payload
from apps.pagerduty.ratelimit import events_limiter_for, limiter_for
from apps.pagerduty.validators import url_problem


def connection_client(*, connection: PagerDutyConnection, **kwargs) -> PagerDutyClient:
    """The client for a stored connection; nothing is built for one whose key may not be sent.

    The URL was checked when it was saved, but PAGERDUTY_ALLOWED_HOSTS may have shrunk since, or the
    row may have been changed behind the model's back: the stored URL is checked again here."""
    problem = url_problem(connection.api_url)
    if problem:
        raise PagerDutyDestinationRefused(
            f"Connection {connection.name!r}: its api_url {problem}; the stored API key is not sent there. "
            "Correct api_url and enter the API key again."
        )
    if connection.api_key_unreadable or not connection.api_key:
        raise PagerDutyDestinationRefused(
            f"Connection {connection.name!r}: the stored API key cannot be decrypted with FIELD_ENCRYPTION_KEY "
            "(the key changed without keeping the old one); enter the API key again."
        )
    kwargs.setdefault("throttle", limiter_for(connection.api_key))
    return PagerDutyClient(
        api_key=connection.api_key, api_url=connection.api_url, from_email=connection.from_email, **kwargs
    )


@transaction.atomic
def connection_upsert(
    *,
    name: str,
    api_key: str | None = None,
    from_email: str,
    api_url: str = "",
    events_url: str = "",
    subdomain: str = "",
    pagerduty_resolve_resolves_incident: bool | None = None,
) -> PagerDutyConnection:
    """Create or update by name. A blank api_key keeps the stored one (the key is write-only); a blank
    events_url is the one that goes with api_url (US, EU, or the same host for the stand-in).

    Raises ValidationError naming the field: a URL outside PAGERDUTY_ALLOWED_HOSTS, a changed URL
    without the key, a key that cannot be sent as a header."""
    connection = PagerDutyConnection.objects.select_for_update().filter(name=name).first()
    api_key = (api_key or "").strip()  # copy-paste; the field's validator refuses what cannot be sent
    if connection is None:
        if not api_key:
            raise DomainError("A new connection needs an API key", field="api_key")
        connection = PagerDutyConnection(name=name)
    if api_key:
        connection.enter_api_key(api_key)
    connection.from_email = from_email
    connection.api_url = api_url or DEFAULT_API_URL
    connection.events_url = events_url or events_url_for(connection.api_url)
    connection.subdomain = subdomain or ""
    if pagerduty_resolve_resolves_incident is not None:
        connection.pagerduty_resolve_resolves_incident = pagerduty_resolve_resolves_incident
    connection.full_clean()
    connection.save()
    return connection


def connection_test(*, connection: PagerDutyConnection) -> tuple[bool, str]:
    """Asks PagerDuty which abilities the key has: proves URL, key and account in one request.

    The message of a failure says what PagerDuty answered and what to do about it (see hints)."""
    try:
        # One attempt: a person is waiting for the answer, and a retry would only hide the problem.
        client = connection_client(connection=connection, retry=RetryPolicy(max_attempts=1))
        abilities = client.test_connection().get("abilities") or []
        ok, message = True, f"Connected to {connection.api_url}; account abilities: {len(abilities)}"
    except PagerDutyError as exc:
        ok, message = False, str(exc)
    if connection.pk:
        PagerDutyConnection.objects.filter(pk=connection.pk).update(
            last_tested_at=timezone.now(), last_test_ok=ok, last_test_message=message
        )
    connection.last_test_ok, connection.last_test_message = ok, message
    return ok, message


# --- Events API v2 channels ----------------------------------------------------------------------


def channel_client(*, channel: Channel, **kwargs) -> PagerDutyEventsClient:
    """The Events API client for a stored channel, with the routing key's own rate budget; nothing
    is built for a channel whose key may not be sent (checked again: the allowed hosts may have
    shrunk since the channel was saved)."""
    problem = url_problem(channel.events_url)
    if problem:
        raise PagerDutyDestinationRefused(
            f"Channel {channel.name!r}: its events_url {problem}; the stored routing key is not sent there. "
            "Correct events_url and enter the routing key again."
        )
    if channel.routing_key_unreadable or not channel.routing_key:
        raise PagerDutyDestinationRefused(
            f"Channel {channel.name!r}: the stored routing key cannot be decrypted with FIELD_ENCRYPTION_KEY "
            "(the key changed without keeping the old one); enter the routing key again."
        )
    kwargs.setdefault("throttle", events_limiter_for(channel.routing_key))
    return PagerDutyEventsClient(routing_key=channel.routing_key, events_url=channel.events_url, **kwargs)


def default_event_source() -> str:
    """payload.source when neither the step nor the channel gives one: the host of SITE_URL."""
    return urlsplit(settings.SITE_URL).hostname or "runbook-automation"


def event_dedup_key(*, channel_name: str, summary: str) -> str:
    """The dedup key of an event whose step sets none: the same channel and summary give the same
    key in every run, so a repeated alert groups into one PagerDuty incident and a later step (or
    runbook) can acknowledge or resolve it knowing only the summary."""
    digest = hashlib.sha256(f"{channel_name}\n{summary}".encode()).hexdigest()[:40]
    return f"ai-sre-{channel_name[:60]}-{digest}"


@transaction.atomic
def channel_upsert(
    *,
    name: str,
    routing_key: str | None = None,
    events_url: str = "",
    summary_prefix: str = "",
    default_source: str = "",
) -> Channel:
    """Create or update by name. A blank routing_key keeps the stored one (write-only); a changed
    events_url needs the key again (ValidationError naming the field), like a connection's URLs."""
    channel = Channel.objects.select_for_update().filter(name=name).first()
    routing_key = (routing_key or "").strip()
    if channel is None:
        if not routing_key:
            raise DomainError("A new channel needs a routing key", field="routing_key")
        channel = Channel(name=name)
    if routing_key:
        channel.enter_routing_key(routing_key)
    channel.events_url = events_url or DEFAULT_EVENTS_URL
    channel.summary_prefix = summary_prefix or ""
    channel.default_source = default_source or ""
    channel.full_clean()
    channel.save()
    return channel


def channel_test(*, channel: Channel) -> tuple[bool, str]:
    """Trigger a test event, then resolve it with the same dedup key: proves URL, key and service
    end to end and leaves nothing open. A person is waiting, so each event gets one attempt."""
    dedup_key = f"ai-sre-channel-test-{uuid.uuid4().hex}"
    sent = []
    try:
        client = channel_client(channel=channel, retry=RetryPolicy(max_attempts=1))
        summary = f"{channel.summary_prefix}Test event from runbook automation (channel {channel.name})"
        client.enqueue(
            event_payload(
                action="trigger",
                dedup_key=dedup_key,
                summary=summary[:SUMMARY_MAX_CHARS],
                source=channel.default_source or default_event_source(),
                severity="info",
                custom_details={"test": "true", "channel": channel.name},
            )
        )
        sent.append("trigger")
        client.enqueue(event_payload(action="resolve", dedup_key=dedup_key))
        ok, message = True, f"Sent a trigger and a resolve to {channel.events_url} with dedup key {dedup_key}"
    except PagerDutyError as exc:
        done = f" (the trigger was accepted; resolve dedup key {dedup_key} in PagerDuty)" if sent else ""
        ok, message = False, f"{exc}{done}"
    if channel.pk:
        Channel.objects.filter(pk=channel.pk).update(
            last_tested_at=timezone.now(), last_test_ok=ok, last_test_message=message
        )
    channel.last_test_ok, channel.last_test_message = ok, message
    return ok, message
