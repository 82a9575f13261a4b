"""Checks on values that arrive from people or other programs, shared by API, admin and loader.

PostgreSQL refuses NUL characters in text and in jsonb, and answers with an error the request
would otherwise turn into a 500; so NUL is refused here, on input, naming where it was.
"""

import json
import re

from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

NUL = "\x00"


def json_path(parts) -> str:
    """`steps.0.with.title` — how a refusal names a place inside a JSON document."""
    return ".".join(str(part) for part in parts) or "body"


def _walk(value):
    """(item, path, depth) for every value inside a JSON-like value, iteratively: a recursive walk is
    exactly what a deeply nested document is designed to break."""
    stack = [(value, (), 0)]
    while stack:
        item, path, depth = stack.pop()
        yield item, path, depth
        if isinstance(item, dict):
            stack.extend((inner, (*path, key), depth + 1) for key, inner in item.items())
        elif isinstance(item, list):
            stack.extend((inner, (*path, index), depth + 1) for index, inner in enumerate(item))


def json_too_deep(value, *, max_depth: int) -> str | None:
    """Where `value` nests objects/arrays more than `max_depth` levels deep, if it does."""
    for item, path, depth in _walk(value):
        if depth >= max_depth and isinstance(item, (dict, list)):
            return json_path(path)
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_surrogate_path(value) -> str | None:
    """Where a lone UTF-16 surrogate (JSON "\\ud800") is: text that cannot be stored or sent as UTF-8."""
    for item, path, _ in _walk(value):
        if isinstance(item, str) and _SURROGATE.search(item):
            return json_path(path)
        if isinstance(item, dict) and any(_SURROGATE.search(str(key)) for key in item):
            return json_path(path)
    return None


def json_nul_path(value) -> str | None:
    """Where a NUL character is, in a string or a key, if there is one."""
    for item, path, _ in _walk(value):
        if isinstance(item, str) and NUL in item:
            return json_path(path)
        if isinstance(item, dict) and any(NUL in str(key) for key in item):
            return json_path(path)
    return None


@deconstructible
class NoNulValidator:
    """For text and JSON model fields: a NUL anywhere is refused (PostgreSQL cannot store it)."""

    message = "NUL characters (\\u0000) are not allowed"
    code = "null_characters_not_allowed"

    def __call__(self, value):
        path = json_nul_path(value)
        if path is not None:
            where = "" if isinstance(value, str) or path == "body" else f" (at {path})"
            raise ValidationError(f"{self.message}{where}", code=self.code)

    def __eq__(self, other):
        return isinstance(other, NoNulValidator)


@deconstructible
class JsonListValidator:
    """A JSON field holding a list of at most `max_items` short strings (conditions, trigger lists)."""

    def __init__(self, max_items: int, max_item_chars: int = 100):
        self.max_items = max_items
        self.max_item_chars = max_item_chars

    def __call__(self, value):
        if not isinstance(value, list):
            raise ValidationError("Expected a list", code="invalid")
        if len(value) > self.max_items:
            raise ValidationError(f"At most {self.max_items} entries (got {len(value)})", code="max_items")
        for item in value:
            if isinstance(item, str) and len(item) > self.max_item_chars:
                raise ValidationError(
                    f"Each entry is at most {self.max_item_chars} characters (one has {len(item)})", code="max_length"
                )

    def __eq__(self, other):
        return isinstance(other, JsonListValidator) and (self.max_items, self.max_item_chars) == (
            other.max_items,
            other.max_item_chars,
        )


# A JSON-escaped NUL that is not itself an escaped backslash followed by "u0000".
_ESCAPED_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def storable_json(value, *, max_chars: int):
    """`value` as it can be kept on a run record: NUL characters replaced (PostgreSQL's jsonb refuses
    them, and refusing data we did not choose — PagerDuty's answers — would lose the record), and,
    beyond `max_chars` of JSON text, the text cut to fit with a visible marker saying how much was
    kept, so a run record never holds a multi-megabyte answer."""
    if value is None or isinstance(value, (bool, int)):
        return value
    try:
        text = json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:  # NaN or Infinity, which jsonb cannot hold either: kept as text
        text = json.dumps(value, ensure_ascii=False, default=str)
        value = json.loads(text, parse_constant=str)
    if len(text) > max_chars:
        return f"{text[:max_chars]}… [truncated: {len(text):,} characters, the first {max_chars:,} kept]"
    if "\\u0000" in text:
        return json.loads(_ESCAPED_NUL.sub(lambda m: m.group(1) + "\\ufffd", text))
    return value
