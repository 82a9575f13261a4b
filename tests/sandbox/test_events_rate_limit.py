"""The stand-in's Events API limit: about 120 events a minute per routing key, answered with 429
beyond it, each routing key counted on its own; window and limit configurable for tests."""

import requests

from apps.sandbox import CHECKOUT_INTEGRATION_KEY, SandboxServer, SandboxState


def resolve(server, key, dedup_key="k"):
    body = {"routing_key": key, "event_action": "resolve", "dedup_key": dedup_key}
    return requests.post(f"{server.url}/v2/enqueue", json=body, timeout=5)


def test_429_past_the_limit_per_routing_key():
    state = SandboxState(events_rate_limit=3, events_rate_window_seconds=60)
    with SandboxServer(state, host="127.0.0.1", port=0).start() as server:
        assert [resolve(server, CHECKOUT_INTEGRATION_KEY).status_code for _ in range(4)] == [202, 202, 202, 429]
        refused = resolve(server, CHECKOUT_INTEGRATION_KEY)
        assert refused.json() == {
            "status": "throttle event",
            "message": "Requests for this service are arriving too quickly.  Please retry later.",
        }
        assert resolve(server, "b" * 32).status_code == 202  # another routing key has its own budget
        assert state.events_throttled == 2
        assert len(state.events) == 4  # a throttled event is not processed


def test_limit_and_window_are_set_through_the_admin_api():
    state = SandboxState()
    assert (state.events_rate_limit, state.events_rate_window_seconds) == (120, 60.0)
    with SandboxServer(state, host="127.0.0.1", port=0).start() as server:
        answer = requests.post(
            f"{server.url}/_sandbox/config", json={"events_rate_limit": 1, "events_rate_window_seconds": 0.2}, timeout=5
        )
        assert answer.status_code == 200 and answer.json()["events_rate_limit"] == 1
        assert [resolve(server, CHECKOUT_INTEGRATION_KEY).status_code for _ in range(2)] == [202, 429]
        bad = requests.post(f"{server.url}/_sandbox/config", json={"events_rate_limit": 0}, timeout=5)
        assert bad.status_code == 400 and "positive" in bad.json()["error"]["message"]
