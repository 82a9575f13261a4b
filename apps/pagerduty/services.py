from django.db import transaction
from django.utils import timezone

from apps.core.errors import DomainError
from apps.pagerduty.client import PagerDutyClient, RetryPolicy
from apps.pagerduty.errors import PagerDutyDestinationRefused, PagerDutyError
from apps.pagerduty.models import DEFAULT_API_URL, PagerDutyConnection, events_url_for
from apps.pagerduty.ratelimit import limiter_for
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
