"""Keep secrets out of logs and run records.

Secrets are redacted two ways: by header name (Authorization and friends) wherever we record an
HTTP exchange, and by value — every secret the process has decrypted is registered here, and the
logging filter scrubs any record that would print one, whichever library logged it.
"""

import logging
import threading

REDACTED = "***redacted***"
SENSITIVE_HEADERS = {"authorization", "x-routing-key", "cookie", "set-cookie", "proxy-authorization"}
_MIN_SECRET_LENGTH = 6

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str) -> None:
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(str(value))


def redact_text(text: str) -> str:
    if not text:
        return text
    for secret in list(_secrets):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_headers(headers) -> dict:
    redacted = {}
    for name, value in dict(headers or {}).items():
        if name.lower() == "authorization":
            scheme = str(value).split(" ", 1)[0] if " " in str(value) else ""
            redacted[name] = f"{scheme} {REDACTED}".strip() if scheme != "Token" else f"Token token={REDACTED}"
        elif name.lower() in SENSITIVE_HEADERS:
            redacted[name] = REDACTED
        else:
            redacted[name] = redact_text(str(value))
    return redacted


def redact_data(data):
    """Redact registered secrets and secret-named keys anywhere in JSON-like data."""
    if isinstance(data, dict):
        return {
            key: (REDACTED if str(key).lower() in {"routing_key", "api_key", "token"} and value else redact_data(value))
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [redact_data(item) for item in data]
    if isinstance(data, str):
        return redact_text(data)
    return data


class RedactSecretsFilter(logging.Filter):
    """Scrubs registered secrets from the message, the exception text and the stack of every record.

    The traceback is formatted here, redacted and kept as `exc_text`; `exc_info` is dropped so no
    formatter down the line renders the raw exception again (its message may hold a key)."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the handler's to report, not ours to crash on
            return True
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self._formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True
