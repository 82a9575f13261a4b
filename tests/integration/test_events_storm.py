"""A storm of 300 trigger events on one routing key, sent by several "workers" at once through the
real shared budget (GCRA in Redis) to the stand-in over real HTTP, which answers 429 past its
per-routing-key limit: not one 429.

Time is compressed tenfold so the test takes ~16 s instead of ~2.7 min: the stand-in allows 120
events per 6 s window (PagerDuty: ~120 per minute) and the budget is 1,100/min with bursts of 5
(production: 110/min, bursts of 5). The ratio between the two is the production one, so what
holds here holds there: in any window the budget lets through at most 5 + 110 + 1 = 116 ≤ 120.
"""

import threading
import time

import pytest
import redis

from apps.pagerduty.payloads import event_payload
from apps.pagerduty.ratelimit import events_limiter_for
from apps.pagerduty.services import channel_client, channel_upsert
from apps.sandbox import CHECKOUT_INTEGRATION_KEY, SandboxServer, SandboxState, seed_account

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

EVENTS = 300
WORKERS = 3
WINDOW_SECONDS = 6.0  # a minute, compressed tenfold


@pytest.fixture
def sandbox():
    state = SandboxState(events_rate_limit=120, events_rate_window_seconds=WINDOW_SECONDS)
    seed_account(state, users=5, teams=1, schedules=1, escalation_policies=1, services=2, seed=7)
    with SandboxServer(state, host="127.0.0.1", port=0).start() as server:
        yield server, state


def test_300_triggers_on_one_routing_key_get_no_429(sandbox, settings, real_services):
    server, state = sandbox
    settings.PAGERDUTY_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.PAGERDUTY_EVENTS_RATE_LIMIT_PER_MINUTE = 1100
    settings.PAGERDUTY_EVENTS_RATE_LIMIT_BURST = 5
    assert settings.PAGERDUTY_RATE_LIMIT_REDIS_URL, "the shared budget lives in Redis"
    limiter = events_limiter_for(CHECKOUT_INTEGRATION_KEY)
    redis.Redis.from_url(settings.PAGERDUTY_RATE_LIMIT_REDIS_URL).delete(limiter.key)
    channel = channel_upsert(name="storm", routing_key=CHECKOUT_INTEGRATION_KEY, events_url=server.url)

    answers, errors = [], []

    def worker(number: int):
        # Each worker has its own client, as separate Celery processes would; the budget is shared.
        client = channel_client(channel=channel)
        try:
            for index in range(EVENTS // WORKERS):
                event = event_payload(
                    action="trigger",
                    dedup_key=f"storm-{number}-{index % 10}",
                    summary=f"storm {number}/{index}",
                    source="storm",
                    severity="info",
                )
                answers.append(client.enqueue(event))
        except Exception as exc:  # reported below, with the count reached
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.monotonic() - started

    assert not errors, errors
    assert len(answers) == EVENTS
    with state.lock:
        assert state.events_throttled == 0
        assert len(state.events) == EVENTS
    # A 429 would have been retried and still shown as an extra request.
    assert len([r for r in state.requests if r["path"] == "/v2/enqueue"]) == EVENTS
    print(f"{EVENTS} events, {WORKERS} workers, one routing key: {elapsed:.1f}s, 0 × 429")


def test_without_the_budget_the_stand_in_answers_429(sandbox, settings):
    """The control: the same storm with the budget off does meet the limit, so the test above
    proves the budget, not a lenient stand-in."""
    server, state = sandbox
    settings.PAGERDUTY_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.PAGERDUTY_EVENTS_RATE_LIMIT_PER_MINUTE = 0
    settings.PAGERDUTY_MAX_ATTEMPTS = 1
    channel = channel_upsert(name="storm", routing_key=CHECKOUT_INTEGRATION_KEY, events_url=server.url)
    client = channel_client(channel=channel)
    refused = 0
    for index in range(130):
        try:
            client.enqueue(event_payload(action="resolve", dedup_key=f"k{index}"))
        except Exception as exc:
            assert getattr(exc, "status", None) == 429
            refused += 1
    assert refused >= 10 and state.events_throttled == refused
