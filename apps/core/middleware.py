"""Bounds on every request before a view reads it, and JSON errors for programs.

Under /api/ and /webhooks/ every error is JSON — an unknown path, a body too large, an exception
nobody expected (500 with a correlation id that is also in the log) — never Django's HTML page.
Elsewhere (the admin) errors stay HTML, but the same bounds apply.
"""

import logging
import uuid
from io import BytesIO

from django.core.handlers.wsgi import LimitedStream
from django.http import HttpResponse

from apps.core.api import is_api_path, json_error
from apps.core.limits import MAX_REQUEST_BODY_BYTES
from apps.core.validators import NUL

logger = logging.getLogger("apps.core.errors")

_CHUNK = 64 * 1024


def _too_large(request, size_text: str):
    message = (
        f"The request body is {size_text}; the limit is {MAX_REQUEST_BODY_BYTES:,} bytes "
        f"({MAX_REQUEST_BODY_BYTES // (1024 * 1024)} MiB)."
    )
    if is_api_path(request.path_info):
        return json_error(413, message)
    return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")


def _bad_request(request, message: str, field: str | None = None):
    if is_api_path(request.path_info):
        return json_error(400, f"{field}: {message}" if field else message, {field: [message]} if field else None)
    return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")


def _nul_parameter(request) -> str | None:
    """The query parameter holding a NUL character (PostgreSQL cannot compare against one)."""
    raw = request.META.get("QUERY_STRING", "")
    if "%00" not in raw and NUL not in raw:
        return None
    for name, values in request.GET.lists():
        if NUL in name or any(NUL in value for value in values):
            return name.replace(NUL, "\\u0000")
    return "query string"


class RequestLimitsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return self.get_response(request)

    def _refusal(self, request):
        if NUL in request.path_info:
            return _bad_request(request, "NUL characters (\\u0000) are not allowed in the path.")
        parameter = _nul_parameter(request)
        if parameter is not None:
            return _bad_request(request, "NUL characters (\\u0000) are not allowed", parameter)
        declared = request.META.get("CONTENT_LENGTH")
        if declared not in (None, ""):
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                return _bad_request(request, f"Content-Length must be a number of bytes, not {declared!r}.")
            if length > MAX_REQUEST_BODY_BYTES:
                return _too_large(request, f"{length:,} bytes")
            return None
        if request.META.get("wsgi.input_terminated") and request.META.get("HTTP_TRANSFER_ENCODING"):
            return self._read_streamed_body(request)
        return None

    def _read_streamed_body(self, request):
        """A body sent without Content-Length (chunked): read it here, up to the limit, so the
        view sees it like any other body — Django alone would silently read nothing."""
        stream, received = request.META["wsgi.input"], []
        size = 0
        while True:
            chunk = stream.read(min(_CHUNK, MAX_REQUEST_BODY_BYTES + 1 - size))
            if not chunk:
                break
            received.append(chunk)
            size += len(chunk)
            if size > MAX_REQUEST_BODY_BYTES:
                return _too_large(request, f"more than {MAX_REQUEST_BODY_BYTES:,} bytes (streamed)")
        body = b"".join(received)
        request.META["CONTENT_LENGTH"] = str(len(body))
        request._stream = LimitedStream(BytesIO(body), len(body))
        return None

    def process_exception(self, request, exception):
        """An exception no view handled, under /api/ or /webhooks/: JSON 500 with an id to quote."""
        if not is_api_path(request.path_info):
            return None
        correlation_id = uuid.uuid4().hex
        logger.error(
            "Unhandled %s on %s %s [correlation id %s]",
            type(exception).__name__,
            request.method,
            request.path,
            correlation_id,
            exc_info=(type(exception), exception, exception.__traceback__),
        )
        return server_error_response(correlation_id)


def server_error_response(correlation_id: str):
    response = json_error(
        500,
        f"Internal error: something went wrong on our side. Quote correlation id {correlation_id} when reporting it.",
        correlation_id=correlation_id,
    )
    response["X-Correlation-ID"] = correlation_id
    return response
