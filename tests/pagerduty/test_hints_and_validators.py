"""The rules of apps.pagerduty.validators and hints as pure functions, then as a person meets them."""

import io

import pytest
import requests
import responses
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from apps.pagerduty.client import PagerDutyClient, RetryPolicy
from apps.pagerduty.errors import PagerDutyRequestInvalid
from apps.pagerduty.hints import hint_for, key_looks_like_routing_key
from apps.pagerduty.services import connection_upsert
from apps.pagerduty.validators import api_key_problem, destination_change_problems, url_problem
from tests.conftest import API_KEY, PD_URL

ROUTING_KEY = "R0123456789abcdef0123456789abcde"  # 32 characters, like an Events API v2 routing key


# --- where a key may go ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://api.pagerduty.com",
        "https://api.eu.pagerduty.com/",
        "https://API.PagerDuty.com",
        "https://events.pagerduty.com:443",
    ],
)
def test_pagerduty_hosts_are_allowed_by_default(settings, url):
    settings.PAGERDUTY_ALLOWED_HOSTS = ["api.pagerduty.com", "api.eu.pagerduty.com", "events.pagerduty.com"]
    assert url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://pd.test", "not in PAGERDUTY_ALLOWED_HOSTS"),
        ("https://api.pagerduty.com.evil.example", "not in PAGERDUTY_ALLOWED_HOSTS"),
        ("https://api.pagerduty.com.", "not in PAGERDUTY_ALLOWED_HOSTS"),
        ("http://api.pagerduty.com", "https is required"),
        ("http://127.0.0.1:8765", "not in PAGERDUTY_ALLOWED_HOSTS"),  # loopback skips https, not the list
        ("javascript:alert(1)", "scheme javascript:"),
        ("file:///etc/passwd", "scheme file:"),
        ("api.pagerduty.com", "scheme (none)"),
        ("https://u:p@api.pagerduty.com", "credentials"),
        ("https://u@api.pagerduty.com", "credentials"),
        ("https://api.pagerduty.com:65536", "cannot be parsed"),
        ("https://api.pagerduty.com:0", "port 0"),
        ("https://api.pagerduty.com:http", "cannot be parsed"),
        ("https://[::1", "cannot be parsed"),
        ("https://api.pagerduty.com/\n", "whitespace or control"),
        ("https://", "no host"),
        ("", "is empty"),
        (None, "is empty"),
    ],
)
def test_refused_urls_say_why(settings, url, says):
    settings.PAGERDUTY_ALLOWED_HOSTS = ["api.pagerduty.com"]
    problem = url_problem(url)
    assert problem and says in problem


def test_an_empty_url_and_one_with_a_blank_or_unprintable_character_are_refused_word_for_word(settings):
    """Anywhere in the URL, path included: a space (printable) as much as DEL (not whitespace)."""
    settings.PAGERDUTY_ALLOWED_HOSTS = ["api.pagerduty.com"]
    assert url_problem("") == url_problem(None) == "is empty"
    for url in ("https://api.pagerduty.com/ v2", "https://api.pagerduty.com/v2\x7f", "https://api.pagerduty.com/\t"):
        assert url_problem(url) == "contains whitespace or control characters", url
    assert url_problem("https://api.pagerduty.com/v2") is None


def test_each_refused_url_says_why_in_full(settings):
    settings.PAGERDUTY_ALLOWED_HOSTS = ["api.pagerduty.com"]
    assert url_problem("https://") == "has no host"
    assert url_problem("https://u:p@api.pagerduty.com") == (
        "contains credentials (user:password@); the key is the only credential sent"
    )
    assert url_problem("https://api.pagerduty.com:0") == "has port 0; a port is 1–65535"
    assert url_problem("http://api.pagerduty.com") == (
        "uses http; https is required except for loopback hosts (127.0.0.1, ::1, localhost)"
    )
    assert url_problem("ftp://api.pagerduty.com") == (
        "has the scheme ftp:; only https (http for loopback hosts) is allowed"
    )
    assert url_problem("https://pd.test") == (
        "has the host 'pd.test', which is not in PAGERDUTY_ALLOWED_HOSTS (api.pagerduty.com); "
        "whoever deploys this service can add it"
    )
    settings.PAGERDUTY_ALLOWED_HOSTS = ["api.pagerduty.com", "api.eu.pagerduty.com"]
    assert "PAGERDUTY_ALLOWED_HOSTS (api.pagerduty.com, api.eu.pagerduty.com);" in url_problem("https://pd.test")
    settings.PAGERDUTY_ALLOWED_HOSTS = []
    assert "PAGERDUTY_ALLOWED_HOSTS ((none));" in url_problem("https://api.pagerduty.com")


def test_loopback_may_use_http_when_allowed_and_star_allows_any(settings):
    settings.PAGERDUTY_ALLOWED_HOSTS = ["127.0.0.1", "::1", "localhost", "127.0.0.2"]
    for url in ("http://127.0.0.1:8765", "http://[::1]:8765", "http://localhost:1", "http://127.0.0.2"):
        assert url_problem(url) is None, url
    settings.PAGERDUTY_ALLOWED_HOSTS = ["*"]
    assert url_problem("https://anything.example") is None
    assert "https is required" in url_problem("http://anything.example")


def test_a_changed_destination_needs_the_key():
    stored = {"api_url": "https://api.pagerduty.com", "events_url": "https://events.pagerduty.com"}
    same = {"api_url": "https://api.pagerduty.com/", "events_url": "https://events.pagerduty.com"}
    moved = {"api_url": "https://api.eu.pagerduty.com", "events_url": "https://events.pagerduty.com"}
    assert destination_change_problems(stored=stored, current=same, key_entered=False) == {}
    assert destination_change_problems(stored=stored, current=moved, key_entered=False) == {
        "api_url": "Changing api_url would send the stored API key to a destination it was not entered for; "
        "enter the API key (api_key) again in the same request to change it."
    }
    assert destination_change_problems(stored=stored, current=moved, key_entered=True) == {}
    channel = destination_change_problems(
        stored={"events_url": "https://events.pagerduty.com"},
        current={"events_url": "https://events.eu.pagerduty.com"},
        key_entered=False,
        fields=("events_url",),
        key_label="routing key (routing_key)",
    )
    assert channel == {
        "events_url": "Changing events_url would send the stored routing key to a destination it was not entered "
        "for; enter the routing key (routing_key) again in the same request to change it."
    }


def test_key_problems_never_echo_the_key():
    assert api_key_problem("u+abcdefGHIJ-1234_xyz") is None
    for key in ("abc def", "abc\r\ndef", "abc\x00def", "abcdéf", "x" * 513):
        problem = api_key_problem(key)
        assert problem and key not in problem


def test_each_key_problem_says_what_to_do_word_for_word():
    """The words a person reads under the field (validate_api_key puts "This API key … ." around them)."""
    assert api_key_problem("") == api_key_problem(None) == "is empty"
    assert api_key_problem("x" * 512) is None  # the longest key taken
    assert api_key_problem("x" * 513) == "is 513 characters long; a PagerDuty key is far shorter (at most 512)"
    assert api_key_problem("abc\ndef") == (
        "contains whitespace (character 4); a key is one word: paste it again without spaces or line breaks"
    )
    assert api_key_problem("abcdéf") == (
        "contains a control or non-ASCII character (character 5), which cannot be sent in an HTTP header; "
        "paste the key again from PagerDuty"
    )


# --- what to do about PagerDuty's answers ------------------------------------------------------


def test_401_names_every_likely_cause():
    us = hint_for(status=401, code=2006, api_url="https://api.pagerduty.com", routing_key_like=True)
    assert us.startswith("What to do: PagerDuty did not accept the API key.")
    assert "Events API routing (integration) key" in us and "REST API key" in us
    assert "revoked" in us
    assert "EU service region, set api_url to https://api.eu.pagerduty.com" in us
    eu = hint_for(status=401, api_url="https://api.eu.pagerduty.com")
    assert "US service region, set api_url to https://api.pagerduty.com" in eu
    assert "routing" not in eu


def test_403_402_from_and_429_hints():
    assert "user API token acts with its user's role" in hint_for(status=403, code=2010)
    assert "user API token" in hint_for(status=400, code=2010)  # the code decides when the status is odd
    assert "lacks the ability" in hint_for(status=402, code=2014)
    from_400 = hint_for(
        status=400,
        message='You must specify a user\'s email address in the "From" header to perform this action',
    )
    assert "From email" in from_400 and "real user" in from_400
    assert hint_for(status=400, message="Invalid Input Provided", errors=["Title too long"]) == ""
    assert "it resets in 23 s" in hint_for(status=429, code=2020, reset_seconds=22.1)
    assert "did not say when it resets" in hint_for(status=429)
    assert hint_for(status=500) == "" and hint_for(status=404) == ""


def test_routing_key_shape():
    assert key_looks_like_routing_key(ROUTING_KEY)
    assert not key_looks_like_routing_key(API_KEY) and not key_looks_like_routing_key("y_NbAkKc66ryYTWUXYEu")


@responses.activate
def test_the_client_attaches_the_hint_and_keeps_pagerdutys_words():
    responses.get(
        f"{PD_URL}/abilities",
        status=429,
        headers={"ratelimit-reset": "17"},
        json={"error": {"message": "Rate Limit Exceeded", "code": 2020}},
    )
    client = PagerDutyClient(api_key=ROUTING_KEY, api_url=PD_URL, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(Exception) as err:
        client.test_connection()
    assert str(err.value).startswith("PagerDuty 429: Rate Limit Exceeded. What to do:")
    assert "it resets in 17 s" in str(err.value)


# --- as a person meets them --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raised",
    [
        requests.exceptions.InvalidURL("Failed to parse: https://pd.test:99999"),
        ValueError("Port out of range 0-65535"),
        requests.exceptions.InvalidHeader(f"Invalid return character in header value: 'Token token={API_KEY}'"),
        UnicodeError("label too long"),
    ],
)
def test_a_connection_test_that_raises_inside_requests_answers_clearly(root_api, pd, pd_connection, raised):
    pd.add(responses.GET, f"{PD_URL}/abilities", body=raised)
    response = root_api.post(f"/api/v1/pagerduty/connections/{pd_connection.pk}/test/")
    assert response.status_code == 200 and response.json()["ok"] is False
    message = response.json()["message"]
    assert message.startswith("PagerDuty: the request could not be sent") and "check api_url" in message
    assert type(raised).__name__ in message
    assert API_KEY not in message  # requests puts header values in its messages


def test_requests_exceptions_are_typed_and_not_retried(pd):
    pd.add(responses.GET, f"{PD_URL}/abilities", body=requests.exceptions.InvalidURL("bad"))
    client = PagerDutyClient(api_key=API_KEY, api_url=PD_URL, sleep=lambda s: pytest.fail("retried"))
    with pytest.raises(PagerDutyRequestInvalid):
        client.test_connection()
    assert len(pd.calls) == 1


def test_the_command_test_shows_the_hint(pd, pd_connection, monkeypatch):
    monkeypatch.delenv("PAGERDUTY_API_KEY", raising=False)
    pd.add(
        responses.GET,
        f"{PD_URL}/abilities",
        status=403,
        json={"error": {"message": "Access Denied", "code": 2010}},
    )
    err = io.StringIO()
    with pytest.raises(CommandError, match="Connection test failed"):
        call_command("pagerduty_connect", "default", "--test", stdout=io.StringIO(), stderr=err)
    assert "PagerDuty 403: Access Denied. What to do: the key was accepted but may not do this." in err.getvalue()


def test_the_admin_test_button_shows_the_hint(root_admin, pd, pd_connection):
    pd.add(
        responses.GET,
        f"{PD_URL}/abilities",
        status=402,
        json={"error": {"message": "Account does not have the abilities to perform the action", "code": 2014}},
    )
    page = root_admin.post(f"/admin/pagerduty/pagerdutyconnection/{pd_connection.pk}/test/", follow=True)
    assert "PagerDuty 402: Account does not have the abilities" in page.content.decode()
    assert "lacks the ability this request needs" in page.content.decode()


def test_events_url_follows_api_url_when_not_given(db, settings):
    settings.PAGERDUTY_ALLOWED_HOSTS = ["api.eu.pagerduty.com", "events.eu.pagerduty.com", "127.0.0.1"]
    eu = connection_upsert(name="eu", api_key=API_KEY, from_email="a@b.co", api_url="https://api.eu.pagerduty.com")
    assert eu.events_url == "https://events.eu.pagerduty.com"
    local = connection_upsert(name="local", api_key=API_KEY, from_email="a@b.co", api_url="http://127.0.0.1:8765/")
    assert (local.api_url, local.events_url) == ("http://127.0.0.1:8765", "http://127.0.0.1:8765")


def test_only_trailing_slashes_are_taken_off_a_url_with_a_path(db, settings):
    """A connection through a proxy keeps its path to the last character; dropping a segment of it
    is another destination, which needs the key again."""
    settings.PAGERDUTY_ALLOWED_HOSTS = ["pd-proxy.example.com"]
    proxied = connection_upsert(
        name="proxied", api_key=API_KEY, from_email="a@b.co", api_url="https://pd-proxy.example.com/pd/X/"
    )
    assert (proxied.api_url, proxied.events_url) == (
        "https://pd-proxy.example.com/pd/X",
        "https://pd-proxy.example.com/pd/X",
    )
    with pytest.raises(ValidationError) as refused:
        connection_upsert(name="proxied", from_email="a@b.co", api_url="https://pd-proxy.example.com/pd/")
    assert set(refused.value.message_dict) == {"api_url", "events_url"}  # events_url follows api_url


def test_the_api_url_field_reads_host_names_without_regard_to_case():
    # The OpenAPI schema matches host names case-insensitively; a schema-valid URL must not be refused.
    from django.core.exceptions import ValidationError

    from apps.core.api_fields import HTTP_URL

    for url in ("http://LocalHost:8080/", "HTTPS://Api.PagerDuty.com", "http://127.0.0.1/x?y=1"):
        HTTP_URL(url)
    for url in ("http://local host/", "ftp://localhost/", "http://localhost/#frag"):
        with pytest.raises(ValidationError):
            HTTP_URL(url)


# The schema's pattern for api_url/events_url (what an API client reads) against url_problem (what
# the server enforces): a URL the pattern admits must be one the server takes, and the URLs people
# actually enter must be admitted.
SCHEMA_URLS = [
    "https://api.pagerduty.com",
    "https://API.PagerDuty.com/",
    "HTTPS://api.pagerduty.com",
    "https://api.pagerduty.com:443/v2?x=1",
    "https://api.pagerduty.com:0",
    "https://api.pagerduty.com:65536",
    "http://api.pagerduty.com",
    "ftp://api.pagerduty.com",
    "https://api.pagerduty.com.evil.test",
    "https://evil.test/api.pagerduty.com",
    "https://user:pw@api.pagerduty.com",
    "https://api.pagerduty.com/#x",
    "https://apixpagerduty.com",
    "https://pd.internal.example",
    "http://127.0.0.1:8765",
    "HTTP://LocalHost:8080/x",
    "https://localhost",
    "http://[::1]:9000/",
    "https://[::1]",
    "http://10.0.0.1",
    "https://10.0.0.1",
]


@pytest.mark.parametrize(
    ("hosts", "admitted"),
    [
        (
            ["api.pagerduty.com", "events.pagerduty.com"],
            {
                "https://api.pagerduty.com",
                "https://API.PagerDuty.com/",
                "HTTPS://api.pagerduty.com",
                "https://api.pagerduty.com:443/v2?x=1",
            },
        ),
        (
            ["127.0.0.1", "localhost", "::1"],
            {
                "http://127.0.0.1:8765",
                "HTTP://LocalHost:8080/x",
                "https://localhost",
                "http://[::1]:9000/",
                "https://[::1]",
            },
        ),
        (
            ["*"],
            {
                "https://api.pagerduty.com",
                "https://API.PagerDuty.com/",
                "HTTPS://api.pagerduty.com",
                "https://api.pagerduty.com:443/v2?x=1",
                "https://api.pagerduty.com.evil.test",
                "https://evil.test/api.pagerduty.com",
                "https://apixpagerduty.com",
                "https://pd.internal.example",
                "http://127.0.0.1:8765",
                "HTTP://LocalHost:8080/x",
                "https://localhost",
            },
        ),
        ([], set()),
    ],
    ids=["pagerduty", "loopback", "any-host", "none"],
)
def test_the_schema_pattern_admits_what_the_server_takes(settings, hosts, admitted):
    import re

    from apps.pagerduty.validators import allowed_url_pattern

    settings.PAGERDUTY_ALLOWED_HOSTS = hosts
    pattern = re.compile(allowed_url_pattern())
    matched = {url for url in SCHEMA_URLS if pattern.match(url)}
    assert matched == admitted
    assert all(url_problem(url) is None for url in matched)
