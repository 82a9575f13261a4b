import pytest

from apps.sandbox import SandboxServer, SandboxState, seed_account

from .conftest import Api


@pytest.fixture(scope="module")
def big_api():
    state = seed_account(SandboxState(), users=250, teams=6, schedules=12, escalation_policies=6, services=8, seed=7)
    with SandboxServer(state).start() as server:
        client = Api(server.url)
        yield client, state
        client.close()


def test_default_page_and_total_only_on_request(big_api):
    api, _ = big_api
    page = api.get("/users").json()
    assert len(page["users"]) == 25
    assert (page["limit"], page["offset"], page["more"], page["total"]) == (25, 0, True, None)
    counted = api.get("/users", {"total": "true"}).json()
    assert counted["total"] == 250


def test_limit_is_clamped_to_100(big_api):
    api, _ = big_api
    page = api.get("/users", {"limit": 500}).json()
    assert page["limit"] == 100
    assert len(page["users"]) == 100


def test_paging_walks_every_user_once(big_api):
    api, state = big_api
    seen, offset = [], 0
    while True:
        page = api.get("/users", {"limit": 100, "offset": offset}).json()
        seen += [u["id"] for u in page["users"]]
        if not page["more"]:
            break
        offset += page["limit"]
    assert seen == list(state.users)
    last = api.get("/users", {"limit": 100, "offset": 200}).json()
    assert (len(last["users"]), last["more"]) == (50, False)


def test_offset_plus_limit_over_10000_is_refused(big_api):
    api, _ = big_api
    response = api.get("/users", {"limit": 100, "offset": 9950})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 2001
    assert "10000" in error["errors"][0]
    assert api.get("/users", {"limit": 100, "offset": 9900}).status_code == 200


def test_user_query_matches_name_or_email(big_api):
    api, state = big_api
    assert [u["id"] for u in api.get("/users", {"query": "DEMO sre"}).json()["users"]] == ["PSREADM"]
    by_email = api.get("/users", {"query": "RESPONDER@example"}).json()["users"]
    assert [u["email"] for u in by_email] == ["responder@example.com"]


def test_team_filters_partition_schedules_policies_and_services(big_api):
    api, state = big_api
    for collection, path in (
        ("schedules", "/schedules"),
        ("escalation_policies", "/escalation_policies"),
        ("services", "/services"),
    ):
        seen = []
        for team_id in state.teams:
            page = api.get(path, {"team_ids[]": team_id, "limit": 100}).json()
            assert not page["more"]
            assert all(team_id in [t["id"] for t in obj["teams"]] for obj in page[collection])
            seen += [obj["id"] for obj in page[collection]]
        assert sorted(seen) == sorted(getattr(state, collection)), collection


def test_users_team_filter_and_includes(big_api):
    api, state = big_api
    members = {m["user"]["id"] for m in state.team_members["PTEAM01"]}
    page = api.get("/users", {"team_ids[]": "PTEAM01", "limit": 100, "include[]": ["teams", "contact_methods"]})
    users = page.json()["users"]
    assert {u["id"] for u in users} == members
    admin = next(u for u in users if u["id"] == "PSREADM")
    assert admin["teams"][0]["type"] == "team" and admin["teams"][0]["name"] == "SRE"
    assert admin["contact_methods"][0]["type"] == "email_contact_method"
    assert admin["contact_methods"][0]["address"] == "sre@example.com"


def test_team_members_are_paginated(big_api):
    api, state = big_api
    team_id = max(state.team_members, key=lambda t: len(state.team_members[t]))
    page = api.get(f"/teams/{team_id}/members", {"limit": 5, "total": "true"}).json()
    assert len(page["members"]) == 5
    assert page["total"] == len(state.team_members[team_id])
    assert {m["role"] for m in page["members"]} <= {"manager", "responder", "observer"}
