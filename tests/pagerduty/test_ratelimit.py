import os
import uuid

import pytest
import redis
import responses

from apps.pagerduty.client import PagerDutyClient
from apps.pagerduty.ratelimit import LocalRateLimiter, RedisRateLimiter, limiter_for


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_local_limiter_allows_burst_then_spaces_requests():
    clock = FakeClock()
    limiter = LocalRateLimiter(per_minute=60, burst=3, clock=clock)
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.reserve() == pytest.approx(1.0)
    assert limiter.wait(clock.sleep) == pytest.approx(1.0)
    assert limiter.reserve() == pytest.approx(1.0)  # the next one is a full interval later


def test_client_waits_for_budget_before_sending():
    clock = FakeClock()
    client = PagerDutyClient(
        api_key="k" * 20,
        api_url="https://pd.test",
        throttle=LocalRateLimiter(per_minute=60, burst=1, clock=clock),
        sleep=clock.sleep,
    )
    with responses.RequestsMock() as mock:
        mock.get("https://pd.test/abilities", json={"abilities": []})
        for _ in range(3):
            client.test_connection()
    assert client.throttled_seconds == pytest.approx(2.0)


def test_limiter_for_uses_no_secret_in_its_key(settings):
    settings.PAGERDUTY_RATE_LIMIT_PER_MINUTE = 900
    settings.PAGERDUTY_RATE_LIMIT_REDIS_URL = ""
    limiter = limiter_for("super-secret-key-value")
    assert isinstance(limiter, LocalRateLimiter)
    assert limiter_for("super-secret-key-value") is limiter  # one budget per key in a process
    settings.PAGERDUTY_RATE_LIMIT_PER_MINUTE = 0
    assert limiter_for("super-secret-key-value") is None


@pytest.fixture
def redis_client():
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        if os.environ.get("CI") == "true":
            pytest.fail("Redis is required under CI=true")
        pytest.skip(f"Redis not reachable at {url}")
    return client


def test_redis_limiter_is_shared_by_workers(redis_client):
    key = f"pagerduty-rate:test-{uuid.uuid4().hex}"
    # Two limiters = two worker processes using the same API key.
    first = RedisRateLimiter(client=redis_client, key=key, per_minute=60, burst=4)
    second = RedisRateLimiter(client=redis_client, key=key, per_minute=60, burst=4)
    try:
        assert [first.reserve(), second.reserve(), first.reserve(), second.reserve()] == [0, 0, 0, 0]
        wait = second.reserve()
        assert 0.9 < wait <= 1.0
        assert first.reserve() > 0.9  # refused again: nothing was booked by the refusal
        assert "super" not in key and redis_client.ttl(key) > 0
    finally:
        redis_client.delete(key)


@pytest.mark.parametrize("shared", [False, True], ids=["per-process", "shared-in-redis"])
def test_each_api_key_has_a_budget_of_its_own(settings, request, shared):
    """Three PagerDuty accounts (three keys): one spending its budget leaves the others' whole."""
    settings.PAGERDUTY_RATE_LIMIT_PER_MINUTE = 60
    settings.PAGERDUTY_RATE_LIMIT_BURST = 2
    settings.PAGERDUTY_RATE_LIMIT_REDIS_URL = ""
    if shared:
        client = request.getfixturevalue("redis_client")
        kwargs = client.connection_pool.connection_kwargs
        settings.PAGERDUTY_RATE_LIMIT_REDIS_URL = f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
    limiters = [limiter_for(f"account-{n}-{uuid.uuid4().hex}") for n in range(3)]
    try:
        busy, *others = limiters
        assert [busy.reserve(), busy.reserve()] == [0, 0]
        assert busy.reserve() > 0.9  # its budget is spent
        for other in others:
            assert [other.reserve(), other.reserve()] == [0, 0]
        assert busy.reserve() > 0.9
    finally:
        if shared:
            client.delete(*(limiter.key for limiter in limiters))
