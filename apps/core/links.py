"""Links to URLs that came from outside (PagerDuty's `html_url` and friends): never trusted.

A URL becomes a link only when it is plainly http(s); anything else — `javascript:`, `data:`, a
scheme hidden behind whitespace or control characters, which browsers strip — is shown as inert
text. The admin (python) and templates (`{% load links %}{{ url|external_link }}`) both use this.
"""

import re

from django.utils.html import format_html
from django.utils.safestring import SafeString

# Browsers drop tabs and newlines anywhere in a URL and trim control characters, so "java\tscript:"
# runs as script: a safe URL has none of them, and starts with the scheme itself.
_SAFE_URL = re.compile(r"https?://[^\s\x00-\x1f\x7f]+", re.IGNORECASE)
EMPTY = "—"


def safe_link_url(url) -> str | None:
    """The URL if it may be an href, else None."""
    if isinstance(url, str) and _SAFE_URL.fullmatch(url):
        return url
    return None


def external_link(url, text=None) -> SafeString:
    """An <a> for an http(s) URL (new tab, no referrer or opener); the escaped text of anything else."""
    if not url:
        return format_html("{}", EMPTY)
    label = text if text is not None else url
    safe = safe_link_url(url)
    if safe is None:
        return format_html('<span class="unsafe-link" title="not a web link">{}</span>', label)
    return format_html('<a href="{}" rel="noopener noreferrer" target="_blank">{}</a>', safe, label)
