"""Query parameters read strictly: a value the OpenAPI schema calls invalid is a 400 naming the
parameter, never quietly replaced by a default."""

import re
from datetime import UTC, datetime

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import ValidationError

# ASCII digits only: str.isdigit() also accepts "²" and other digits int() then refuses.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DIGITS = re.compile(r"[0-9]+")
# More digits than any bound here: compared as "huge" without converting (int() refuses >4,300 digits).
_MAX_DIGITS = 18


def ascii_integer(text, *, max_digits: int = _MAX_DIGITS) -> int | None:
    """A non-negative whole number written in ASCII digits (at most `max_digits`), else None.

    For ids and numbers read from query strings, forms and paths: `str.isdigit()` accepts "²"
    (then `int()` raises) and `int()` refuses more than 4,300 digits; both were 500s."""
    if not isinstance(text, str) or not 0 < len(text) <= max_digits or not _DIGITS.fullmatch(text):
        return None
    return int(text)


def query_integer(request, name: str, *, default: int, minimum: int, maximum: int | None = None, clamp=False) -> int:
    """One integer query parameter, or a 400 that names it and says what is accepted."""
    values = request.query_params.getlist(name)
    if not values:
        return default

    def refuse(message: str):
        raise ValidationError({name: [message]})

    if len(values) > 1:
        refuse(f"Give {name} once, not {len(values)} times.")
    text = values[0]
    if not _INTEGER.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "…"
        refuse(f"Expected a whole number, got {shown!r}.")
    digits = text.lstrip("+-").lstrip("0") or "0"
    sign = -1 if text.startswith("-") else 1
    value = sign * (10**_MAX_DIGITS if len(digits) > _MAX_DIGITS else int(digits))
    if value < minimum:
        refuse(f"Must be at least {minimum}.")
    if maximum is not None and value > maximum:
        if clamp:
            return maximum
        refuse(f"Must be at most {maximum:,}; narrow the query with a filter instead of paging this deep.")
    return value


_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def query_boolean(request, name: str, *, default: bool = False) -> bool:
    values = request.query_params.getlist(name)
    if not values:
        return default
    if len(values) > 1 or values[0].lower() not in _BOOLEANS:
        raise ValidationError({name: ["Expected true or false (or 1 or 0)."]})
    return _BOOLEANS[values[0].lower()]


def query_datetime(request, name: str) -> datetime | None:
    """An ISO 8601 time with a zone, as UTC (PostgreSQL refuses offsets beyond ±16 h), or None if absent."""
    values = request.query_params.getlist(name)
    if not values:
        return None
    message = "Give one time in ISO 8601 with a zone, e.g. 2026-11-23T09:00:00Z."
    try:
        value = parse_datetime(values[0]) if len(values) == 1 else None
    except ValueError:
        value = None
    if value is None or timezone.is_naive(value):
        raise ValidationError({name: [message]})
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationError({name: ["That time is out of range."]}) from None
