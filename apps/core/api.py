"""API error shape shared by every endpoint: {"message": ..., "errors": {...}}.

DRF already answers bad input with 400; this adds one sentence a person can act on, and turns
domain errors raised by services into 400s instead of 500s.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, routers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.core.errors import DomainError
from apps.core.permissions import HasAnyRole


def _message_for(detail) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = _message_for(value)
            return inner if field in ("non_field_errors", "detail") else f"{field}: {inner}"
    if isinstance(detail, list) and detail:
        return _message_for(detail[0])
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        exc = exceptions.ValidationError({exc.field or "non_field_errors": [str(exc)]})
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    if isinstance(detail, dict) and set(detail) == {"detail"}:
        body = {"message": str(detail["detail"])}
    else:
        body = {"message": _message_for(detail), "errors": detail}
    return Response(body, status=response.status_code or status.HTTP_400_BAD_REQUEST, headers=response.headers)


class RoleAPIRootView(routers.APIRootView):
    """The list of endpoints at /api/v1/: no data, but only for people with a role."""

    permission_classes = [HasAnyRole]
