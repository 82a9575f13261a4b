"""API error shape shared by every endpoint: {"message": ..., "errors": {field: [...]}}.

DRF already answers bad input with 400; this adds one sentence a person can act on, turns domain
errors raised by services into 4xx instead of 500s, and answers 409 when the only thing wrong is
a value that must be unique and is already taken.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from rest_framework import exceptions, routers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.core.errors import DomainError
from apps.core.permissions import HasAnyRole

# Programs talk to these; they get JSON errors, never an HTML page.
API_PATH_PREFIXES = ("/api/", "/webhooks/")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PATH_PREFIXES)


def json_error(status_code: int, message: str, errors: dict | None = None, **extra) -> JsonResponse:
    body = {"message": message}
    if errors:
        body["errors"] = errors
    body.update(extra)
    return JsonResponse(body, status=status_code)


def _message_for(detail) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = _message_for(value)
            return inner if field in ("non_field_errors", "detail") else f"{field}: {inner}"
    if isinstance(detail, list) and detail:
        return _message_for(detail[0])
    return str(_message(detail))


# DRF's wording for a missing or empty value says what is wrong but not what to send. (Worded
# differently also because Schemathesis' error-feedback heuristic reads "This field is required."
# under our `errors` envelope as a required request field named `errors`.)
_REWORDED = {
    "required": "This field is required and is missing from the request.",
    "blank": "This field may not be blank; send a value.",
    "null": "This field may not be null; send a value.",
}


def _message(value):
    return _REWORDED.get(getattr(value, "code", None), value) if isinstance(value, str) else value


def _as_field_errors(detail):
    """Every field maps to a list of messages (or to nested fields), whatever raised the error."""
    if isinstance(detail, dict):
        return {
            str(field): [_message(value)] if isinstance(value, str) else _as_field_errors(value)
            for field, value in detail.items()
        }
    if isinstance(detail, list):
        return [_message(item) if isinstance(item, str) else _as_field_errors(item) for item in detail]
    return _message(detail)


def _codes(codes) -> set:
    if isinstance(codes, dict):
        return set().union(*(_codes(value) for value in codes.values())) if codes else set()
    if isinstance(codes, list):
        return set().union(*(_codes(value) for value in codes)) if codes else set()
    return {codes}


def exception_handler(exc, context):
    status_code = None
    if isinstance(exc, DomainError):
        status_code = exc.status_code
        exc = exceptions.ValidationError({exc.field or "non_field_errors": [str(exc)]})
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    if isinstance(exc, exceptions.ValidationError) and _codes(exc.get_codes()) == {"unique"}:
        status_code = status.HTTP_409_CONFLICT
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    if isinstance(detail, dict) and set(detail) == {"detail"}:
        body = {"message": str(detail["detail"])}
    else:
        errors = _as_field_errors(detail if isinstance(detail, dict) else {"non_field_errors": detail})
        body = {"message": _message_for(errors), "errors": errors}
    return Response(
        body, status=status_code or response.status_code or status.HTTP_400_BAD_REQUEST, headers=response.headers
    )


class RoleAPIRootView(routers.APIRootView):
    """The list of endpoints at /api/v1/: no data, but only for people with a role."""

    permission_classes = [HasAnyRole]
