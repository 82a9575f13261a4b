import logging

import pytest
import requests
import responses

from apps.core.redaction import RedactSecretsFilter
from apps.pagerduty.client import OffsetCapReached, PagerDutyClient, RetryPolicy, announced_wait, is_dedup_conflict
from apps.pagerduty.errors import (
    PagerDutyBadRequest,
    PagerDutyNotFound,
    PagerDutyRateLimited,
    PagerDutyServerError,
    PagerDutyUnauthorized,
    PagerDutyUnavailable,
)

URL = "https://pd.test"
KEY = "y_NbAkKc66ryYTWUXYEu"


@pytest.fixture
def waits():
    return []


@pytest.fixture
def client(waits, settings):
    exchanges = []
    c = PagerDutyClient(
        api_key=KEY,
        api_url=URL,
        from_email="sre@example.com",
        retry=RetryPolicy(max_attempts=4, backoff_base=1, backoff_cap=4),
        sleep=waits.append,
        on_exchange=exchanges.append,
    )
    c.exchanges = exchanges
    return c


@responses.activate
def test_headers_on_reads_and_writes(client):
    responses.get(f"{URL}/abilities", json={"abilities": []})
    responses.post(f"{URL}/incidents", json={"incident": {"id": "Q1"}}, status=201)
    client.test_connection()
    client.create_incident({"incident": {}}, from_email="other@example.com")
    read, write = (c.request for c in responses.calls)
    assert read.headers["Authorization"] == f"Token token={KEY}"
    assert read.headers["Accept"] == "application/vnd.pagerduty+json;version=2"
    assert write.headers["From"] == "other@example.com"
    assert write.headers["Content-Type"] == "application/json"
    # Nothing else of ours: requests' own (agent, encodings, keep-alive, the body's length) besides.
    ours = {"authorization", "accept", "content-type"}
    library = {"user-agent", "accept-encoding", "connection"}
    assert {name.lower() for name in read.headers} == ours | library | {"from"}  # the connection's default
    assert {name.lower() for name in write.headers} == ours | library | {"from", "content-length"}


def test_write_without_from_is_refused_before_sending():
    c = PagerDutyClient(api_key=KEY, api_url=URL, from_email="")
    with responses.RequestsMock() as mock, pytest.raises(PagerDutyBadRequest) as refused:
        c.create_incident({"incident": {}})
    assert len(mock.calls) == 0
    assert refused.value.message == (
        'No From email: PagerDuty requires a user\'s email in the "From" header on writes; '
        "set `from` on the step or a default From email on the connection"
    )


@responses.activate
def test_429_honours_ratelimit_reset_then_succeeds(client, waits):
    responses.get(
        f"{URL}/users",
        status=429,
        headers={"ratelimit-reset": "7"},
        json={"error": {"code": 2020, "message": "Rate Limit Exceeded"}},
    )
    responses.get(f"{URL}/users", status=429, headers={"Retry-After": "3"})
    responses.get(f"{URL}/users", json={"users": []})
    assert client.find_users(query="a") == []
    assert waits == [7.0, 3.0]
    assert [e.status for e in client.exchanges] == [429, 429, 200]
    assert [e.attempt for e in client.exchanges] == [1, 2, 3]


@responses.activate
def test_5xx_backoff_is_capped_and_bounded(client, waits):
    for _ in range(4):
        responses.get(f"{URL}/users/PX", status=502, body="Bad Gateway")
    with pytest.raises(PagerDutyServerError) as err:
        client.get_user("PX")
    assert len(responses.calls) == 4
    assert len(waits) == 3
    assert all(0.5 <= w <= 4 for w in waits)
    assert waits[2] >= 2  # third wait: base·2² = 4, halved plus jitter
    assert str(err.value) == "PagerDuty 502: Bad Gateway"


@responses.activate
def test_429_without_headers_uses_backoff(client, waits):
    responses.get(f"{URL}/users", status=429)
    responses.get(f"{URL}/users", json={"users": []})
    client.find_users(query="a")
    assert len(waits) == 1 and 0.5 <= waits[0] <= 1


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, PagerDutyBadRequest), (401, PagerDutyUnauthorized), (404, PagerDutyNotFound)],
)
@responses.activate
def test_client_errors_fail_at_once_with_pagerduty_words(client, waits, status, error_type):
    responses.post(
        f"{URL}/incidents",
        status=status,
        json={"error": {"message": "Invalid Input Provided", "code": 2001, "errors": ["Incident Key is too long"]}},
    )
    with pytest.raises(error_type) as err:
        client.create_incident({"incident": {}})
    assert len(responses.calls) == 1 and waits == []
    assert err.value.errors == ["Incident Key is too long"]
    assert str(err.value).startswith(f"PagerDuty {status}: Invalid Input Provided — Incident Key is too long")
    # A hint follows only where we know one (a 401 is always about the key).
    assert ("What to do:" in str(err.value)) == (status == 401)


@responses.activate
def test_announced_wait_too_long_is_not_slept(client, waits):
    responses.get(f"{URL}/users", status=429, headers={"ratelimit-reset": "3600"})
    with pytest.raises(PagerDutyRateLimited):
        client.find_users(query="a")
    assert waits == []


@responses.activate
def test_read_timeout_on_responder_request_is_not_retried(client, waits):
    responses.post(f"{URL}/incidents/Q1/responder_requests", body=requests.ReadTimeout("slow"))
    with pytest.raises(PagerDutyUnavailable) as err:
        client.create_responder_request("Q1", {})
    assert err.value.maybe_processed is True
    assert len(responses.calls) == 1


@responses.activate
def test_read_timeout_on_create_is_retried(client, waits):
    responses.post(f"{URL}/incidents", body=requests.ReadTimeout("slow"))
    responses.post(f"{URL}/incidents", json={"incident": {"id": "Q1"}}, status=201)
    assert client.create_incident({"incident": {}})["id"] == "Q1"
    assert len(responses.calls) == 2
    assert client.exchanges[0].error.startswith("read timeout")


@responses.activate
def test_pagination_reads_all_pages_at_limit_100(client):
    responses.get(f"{URL}/users", json={"users": [{"id": str(i)} for i in range(100)], "more": True})
    responses.get(f"{URL}/users", json={"users": [{"id": "last"}], "more": False})
    users = client.list_all("/users", "users", {"include[]": ["teams"]})
    assert len(users) == 101
    assert "limit=100" in responses.calls[0].request.url and "offset=100" in responses.calls[1].request.url


@responses.activate
def test_pagination_refuses_to_stop_silently_at_offset_cap(client):
    responses.get(f"{URL}/users", json={"users": [{"id": "x"}] * 100, "more": True})
    with pytest.raises(OffsetCapReached) as raised:
        client.list_all("/users", "users")
    assert raised.value.message == (
        "/users: classic pagination stops at offset 10000; partition the query (e.g. by team)"
    )
    assert raised.value.path == "/users"  # what the importer partitions
    assert len(responses.calls) == 100  # offsets 0 … 9,900: the last page PagerDuty will serve


def test_find_open_incidents_refuses_empty_key(client):
    with pytest.raises(ValueError, match=r"^refusing to look up incidents by an empty incident_key$"):
        client.find_open_incidents(incident_key="")
    assert not responses.calls


def test_announced_wait_parses_both_headers():
    assert announced_wait({"ratelimit-reset": "2"}) == 2.0
    assert announced_wait({"retry-after": "5"}) == 5.0
    assert announced_wait({}) is None
    assert 0 <= announced_wait({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) <= 1


def test_dedup_conflict_detection():
    yes = PagerDutyBadRequest(
        "Invalid Input Provided", errors=["Open incident with matching dedup key already exists on this service"]
    )
    no = PagerDutyBadRequest("Invalid Input Provided", errors=["Service not found"])
    assert is_dedup_conflict(yes) and not is_dedup_conflict(no)


@responses.activate
def test_exchanges_and_logs_never_hold_the_key(client, caplog):
    responses.post(f"{URL}/incidents", status=401, json={"error": {"message": f"token {KEY} rejected", "code": 2006}})
    with pytest.raises(PagerDutyUnauthorized) as err:
        client.create_incident({"incident": {"title": KEY}})
    exchange = client.exchanges[0]
    assert exchange.request_headers["Authorization"] == "Token token=***redacted***"
    assert KEY not in repr(exchange.as_dict()) and KEY not in str(err.value)
    handler_filter = RedactSecretsFilter()
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "calling with %s", (f"Token token={KEY}",), None)
    handler_filter.filter(record)
    assert KEY not in record.getMessage() and "***redacted***" in record.getMessage()
    assert KEY not in repr(client)


# --- writes whose outcome is unknown ---------------------------------------------------------------


@responses.activate
def test_ambiguous_responder_request_without_a_look_up_says_outcome_unknown(client, waits):
    responses.post(f"{URL}/incidents/Q1/responder_requests", status=502, body="Bad Gateway")
    with pytest.raises(PagerDutyServerError) as err:
        client.create_responder_request("Q1", {})
    assert err.value.outcome_unknown is True
    assert len(responses.calls) == 1 and waits == []


@responses.activate
def test_ambiguous_responder_request_is_repeated_only_after_the_look_up_says_it_did_not_land(client, waits):
    responses.post(f"{URL}/incidents/Q1/responder_requests", body=requests.ReadTimeout("slow"))
    responses.post(f"{URL}/incidents/Q1/responder_requests", json={"responder_request": {"id": "R1"}})
    looked = []
    answer = client.create_responder_request("Q1", {}, verify=lambda: looked.append(1))
    assert answer == {"responder_request": {"id": "R1"}}
    assert looked == [1] and len(waits) == 1
    assert [c.request.method for c in responses.calls] == ["POST", "POST"]


@responses.activate
def test_ambiguous_responder_request_found_by_the_look_up_is_not_repeated(client, waits):
    responses.post(f"{URL}/incidents/Q1/responder_requests", body=requests.ConnectionError("reset"))
    found = {"responder_request": {"message": "join"}}
    assert client.create_responder_request("Q1", {}, verify=lambda: found) is found
    assert len(responses.calls) == 1 and waits == []


@responses.activate
def test_write_giving_up_after_an_ambiguous_attempt_looks_first(client, waits):
    """max_attempts=4: dropped after sending, 429, 500, 400. The last answer says nothing about the first."""
    responses.post(f"{URL}/incidents", body=requests.ConnectionError("reset after sending"))
    responses.post(f"{URL}/incidents", status=429)
    responses.post(f"{URL}/incidents", status=500)
    responses.post(f"{URL}/incidents", status=400, json={"error": {"message": "Invalid Input Provided"}})
    looked = []

    def verify():
        looked.append(len(responses.calls))
        return {"incident": {"id": "QFOUND"}}

    assert client.create_incident({"incident": {}}, verify=verify) == {"id": "QFOUND"}
    assert looked == [4]  # once, when giving up: a create may be repeated (its dedup key protects it)


@responses.activate
def test_write_giving_up_without_ambiguity_does_not_look(client, waits):
    for _ in range(4):
        responses.post(f"{URL}/incidents", status=429)
    with pytest.raises(PagerDutyRateLimited) as err:
        client.create_incident({"incident": {}}, verify=lambda: pytest.fail("a 429 is never acted on"))
    assert err.value.outcome_unknown is False


@responses.activate
def test_look_up_that_finds_nothing_makes_the_outcome_known(client, waits):
    for _ in range(4):
        responses.post(f"{URL}/incidents", status=503)
    with pytest.raises(PagerDutyServerError) as err:
        client.create_incident({"incident": {}}, verify=lambda: None)
    assert err.value.outcome_unknown is False


@responses.activate
def test_look_up_that_fails_leaves_the_outcome_unknown(client, waits):
    responses.post(f"{URL}/incidents/Q1/responder_requests", body=requests.ReadTimeout("slow"))

    def verify():
        raise PagerDutyUnauthorized("Authentication failed")

    with pytest.raises(PagerDutyUnavailable) as err:
        client.create_responder_request("Q1", {}, verify=verify)
    assert err.value.outcome_unknown is True
    assert isinstance(err.value.__cause__, PagerDutyUnauthorized)


@responses.activate
def test_reads_are_never_ambiguous(client, waits):
    for _ in range(4):
        responses.get(f"{URL}/users/PX", status=500)
    with pytest.raises(PagerDutyServerError) as err:
        client.get_user("PX")
    assert err.value.outcome_unknown is False


@responses.activate
def test_a_method_spelt_otherwise_is_refused_before_anything_is_sent(client):
    # Whether a request is a write (From header, may have paged) is read from the method's name.
    for method in ("get", "Post", "PATCH"):
        with pytest.raises(ValueError) as refused:
            client.request(method, "/users")
        assert str(refused.value) == f"unknown HTTP method {method!r}; one of GET, POST, PUT, DELETE"
    assert not responses.calls
