import requests

from apps.sandbox import (
    ADMIN_USER_ID,
    CHECKOUT_ESCALATION_POLICY_ID,
    CHECKOUT_INTEGRATION_KEY,
    CHECKOUT_SERVICE_ID,
    SRE_TEAM_ID,
    SandboxServer,
    SandboxState,
    seed_account,
)

from .conftest import Api


def enqueue(sandbox, **event):
    return requests.post(f"{sandbox.url}/v2/enqueue", json=event, timeout=5)


def trigger(sandbox, dedup_key="web-1/cpu", **overrides):
    event = {
        "routing_key": CHECKOUT_INTEGRATION_KEY,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {"summary": "CPU at 99% on web-1", "source": "web-1", "severity": "critical"},
    }
    event.update(overrides)
    return enqueue(sandbox, **{k: v for k, v in event.items() if v is not None})


def test_trigger_dedup_and_resolve(sandbox, sandbox_state, api):
    first = trigger(sandbox)
    assert first.status_code == 202
    assert first.json() == {"status": "success", "message": "Event processed", "dedup_key": "web-1/cpu"}
    incident_id = sandbox_state.events[0]["incident_id"]
    incident = api.get(f"/incidents/{incident_id}").json()["incident"]
    assert (incident["status"], incident["incident_key"], incident["title"]) == (
        "triggered",
        "web-1/cpu",
        "CPU at 99% on web-1",
    )
    assert incident["service"]["id"] == CHECKOUT_SERVICE_ID

    assert trigger(sandbox).status_code == 202
    assert sandbox_state.events[1]["result"] == "deduplicated"
    assert len(sandbox_state.incidents) == 1
    assert sandbox_state.incidents[incident_id]["alert_counts"]["all"] == 2

    ack = enqueue(sandbox, routing_key=CHECKOUT_INTEGRATION_KEY, event_action="acknowledge", dedup_key="web-1/cpu")
    assert ack.status_code == 202
    assert sandbox_state.incidents[incident_id]["status"] == "acknowledged"
    resolved = enqueue(sandbox, routing_key=CHECKOUT_INTEGRATION_KEY, event_action="resolve", dedup_key="web-1/cpu")
    assert resolved.status_code == 202
    assert sandbox_state.incidents[incident_id]["status"] == "resolved"
    assert sandbox_state.incidents[incident_id]["resolve_count"] == 1

    assert trigger(sandbox).status_code == 202
    assert len(sandbox_state.incidents) == 2


def test_rest_and_events_share_dedup_keys(sandbox, sandbox_state, api):
    incident = api.create_incident(key="shared-key").json()["incident"]
    trigger(sandbox, dedup_key="shared-key")
    assert sandbox_state.events[0]["result"] == "deduplicated"
    assert sandbox_state.events[0]["incident_id"] == incident["id"]


def test_trigger_without_dedup_key_gets_one(sandbox):
    response = trigger(sandbox, dedup_key=None)
    assert response.status_code == 202
    assert len(response.json()["dedup_key"]) == 32


def test_unknown_keys_are_accepted_and_dropped(sandbox, sandbox_state):
    other_key = "0" * 32
    assert trigger(sandbox, routing_key=other_key).status_code == 202
    unknown = enqueue(sandbox, routing_key=CHECKOUT_INTEGRATION_KEY, event_action="resolve", dedup_key="never-seen")
    assert unknown.status_code == 202
    assert sandbox_state.incidents == {}
    assert [e["result"].split(":")[0] for e in sandbox_state.events] == ["dropped", "dropped"]


def test_invalid_events_are_refused_in_events_api_shape(sandbox, sandbox_state):
    def errors(response):
        assert response.status_code == 400
        body = response.json()
        assert (body["status"], body["message"]) == ("invalid event", "Event object is invalid")
        return body["errors"]

    assert "Length of 'routing_key' is incorrect (should be 32 characters)" in errors(
        trigger(sandbox, routing_key="short")
    )
    assert any("'event_action' is invalid" in e for e in errors(trigger(sandbox, event_action="snooze")))
    bad_payload = {"summary": "x" * 1025, "source": "", "severity": "fatal"}
    assert len(errors(trigger(sandbox, payload=bad_payload))) == 3
    no_key = enqueue(sandbox, routing_key=CHECKOUT_INTEGRATION_KEY, event_action="resolve")
    assert "'dedup_key' is missing or blank" in errors(no_key)
    assert "'dedup_key' is too long (maximum is 255 characters)" in errors(trigger(sandbox, dedup_key="k" * 256))
    garbage = requests.post(f"{sandbox.url}/v2/enqueue", data="{", timeout=5)
    assert garbage.status_code == 400 and garbage.json()["errors"] == ["JSON parse error"]
    assert sandbox_state.events == []


def test_users_me_is_refused_for_account_tokens(api):
    response = api.get("/users/me")
    assert response.status_code == 400
    assert "account-level access token" in response.json()["error"]["errors"][0]


def test_teams_need_the_teams_ability():
    state = seed_account(SandboxState(teams_ability=False), seed=2)
    with SandboxServer(state).start() as server:
        api = Api(server.url)
        for path in ("/teams", f"/teams/{SRE_TEAM_ID}", f"/teams/{SRE_TEAM_ID}/members"):
            response = api.get(path)
            assert response.status_code == 402
            assert response.json()["error"]["code"] == 2014
        assert "teams" not in api.get("/abilities").json()["abilities"]
        assert api.get("/services", {"team_ids[]": SRE_TEAM_ID}).status_code == 402
        assert api.get("/services").status_code == 200


def test_directory_lookups(api, sandbox_state):
    user = api.get(f"/users/{ADMIN_USER_ID}", {"include[]": "notification_rules"}).json()["user"]
    assert user["notification_rules"][0]["type"] == "assignment_notification_rule"
    assert api.get("/users/PNOPE00").status_code == 404

    team = api.get(f"/teams/{SRE_TEAM_ID}").json()["team"]
    assert team["name"] == "SRE"
    members = api.get(f"/teams/{SRE_TEAM_ID}/members").json()["members"]
    assert {"user": sandbox_state.user_ref(ADMIN_USER_ID), "role": "manager"} in members

    policy = api.get(f"/escalation_policies/{CHECKOUT_ESCALATION_POLICY_ID}", {"include[]": "targets"}).json()
    rules = policy["escalation_policy"]["escalation_rules"]
    assert rules[0]["targets"][0]["type"] == "schedule"
    assert rules[1]["targets"][0]["type"] == "user"
    assert rules[0]["escalation_delay_in_minutes"] == 30
    assert [
        p["id"] for p in api.get("/escalation_policies", {"query": "checkout on"}).json()["escalation_policies"]
    ] == [CHECKOUT_ESCALATION_POLICY_ID]

    service = api.get(f"/services/{CHECKOUT_SERVICE_ID}", {"include[]": "integrations"}).json()["service"]
    assert "integration_key" not in service
    assert service["integrations"][0]["integration_key"] == CHECKOUT_INTEGRATION_KEY
    assert [s["id"] for s in api.get("/services", {"query": "checkout api"}).json()["services"]] == [
        CHECKOUT_SERVICE_ID
    ]
    priorities = api.get("/priorities").json()["priorities"]
    assert [p["name"] for p in priorities] == ["P1", "P2", "P3", "P4", "P5"]
