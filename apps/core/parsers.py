"""JSON request bodies, bounded before and after parsing: the API's only parser, and the admin's
JSON endpoints read their bodies with the same function.

Refused with a 4xx that says where: bodies over MAX_REQUEST_BODY_BYTES (413, also when the
middleware could not see a Content-Length), bytes that are not UTF-8, nesting deeper than
MAX_JSON_DEPTH (Python's parser would otherwise raise RecursionError — a 500 — near 1,000 levels),
NaN/Infinity (not JSON, and PostgreSQL cannot store them), duplicate keys (which one wins is
arbitrary, so one of them would be lost) and lone surrogates ("\\ud800", not encodable as UTF-8). What a field may contain (NUL characters, lengths) is
each field's business, so a refusal names the field.
"""

import json

from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.parsers import JSONParser

from apps.core.limits import MAX_JSON_DEPTH, MAX_REQUEST_BODY_BYTES
from apps.core.validators import json_surrogate_path, json_too_deep


class JsonBodyError(ValueError):
    def __init__(self, message: str, *, field: str | None = None, status_code: int = 400):
        super().__init__(message)
        self.field = field
        self.status_code = status_code


class _Constant(ValueError):
    pass


def _refuse_constant(name: str):
    raise _Constant(f"{name} is not a JSON number")


def _refuse_duplicate_keys(pairs: list) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise JsonBodyError(f"Given twice in the same object; send {key!r} once.", field=key)
        result[key] = value
    return result


def parse_json_bytes(raw: bytes):
    """The JSON document in `raw`, or JsonBodyError saying what is wrong and where."""
    if len(raw) > MAX_REQUEST_BODY_BYTES:
        raise JsonBodyError(
            f"The request body is larger than the limit of {MAX_REQUEST_BODY_BYTES:,} bytes.", status_code=413
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonBodyError(f"JSON parse error - the body is not UTF-8 (byte {exc.start}).") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicate_keys)
    except JsonBodyError:
        raise
    except RecursionError:
        raise JsonBodyError(f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep.") from None
    except ValueError as exc:
        raise JsonBodyError(f"JSON parse error - {exc}") from None
    path = json_too_deep(data, max_depth=MAX_JSON_DEPTH)
    if path is not None:
        raise JsonBodyError(f"Nested more than {MAX_JSON_DEPTH} levels deep.", field=path)
    path = json_surrogate_path(data)
    if path is not None:
        raise JsonBodyError("Contains a lone UTF-16 surrogate (\\ud800–\\udfff), which is not text.", field=path)
    return data


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read(MAX_REQUEST_BODY_BYTES + 1) if stream is not None else b""
        try:
            return parse_json_bytes(raw)
        except JsonBodyError as exc:
            if exc.status_code == 413:
                raise PayloadTooLarge(str(exc)) from None
            if exc.field is not None:
                raise ValidationError({exc.field: [str(exc)]}) from None
            raise ParseError(str(exc)) from None
