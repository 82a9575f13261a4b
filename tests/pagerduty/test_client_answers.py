"""How the client reads PagerDuty's answers: the errors it raises in PagerDuty's words, the waits it
honours, the record it keeps of each exchange, the pages it walks and the writes it confirms."""

import logging
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import redis
import requests
import responses

from apps.pagerduty.client import PagerDutyClient, RetryPolicy, announced_wait, is_dedup_conflict
from apps.pagerduty.errors import (
    PagerDutyBadRequest,
    PagerDutyError,
    PagerDutyNotFound,
    PagerDutyRateLimited,
    PagerDutyServerError,
    PagerDutyUnexpectedAnswer,
)
from apps.pagerduty.ratelimit import RateLimiter

URL = "https://pd.test"
KEY = "y_NbAkKc66ryYTWUXYEu"


@pytest.fixture
def waits():
    return []


@pytest.fixture
def client(waits):
    exchanges = []
    c = PagerDutyClient(
        api_key=KEY,
        api_url=URL,
        from_email="sre@example.com",
        retry=RetryPolicy(max_attempts=3, backoff_base=1, backoff_cap=4),
        sleep=waits.append,
        on_exchange=exchanges.append,
    )
    c.exchanges = exchanges
    return c


# --- errors in PagerDuty's words ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "message", "code", "errors"),
    [
        ({"body": ""}, "PagerDuty 404: Not Found", None, []),
        ({"json": {"error": {"code": 2100}}}, "PagerDuty 404: Not Found", 2100, []),
        (
            {"json": {"error": {"message": "Gone", "code": "x", "errors": "one"}}},
            "PagerDuty 404: Gone — one",
            None,
            ["one"],
        ),
        ({"body": "plain text"}, "PagerDuty 404: plain text", None, []),
        # The Events API's shape with an empty message: the status line's reason, not a made-up word.
        ({"json": {"message": "", "errors": ["x"]}}, "PagerDuty 404: Not Found — x", None, ["x"]),
        # JSON in no shape PagerDuty uses: the reason, not the JSON.
        ({"json": {"unexpected": True}}, "PagerDuty 404: Not Found", None, []),
    ],
)
@responses.activate
def test_an_error_answer_is_described_in_pagerduty_words(client, answer, message, code, errors):
    responses.get(f"{URL}/users/PX", status=404, **answer)
    with pytest.raises(PagerDutyNotFound) as err:
        client.get_user("PX")
    assert str(err.value) == message
    assert (err.value.code, err.value.errors) == (code, errors)
    assert err.value.exchange is client.exchanges[-1]


@pytest.mark.parametrize("body", [{"error": {"code": 2100}}, {"message": ""}], ids=["rest-shape", "events-shape"])
@responses.activate
def test_an_error_without_message_or_reason_still_says_something(client, body):
    # A status with no reason phrase (499 has none) and no message in the body.
    responses.get(f"{URL}/users/PX", status=499, json=body)
    with pytest.raises(PagerDutyError) as err:
        client.get_user("PX")
    assert str(err.value) == "PagerDuty 499: error"


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        # What decides the hint may be in PagerDuty's message, in its errors, or only in its code.
        ({"message": "From header is missing", "code": 2001}, "an account API key acts as nobody"),
        (
            {"message": "Invalid Input Provided", "code": 2001, "errors": ["The From header is missing"]},
            "an account API key acts as nobody",
        ),
        ({"message": "Invalid Input Provided", "code": 2014}, "the PagerDuty account lacks the ability"),
    ],
)
@responses.activate
def test_the_hint_reads_the_message_the_errors_and_the_code(client, error, hint):
    responses.post(f"{URL}/incidents", status=400, json={"error": error})
    with pytest.raises(PagerDutyBadRequest) as err:
        client.create_incident({"incident": {"type": "incident", "title": "t"}})
    assert err.value.hint.startswith(f"What to do: {hint}")


@responses.activate
def test_a_refused_key_is_explained_for_the_region_and_the_kind_of_key():
    # An EU account's key sent to the EU API, and it is 32 characters like an Events routing key.
    routing_key_like = "e93facc04764012d7bfb002500d5d1a6"
    eu = PagerDutyClient(api_key=routing_key_like, api_url="https://api.eu.pagerduty.com")
    responses.get("https://api.eu.pagerduty.com/abilities", status=401, json={"error": {"code": 2006}})
    with pytest.raises(PagerDutyError) as err:
        eu.test_connection()
    assert "like an Events API routing (integration) key, but this connection needs a REST API key" in err.value.hint
    assert "If the account is in PagerDuty's US service region, set api_url to https://api.pagerduty.com" in (
        err.value.hint
    )


@responses.activate
def test_a_success_answer_without_its_object_is_refused_showing_the_answer(client):
    answer = {"subscription": "x" * 300}
    responses.post(f"{URL}/webhook_subscriptions", status=201, json=answer)
    with pytest.raises(PagerDutyUnexpectedAnswer) as err:
        client.create_webhook_subscription({"webhook_subscription": {"type": "webhook_subscription"}})
    assert str(err.value).endswith(f"a success answer without the webhook_subscription: {str(answer)[:200]!r}")


@responses.activate
def test_the_single_override_answer_is_returned_as_pagerdutys_list(client):
    created = {"id": "QOVR009", "start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z"}
    responses.post(f"{URL}/schedules/PSCHED1/overrides", status=201, json={"override": created})
    answer = client.create_schedule_overrides("PSCHED1", {"overrides": [created]})
    assert answer == [{"status": 201, "override": created}]


@responses.activate
def test_an_error_answer_never_repeats_the_key(client):
    responses.get(f"{URL}/users/PX", status=400, json={"error": {"message": f"bad {KEY}", "errors": [f"token {KEY}"]}})
    with pytest.raises(PagerDutyBadRequest) as err:
        client.get_user("PX")
    assert KEY not in str(err.value) and err.value.errors == ["token ***redacted***"]


@responses.activate
def test_a_redirect_is_an_error_naming_where_it_pointed(client):
    responses.get(f"{URL}/abilities", status=301, headers={"Location": "https://elsewhere.test/abilities"})
    with pytest.raises(PagerDutyError, match="redirect to https://elsewhere.test/abilities not followed") as err:
        client.test_connection()
    assert len(responses.calls) == 1 and err.value.status == 301


@responses.activate
def test_a_299_is_a_success_and_a_300_is_not(client):
    responses.get(f"{URL}/abilities", status=299, json={"abilities": ["teams"]})
    assert client.test_connection() == {"abilities": ["teams"]}
    responses.replace(responses.GET, f"{URL}/abilities", status=300, body="")
    with pytest.raises(PagerDutyError, match=r"redirect to \(no location\) not followed"):
        client.test_connection()


# --- waits -------------------------------------------------------------------------------------


@responses.activate
def test_retries_follow_the_settings(settings, monkeypatch):
    settings.PAGERDUTY_MAX_ATTEMPTS, settings.PAGERDUTY_BACKOFF_BASE_SECONDS = 3, 3.0
    settings.PAGERDUTY_BACKOFF_CAP_SECONDS = 4.0
    monkeypatch.setattr(random, "uniform", lambda low, high: low)  # the random half at its least
    waits = []
    client = PagerDutyClient(api_key=KEY, api_url=URL, sleep=waits.append)  # no RetryPolicy given
    responses.get(f"{URL}/users", status=500, json={"error": {"message": "Internal Server Error"}})
    with pytest.raises(PagerDutyServerError):
        client.find_users(query="a")
    assert len(responses.calls) == 3
    assert waits == [1.5, 2.0]  # half of 3 s, then half of 6 s capped at 4 s


@responses.activate
def test_a_wait_of_exactly_the_maximum_is_honoured(client, waits):
    responses.get(f"{URL}/users", status=429, headers={"ratelimit-reset": "120"})
    responses.get(f"{URL}/users", json={"users": []})
    assert client.find_users(query="a") == []
    assert waits == [120.0]


@responses.activate
def test_a_wait_over_the_maximum_fails_at_once(client, waits):
    responses.get(f"{URL}/users", status=429, headers={"ratelimit-reset": "120.5"})
    with pytest.raises(PagerDutyRateLimited):
        client.find_users(query="a")
    assert waits == [] and len(responses.calls) == 1


def test_announced_waits_in_every_form():
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= announced_wait({"retry-after": soon}) <= 30
    assert announced_wait({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert announced_wait({"ratelimit-reset": " 4 ", "retry-after": "9"}) == 4.0
    assert announced_wait({"ratelimit-reset": "soon", "retry-after": "9"}) == 9.0
    assert announced_wait({"retry-after": ""}) is None
    assert announced_wait({"ratelimit-reset": "soon"}) is None


@responses.activate
def test_a_429_with_a_garbled_wait_backs_off_instead_of_crashing(client, waits):
    # Python's date parser raises on such a header; it used to escape as a ValueError, failing the step.
    responses.get(f"{URL}/users", status=429, headers={"Retry-After": "soon"})
    responses.get(f"{URL}/users", json={"users": []})
    assert client.find_users(query="a") == []
    assert len(waits) == 1 and 0.5 <= waits[0] <= 1


def test_backoff_is_half_fixed_half_random_and_capped(monkeypatch):
    policy = RetryPolicy(max_attempts=5, backoff_base=1, backoff_cap=4)
    monkeypatch.setattr(random, "uniform", lambda low, high: low)
    assert [policy.delay(attempt, None) for attempt in range(1, 6)] == [0.5, 1.0, 2.0, 2.0, 2.0]
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    assert [policy.delay(attempt, None) for attempt in range(1, 6)] == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.delay(1, 7.5) == 7.5
    assert policy.delay(1, -3) == 0.0


# --- the record of each exchange ---------------------------------------------------------------


@responses.activate
def test_the_exchange_keeps_status_useful_headers_and_a_bounded_body(client):
    headers = {"ratelimit-remaining": "959", "x-request-id": "req-1", "server": "nginx", "retry-after": "1"}
    responses.get(f"{URL}/users", status=429, headers=headers, body="x" * 5000)
    responses.get(f"{URL}/users", json={"users": []}, headers={"ratelimit-limit": "960"})
    client.find_users(query="a b")
    first, second = client.exchanges
    assert (first.method, first.url, first.status, first.attempt) == ("GET", f"{URL}/users?query=a+b&limit=100", 429, 1)
    assert first.response_headers == {"ratelimit-remaining": "959", "retry-after": "1", "x-request-id": "req-1"}
    assert first.response_body == "x" * 4000
    assert (second.status, second.attempt, second.response_body) == (200, 2, {"users": []})
    assert second.response_headers == {"ratelimit-limit": "960"}
    assert first.duration_ms >= 0 and first.error == ""
    assert client.requests_made == 2 and client.retries == 1


@responses.activate
def test_an_answer_without_a_body_is_recorded_as_none(client):
    responses.put(f"{URL}/incidents/Q1", status=204)
    with pytest.raises(PagerDutyUnexpectedAnswer):
        client.update_incident("Q1", {"incident": {"type": "incident_reference"}})
    assert client.exchanges[0].response_body is None


# --- the shared request budget ---------------------------------------------------------------------


class BrokenLimiter(RateLimiter):
    def __init__(self):
        super().__init__(per_minute=60, burst=1)

    def wait(self, sleep=None):
        raise redis.ConnectionError("Redis is down")


class SlowLimiter(RateLimiter):
    def __init__(self):
        super().__init__(per_minute=60, burst=1)

    def wait(self, sleep=None):
        return 1.5


@responses.activate
def test_a_lost_budget_does_not_stop_a_page_from_going_out(caplog):
    responses.post(f"{URL}/incidents", json={"incident": {"id": "Q1"}}, status=201)
    client = PagerDutyClient(api_key=KEY, api_url=URL, from_email="a@b.co", throttle=BrokenLimiter())
    with caplog.at_level(logging.WARNING, logger="apps.pagerduty.client"):
        assert client.create_incident({"incident": {}}) == {"id": "Q1"}
    # In full: the operator searching the logs for "PagerDuty rate limiter" finds it.
    [record] = [r for r in caplog.records if r.name == "apps.pagerduty.client"]
    assert record.getMessage() == "PagerDuty rate limiter unavailable (Redis is down); sending without it"
    assert record.levelno == logging.WARNING


class FakeClock:
    """time.monotonic for the client alone: it moves only when PagerDuty takes its time to answer."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


@responses.activate
def test_each_exchange_records_how_long_pagerduty_took(client, monkeypatch):
    import apps.pagerduty.client as client_module

    clock = FakeClock()
    monkeypatch.setattr(client_module, "time", clock)

    def slow(request, seconds=2.5):
        clock.now += seconds
        return 201, {}, '{"incident": {"id": "Q1"}}'

    responses.add_callback(responses.POST, f"{URL}/incidents", callback=slow)
    client.create_incident({"incident": {}})
    assert [e.duration_ms for e in client.exchanges] == [2500]


@responses.activate
def test_every_request_is_counted_by_method_and_answer(client):
    from prometheus_client import REGISTRY

    def count(status):
        return REGISTRY.get_sample_value("pagerduty_requests_total", {"method": "POST", "status": status}) or 0

    before = {status: count(status) for status in ("201", "400", "error")}
    responses.post(f"{URL}/incidents", json={"incident": {"id": "Q1"}}, status=201)
    client.create_incident({"incident": {}})
    responses.replace(responses.POST, f"{URL}/incidents", json={"error": {"message": "Invalid"}}, status=400)
    with pytest.raises(PagerDutyBadRequest):
        client.create_incident({"incident": {}})
    responses.replace(responses.POST, f"{URL}/incidents", body=requests.ConnectTimeout("no answer to SYN"))
    with pytest.raises(PagerDutyError):
        client.create_incident({"incident": {}})
    assert {status: count(status) - before[status] for status in before} == {"201": 1, "400": 1, "error": 3}


@responses.activate
def test_time_waited_for_the_budget_is_counted():
    responses.get(f"{URL}/abilities", json={"abilities": []})
    client = PagerDutyClient(api_key=KEY, api_url=URL, throttle=SlowLimiter())
    client.test_connection()
    client.test_connection()
    assert client.throttled_seconds == 3.0


# --- pages and look-ups --------------------------------------------------------------------------


@responses.activate
def test_pagination_stops_on_an_empty_page_even_if_more_is_claimed(client):
    responses.get(f"{URL}/users", json={"users": [{"id": "a"}, {"id": "b"}], "more": True})
    responses.get(f"{URL}/users", json={"users": [], "more": True})
    assert client.list_all("/users", "users") == [{"id": "a"}, {"id": "b"}]
    assert "offset=2" in responses.calls[1].request.url and len(responses.calls) == 2


@responses.activate
def test_open_incidents_are_looked_up_by_key_service_and_open_status(client):
    responses.get(f"{URL}/incidents", json={"incidents": [{"id": "Q1"}]})
    responses.get(f"{URL}/incidents", json={})
    assert client.find_open_incidents(incident_key="k-1", service_id="PS") == [{"id": "Q1"}]
    assert client.find_open_incidents(incident_key="k-1") == []
    first, second = (c.request.params for c in responses.calls)
    assert first == {
        "incident_key": "k-1",
        "statuses[]": ["triggered", "acknowledged"],
        "date_range": "all",
        "service_ids[]": "PS",
    }
    assert "service_ids[]" not in second


@responses.activate
def test_get_incident_returns_the_incident_or_says_the_answer_was_odd(client):
    # Used by the executor to confirm a resolve and, with the two-way sync, to check a stale link.
    responses.get(f"{URL}/incidents/Q1", json={"incident": {"id": "Q1", "status": "resolved"}})
    responses.get(f"{URL}/incidents/Q2", json={"incident": {"status": "resolved"}})
    assert client.get_incident("Q1") == {"id": "Q1", "status": "resolved"}
    with pytest.raises(PagerDutyUnexpectedAnswer, match="without the incident"):
        client.get_incident("Q2")


@responses.activate
def test_get_incident_gives_up_after_the_attempts_it_is_given(client, waits):
    responses.get(f"{URL}/incidents/Q1", status=503)
    with pytest.raises(PagerDutyServerError):
        client.get_incident("Q1", max_attempts=2)
    assert len(responses.calls) == 2


@responses.activate
def test_oncalls_are_asked_for_in_utc_with_every_filter(client):
    responses.get(f"{URL}/oncalls", json={"oncalls": [{"user": {"id": "PU1"}}], "more": True})
    responses.get(f"{URL}/oncalls", json={"oncalls": [{"user": {"id": "PU2"}}], "more": False})
    entries, complete = client.list_oncalls(
        since="2026-11-23T00:00:00Z",
        until="2026-11-24T00:00:00Z",
        schedule_ids=["S1"],
        escalation_policy_ids=["E1"],
        user_ids=["U1"],
        earliest=True,
        max_pages=20,
    )
    assert (entries, complete) == ([{"user": {"id": "PU1"}}, {"user": {"id": "PU2"}}], True)
    params = responses.calls[0].request.params
    assert params == {
        "since": "2026-11-23T00:00:00Z",
        "until": "2026-11-24T00:00:00Z",
        "time_zone": "UTC",
        "schedule_ids[]": "S1",
        "escalation_policy_ids[]": "E1",
        "user_ids[]": "U1",
        "earliest": "true",
        "limit": "100",
        "offset": "0",
    }


@responses.activate
def test_oncalls_past_the_page_budget_say_they_are_incomplete(client):
    responses.get(f"{URL}/oncalls", json={"oncalls": [{"user": {"id": "PU1"}}], "more": True})
    entries, complete = client.list_oncalls(since="a", until="b", max_pages=2)
    assert (len(entries), complete) == (2, False) and len(responses.calls) == 2
    params = responses.calls[0].request.params
    assert not {"schedule_ids[]", "escalation_policy_ids[]", "user_ids[]", "earliest"} & set(params)


@responses.activate
@pytest.mark.parametrize(("pages", "complete"), [(5, True), (6, False)])
def test_log_entries_are_read_page_by_page_with_their_channels(client, pages, complete):
    url = f"{URL}/incidents/Q1/log_entries"
    for page in range(pages):
        entries = [{"id": f"L{page}-{i}", "type": "annotate_log_entry"} for i in range(100)]
        responses.get(url, json={"log_entries": entries, "more": page < pages - 1})
    entries, said_complete = client.list_log_entries(
        "Q1", since="2026-11-23T10:00:00Z", until="2026-11-23T12:00:00Z", max_pages=5
    )
    assert (len(entries), said_complete) == (500, complete)
    assert entries[-1]["id"] == "L4-99"
    asked = [call.request.params for call in responses.calls]
    assert [p["offset"] for p in asked] == ["0", "100", "200", "300", "400"]
    assert asked[0] == {
        "since": "2026-11-23T10:00:00Z",
        "until": "2026-11-23T12:00:00Z",
        "time_zone": "UTC",
        "include[]": "channels",
        "limit": "100",
        "offset": "0",
    }


@responses.activate
def test_schedule_overrides_are_asked_for_with_their_real_bounds(client):
    responses.get(f"{URL}/schedules/S1/overrides", json={"overrides": [{"id": "O1"}]})
    responses.get(f"{URL}/v3/schedules/S2/overrides", json={"overrides": [{"id": "O2"}], "more": False})
    assert client.list_schedule_overrides("S1", since="a", until="b") == [{"id": "O1"}]
    assert client.list_v3_schedule_overrides("S2", since="a", until="b") == [{"id": "O2"}]
    classic, v3 = (c.request.params for c in responses.calls)
    assert classic == {"since": "a", "until": "b", "overflow": "true"}
    assert v3 == {"since": "a", "until": "b", "overflow": "true", "time_zone": "UTC", "limit": "100", "offset": "0"}


# --- writes PagerDuty answered oddly ----------------------------------------------------------------


@responses.activate
def test_a_create_answered_without_the_incident_is_looked_up(client):
    responses.post(f"{URL}/incidents", json={"incident": {}}, status=201)
    assert client.create_incident({"incident": {}}, verify=lambda: {"incident": {"id": "QFOUND"}}) == {"id": "QFOUND"}
    with pytest.raises(PagerDutyUnexpectedAnswer) as err:
        client.create_incident({"incident": {}})
    assert err.value.outcome_unknown is True
    with pytest.raises(PagerDutyUnexpectedAnswer) as err:
        client.create_incident({"incident": {}}, verify=lambda: None)
    assert err.value.outcome_unknown is False


@responses.activate
def test_a_write_sends_the_step_sender_and_a_read_the_default_one(client):
    responses.get(f"{URL}/users/PX", json={"user": {"id": "PX"}})
    responses.put(f"{URL}/incidents/Q1", json={"incident": {"id": "Q1"}})
    client.get_user("PX")
    client.update_incident("Q1", {"incident": {"type": "incident_reference"}}, from_email="oncall@example.com")
    read, write = (c.request for c in responses.calls)
    assert read.headers["From"] == "sre@example.com"
    assert write.headers["From"] == "oncall@example.com"
    anonymous = PagerDutyClient(api_key=KEY, api_url=URL)
    responses.get(f"{URL}/abilities", json={"abilities": []})
    anonymous.test_connection()
    assert "From" not in responses.calls[-1].request.headers


def test_a_dedup_conflict_is_recognised_in_the_message_or_the_errors_in_any_case():
    assert is_dedup_conflict(PagerDutyBadRequest("OPEN INCIDENT WITH MATCHING DEDUP KEY ALREADY EXISTS"))
    assert is_dedup_conflict(
        PagerDutyBadRequest("Invalid", errors=["open incident with matching dedup key already exists"])
    )
    assert not is_dedup_conflict(PagerDutyNotFound("Open incident with matching dedup key already exists"))
    assert not is_dedup_conflict(PagerDutyBadRequest("Invalid Input Provided", errors=["Service not found"]))
