"""The client's transport decisions that page people twice or hang a worker when they go wrong:
which failures may have reached PagerDuty, when a write is repeated or looked up first, how long a
request may wait and how many times it is tried."""

import socket
import threading
import time

import pytest
import requests
import responses

from apps.pagerduty.client import PagerDutyClient, RetryPolicy
from apps.pagerduty.errors import PagerDutyError, PagerDutyServerError, PagerDutyUnavailable

URL = "https://pd.test"
KEY = "y_NbAkKc66ryYTWUXYEu"
INCIDENTS = f"{URL}/incidents"
RESPONDERS = f"{URL}/incidents/Q1/responder_requests"


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


def never_called():
    pytest.fail("nothing can have reached PagerDuty, so there is nothing to look up")


# --- a connection dropped after the request was written ----------------------------------------


@responses.activate
def test_a_reset_on_a_create_may_have_paged_so_giving_up_says_the_outcome_is_unknown(client, waits):
    responses.post(INCIDENTS, body=requests.ConnectionError("Connection reset by peer"))
    with pytest.raises(PagerDutyUnavailable) as err:
        client.create_incident({"incident": {}})
    # A create carries its dedup key, so it is tried again; what the first attempts did stays unknown.
    assert len(responses.calls) == 3 and len(waits) == 2
    assert err.value.maybe_processed is True
    assert err.value.outcome_unknown is True
    assert client.exchanges[0].error.startswith("connection error")


@responses.activate
def test_a_reset_on_a_create_is_looked_up_before_giving_up(client, waits):
    responses.post(INCIDENTS, body=requests.ConnectionError("Connection reset by peer"))
    looked = []

    def verify():
        looked.append(len(responses.calls))
        return {"incident": {"id": "QLANDED"}}

    assert client.create_incident({"incident": {}}, verify=verify) == {"id": "QLANDED"}
    assert looked == [3]


@responses.activate
def test_a_reset_on_a_responder_request_is_not_repeated_blindly(client, waits):
    responses.post(RESPONDERS, body=requests.ConnectionError("Connection reset by peer"))
    with pytest.raises(PagerDutyUnavailable) as err:
        client.create_responder_request("Q1", {})
    assert len(responses.calls) == 1 and waits == []
    assert err.value.outcome_unknown is True


@responses.activate
def test_a_reset_on_a_read_is_retried_and_never_unknown(client, waits):
    responses.get(f"{URL}/users/PX", body=requests.ConnectionError("Connection reset by peer"))
    with pytest.raises(PagerDutyUnavailable) as err:
        client.get_user("PX")
    assert len(responses.calls) == 3
    assert err.value.maybe_processed is False
    assert err.value.outcome_unknown is False


# --- a connection that was never made ---------------------------------------------------------


@responses.activate
def test_a_connect_timeout_on_a_responder_request_is_repeated_without_looking(client, waits):
    responses.post(RESPONDERS, body=requests.ConnectTimeout("connect timed out"))
    responses.post(RESPONDERS, json={"responder_request": {"id": "R1"}})
    answer = client.create_responder_request("Q1", {}, verify=never_called)
    assert answer == {"responder_request": {"id": "R1"}}
    assert len(responses.calls) == 2 and len(waits) == 1
    assert client.exchanges[0].error.startswith("connect timeout")


@responses.activate
def test_connect_timeouts_until_giving_up_leave_nothing_unknown(client, waits):
    responses.post(INCIDENTS, body=requests.ConnectTimeout("connect timed out"))
    with pytest.raises(PagerDutyUnavailable) as err:
        client.create_incident({"incident": {}}, verify=never_called)
    assert len(responses.calls) == 3
    assert err.value.maybe_processed is False
    assert err.value.outcome_unknown is False


# --- which HTTP answers may have been acted on ------------------------------------------------


@pytest.mark.parametrize(("status", "may_have_paged"), [(499, False), (500, True), (503, True)])
@responses.activate
def test_a_responder_request_answered_5xx_may_have_paged(client, waits, status, may_have_paged):
    responses.post(RESPONDERS, status=status, json={"error": {"message": "Internal Server Error"}})
    with pytest.raises(PagerDutyError) as err:
        client.create_responder_request("Q1", {})
    assert err.value.status == status
    assert err.value.outcome_unknown is may_have_paged
    # Neither is repeated blindly: a 499 is not retryable, a 5xx might have paged.
    assert len(responses.calls) == 1 and waits == []


@responses.activate
def test_a_500_then_a_client_error_on_a_create_still_looks_before_giving_up(client, waits):
    responses.post(INCIDENTS, status=500, json={"error": {"message": "Internal Server Error"}})
    responses.post(INCIDENTS, status=404, json={"error": {"message": "Not Found"}})
    looked = []
    with pytest.raises(PagerDutyError) as err:
        client.create_incident({"incident": {}}, verify=lambda: looked.append(1))
    assert looked == [1]
    assert err.value.status == 404 and err.value.outcome_unknown is False


# --- how long and how often ---------------------------------------------------------------------


class SilentServer:
    """Accepts connections and never answers; hangs up after `hold` seconds so nothing waits forever."""

    def __init__(self, hold: float = 3.0):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.hold = hold
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            timer = threading.Timer(self.hold, conn.close)
            timer.daemon = True
            timer.start()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


@pytest.mark.parametrize("where", ["argument", "setting"])
def test_a_silent_pagerduty_times_out_instead_of_holding_the_worker(silent, settings, where):
    settings.PAGERDUTY_TIMEOUT_SECONDS = 0.3 if where == "setting" else 60
    timeout = 0.3 if where == "argument" else None
    client = PagerDutyClient(
        api_key=KEY, api_url=silent.url, timeout=timeout, retry=RetryPolicy(max_attempts=1), sleep=lambda s: None
    )
    started = time.monotonic()
    with pytest.raises(PagerDutyUnavailable) as err:
        client.test_connection()
    assert time.monotonic() - started < 2
    assert err.value.message.startswith("read timeout after 0.3s")


def test_the_default_policy_tries_five_times(db, settings, waits):
    """PAGERDUTY_MAX_ATTEMPTS defaults to 5 (README); a client built without a policy follows it."""
    with responses.RequestsMock() as mock:
        mock.get(f"{URL}/users/PX", status=503)
        client = PagerDutyClient(api_key=KEY, api_url=URL, sleep=waits.append)
        with pytest.raises(PagerDutyServerError):
            client.get_user("PX")
        assert len(mock.calls) == 5 and len(waits) == 4
    assert RetryPolicy().max_attempts == 5
    assert client.retry.lookup_attempts == 10


def test_session_takes_proxies_and_ca_bundle_from_the_environment_and_notices_a_change(monkeypatch):
    """PagerDutySession reads the environment once per origin, not per request, yet as requests
    would: a proxy variable set later, or a host added to no_proxy, is honoured from the next request."""
    from unittest import mock

    from apps.pagerduty.client import PagerDutySession

    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/bundle.pem")
    session = PagerDutySession()
    sent = []
    with mock.patch.object(requests.Session, "send", lambda self, request, **kw: sent.append(kw)):
        session.request("GET", "https://api.pagerduty.com/abilities")
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
        session.request("GET", "https://api.pagerduty.com/abilities")
        monkeypatch.setenv("NO_PROXY", "api.pagerduty.com")
        session.request("GET", "https://api.pagerduty.com/abilities")
    assert [kw["proxies"].get("https") for kw in sent] == [None, "http://proxy.example:3128", None]
    assert {kw["verify"] for kw in sent} == {"/etc/ssl/bundle.pem"}


def test_the_session_keeps_what_the_caller_chose_over_the_environment(monkeypatch):
    """As requests' own merge: explicit proxies win over the environment's, an explicit `verify`
    other than the default (False, a bundle of its own) is kept, the default (True or None) takes
    the environment's CA bundle; arguments may be given by position, as Session.request takes them."""
    from unittest import mock

    from apps.pagerduty.client import PagerDutySession

    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/bundle.pem")
    session = PagerDutySession()
    sent = []
    with mock.patch.object(requests.Session, "send", lambda self, request, **kw: sent.append((request.url, kw))):
        session.request("GET", "https://api.pagerduty.com/a", proxies={"https": "http://mine.example:8080"})
        session.request("GET", "https://api.pagerduty.com/b", verify=False)
        session.request("GET", "https://api.pagerduty.com/c", verify="/etc/ssl/mine.pem")
        session.request("GET", "https://api.pagerduty.com/d", verify=True)
        session.request("GET", "https://api.pagerduty.com/e", {"limit": "5"})
    assert [(url, kw["proxies"].get("https"), kw["verify"]) for url, kw in sent] == [
        ("https://api.pagerduty.com/a", "http://mine.example:8080", "/etc/ssl/bundle.pem"),
        ("https://api.pagerduty.com/b", "http://proxy.example:3128", False),
        ("https://api.pagerduty.com/c", "http://proxy.example:3128", "/etc/ssl/mine.pem"),
        ("https://api.pagerduty.com/d", "http://proxy.example:3128", "/etc/ssl/bundle.pem"),
        ("https://api.pagerduty.com/e?limit=5", "http://proxy.example:3128", "/etc/ssl/bundle.pem"),
    ]


def test_the_key_never_leaves_the_connections_host_whatever_url_is_asked_for(client):
    """Defense in depth under every request: a URL on another host is refused before anything is
    sent, naming the api_url (redacted) and why."""
    from apps.pagerduty.errors import PagerDutyDestinationRefused

    for url in ("https://evil.example/incidents", "https://pd.test.evil.example/incidents", "http://127.0.0.1/x"):
        with pytest.raises(PagerDutyDestinationRefused) as refused:
            client._check_destination(url)
        assert str(refused.value.message) == (
            "Refusing to send the PagerDuty API key: api_url 'https://pd.test' does not keep the request on its own host."
        )
    client._check_destination(f"{URL}/incidents/Q1")  # its own host: fine


@responses.activate
def test_list_parameters_are_recorded_as_sent_one_pair_per_value(client):
    responses.get(INCIDENTS, json={"incidents": [], "more": False})
    client.request("GET", "/incidents", params={"statuses[]": ["triggered", "acknowledged"], "limit": 5})
    assert responses.calls[0].request.url == f"{INCIDENTS}?statuses%5B%5D=triggered&statuses%5B%5D=acknowledged&limit=5"
    assert [e.url for e in client.exchanges] == [responses.calls[0].request.url]


@responses.activate
def test_a_write_found_not_done_is_looked_up_once_not_again_when_it_then_fails_plainly(client, waits):
    """A 502 on a responder request may have paged: looked up (nothing there), sent again, refused
    with a 400 — which cannot have paged anyone, so the call ends there without a second look-up."""
    responses.post(RESPONDERS, status=502, json={"error": {"message": "Bad gateway"}})
    responses.post(RESPONDERS, status=400, json={"error": {"message": "Invalid Input Provided", "code": 2001}})
    lookups = []

    def verify():
        lookups.append(len(responses.calls))
        return None

    with pytest.raises(PagerDutyError) as failed:
        client.request("POST", "/incidents/Q1/responder_requests", json={}, retry_ambiguous=False, verify=verify)
    assert failed.value.status == 400 and not failed.value.outcome_unknown
    assert lookups == [1]
    assert [call.request.method for call in responses.calls] == ["POST", "POST"]


@responses.activate
def test_a_client_given_no_api_url_talks_to_pagerduty_itself():
    responses.get("https://api.pagerduty.com/users/PX", json={"user": {"id": "PX"}})
    client = PagerDutyClient(api_key=KEY, sleep=lambda seconds: None)
    assert client.get_user("PX") == {"id": "PX"}
    assert responses.calls[0].request.url == "https://api.pagerduty.com/users/PX"


@responses.activate
def test_an_api_url_with_a_trailing_slash_or_a_path_is_joined_without_doubling_or_losing_anything():
    responses.get("https://pd.test/users/PX", json={"user": {"id": "PX"}})
    responses.get("https://pd.test/pagerduty-proxyX/users/PX", json={"user": {"id": "PX"}})
    for api_url in ("https://pd.test/", "https://pd.test/pagerduty-proxyX/"):
        PagerDutyClient(api_key=KEY, api_url=api_url, sleep=lambda seconds: None).get_user("PX")
    assert [call.request.url for call in responses.calls] == [
        "https://pd.test/users/PX",
        "https://pd.test/pagerduty-proxyX/users/PX",
    ]


@responses.activate
def test_a_netrc_entry_for_the_host_never_replaces_the_key(tmp_path, monkeypatch):
    """requests would put ~/.netrc's login for the host in Authorization, over the key: the session
    reads no netrc, so PagerDuty gets the connection's own key."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine pd.test login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    responses.get(f"{URL}/users/PX", json={"user": {"id": "PX"}})
    PagerDutyClient(api_key=KEY, api_url=URL, sleep=lambda seconds: None).get_user("PX")
    assert responses.calls[0].request.headers["Authorization"] == f"Token token={KEY}"
