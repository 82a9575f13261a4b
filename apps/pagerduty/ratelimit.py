"""Stay under PagerDuty's per-key rate limit across every worker, instead of discovering it by 429.

GCRA (generic cell rate algorithm) kept in Redis: one timestamp per API key, updated atomically
by a Lua script using Redis's own clock, so any number of worker processes share one budget.
Without Redis (the embedded default) the same algorithm runs per process.
The key in Redis is a hash of the API key, never the key itself.
"""

import hashlib
import threading
import time
from functools import lru_cache

import redis
from django.conf import settings

# Returns "0" when the request may go now (and books it), else the seconds to wait.
_GCRA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat + interval - burst
if allow_at > now then return tostring(allow_at - now) end
redis.call('SET', KEYS[1], tostring(tat + interval), 'EX', math.ceil(burst + interval) + 1)
return '0'
"""


class RateLimiter:
    """`per_minute` requests a minute, with bursts of up to `burst` requests."""

    def __init__(self, *, per_minute: int, burst: int):
        self.interval = 60.0 / per_minute
        self.burst_seconds = self.interval * max(burst, 1)

    def reserve(self) -> float:
        raise NotImplementedError

    def wait(self, sleep=time.sleep) -> float:
        """Block until a request may go; returns the seconds waited."""
        waited = 0.0
        while (delay := self.reserve()) > 0:
            sleep(delay)
            waited += delay
        return waited


class LocalRateLimiter(RateLimiter):
    def __init__(self, *, per_minute: int, burst: int, clock=time.monotonic):
        super().__init__(per_minute=per_minute, burst=burst)
        self.clock = clock
        self._tat = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        with self._lock:
            now = self.clock()
            tat = max(self._tat, now)
            allow_at = tat + self.interval - self.burst_seconds
            if allow_at > now:
                return allow_at - now
            self._tat = tat + self.interval
            return 0.0


class RedisRateLimiter(RateLimiter):
    def __init__(self, *, client, key: str, per_minute: int, burst: int):
        super().__init__(per_minute=per_minute, burst=burst)
        self.key = key
        self._script = client.register_script(_GCRA)

    def reserve(self) -> float:
        return float(self._script(keys=[self.key], args=[self.interval, self.burst_seconds]))


@lru_cache(maxsize=4)
def _redis_client(url: str):
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


_local_limiters: dict[str, LocalRateLimiter] = {}


def limiter_for(api_key: str) -> RateLimiter | None:
    return _limiter(
        "pagerduty-rate:" + hashlib.sha256(api_key.encode()).hexdigest()[:32],
        per_minute=settings.PAGERDUTY_RATE_LIMIT_PER_MINUTE,
        burst=settings.PAGERDUTY_RATE_LIMIT_BURST,
    )


def events_limiter_for(routing_key: str) -> RateLimiter | None:
    """The Events API's budget is per routing key (about 120 events/min), apart from the REST one."""
    return _limiter(
        "pagerduty-events-rate:" + hashlib.sha256(routing_key.encode()).hexdigest()[:32],
        per_minute=settings.PAGERDUTY_EVENTS_RATE_LIMIT_PER_MINUTE,
        burst=settings.PAGERDUTY_EVENTS_RATE_LIMIT_BURST,
    )


def _limiter(key: str, *, per_minute: int, burst: int) -> RateLimiter | None:
    if not per_minute:
        return None
    url = settings.PAGERDUTY_RATE_LIMIT_REDIS_URL
    if url:
        return RedisRateLimiter(client=_redis_client(url), key=key, per_minute=per_minute, burst=burst)
    return _local_limiters.setdefault(key, LocalRateLimiter(per_minute=per_minute, burst=burst))
