"""Django's error handlers (handler400/403/404/500): JSON for programs, Django's pages for people."""

import logging
import sys
import uuid

from django.views import defaults

from apps.core.api import is_api_path, json_error
from apps.core.middleware import server_error_response

logger = logging.getLogger("apps.core.errors")


def bad_request(request, exception, *args, **kwargs):
    if is_api_path(request.path_info):
        return json_error(400, f"Bad request: {exception}" if str(exception) else "Bad request.")
    return defaults.bad_request(request, exception, *args, **kwargs)


def permission_denied(request, exception, *args, **kwargs):
    if is_api_path(request.path_info):
        return json_error(403, str(exception) or "You do not have permission to do this.")
    return defaults.permission_denied(request, exception, *args, **kwargs)


def page_not_found(request, exception, *args, **kwargs):
    if is_api_path(request.path_info):
        return json_error(
            404, f"Nothing at {request.path}. The API is under /api/v1/; its OpenAPI schema is at /api/schema/."
        )
    return defaults.page_not_found(request, exception, *args, **kwargs)


def server_error(request, *args, **kwargs):
    if not is_api_path(request.path_info):
        return defaults.server_error(request, *args, **kwargs)
    # Called while the exception is being handled, so it can be logged next to the id we hand out.
    correlation_id = uuid.uuid4().hex
    logger.error(
        "Unhandled error on %s %s [correlation id %s]",
        request.method,
        request.path,
        correlation_id,
        exc_info=sys.exc_info(),
    )
    return server_error_response(correlation_id)
