"""What reaches a run record, the audit log and the log output of a secret: headers by name, JSON
bodies by key and every registered secret by value; and the log filter never loses a line."""

import io
import logging

import pytest
import responses

from apps.core import redaction
from apps.core.redaction import REDACTED, RedactSecretsFilter, redact_data, redact_headers, register_secret
from apps.pagerduty.client import PagerDutyClient, RetryPolicy

URL = "https://pd.test"
API_KEY = "u+REDACTION-test-key-81d7e6"
ROUTING_KEY = "R0123456789abcdef0123456789abcd"


@pytest.fixture(autouse=True)
def own_secrets(monkeypatch):
    # Registered secrets are process-wide; these tests start from none and leave none behind.
    monkeypatch.setattr(redaction, "_secrets", set())


@pytest.fixture
def logged():
    """A logger wired like the service's console handler; returns (logger, captured text)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecretsFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.core.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


# --- the record of a request PagerDuty received --------------------------------------------------


@responses.activate
def test_the_stored_exchange_holds_no_key_in_headers_or_body():
    responses.post(
        f"{URL}/incidents",
        json={"incident": {"id": "Q1", "token": "server-side-token", "note": f"made with {API_KEY}"}},
        status=201,
    )
    exchanges = []
    client = PagerDutyClient(
        api_key=API_KEY, api_url=URL, from_email="sre@example.com", retry=RetryPolicy(max_attempts=1)
    )
    client.on_exchange = exchanges.append
    client.create_incident({"incident": {"title": "t", "routing_key": ROUTING_KEY, "Api_Key": "k-123456"}})

    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == f"Token token={API_KEY}"  # PagerDuty gets the key, the record not
    (exchange,) = exchanges
    assert exchange.request_headers["Authorization"] == f"Token token={REDACTED}"
    assert exchange.request_headers["From"] == "sre@example.com"
    assert exchange.request_body == {"incident": {"title": "t", "routing_key": REDACTED, "Api_Key": REDACTED}}
    assert exchange.response_body == {"incident": {"id": "Q1", "token": REDACTED, "note": f"made with {REDACTED}"}}


def test_secret_named_keys_are_redacted_at_any_depth_and_empty_ones_stay_empty():
    data = {
        "routing_key": ROUTING_KEY,
        "TOKEN": "abc",
        "api_key": "",
        "nested": [{"routing_key": ROUTING_KEY, "count": 3, "ok": True, "none": None}],
        "key": "not a secret name",
    }
    assert redact_data(data) == {
        "routing_key": REDACTED,
        "TOKEN": REDACTED,
        "api_key": "",
        "nested": [{"routing_key": REDACTED, "count": 3, "ok": True, "none": None}],
        "key": "not a secret name",
    }


def test_registered_secrets_are_redacted_by_value_anywhere_in_data():
    register_secret(ROUTING_KEY)
    data = {"summary": f"key is {ROUTING_KEY}!", "list": [ROUTING_KEY, 5], ROUTING_KEY: "as a key"}
    redacted = redact_data(data)
    assert redacted["summary"] == f"key is {REDACTED}!"
    assert redacted["list"] == [REDACTED, 5]


@pytest.mark.parametrize(
    ("name", "value", "stored"),
    [
        ("Authorization", f"Token token={API_KEY}", f"Token token={REDACTED}"),
        ("authorization", "Bearer abc.def", f"Bearer {REDACTED}"),
        ("Authorization", "bare-secret", REDACTED),
        ("Authorization", "Bearer part-one part-two", f"Bearer {REDACTED}"),
        ("X-Routing-Key", ROUTING_KEY, REDACTED),
        ("x-routing-key", ROUTING_KEY, REDACTED),
        ("Cookie", "sessionid=abc", REDACTED),
        ("Set-Cookie", "sessionid=abc; HttpOnly", REDACTED),
        ("Proxy-Authorization", "Basic dXNlcjpwdw==", REDACTED),
        ("From", "sre@example.com", "sre@example.com"),
        ("Accept", "application/vnd.pagerduty+json;version=2", "application/vnd.pagerduty+json;version=2"),
    ],
)
def test_sensitive_headers_are_redacted_by_name_in_any_case(name, value, stored):
    assert redact_headers({name: value}) == {name: stored}


def test_a_registered_secret_in_any_other_header_is_redacted_by_value():
    register_secret(API_KEY)
    assert redact_headers({"X-Note": f"key={API_KEY}", "X-Count": 3}) == {"X-Note": f"key={REDACTED}", "X-Count": "3"}
    assert redact_headers(None) == {}


def test_secrets_shorter_than_six_characters_are_not_registered():
    # A short value would blank every occurrence of a common word in every log line.
    register_secret("admin")
    register_secret("")
    register_secret("a1b2c3")
    assert redaction.redact_text("admin a1b2c3") == f"admin {REDACTED}"
    assert redaction.redact_text("") == ""


# --- the log output -------------------------------------------------------------------------------


def test_the_service_logging_configuration_puts_the_filter_on_its_handlers():
    # settings.LOGGING's console handler; pytest adds its own capture handlers beside it.
    console = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    assert console and all(any(isinstance(f, RedactSecretsFilter) for f in h.filters) for h in console)


def test_log_lines_are_redacted_and_none_is_lost(logged):
    logger, stream = logged
    logger.warning("before any secret is known: %s", "plain")
    register_secret(API_KEY)
    logger.warning("sending %s to PagerDuty", f"Token token={API_KEY}")
    logger.warning("a line without secrets: %d%%", 5)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "WARNING before any secret is known: plain",
        f"WARNING sending Token token={REDACTED} to PagerDuty",
        "WARNING a line without secrets: 5%",
    ]


def test_a_malformed_record_is_still_passed_on(logged):
    logger, _ = logged
    register_secret(API_KEY)
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "two %s %s", ("args",), None)
    assert RedactSecretsFilter().filter(record) is True


def test_the_exception_and_stack_of_a_record_are_redacted(logged):
    logger, stream = logged
    register_secret(API_KEY)
    try:
        raise RuntimeError(f"refused {API_KEY}")
    except RuntimeError:
        logger.exception("step failed", stack_info=True)
    text = stream.getvalue()
    assert API_KEY not in text
    assert f"RuntimeError: refused {REDACTED}" in text and "Stack (most recent call last)" in text
