"""Gunicorn's logger without access lines for static files (the Procfile's `web` uses it).

An admin page pulls a dozen CSS and JS files; their lines would bury the requests that matter.
"""

from django.conf import settings
from gunicorn import glogging


class QuietStaticLogger(glogging.Logger):
    def access(self, resp, req, environ, request_time):
        if environ.get("PATH_INFO", "").startswith("/" + settings.STATIC_URL.lstrip("/")):
            return
        super().access(resp, req, environ, request_time)
