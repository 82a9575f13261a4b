"""Where a stored PagerDuty key may be sent, and what a key may look like: the one place these rules live.

The model uses them (field validators and `clean()`), so the admin form, the API serializer, the
sync wizard and `pagerduty_connect` all refuse the same input with the same words; the client and
`connection_client` check the destination again before anything leaves the process.

Why so strict: whoever may change a connection's URL could otherwise point it at a host of their
own and receive `Authorization: Token token=<the stored key>` on the next test or run.
"""

import ipaddress
import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

ANY_HOST = "*"
DESTINATION_FIELDS = ("api_url", "events_url")
API_KEY_MAX_LENGTH = 512


def allowed_hosts() -> list[str]:
    return [host.strip().lower() for host in settings.PAGERDUTY_ALLOWED_HOSTS if host.strip()]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host: str) -> bool:
    hosts = allowed_hosts()
    return ANY_HOST in hosts or host.lower() in hosts


def url_problem(url) -> str | None:
    """Why a PagerDuty key must not be sent to `url`, or None. Never raises."""
    if not isinstance(url, str) or not url:
        return "is empty"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port out of 0–65535 or not a number
        host = parts.hostname or ""
    except ValueError as exc:
        return f"cannot be parsed as a URL ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return f"has the scheme {scheme + ':' if scheme else '(none)'}; only https (http for loopback hosts) is allowed"
    if not host:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "contains credentials (user:password@); the key is the only credential sent"
    if port == 0:
        return "has port 0; a port is 1–65535"
    if scheme == "http" and not is_loopback(host):
        return "uses http; https is required except for loopback hosts (127.0.0.1, ::1, localhost)"
    if not host_allowed(host):
        hosts = ", ".join(allowed_hosts()) or "(none)"
        return (
            f"has the host {host!r}, which is not in PAGERDUTY_ALLOWED_HOSTS ({hosts}); "
            "whoever deploys this service can add it"
        )
    return None


# The tail of a URL after its host: an optional port 1–65535, a path and a query of RFC 3986
# characters, no fragment (apps.core.api_fields.HTTP_URL, minus port 0, which url_problem refuses).
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PCHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})"
_TAIL = rf"(?::{_PORT})?(?:/{_PCHAR}*)?(?:\?(?:{_PCHAR}|\?)*)?\Z"
_ANY_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_LOOPBACK = r"(?:[Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt]|127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})"


def _any_case(text: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in text)


def allowed_url_pattern() -> str:
    """The URLs url_problem accepts, as a regular expression for the API schema (built from the
    settings when the schema is generated, so what a client reads is what the server enforces)."""
    https, either = "[Hh][Tt][Tt][Pp][Ss]://", "[Hh][Tt][Tt][Pp][Ss]?://"
    hosts = allowed_hosts()
    if ANY_HOST in hosts:
        alternatives = [https + _ANY_HOST, either + _LOOPBACK]
    else:
        alternatives = []
        for host in hosts:
            written = rf"\[{re.escape(host)}\]" if ":" in host else _any_case(host)
            alternatives.append((either if is_loopback(host) else https) + written)
    return "^(?:" + "|".join(alternatives or ["(?!)"]) + ")" + _TAIL


def validate_pagerduty_url(value) -> None:
    problem = url_problem(value)
    if problem:
        raise ValidationError(f"This URL {problem}.", code="pagerduty_url")


def normalize_url(url: str) -> str:
    return (url or "").strip().rstrip("/")


def destination_change_problems(
    *,
    stored: dict,
    current: dict,
    key_entered: bool,
    fields: tuple[str, ...] = DESTINATION_FIELDS,
    key_label: str = "API key (api_key)",
) -> dict[str, str]:
    """A stored key only goes to the host it was entered for: a changed URL needs the key again.

    `stored` and `current` map each of `fields` (a connection's api_url/events_url, a channel's
    events_url) to its value; returns field → message."""
    if key_entered:
        return {}
    return {
        field: (
            f"Changing {field} would send the stored {key_label.split(' (')[0]} to a destination it was not "
            f"entered for; enter the {key_label} again in the same request to change it."
        )
        for field in fields
        if normalize_url(stored[field]) != normalize_url(current[field])
    }


def api_key_problem(key) -> str | None:
    """Why `key` cannot be a PagerDuty key sent in an HTTP header, or None. Never echoes the key."""
    if not isinstance(key, str) or not key:
        return "is empty"
    if len(key) > API_KEY_MAX_LENGTH:
        return f"is {len(key)} characters long; a PagerDuty key is far shorter (at most {API_KEY_MAX_LENGTH})"
    for position, ch in enumerate(key, start=1):
        if ch.isspace():
            return (
                f"contains whitespace (character {position}); a key is one word: paste it again without "
                "spaces or line breaks"
            )
        if not ch.isascii() or not ch.isprintable():
            return (
                f"contains a control or non-ASCII character (character {position}), which cannot be sent in an "
                "HTTP header; paste the key again from PagerDuty"
            )
    return None


def validate_api_key(value) -> None:
    problem = api_key_problem(value)
    if problem:
        raise ValidationError(f"This API key {problem}.", code="api_key")


ROUTING_KEY_LENGTH = 32


def routing_key_problem(key) -> str | None:
    """Why `key` cannot be an Events API v2 routing key (an integration key: 32 characters), or None."""
    problem = api_key_problem(key)
    if problem:
        return problem
    if len(key) != ROUTING_KEY_LENGTH:
        return (
            f"is {len(key)} characters long; an Events API v2 routing key (integration key) is exactly "
            f"{ROUTING_KEY_LENGTH}: copy it from the service's Events API v2 integration"
        )
    return None


def validate_routing_key(value) -> None:
    problem = routing_key_problem(value)
    if problem:
        raise ValidationError(f"This routing key {problem}.", code="routing_key")
