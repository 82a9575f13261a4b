from apps.sandbox import ADMIN_USER_ID, CHECKOUT_ESCALATION_POLICY_ID, RESPONDER_USER_ID, SandboxServer

from .conftest import Api


def _request(api, incident_id, targets, requester=ADMIN_USER_ID):
    body = {"requester_id": requester, "message": "Please join the bridge", "responder_request_targets": targets}
    return api.post(f"/incidents/{incident_id}/responder_requests", body)


def test_wrapped_targets_are_accepted(api, sandbox_state):
    incident = api.create_incident().json()["incident"]
    targets = [
        {"responder_request_target": {"id": RESPONDER_USER_ID, "type": "user_reference"}},
        {"responder_request_target": {"id": CHECKOUT_ESCALATION_POLICY_ID, "type": "escalation_policy_reference"}},
    ]
    response = _request(api, incident["id"], targets)
    assert response.status_code == 200, response.text
    request = response.json()["responder_request"]
    assert request["requester"]["id"] == ADMIN_USER_ID
    assert request["message"] == "Please join the bridge"
    kinds = [t["responder_request_target"]["type"] for t in request["responder_request_targets"]]
    assert kinds == ["user", "escalation_policy"]
    user_target = request["responder_request_targets"][0]["responder_request_target"]
    assert user_target["incidents_responders"][0]["user"]["id"] == RESPONDER_USER_ID
    assert user_target["incidents_responders"][0]["state"] == "pending"

    stored = sandbox_state.incidents[incident["id"]]
    assert stored["responder_requests"] == [request]
    fetched = api.get(f"/incidents/{incident['id']}").json()["incident"]
    assert fetched["responder_requests"][0]["message"] == "Please join the bridge"
    assert RESPONDER_USER_ID in [r["user"]["id"] for r in fetched["incidents_responders"]]


def test_flat_targets_are_refused_with_the_reason(sandbox_state):
    # Without the contract check the stand-in itself must still refuse the flat form.
    sandbox_state.contract = None
    with SandboxServer(sandbox_state).start() as server:
        api = Api(server.url)
        incident = api.create_incident().json()["incident"]
        response = _request(api, incident["id"], [{"id": RESPONDER_USER_ID, "type": "user_reference"}])
    assert response.status_code == 400
    error = response.json()["error"]["errors"][0]
    assert "responder_request_targets[0] must be wrapped" in error
    assert sandbox_state.incidents[incident["id"]]["responder_requests"] == []


def test_flat_targets_are_refused_with_the_contract_on(api):
    incident = api.create_incident().json()["incident"]
    response = _request(api, incident["id"], [{"id": RESPONDER_USER_ID, "type": "user_reference"}])
    assert response.status_code == 400
    assert "must be wrapped" in " ".join(response.json()["error"]["errors"])


def test_unknown_requester_or_target_is_refused(api):
    incident = api.create_incident().json()["incident"]
    wrapped = [{"responder_request_target": {"id": "PNOPE00", "type": "user_reference"}}]
    assert "PNOPE00 not found" in _request(api, incident["id"], wrapped).json()["error"]["errors"][0]
    ok_target = [{"responder_request_target": {"id": RESPONDER_USER_ID, "type": "user_reference"}}]
    refused = _request(api, incident["id"], ok_target, requester="PNOPE00")
    assert refused.status_code == 400
    assert "Requester PNOPE00 not found" in refused.json()["error"]["errors"][0]
    assert _request(api, "PNOPE00", ok_target).status_code == 404


def test_responder_request_needs_from_and_the_ability(sandbox, sandbox_state):
    api = Api(sandbox.url)
    incident = api.create_incident().json()["incident"]
    target = [{"responder_request_target": {"id": RESPONDER_USER_ID, "type": "user_reference"}}]
    no_from = Api(sandbox.url, from_email=None)
    assert _request(no_from, incident["id"], target).status_code == 400
    sandbox_state.abilities.remove("coordinated_responding")
    refused = _request(api, incident["id"], target)
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == 2014
