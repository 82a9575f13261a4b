"""Serializer fields that accept exactly what the OpenAPI schema says they accept.

DRF's CharField turns 12 into "12" and trims whitespace before checking length; BooleanField
takes "yes" and 1. A client generating requests from the schema (and any careful client) then
sees the server accept what the schema calls invalid, or refuse what it calls valid. These fields
check the JSON type first and validate with patterns that mean the same in Python and in the
ECMAScript dialect of OpenAPI (anchored with \\Z, which drf-spectacular writes as $; explicit
character classes, since Python's \\s and ECMAScript's \\s differ).
"""

from django.core.validators import RegexValidator
from django.db import models
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

# C0 and C1 control characters (DEL included): never part of a name or a one-line title.
_CONTROL = r"\x00-\x1f\x7f-\x9f"
# What ECMAScript's \s matches, spelled out so Python agrees.
_SPACE = r"\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"

SINGLE_LINE = RegexValidator(
    rf"^[^{_CONTROL}]*\Z", "Control characters (line breaks, tabs, NUL…) are not allowed here.", code="control"
)
SINGLE_LINE_NOT_BLANK = RegexValidator(
    rf"^[^{_CONTROL}]*[^{_CONTROL}{_SPACE}][^{_CONTROL}]*\Z",
    "Must contain a visible character, and no control characters (line breaks, tabs, NUL…).",
    code="blank_or_control",
)
# Multi-line text keeps tabs and line breaks; other C0 controls (NUL first) are refused.
MULTI_LINE = RegexValidator(
    r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*\Z", "Control characters such as NUL are not allowed.", code="control"
)


class _TextOnly:
    """Text only (no number turned into text), checked as sent: never trimmed behind the client's back."""

    default_error_messages = {"not_text": "Expected text, got {kind}."}

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_text", kind=json_kind(data))
        return super().to_internal_value(data)


class StrictCharField(_TextOnly, serializers.CharField):
    pass


class StrictEmailField(_TextOnly, serializers.EmailField):
    pass


class StrictSlugField(_TextOnly, serializers.SlugField):
    pass


# An http(s) URL as a strict subset of both Django's URLValidator and RFC 3986 (the OpenAPI "uri"
# format), written so Python and ECMAScript read it alike: an ASCII host name with a letter TLD,
# localhost or IPv4; a port the HTTP library can use (≤ 65535); a path and query of RFC 3986
# characters; no fragment.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PCHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})"
HTTP_URL = RegexValidator(
    rf"^[Hh][Tt][Tt][Pp][Ss]?://(?:(?:{_LABEL}\.)+[A-Za-z]{{2,63}}|[Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt]|{_OCTET}(?:\.{_OCTET}){{3}})"
    rf"(?::{_PORT})?(?:/{_PCHAR}*)?(?:\?(?:{_PCHAR}|\?)*)?\Z",
    "Enter an http(s) URL: a host name, localhost or an IPv4 address, an optional port up to 65535, "
    "no spaces or fragment.",
    code="invalid_url",
)


class StrictURLField(_TextOnly, serializers.URLField):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not self.read_only:
            self.validators.append(HTTP_URL)


@extend_schema_field(OpenApiTypes.BOOL)
class StrictBooleanField(serializers.BooleanField):
    """true or false, nothing else."""

    default_error_messages = {"not_boolean": "Expected true or false, got {kind}."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("not_boolean", kind=json_kind(data))
        return data


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, not "5" or 5.5."""

    default_error_messages = {"not_integer": "Expected a whole number, got {kind}."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("not_integer", kind=json_kind(data))
        return super().to_internal_value(data)


# A ModelSerializer whose generated fields are the strict ones above. (A comment, not a docstring:
# drf-spectacular would show a docstring as the description of every component.)
class StrictModelSerializer(serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.EmailField: StrictEmailField,
        models.SlugField: StrictSlugField,
        models.URLField: StrictURLField,
        models.BooleanField: StrictBooleanField,
        models.IntegerField: StrictIntegerField,
        models.SmallIntegerField: StrictIntegerField,
        models.BigIntegerField: StrictIntegerField,
        models.PositiveIntegerField: StrictIntegerField,
        models.PositiveSmallIntegerField: StrictIntegerField,
        models.PositiveBigIntegerField: StrictIntegerField,
    }


def json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return repr(value)[:60]


def case_insensitive_pattern(word: str) -> str:
    """`Detected` → `[Dd][Ee][Tt]…`: ECMAScript patterns in OpenAPI have no (?i) flag."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else ("\\" + c if not c.isalnum() else c) for c in word)
