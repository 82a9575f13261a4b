"""PagerDuty's refusals mapped to their likely causes and what a person does about them.

Pure functions: the client calls `hint_for` when PagerDuty answers with an error, so the connection
test (API, admin, `pagerduty_connect --test`) and a failed step's error text both carry the hint
after PagerDuty's own message. Codes are PagerDuty's (`error.code`): 2006 authentication failed,
2010 access denied, 2014 missing account ability, 2020 rate limit.
"""

import math
import re
from urllib.parse import urlsplit

US_API_URL, EU_API_URL = "https://api.pagerduty.com", "https://api.eu.pagerduty.com"
US_EVENTS_URL, EU_EVENTS_URL = "https://events.pagerduty.com", "https://events.eu.pagerduty.com"
# REST API keys are 20 characters (user tokens start with "u+"); Events API v2 routing keys are 32.
ROUTING_KEY_LENGTH = 32
_FROM_HEADER = re.compile(r'"from"|\bfrom header\b|\bfrom email\b', re.IGNORECASE)


def key_looks_like_routing_key(api_key: str) -> bool:
    return len(api_key or "") == ROUTING_KEY_LENGTH and str(api_key).isalnum()


def reset_phrase(reset_seconds: float | None) -> str:
    if reset_seconds is None:
        return "PagerDuty did not say when it resets (usually within a minute)"
    return f"it resets in {max(0, math.ceil(reset_seconds))} s"


def _region_advice(api_url: str) -> str:
    host = (urlsplit(api_url or "").hostname or "").lower()
    if host == "api.pagerduty.com":
        return (
            f"If the account is in PagerDuty's EU service region, set api_url to {EU_API_URL} and events_url "
            f"to {EU_EVENTS_URL}: a key only works in its own region."
        )
    if host == "api.eu.pagerduty.com":
        return (
            f"If the account is in PagerDuty's US service region, set api_url to {US_API_URL} and events_url "
            f"to {US_EVENTS_URL}: a key only works in its own region."
        )
    return f"Check that api_url is your account's region: {US_API_URL} (US) or {EU_API_URL} (EU)."


def hint_for(
    *,
    status: int | None,
    code: int | None = None,
    message: str = "",
    errors: list | tuple = (),
    api_url: str = "",
    routing_key_like: bool = False,
    reset_seconds: float | None = None,
) -> str:
    """One sentence or two, starting "What to do:", for an error PagerDuty answered; '' when we know no better."""
    text = " ".join([str(message or ""), *(str(e) for e in errors or ())])
    if status == 401 or code == 2006:
        causes = []
        if routing_key_like:
            causes.append(
                "The key is 32 characters long, like an Events API routing (integration) key, but this connection "
                "needs a REST API key (PagerDuty → Integrations → API Access Keys, or a user's own API token)."
            )
        causes.append("The key may have been revoked or deleted in PagerDuty: create a new one and enter it here.")
        causes.append(_region_advice(api_url))
        return "What to do: PagerDuty did not accept the API key. " + " ".join(causes)
    if status == 402 or code == 2014:
        return (
            "What to do: the PagerDuty account lacks the ability this request needs (a plan feature such as teams "
            "or coordinated responding); ask the account owner to enable it, or remove the step that needs it."
        )
    if status == 403 or code == 2010:
        return (
            "What to do: the key was accepted but may not do this. A user API token acts with its user's role: "
            "use the token of a user whose role allows it (e.g. Manager or Admin of the service), or an account "
            "API key with full access rather than a read-only one."
        )
    if status == 429 or code == 2020:
        return (
            f"What to do: PagerDuty's rate limit was reached (about 960 requests a minute per key); "
            f"{reset_phrase(reset_seconds)}. Wait and try again; if it keeps happening, lower "
            "PAGERDUTY_RATE_LIMIT_PER_MINUTE so all workers share a smaller budget."
        )
    if status == 400 and _FROM_HEADER.search(text):
        return (
            "What to do: an account API key acts as nobody, so PagerDuty needs the email of a real user on the "
            "account in the From header: set the connection's From email (or the step's `from`) to such a user."
        )
    return ""


def events_hint_for(*, status: int | None, events_url: str = "", reset_seconds: float | None = None) -> str:
    """What to do when the Events API v2 refuses an event; '' when PagerDuty's own words suffice."""
    if status == 400:
        return (
            "What to do: PagerDuty's errors above name the field. A routing key PagerDuty does not know is also "
            "refused: use the 32-character integration key of the service's Events API v2 integration."
        )
    if status == 404:
        return (
            f"What to do: {events_url or 'events_url'} does not serve the Events API; use {US_EVENTS_URL} (US) "
            f"or {EU_EVENTS_URL} (EU)."
        )
    if status == 429:
        return (
            f"What to do: PagerDuty's Events API limit per routing key was reached (about 120 events a minute); "
            f"{reset_phrase(reset_seconds)}. If it keeps happening, lower PAGERDUTY_EVENTS_RATE_LIMIT_PER_MINUTE "
            "or spread events over several integrations."
        )
    return ""
