import pytest
import requests

from apps.sandbox import CHECKOUT_SERVICE_ID, Faults, SandboxServer, SandboxState, seed_account

from .conftest import Api


def test_rate_limit_429_and_headers():
    state = seed_account(SandboxState(rate_limit_per_minute=3), seed=1)
    with SandboxServer(state).start() as server:
        api = Api(server.url)
        responses = [api.get("/abilities") for _ in range(4)]
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert all(r.headers["ratelimit-limit"] == "3" for r in responses)
    assert 1 <= int(responses[-1].headers["ratelimit-reset"]) <= 60
    assert responses[-1].json() == {"error": {"message": "Rate Limit Exceeded", "code": 2020}}


def test_rate_limit_is_per_token():
    state = seed_account(SandboxState(tokens={"a", "b"}, rate_limit_per_minute=1), seed=1)
    with SandboxServer(state).start() as server:
        assert Api(server.url, token="a").get("/abilities").status_code == 200
        assert Api(server.url, token="a").get("/abilities").status_code == 429
        assert Api(server.url, token="b").get("/abilities").status_code == 200


def test_scripted_429_then_success(api, sandbox, sandbox_state):
    script = {"method": "POST", "path": "/incidents", "status": 429, "headers": {"ratelimit-reset": "2"}, "body": None}
    assert requests.post(f"{sandbox.url}/_sandbox/script", json=script, timeout=5).status_code == 200

    throttled = api.create_incident()
    assert throttled.status_code == 429
    assert throttled.headers["ratelimit-reset"] == "2"
    assert throttled.content == b""
    assert sandbox_state.incidents == {}

    retried = api.create_incident()
    assert retried.status_code == 201
    assert [(r["status"], r["fault"]) for r in sandbox_state.requests] == [(429, "script"), (201, None)]


def test_script_matches_method_path_and_times(api, sandbox_state):
    sandbox_state.add_script(
        [
            {"method": "GET", "path": "/incidents/*", "status": 503, "times": 2},
            {"path": "/abilities", "status": 500, "body": {"error": {"message": "boom", "code": 2000}}},
        ]
    )
    assert api.get("/abilities").json() == {"error": {"message": "boom", "code": 2000}}
    assert api.get("/abilities").status_code == 200
    assert api.get("/incidents/PANY123").status_code == 503
    default = api.get("/incidents/PANY123")
    assert default.status_code == 503
    assert default.json()["error"]["message"] == "Service Unavailable"
    assert api.get("/incidents/PANY123").status_code == 404
    assert sandbox_state.faults.script == []


def test_after_true_performs_the_operation_and_replaces_the_answer(api, sandbox_state):
    sandbox_state.add_script({"method": "POST", "path": "/incidents", "status": 502, "after": True})
    lost = api.create_incident(key="lost-answer")
    assert lost.status_code == 502
    assert len(sandbox_state.incidents) == 1
    retry = api.create_incident(key="lost-answer")
    assert retry.status_code == 400
    assert "Open incident with matching dedup key already exists on this service" in retry.json()["error"]["errors"]
    assert sandbox_state.requests[0]["fault"] == "script-after"


def test_after_true_with_status_0_drops_the_connection(api, sandbox_state):
    sandbox_state.add_script({"method": "POST", "path": "/incidents", "status": 0, "after": True})
    with pytest.raises(requests.ConnectionError):
        api.create_incident(key="dropped")
    assert [i["incident_key"] for i in sandbox_state.incidents.values()] == ["dropped"]
    assert sandbox_state.requests[-1]["status"] == 0
    # The server keeps serving after a dropped connection.
    assert api.get("/incidents", {"incident_key": "dropped"}).json()["incidents"][0]["incident_key"] == "dropped"


def test_delay_ms_and_latency(api, sandbox_state):
    sandbox_state.add_script({"path": "/abilities", "status": 200, "body": {"abilities": []}, "delay_ms": 150})
    response = api.get("/abilities")
    assert response.json() == {"abilities": []}
    assert response.elapsed.total_seconds() >= 0.15
    sandbox_state.set_faults({"latency_ms": 100})
    assert api.get("/abilities").elapsed.total_seconds() >= 0.1


def test_error_rate_is_deterministic(sandbox_state):
    def run() -> list[int]:
        sandbox_state.set_faults(Faults(error_rate=0.5, error_statuses=[500, 503], seed=3))
        with SandboxServer(sandbox_state).start() as server:
            api = Api(server.url)
            return [api.get("/abilities").status_code for _ in range(20)]

    first, second = run(), run()
    assert first == second
    assert {500, 503, 200} == set(first)


def test_admin_endpoints(api, sandbox, sandbox_state):
    admin = f"{sandbox.url}/_sandbox"
    assert requests.get(f"{admin}/health", timeout=5).json()["status"] == "ok"
    api.create_incident(key="admin-1")
    api.get("/abilities")

    posts = requests.get(f"{admin}/requests", params={"path": "/incidents", "method": "POST"}, timeout=5).json()
    assert [r["path"] for r in posts["requests"]] == ["/incidents"]
    snapshot = requests.get(f"{admin}/state", timeout=5).json()
    assert snapshot["counts"]["users"] == 50
    assert snapshot["incidents"][0]["incident_key"] == "admin-1"
    assert snapshot["incidents"][0]["resolve_count"] == 0
    assert snapshot["well_known"]["service_id"] == CHECKOUT_SERVICE_ID

    faults = {"error_rate": 0.25, "error_statuses": [503], "latency_ms": 0, "script": []}
    assert requests.post(f"{admin}/faults", json=faults, timeout=5).json()["faults"]["error_rate"] == 0.25
    assert sandbox_state.faults.error_rate == 0.25
    bad = requests.post(f"{admin}/faults", json={"error_rate": 2}, timeout=5)
    assert bad.status_code == 400
    bad_script = requests.post(f"{admin}/script", json={"path": "/x", "status": "soon"}, timeout=5)
    assert bad_script.status_code == 400

    assert requests.delete(f"{admin}/requests", timeout=5).json()["deleted"] >= 2
    assert sandbox_state.requests == []
    api.create_incident(key="admin-2")
    reset = requests.post(f"{admin}/reset", timeout=5).json()
    assert reset["counts"]["incidents"] == 0 and reset["counts"]["users"] == 50
    assert sandbox_state.faults.error_rate == 0
    # Admin calls are not recorded as PagerDuty traffic.
    assert sandbox_state.requests == []


def test_lost_answer_rate_carries_out_the_request_then_drops_the_connection(sandbox_state):
    sandbox_state.set_faults(Faults(lost_answer_rate=0.5, seed=11))
    keys = [f"lost-{n}" for n in range(16)]
    dropped = []
    with SandboxServer(sandbox_state).start() as server:
        api = Api(server.url)
        for key in keys:
            try:
                assert api.create_incident(key=key).status_code == 201
            except requests.ConnectionError:
                dropped.append(key)
    assert 0 < len(dropped) < len(keys)
    # Every one was opened, answered or not.
    assert sorted(i["incident_key"] for i in sandbox_state.incidents.values()) == sorted(keys)
    faults = [r["fault"] for r in sandbox_state.requests]
    assert faults.count("lost_answer") == len(dropped)
    assert all(r["status"] == 0 for r in sandbox_state.requests if r["fault"] == "lost_answer")


def test_lost_answer_rate_is_validated():
    with pytest.raises(ValueError, match="lost_answer_rate"):
        Faults.from_dict({"lost_answer_rate": 2})
