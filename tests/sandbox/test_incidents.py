import requests

from apps.sandbox import (
    ADMIN_EMAIL,
    ADMIN_USER_ID,
    CHECKOUT_ESCALATION_POLICY_ID,
    CHECKOUT_SERVICE_ID,
    DEDUP_ERROR,
    PRIORITY_IDS,
    RESPONDER_USER_ID,
)

from .conftest import Api

FROM_MISSING = 'You must specify a user\'s email address in the "From" header to perform this action'


def test_bad_auth_is_401_in_pagerduty_shape_and_recorded(sandbox, sandbox_state):
    for auth in (None, "Token token=wrong", "Bearer sandbox-token", "Token sandbox-token", "token token=sandbox-token"):
        headers = {"Authorization": auth} if auth else {}
        response = requests.get(f"{sandbox.url}/incidents", headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json() == {"error": {"message": "Authentication failed", "code": 2006}}
    assert [r["status"] for r in sandbox_state.requests] == [401] * 5
    assert sandbox_state.requests[1]["headers"]["Authorization"] == "Token token=wrong"


def test_write_without_from_is_refused(sandbox):
    client = Api(sandbox.url, from_email=None)
    response = client.create_incident()
    assert response.status_code == 400
    assert response.json() == {"error": {"message": "Invalid Input Provided", "code": 2001, "errors": [FROM_MISSING]}}


def test_write_with_unknown_from_is_refused(sandbox):
    response = Api(sandbox.url, from_email="nobody@example.com").create_incident()
    assert response.status_code == 400
    assert "Requester User Not Found" in response.json()["error"]["errors"][0]


def test_create_dedup_resolve_create_again(api, sandbox_state):
    first = api.create_incident(key="db-1/disk")
    assert first.status_code == 201
    incident = first.json()["incident"]
    assert incident["status"] == "triggered"
    assert incident["incident_number"] == 1
    assert incident["incident_key"] == "db-1/disk"
    assert incident["html_url"] == f"https://sandbox.pagerduty.com/incidents/{incident['id']}"
    assert incident["service"]["id"] == CHECKOUT_SERVICE_ID
    assert incident["escalation_policy"]["id"] == CHECKOUT_ESCALATION_POLICY_ID
    assert incident["urgency"] == "high"
    assert incident["assigned_via"] == "escalation_policy"
    # PSCHED1 rotates weekly between the two demo users, so exactly one of them is assigned.
    assert [a["assignee"]["id"] for a in incident["assignments"]] in ([ADMIN_USER_ID], [RESPONDER_USER_ID])
    assert "resolve_count" not in incident

    duplicate = api.create_incident(key="db-1/disk")
    assert duplicate.status_code == 400
    assert DEDUP_ERROR in duplicate.json()["error"]["errors"]
    assert duplicate.json()["error"]["code"] == 2001

    # Same key on another service is a different incident.
    other_service = next(
        s
        for s in sandbox_state.services
        if s != CHECKOUT_SERVICE_ID and sandbox_state.services[s]["status"] != "disabled"
    )
    assert api.create_incident(key="db-1/disk", service_id=other_service).status_code == 201

    resolved = api.resolve(incident["id"])
    assert resolved.status_code == 200
    assert resolved.json()["incident"]["status"] == "resolved"
    assert resolved.json()["incident"]["resolved_at"]
    assert resolved.json()["incident"]["assignments"] == []

    again = api.create_incident(key="db-1/disk")
    assert again.status_code == 201
    assert again.json()["incident"]["id"] != incident["id"]
    assert again.json()["incident"]["incident_number"] == 3


def test_resolving_twice_is_200_and_counted(api, sandbox_state):
    incident = api.create_incident().json()["incident"]
    first = api.resolve(incident["id"]).json()["incident"]
    second = api.resolve(incident["id"])
    assert second.status_code == 200
    assert second.json()["incident"] == first
    assert sandbox_state.incidents[incident["id"]]["resolve_count"] == 2


def test_acknowledge_records_acknowledger(api):
    incident = api.create_incident().json()["incident"]
    body = {"incident": {"type": "incident_reference", "status": "acknowledged"}}
    acked = api.put(f"/incidents/{incident['id']}", body).json()["incident"]
    assert acked["status"] == "acknowledged"
    assert acked["acknowledgements"][0]["acknowledger"]["id"] == ADMIN_USER_ID
    assert acked["last_status_change_by"]["id"] == ADMIN_USER_ID


def test_incident_key_must_be_free_of_generated_keys(api):
    first = api.create_incident(key=None).json()["incident"]
    second = api.create_incident(key=None).json()["incident"]
    assert first["incident_key"] and second["incident_key"]
    assert first["incident_key"] != second["incident_key"]


def test_list_filters_by_incident_key_and_statuses(api):
    a = api.create_incident(key="k-a").json()["incident"]
    b = api.create_incident(key="k-b").json()["incident"]
    api.resolve(a["id"])
    a2 = api.create_incident(key="k-a").json()["incident"]

    def keys(params):
        response = api.get("/incidents", params)
        assert response.status_code == 200
        return [i["id"] for i in response.json()["incidents"]]

    open_statuses = {"statuses[]": ["triggered", "acknowledged"]}
    assert keys({"incident_key": "k-a", "service_ids[]": CHECKOUT_SERVICE_ID, **open_statuses}) == [a2["id"]]
    assert keys({"incident_key": "k-a", "date_range": "all"}) == [a["id"], a2["id"]]
    assert keys({"incident_key": "k-a", "statuses[]": "resolved"}) == [a["id"]]
    assert keys({"statuses[]": "triggered"}) == [b["id"], a2["id"]]
    assert keys({"incident_key": "nope"}) == []
    # PagerDuty ignores an empty key, so a lookup with one matches every incident.
    assert len(keys({"incident_key": "", "date_range": "all"})) == 3
    assert keys({"sort_by": "incident_number:desc"}) == [a2["id"], b["id"], a["id"]]
    assert keys({"service_ids[]": "PNOPE00"}) == []


def test_list_default_window_is_last_30_days(api, sandbox_state):
    incident = api.create_incident().json()["incident"]
    old = sandbox_state.incidents[incident["id"]]
    old["_created"] -= 365 * 86400
    assert api.get("/incidents").json()["incidents"] == []
    assert len(api.get("/incidents", {"date_range": "all"}).json()["incidents"]) == 1
    too_wide = api.get("/incidents", {"since": "2020-01-01T00:00:00Z", "until": "2021-01-01T00:00:00Z"})
    assert too_wide.status_code == 400


def test_references_are_validated(api):
    def error_of(response):
        assert response.status_code == 400, response.text
        return " ".join(response.json()["error"]["errors"])

    assert "Service PNOPE00 not found" in error_of(api.create_incident(service_id="PNOPE00"))
    ep = {"id": "PNOPE00", "type": "escalation_policy_reference"}
    assert "Escalation Policy PNOPE00 not found" in error_of(api.create_incident(escalation_policy=ep))
    assignments = [{"assignee": {"id": "PNOPE00", "type": "user_reference"}}]
    assert "PNOPE00 not found" in error_of(api.create_incident(assignments=assignments))
    priority = {"id": "PNOPE00", "type": "priority_reference"}
    assert "Priority PNOPE00 not found" in error_of(api.create_incident(priority=priority))
    both = api.create_incident(
        assignments=[{"assignee": {"id": RESPONDER_USER_ID, "type": "user_reference"}}],
        escalation_policy={"id": CHECKOUT_ESCALATION_POLICY_ID, "type": "escalation_policy_reference"},
    )
    assert "not both" in error_of(both)


def test_direct_assignment_priority_urgency_and_body(api):
    response = api.create_incident(
        assignments=[{"assignee": {"id": RESPONDER_USER_ID, "type": "user_reference"}}],
        priority={"id": PRIORITY_IDS["P2"], "type": "priority_reference"},
        urgency="low",
        body={"type": "incident_body", "details": "disk at 99%"},
    )
    incident = response.json()["incident"]
    assert response.status_code == 201
    assert incident["assigned_via"] == "direct_assignment"
    assert [a["assignee"]["id"] for a in incident["assignments"]] == [RESPONDER_USER_ID]
    assert incident["priority"]["summary"] == "P2"
    assert incident["urgency"] == "low"
    assert incident["body"] == {"type": "incident_body", "details": "disk at 99%"}
    fetched = api.get(f"/incidents/{incident['id']}").json()["incident"]
    assert fetched == incident


def test_unknown_incident_is_404(api):
    response = api.get("/incidents/PNOPE00")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == 2100
    assert response.json()["error"]["message"] == "Not Found"


def test_bulk_update_resolves_several_and_caps_at_250(api, sandbox_state):
    ids = [api.create_incident(key=f"bulk-{n}").json()["incident"]["id"] for n in range(3)]
    body = {"incidents": [{"id": i, "type": "incident_reference", "status": "resolved"} for i in ids]}
    response = api.put("/incidents", body)
    assert response.status_code == 200
    assert [i["status"] for i in response.json()["incidents"]] == ["resolved"] * 3

    too_many = {"incidents": [{"id": ids[0], "type": "incident_reference", "status": "resolved"}] * 251}
    refused = api.put("/incidents", too_many)
    assert refused.status_code == 400
    assert "250" in refused.json()["error"]["errors"][0]

    fresh = api.create_incident(key="bulk-new").json()["incident"]["id"]
    partial = {
        "incidents": [
            {"id": fresh, "type": "incident_reference", "status": "resolved"},
            {"id": "PNOPE00", "type": "incident_reference", "status": "resolved"},
        ]
    }
    assert api.put("/incidents", partial).status_code == 404
    assert sandbox_state.incidents[fresh]["status"] == "triggered"


def test_notes_are_added_and_listed(api):
    incident = api.create_incident().json()["incident"]
    created = api.post(f"/incidents/{incident['id']}/notes", {"note": {"content": "Restarted db-1"}})
    assert created.status_code == 200
    note = created.json()["note"]
    assert note["content"] == "Restarted db-1"
    assert note["user"]["id"] == ADMIN_USER_ID
    assert api.get(f"/incidents/{incident['id']}/notes").json() == {"notes": [note]}
    assert api.post("/incidents/PNOPE00/notes", {"note": {"content": "x"}}).status_code == 404


def test_body_needs_json_content_type(api):
    response = api.session.post(
        api.url + "/incidents", data="incident=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 415
    garbage = api.session.post(api.url + "/incidents", data="{nope", headers={"Content-Type": "application/json"})
    assert garbage.status_code == 400
    assert "not valid JSON" in garbage.json()["error"]["errors"][0]


def test_requests_are_recorded_in_order(api, sandbox_state):
    api.create_incident(key="rec")
    api.get("/incidents", {"incident_key": "rec", "statuses[]": ["triggered", "acknowledged"]})
    first, second = sandbox_state.requests
    assert first["method"] == "POST" and first["path"] == "/incidents" and first["status"] == 201
    assert first["headers"]["from"] == ADMIN_EMAIL
    assert first["json"]["incident"]["incident_key"] == "rec"
    assert first["response_json"]["incident"]["incident_key"] == "rec"
    assert second["query"] == {"incident_key": ["rec"], "statuses[]": ["triggered", "acknowledged"]}
    assert second["headers"]["Accept"] == "application/vnd.pagerduty+json;version=2"
    sandbox_state.reset_requests()
    assert sandbox_state.requests == []


def test_concurrent_creates_with_one_key_open_one_incident(sandbox, sandbox_state):
    from concurrent.futures import ThreadPoolExecutor

    def create(_):
        client = Api(sandbox.url)
        try:
            return client.create_incident(key="race").status_code
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = sorted(pool.map(create, range(10)))
    assert statuses == [201] + [400] * 9
    assert len(sandbox_state.incidents) == 1
    assert len(sandbox_state.requests) == 10
