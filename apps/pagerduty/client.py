"""The one HTTP client for PagerDuty's REST API.

Plain `requests`, so `responses` can intercept it in tests. No ORM in here: callers pass the key
and URLs and receive dicts or typed errors. Every attempt, including retried ones, is reported to
`on_exchange` with secrets redacted, so the caller can store it on the run.
"""

import email.utils
import functools
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from urllib.parse import urlencode, urlsplit

import redis
import requests
from django.conf import settings

from apps.core.redaction import redact_data, redact_headers, redact_text, register_secret
from apps.ops import metrics
from apps.pagerduty.errors import (
    PagerDutyBadRequest,
    PagerDutyDestinationRefused,
    PagerDutyError,
    PagerDutyRequestInvalid,
    PagerDutyUnavailable,
    PagerDutyUnexpectedAnswer,
    error_for_status,
)
from apps.pagerduty.hints import events_hint_for, hint_for, key_looks_like_routing_key
from apps.pagerduty.ratelimit import RateLimiter
from apps.pagerduty.validators import url_problem

logger = logging.getLogger(__name__)
ACCEPT = "application/vnd.pagerduty+json;version=2"
MAX_PAGE_SIZE = 100
_METHODS = ("GET", "POST", "PUT", "DELETE")
OFFSET_CAP = 10_000
# Response headers worth keeping on a run record; the rest is noise.
_KEPT_RESPONSE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after", "x-request-id")


@dataclass
class Exchange:
    """One HTTP attempt as it will be stored: never holds a secret."""

    method: str
    url: str
    request_headers: dict
    request_body: object = None
    status: int | None = None
    response_headers: dict = field(default_factory=dict)
    response_body: object = None
    error: str = ""
    duration_ms: int = 0
    attempt: int = 1

    def as_dict(self) -> dict:
        # Shallow, unlike dataclasses.asdict: every container here is already the exchange's own
        # (redact_data and redact_headers build new ones), and asdict's deep copy of a response body
        # was the largest single CPU cost of storing an attempt (~7 % of a run's profiled CPU).
        return {name: getattr(self, name) for name in _EXCHANGE_FIELDS}


_EXCHANGE_FIELDS = tuple(f.name for f in fields(Exchange))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    # A server-announced wait longer than this is not honoured in-process; the call fails instead.
    max_announced_wait: float = 120.0

    @property
    def lookup_attempts(self) -> int:
        """Attempts for a read that decides whether a write happened: safe to repeat, and failing
        it leaves the outcome unknown, so it gets twice the patience."""
        return 2 * self.max_attempts

    @classmethod
    def from_settings(cls) -> "RetryPolicy":
        return cls(
            max_attempts=settings.PAGERDUTY_MAX_ATTEMPTS,
            backoff_base=settings.PAGERDUTY_BACKOFF_BASE_SECONDS,
            backoff_cap=settings.PAGERDUTY_BACKOFF_CAP_SECONDS,
        )

    def delay(self, attempt: int, announced: float | None) -> float:
        if announced is not None:
            return max(0.0, announced)
        computed = min(self.backoff_cap, self.backoff_base * (2 ** (attempt - 1)))
        # Half fixed, half random: spreads workers that failed together without shrinking the wait much.
        return computed / 2 + random.uniform(0, computed / 2)


# What requests.Session reads from the environment for a request (trust_env): the proxy variables
# for the URL's scheme (and no_proxy), and the CA bundle requests and curl honour.
_ENVIRONMENT_VARIABLES = tuple(
    case(name)
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "requests_ca_bundle", "curl_ca_bundle")
    for case in (str.lower, str.upper)
)


@functools.lru_cache(maxsize=64)
def _environment_settings(origin: str, environment: tuple) -> tuple[dict, str | None]:
    """The proxies and the CA bundle requests would take from the environment for `origin`. Keyed on
    the values of the variables they come from, so a changed environment is read again."""
    proxies = requests.utils.get_environ_proxies(origin)
    return proxies, os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")


class PagerDutySession(requests.Session):
    """A requests session that honours the proxy and CA bundle environment variables as requests
    does, without re-reading the whole environment for every request: with `trust_env` requests
    walks every variable of os.environ twice per request (urllib's getproxies_environment) and
    looks for ~/.netrc, ~7 % of a run's profiled CPU. Here the settings are computed
    once per origin and environment values (_environment_settings).

    ~/.netrc is not read: a netrc entry for the host would replace the Authorization header the
    client sets, and the key sent must be the connection's own."""

    def __init__(self):
        super().__init__()
        self.trust_env = False

    def request(self, method, url, *args, **kwargs):
        parts = urlsplit(url)
        environment = tuple(os.environ.get(name) for name in _ENVIRONMENT_VARIABLES)
        proxies, ca_bundle = _environment_settings(f"{parts.scheme}://{parts.netloc}", environment)
        kwargs["proxies"] = {**proxies, **(kwargs.get("proxies") or {})}
        # As Session.merge_environment_settings: the bundle replaces only a default `verify`.
        if kwargs.get("verify") in (None, True):
            kwargs["verify"] = ca_bundle or kwargs.get("verify")
        return super().request(method, url, *args, **kwargs)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def announced_wait(headers) -> float | None:
    """Seconds PagerDuty asked us to wait: `ratelimit-reset` (seconds) or `Retry-After` (seconds or date)."""
    for name in ("ratelimit-reset", "retry-after"):
        value = headers.get(name)
        if value is None:
            continue
        value = str(value).strip()
        try:
            return float(value)
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value) if value else None
            except ValueError:
                parsed = None  # neither seconds nor an HTTP date (a proxy's own words): not an announcement
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    return None


def _parse_body(response: requests.Response):
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text[:4000]


def _error_from_response(
    response: requests.Response, body, exchange: Exchange, *, api_url: str, api_key: str, events: bool = False
) -> PagerDutyError:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message") or response.reason or "error"
        code, errors = error.get("code"), error.get("errors") or []
    elif isinstance(body, dict) and isinstance(body.get("message"), str):
        # The Events API's own shape: {"status": "invalid event", "message": ..., "errors": [...]}.
        message, code, errors = body["message"] or response.reason or "error", None, body.get("errors") or []
    else:
        message = (body if isinstance(body, str) and body else response.reason) or f"HTTP {response.status_code}"
        code, errors = None, []
    if not isinstance(code, int):
        code = None
    if not isinstance(errors, list):
        errors = [errors]
    if 300 <= response.status_code < 400:
        # Redirects are not followed: a key is only sent to the host it was entered for.
        message = f"redirect to {response.headers.get('location', '(no location)')} not followed; check api_url"
    if events:
        hint = events_hint_for(
            status=response.status_code, events_url=api_url, reset_seconds=announced_wait(response.headers)
        )
    else:
        hint = hint_for(
            status=response.status_code,
            code=code,
            message=str(message),
            errors=errors,
            api_url=api_url,
            routing_key_like=key_looks_like_routing_key(api_key),
            reset_seconds=announced_wait(response.headers),
        )
    cls = error_for_status(response.status_code)
    return cls(
        redact_text(str(message)),
        status=response.status_code,
        code=code,
        errors=[redact_text(str(e)) for e in errors],
        exchange=exchange,
        hint=hint,
    )


class PagerDutyClient:
    events_api = False
    key_label, url_label = "API key", "api_url"

    def __init__(
        self,
        *,
        api_key: str,
        api_url: str = "https://api.pagerduty.com",
        from_email: str = "",
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        on_exchange: Callable[[Exchange], None] | None = None,
        sleep: Callable[[float], None] | None = None,
        throttle: RateLimiter | None = None,
    ):
        register_secret(api_key)
        self._api_key = api_key
        self.api_url = api_url.rstrip("/")
        self.from_email = from_email
        self.timeout = timeout if timeout is not None else settings.PAGERDUTY_TIMEOUT_SECONDS
        self.retry = retry or RetryPolicy.from_settings()
        self.session = session or PagerDutySession()
        self.on_exchange = on_exchange
        self.sleep = sleep or _sleep
        self.throttle = throttle
        self.throttled_seconds = 0.0
        self.requests_made = 0
        # Attempts that failed with 429/5xx/no answer and were tried again.
        self.retries = 0

    def __repr__(self) -> str:
        return f"PagerDutyClient(api_url={self.api_url!r})"

    # --- transport ---------------------------------------------------------------------------

    def request_headers(self, write: bool, from_email: str | None = None) -> dict:
        headers = {
            "Authorization": f"Token token={self._api_key}",
            "Accept": ACCEPT,
            "Content-Type": "application/json",
        }
        sender = from_email or self.from_email
        if write or sender:
            if not sender:
                raise PagerDutyBadRequest(
                    'No From email: PagerDuty requires a user\'s email in the "From" header on writes; '
                    "set `from` on the step or a default From email on the connection",
                    status=None,
                )
            headers["From"] = sender
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        params=None,
        json=None,
        from_email: str | None = None,
        retry_ambiguous: bool = True,
        verify: Callable[[], object] | None = None,
        max_attempts: int | None = None,
    ):
        """One logical call, retried on 429/5xx/timeouts within the policy.

        An attempt at a write is *ambiguous* when PagerDuty may have acted on it although we got no
        usable answer: the connection dropped after the request was sent, a read timeout, a 5xx.
        `retry_ambiguous=False` is for writes that page people and have no dedup key (responder
        requests): such an attempt is not repeated blindly.

        `verify` looks the write up at PagerDuty. It returns what PagerDuty holds (returned here as
        if it were the answer) or None when the write did not happen. It is called after an
        ambiguous attempt before repeating a write that must not be repeated blindly, and before
        giving up on any write that had an ambiguous attempt, so a call never ends in "we do not
        know". When nothing could settle it, the error raised has `outcome_unknown` set.
        """
        if method not in _METHODS:
            # Which requests are writes (a From header, an attempt that may have paged) is read
            # from the method as PagerDuty's API spells it: another spelling must not slip past.
            raise ValueError(f"unknown HTTP method {method!r}; one of {', '.join(_METHODS)}")
        write = method != "GET"
        headers = self.request_headers(write, from_email)
        url = f"{self.api_url}/{path.lstrip('/')}"
        self._check_destination(url)
        shown_url = url + (f"?{urlencode(params, doseq=True)}" if params else "")
        attempt = 0
        unknown = False  # an attempt may have been acted on, and no look-up has said otherwise since
        while True:
            attempt += 1
            body, error, response = self._attempt(method, url, shown_url, params, json, headers, write, attempt)
            if error is None:
                return body
            ambiguous = write and _maybe_acted_on(error)
            unknown = unknown or ambiguous
            wait = self._retry_wait(error, response, attempt, max_attempts or self.retry.max_attempts)
            if unknown and (wait is None or (ambiguous and not retry_ambiguous)):
                # Giving up, or about to repeat what must not be repeated blindly: look first.
                if verify is None:
                    error.outcome_unknown = True
                    raise error
                try:
                    found = verify()
                except PagerDutyError as exc:
                    error.outcome_unknown = True
                    raise error from exc
                if found is not None:
                    return found
                unknown = False
            if wait is None:
                raise error
            self.retries += 1
            self.sleep(wait)

    def _check_destination(self, url: str) -> None:
        """Defense in depth: whatever built this client, the key only goes to an allowed host."""
        problem = url_problem(self.api_url)
        if problem is None and urlsplit(url).hostname != urlsplit(self.api_url).hostname:
            problem = "does not keep the request on its own host"
        if problem:
            raise PagerDutyDestinationRefused(
                f"Refusing to send the PagerDuty {self.key_label}: {self.url_label} {redact_text(self.api_url)!r} "
                f"{problem}."
            )

    def _attempt(self, method, url, shown_url, params, json, headers, write, attempt):
        """Send once and report the exchange; returns (body, error, response)."""
        exchange = Exchange(
            method=method,
            url=redact_text(shown_url),
            request_headers=redact_headers(headers),
            request_body=redact_data(json),
            attempt=attempt,
        )
        self._wait_for_budget()
        started = time.monotonic()
        error: PagerDutyError | None = None
        response = None
        try:
            self.requests_made += 1
            response = self.session.request(
                method, url, params=params, json=json, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.ConnectTimeout as exc:
            error = PagerDutyUnavailable(f"connect timeout: {exc}", maybe_processed=False)
        except requests.ConnectionError as exc:
            # A reset after the request was written may still have been processed.
            error = PagerDutyUnavailable(f"connection error: {exc}", maybe_processed=write)
        except requests.Timeout as exc:
            error = PagerDutyUnavailable(f"read timeout after {self.timeout}s: {exc}", maybe_processed=True)
        except (requests.RequestException, ValueError) as exc:
            # InvalidURL, InvalidHeader, urllib3's LocationParseError, a port out of range…: the request
            # never left, and sending it again cannot help.
            error = PagerDutyRequestInvalid(
                redact_text(f"the request could not be sent ({type(exc).__name__}: {exc}); check api_url"),
                status=None,
            )
        exchange.duration_ms = int((time.monotonic() - started) * 1000)
        metrics.pagerduty_request(method, response.status_code if response is not None else None)
        body = None
        if response is not None:
            body = _parse_body(response)
            exchange.status = response.status_code
            exchange.response_headers = {
                k: response.headers[k] for k in _KEPT_RESPONSE_HEADERS if k in response.headers
            }
            exchange.response_body = redact_data(body)
            if response.status_code >= 300:
                error = _error_from_response(
                    response, body, exchange, api_url=self.api_url, api_key=self._api_key, events=self.events_api
                )
        else:
            exchange.error = redact_text(error.message)
            error.exchange = exchange
        if self.on_exchange:
            self.on_exchange(exchange)
        return body, error, response

    def _wait_for_budget(self) -> None:
        if self.throttle is None:
            return
        try:
            waited = self.throttle.wait(self.sleep)
            self.throttled_seconds += waited
            metrics.rate_budget_waited(waited)
        except redis.RedisError as exc:
            # The limiter protects PagerDuty's budget; losing it must not stop a page from going out.
            logger.warning("PagerDuty rate limiter unavailable (%s); sending without it", exc)

    def _retry_wait(self, error, response, attempt, max_attempts) -> float | None:
        if not error.retryable or attempt >= max_attempts:
            return None
        announced = announced_wait(response.headers) if response is not None else None
        if announced is not None and announced > self.retry.max_announced_wait:
            return None
        return self.retry.delay(attempt, announced)

    # --- reads ---------------------------------------------------------------------------------

    def iter_pages(self, path: str, key: str, params: dict | None = None) -> Iterator[list]:
        """Classic pagination at the largest page size. Raises rather than stop silently at the cap."""
        offset = 0
        while True:
            if offset + MAX_PAGE_SIZE > OFFSET_CAP:
                raise OffsetCapReached(path)
            page = self.request("GET", path, params={**(params or {}), "limit": MAX_PAGE_SIZE, "offset": offset})
            items = page.get(key) or []
            yield items
            if not page.get("more") or not items:
                return
            offset += len(items)

    def list_all(self, path: str, key: str, params: dict | None = None) -> list:
        return [item for page in self.iter_pages(path, key, params) for item in page]

    def find_open_incidents(self, *, incident_key: str, service_id: str | None = None, max_attempts=None) -> list:
        if not incident_key:
            # An empty incident_key filter matches every incident on the account.
            raise ValueError("refusing to look up incidents by an empty incident_key")
        params = {
            "incident_key": incident_key,
            "statuses[]": ["triggered", "acknowledged"],
            "date_range": "all",
        }
        if service_id:
            params["service_ids[]"] = [service_id]
        return self.request("GET", "/incidents", params=params, max_attempts=max_attempts).get("incidents") or []

    def find_users(self, *, query: str) -> list:
        return self.request("GET", "/users", params={"query": query, "limit": MAX_PAGE_SIZE}).get("users") or []

    def get_user(self, user_id: str) -> dict:
        return self.request("GET", f"/users/{user_id}")["user"]

    def get_incident(self, incident_id: str, *, max_attempts=None) -> dict:
        return _expect(self.request("GET", f"/incidents/{incident_id}", max_attempts=max_attempts), "incident")

    def list_incident_notes(self, incident_id: str, *, max_attempts=None) -> list:
        answer = self.request("GET", f"/incidents/{incident_id}/notes", max_attempts=max_attempts)
        return (answer or {}).get("notes") or []

    def list_log_entries(
        self,
        incident_id: str,
        *,
        since: str,
        until: str,
        max_pages: int,
    ) -> tuple[list, bool]:
        """GET /incidents/{id}/log_entries for an explicit window (PagerDuty's default one is short),
        in UTC, with each entry's channel (what a note or a responder request said).
        (entries, complete): False when more than `max_pages` pages would be needed."""
        params: dict = {"since": since, "until": until, "time_zone": "UTC", "include[]": ["channels"]}
        entries: list = []
        offset = 0
        for _ in range(max_pages):
            page = self.request(
                "GET",
                f"/incidents/{incident_id}/log_entries",
                params={**params, "limit": MAX_PAGE_SIZE, "offset": offset},
            )
            items = (page or {}).get("log_entries") or []
            entries.extend(items)
            if not page.get("more") or not items:
                return entries, True
            offset += len(items)
        return entries, False

    def list_priorities(self) -> list:
        """The account's priorities (names such as P1); an account without them answers none or 404."""
        return self.list_all("/priorities", "priorities")

    def test_connection(self) -> dict:
        return self.request("GET", "/abilities")

    # --- on-call ---------------------------------------------------------------------------------

    def list_oncalls(
        self,
        *,
        since: str,
        until: str,
        schedule_ids=(),
        escalation_policy_ids=(),
        user_ids=(),
        earliest: bool = False,
        max_pages: int,
    ) -> tuple[list, bool]:
        """GET /oncalls in UTC. (entries, complete): False when more than `max_pages` pages would be needed."""
        params: dict = {"since": since, "until": until, "time_zone": "UTC"}
        if schedule_ids:
            params["schedule_ids[]"] = list(schedule_ids)
        if escalation_policy_ids:
            params["escalation_policy_ids[]"] = list(escalation_policy_ids)
        if user_ids:
            params["user_ids[]"] = list(user_ids)
        if earliest:
            params["earliest"] = "true"
        entries: list = []
        for number, page in enumerate(self.iter_pages("/oncalls", "oncalls", params), start=1):
            entries.extend(page)
            if number >= max_pages:
                return entries, False
        return entries, True

    def list_schedule_overrides(self, schedule_id: str, *, since: str, until: str) -> list:
        """Overrides of a classic schedule overlapping the window, with their real bounds (`overflow`)."""
        params = {"since": since, "until": until, "overflow": "true"}
        return self.request("GET", f"/schedules/{schedule_id}/overrides", params=params).get("overrides") or []

    def list_v3_schedule_overrides(self, schedule_id: str, *, since: str, until: str) -> list:
        params = {"since": since, "until": until, "overflow": "true", "time_zone": "UTC"}
        return self.list_all(f"/v3/schedules/{schedule_id}/overrides", "overrides", params)

    def create_schedule_overrides(
        self, schedule_id: str, payload: dict, *, from_email: str | None = None, verify=None
    ) -> list:
        """POST /schedules/{id}/overrides → PagerDuty's per-override list `[{status, errors, override}]`.

        No dedup key: a second identical override is simply created, so an ambiguous attempt is only
        repeated once `verify` says it did not land. `verify` returns such a list when it did."""
        answer = self.request(
            "POST",
            f"/schedules/{schedule_id}/overrides",
            json=payload,
            from_email=from_email,
            retry_ambiguous=False,
            verify=verify,
        )
        if not isinstance(answer, list):
            # The deprecated single-override form answers {"override": {...}}.
            single = answer.get("override") if isinstance(answer, dict) else None
            if not isinstance(single, dict):
                raise PagerDutyUnexpectedAnswer(f"an overrides answer that is not a list: {str(answer)[:200]!r}")
            answer = [{"status": 201, "override": single}]
        return answer

    # --- writes --------------------------------------------------------------------------------

    def create_incident(self, payload: dict, *, from_email: str | None = None, verify=None) -> dict:
        # Safe to retry: a create that did land comes back as the dedup 400. `verify` returns
        # {"incident": …} when the incident exists after all.
        answer = self.request("POST", "/incidents", json=payload, from_email=from_email, verify=verify)
        try:
            return _expect(answer, "incident")
        except PagerDutyUnexpectedAnswer as exc:
            # It was created (a success answer), but we were not told which incident: look.
            found = verify() if verify is not None else None
            if found is not None:
                return _expect(found, "incident")
            exc.outcome_unknown = verify is None
            raise

    def create_responder_request(
        self, incident_id: str, payload: dict, *, from_email: str | None = None, verify=None
    ) -> dict:
        # No dedup key: an ambiguous attempt is only repeated once `verify` says it did not land.
        return self.request(
            "POST",
            f"/incidents/{incident_id}/responder_requests",
            json=payload,
            from_email=from_email,
            retry_ambiguous=False,
            verify=verify,
        )

    def create_incident_note(
        self, incident_id: str, payload: dict, *, from_email: str | None = None, verify=None
    ) -> dict:
        # No dedup key: an ambiguous attempt is only repeated once `verify` says the note is not there.
        answer = self.request(
            "POST",
            f"/incidents/{incident_id}/notes",
            json=payload,
            from_email=from_email,
            retry_ambiguous=False,
            verify=verify,
        )
        return _expect(answer, "note")

    def update_incident(
        self, incident_id: str, payload: dict, *, from_email: str | None = None, verify=None, retry_ambiguous=True
    ) -> dict:
        # Setting a state (status, urgency, priority, assignees) twice is harmless; escalating
        # twice notifies twice, so escalation passes retry_ambiguous=False.
        answer = self.request(
            "PUT",
            f"/incidents/{incident_id}",
            json=payload,
            from_email=from_email,
            verify=verify,
            retry_ambiguous=retry_ambiguous,
        )
        return _expect(answer, "incident")

    # --- webhook subscriptions (v3) --------------------------------------------------------------

    def create_webhook_subscription(self, payload: dict) -> dict:
        # Not retried after an ambiguous attempt: a second subscription would deliver everything twice.
        answer = self.request("POST", "/webhook_subscriptions", json=payload, retry_ambiguous=False)
        return _expect(answer, "webhook_subscription")

    def list_webhook_subscriptions(self) -> list:
        return self.list_all("/webhook_subscriptions", "webhook_subscriptions")

    def delete_webhook_subscription(self, subscription_id: str) -> None:
        self.request("DELETE", f"/webhook_subscriptions/{subscription_id}")

    def ping_webhook_subscription(self, subscription_id: str) -> None:
        self.request("POST", f"/webhook_subscriptions/{subscription_id}/ping")


class PagerDutyEventsClient(PagerDutyClient):
    """Events API v2 (`POST {events_url}/v2/enqueue`): the same transport as the REST client —
    destination check, shared rate budget, retries of 429/5xx/timeouts with backoff, every attempt
    reported with secrets redacted — but the credential is the routing key, carried in the body.

    Re-sending an event is safe: PagerDuty groups events by dedup_key (a repeated trigger adds an
    alert to the open incident, never a second page; acknowledge and resolve are idempotent), so
    ambiguous attempts are retried like any other."""

    events_api = True
    key_label, url_label = "routing key", "events_url"
    ENQUEUE_PATH = "/v2/enqueue"

    def __init__(self, *, routing_key: str, events_url: str = "https://events.pagerduty.com", **kwargs):
        kwargs.pop("from_email", None)
        super().__init__(api_key=routing_key, api_url=events_url, **kwargs)

    def __repr__(self) -> str:
        return f"PagerDutyEventsClient(events_url={self.api_url!r})"

    def request_headers(self, write: bool, from_email: str | None = None) -> dict:
        # No Authorization, no From: the Events API authenticates by the routing key in the body.
        return {"Accept": "application/json", "Content-Type": "application/json"}

    def enqueue(self, event: dict) -> dict:
        """Send one event (`event_action`, `dedup_key`, `payload`, `links`…); the routing key is
        this client's own, whatever `event` holds. Returns PagerDuty's answer (`status`, `dedup_key`)."""
        body = {"routing_key": self._api_key, **{k: v for k, v in event.items() if k != "routing_key"}}
        answer = self.request("POST", self.ENQUEUE_PATH, json=body)
        if not isinstance(answer, dict) or not answer.get("dedup_key"):
            raise PagerDutyUnexpectedAnswer(f"an accepted event without its dedup_key: {str(answer)[:200]!r}")
        return answer


def _expect(answer, key: str) -> dict:
    """`answer[key]`, the object a success answer carries, or a PagerDuty error saying it is missing."""
    found = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(found, dict) or not found.get("id"):
        raise PagerDutyUnexpectedAnswer(f"a success answer without the {key}: {str(answer)[:200]!r}")
    return found


def _maybe_acted_on(error: PagerDutyError) -> bool:
    """Whether PagerDuty may have carried out a write that failed with this error."""
    if isinstance(error, PagerDutyUnavailable):
        return error.maybe_processed
    return error.status is not None and error.status >= 500


class OffsetCapReached(PagerDutyError):
    """Classic pagination cannot go past offset 10,000: the caller must partition the query."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(
            f"{path}: classic pagination stops at offset {OFFSET_CAP}; partition the query (e.g. by team)",
            status=None,
        )


DEDUP_MESSAGE = "Open incident with matching dedup key already exists"


def is_dedup_conflict(error: PagerDutyError) -> bool:
    texts = [error.message, *(str(e) for e in error.errors)]
    return isinstance(error, PagerDutyBadRequest) and any(DEDUP_MESSAGE.lower() in t.lower() for t in texts)
