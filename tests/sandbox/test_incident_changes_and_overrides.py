"""The stand-in's side of issue 12: changing an incident, notes, priorities and schedule overrides,
each request checked against PagerDuty's official spec by the stand-in itself."""

from datetime import timedelta

from apps.sandbox import ADMIN_USER_ID, CHECKOUT_ESCALATION_POLICY_ID, CHECKOUT_SCHEDULE_ID, RESPONDER_USER_ID

from .conftest import require_spec


def test_put_incident_acknowledge_urgency_priority_level(api, sandbox_state):
    require_spec()
    incident = api.create_incident(urgency="high").json()["incident"]
    path = f"/incidents/{incident['id']}"
    ack = api.put(path, {"incident": {"type": "incident_reference", "status": "acknowledged"}})
    assert ack.status_code == 200, ack.text
    assert ack.json()["incident"]["status"] == "acknowledged"
    low = api.put(path, {"incident": {"type": "incident_reference", "urgency": "low"}}).json()["incident"]
    assert low["urgency"] == "low"
    priorities = api.get("/priorities").json()["priorities"]
    p2 = next(p for p in priorities if p["name"] == "P2")
    body = {"incident": {"type": "incident_reference", "priority": {"id": p2["id"], "type": "priority_reference"}}}
    assert api.put(path, body).json()["incident"]["priority"]["id"] == p2["id"]
    level = api.put(path, {"incident": {"type": "incident_reference", "escalation_level": 2}})
    assert level.status_code in (200, 400), level.text  # 400 only when the policy has a single rule
    bad = api.put(path, {"incident": {"type": "incident_reference", "escalation_level": "2"}})
    assert bad.status_code == 400  # the spec wants an integer


def test_put_incident_reassign_to_users_or_policy(api):
    incident = api.create_incident().json()["incident"]
    path = f"/incidents/{incident['id']}"
    users = {"assignments": [{"assignee": {"id": RESPONDER_USER_ID, "type": "user_reference"}}]}
    answer = api.put(path, {"incident": {"type": "incident_reference", **users}}).json()["incident"]
    assert [a["assignee"]["id"] for a in answer["assignments"]] == [RESPONDER_USER_ID]
    policy = {"escalation_policy": {"id": CHECKOUT_ESCALATION_POLICY_ID, "type": "escalation_policy_reference"}}
    answer = api.put(path, {"incident": {"type": "incident_reference", **policy}}).json()["incident"]
    assert answer["escalation_policy"]["id"] == CHECKOUT_ESCALATION_POLICY_ID
    both = api.put(path, {"incident": {"type": "incident_reference", **users, **policy}})
    assert both.status_code == 400


def test_notes_are_added_and_listed(api):
    incident = api.create_incident().json()["incident"]
    created = api.post(f"/incidents/{incident['id']}/notes", {"note": {"content": 'R&D <db> "x"'}})
    assert created.status_code == 200, created.text
    listed = api.get(f"/incidents/{incident['id']}/notes").json()["notes"]
    assert [(n["id"], n["content"]) for n in listed] == [(created.json()["note"]["id"], 'R&D <db> "x"')]


def test_priorities_turned_off_answer_404(api, sandbox_state):
    sandbox_state.abilities = [a for a in sandbox_state.abilities if a != "incident_priorities"]
    answer = api.get("/priorities")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == 2100


def test_create_overrides_reports_each_one(api, sandbox_state):
    require_spec()
    day = (sandbox_state.now() + timedelta(days=2)).date().isoformat()
    good = {
        "start": f"{day}T08:00:00+01:00",
        "end": f"{day}T19:00:00+01:00",
        "user": {"id": RESPONDER_USER_ID, "type": "user_reference"},
        "time_zone": "UTC",
    }
    backwards = {**good, "start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"}
    stranger = {**good, "user": {"id": "PNOBODY", "type": "user_reference"}}
    answer = api.post(f"/schedules/{CHECKOUT_SCHEDULE_ID}/overrides", {"overrides": [good, backwards, stranger]})
    assert answer.status_code == 201, answer.text
    results = answer.json()
    assert [r["status"] for r in results] == [201, 400, 400]
    assert results[0]["override"]["start"] == f"{day}T07:00:00Z"  # the schedule's zone (UTC)
    assert results[0]["override"]["user"]["id"] == RESPONDER_USER_ID
    assert results[1]["errors"] == ["Override must end after its start"]
    assert results[2]["errors"] == ["Override user is not valid"]
    listed = api.get(
        f"/schedules/{CHECKOUT_SCHEDULE_ID}/overrides",
        {"since": f"{day}T00:00:00Z", "until": f"{day}T23:00:00Z"},
    ).json()["overrides"]
    assert [o["id"] for o in listed] == [results[0]["override"]["id"]]
    # Who is on call follows the override.
    oncalls = api.get(
        "/oncalls",
        {
            "schedule_ids[]": CHECKOUT_SCHEDULE_ID,
            "since": f"{day}T10:00:00Z",
            "until": f"{day}T10:30:00Z",
            "time_zone": "UTC",
        },
    ).json()["oncalls"]
    assert {o["user"]["id"] for o in oncalls} == {RESPONDER_USER_ID}


def test_create_overrides_refuses_a_malformed_request(api):
    assert api.post(f"/schedules/{CHECKOUT_SCHEDULE_ID}/overrides", {"overrides": []}).status_code == 400
    assert api.post("/schedules/PNOPE99/overrides", {"overrides": [{"user": {"id": ADMIN_USER_ID}}]}).status_code in (
        400,
        404,
    )
