import json
import re
from collections import Counter

import pytest

from apps.sandbox import (
    ADMIN_EMAIL,
    ADMIN_USER_ID,
    CHECKOUT_ESCALATION_POLICY_ID,
    CHECKOUT_INTEGRATION_KEY,
    CHECKOUT_SCHEDULE_ID,
    CHECKOUT_SERVICE_ID,
    RESPONDER_EMAIL,
    RESPONDER_USER_ID,
    SRE_TEAM_ID,
    SandboxState,
    seed_account,
)

SIZES = {"users": 300, "teams": 8, "schedules": 20, "escalation_policies": 10, "services": 15}


def snapshot(state: SandboxState) -> str:
    return json.dumps(state.directory_snapshot())


def test_same_seed_gives_byte_identical_data():
    first = snapshot(seed_account(SandboxState(), **SIZES, seed=42))
    second = snapshot(seed_account(SandboxState(), **SIZES, seed=42))
    assert first == second
    assert snapshot(seed_account(SandboxState(), **SIZES, seed=43)) != first


def test_reseeding_a_state_replaces_its_directory():
    state = seed_account(SandboxState(), **SIZES, seed=5)
    before = snapshot(state)
    seed_account(state, users=10, seed=9)
    seed_account(state, **SIZES, seed=5)
    assert snapshot(state) == before


@pytest.mark.parametrize(
    "sizes", [{}, {"users": 0, "teams": 0, "schedules": 0, "escalation_policies": 0, "services": 0}]
)
def test_well_known_objects_exist_whatever_the_sizes(sizes):
    state = seed_account(SandboxState(), **sizes)
    admin = state.users[ADMIN_USER_ID]
    assert (admin["name"], admin["email"], admin["role"]) == ("Demo SRE", ADMIN_EMAIL, "admin")
    responder = state.users[RESPONDER_USER_ID]
    assert (responder["name"], responder["email"]) == ("Demo Responder", RESPONDER_EMAIL)
    assert state.teams[SRE_TEAM_ID]["name"] == "SRE"
    service = state.services[CHECKOUT_SERVICE_ID]
    assert service["name"] == "Checkout API"
    assert service["escalation_policy"]["id"] == CHECKOUT_ESCALATION_POLICY_ID
    assert service["integration_key"] == CHECKOUT_INTEGRATION_KEY
    policy = state.escalation_policies[CHECKOUT_ESCALATION_POLICY_ID]
    assert policy["name"] == "Checkout on-call"
    targets = [[(t["type"], t["id"]) for t in rule["targets"]] for rule in policy["escalation_rules"]]
    assert targets == [[("schedule_reference", CHECKOUT_SCHEDULE_ID)], [("user_reference", RESPONDER_USER_ID)]]


def test_ids_look_like_pagerduty_and_are_unique():
    state = seed_account(SandboxState(), **SIZES, seed=3)
    ids = []
    for collection in ("users", "teams", "schedules", "escalation_policies", "services", "contact_methods"):
        ids += list(getattr(state, collection))
    assert all(re.fullmatch(r"P[A-Z0-9]{6}", i) for i in ids)
    assert len(ids) == len(set(ids))
    keys = [s["integration_key"] for s in state.services.values()]
    assert all(re.fullmatch(r"[0-9a-f]{32}", k) for k in keys) and len(set(keys)) == len(keys)


def test_generated_data_is_realistic():
    state = seed_account(SandboxState(), **SIZES, seed=11)
    users = list(state.users.values())
    assert all(u["email"] for u in users)
    assert len({u["email"] for u in users}) == len(users)
    assert {"admin", "user", "limited_user", "observer", "owner"} <= {u["role"] for u in users}
    assert len({u["time_zone"] for u in users}) > 5
    team_counts = Counter(len(u["teams"]) for u in users)
    assert team_counts[0] > 0 and any(n >= 2 for n in team_counts)
    roles = {m["role"] for members in state.team_members.values() for m in members}
    assert roles == {"manager", "responder", "observer"}
    layers = [len(s["schedule_layers"]) for s in state.schedules.values()]
    assert set(layers) <= {1, 2, 3} and max(layers) > 1
    restriction_types = {
        r["type"] for s in state.schedules.values() for layer in s["schedule_layers"] for r in layer["restrictions"]
    }
    assert restriction_types == {"daily_restriction", "weekly_restriction"}
    assert any(s["_overrides"] for s in state.schedules.values())
    target_types = {
        t["type"] for p in state.escalation_policies.values() for rule in p["escalation_rules"] for t in rule["targets"]
    }
    assert {"user_reference", "schedule_reference"} <= target_types
    assert all(p["teams"] for p in state.escalation_policies.values())
    assert all(len(s["teams"]) == 1 for s in state.services.values())


def test_big_account_sizes():
    state = seed_account(
        SandboxState(), users=12000, teams=150, schedules=600, escalation_policies=300, services=400, seed=42
    )
    counts = state.counts()
    assert (counts["users"], counts["teams"], counts["schedules"]) == (12000, 150, 600)
    assert (counts["escalation_policies"], counts["services"]) == (300, 400)
    no_team = sum(1 for u in state.users.values() if not u["teams"])
    assert 0.07 * 12000 < no_team < 0.13 * 12000
    v3_targets = [
        t
        for p in state.escalation_policies.values()
        for rule in p["escalation_rules"]
        for t in rule["targets"]
        if t["type"] == "schedule_v3_reference"
    ]
    assert v3_targets


@pytest.mark.parametrize("seed", [42, 7])
def test_people_look_like_a_real_company_directory(seed):
    state = seed_account(SandboxState(), users=3000, teams=40, schedules=10, escalation_policies=5, seed=seed)
    users = [u for u in state.users.values() if u["id"] not in (ADMIN_USER_ID, RESPONDER_USER_ID)]
    names = [u["name"] for u in users]
    scripts = {
        "latin accents": lambda n: any(c in n for c in "áéíóúñçøåäöüłšžğşı"),
        "cyrillic": lambda n: any("\u0400" <= c <= "\u04ff" for c in n),
        "greek": lambda n: any("\u0370" <= c <= "\u03ff" for c in n),
        "arabic": lambda n: any("\u0600" <= c <= "\u06ff" for c in n),
        "hebrew": lambda n: any("\u0590" <= c <= "\u05ff" for c in n),
        "devanagari": lambda n: any("\u0900" <= c <= "\u097f" for c in n),
        "cjk": lambda n: any("\u4e00" <= c <= "\u9fff" for c in n),
        "hangul": lambda n: any("\uac00" <= c <= "\ud7af" for c in n),
    }
    for script, test in scripts.items():
        assert any(test(n) for n in names), script
    assert sum(1 for n in names if " " not in n.strip()) > 10, "one-word names"
    assert any("bot" in n.lower() or "integration" in n.lower() for n in names)
    # One shared company domain for most, a few others; emails are ASCII and unique.
    domains = Counter(u["email"].rsplit("@", 1)[1] for u in users)
    assert domains.most_common(1)[0][1] > 0.75 * len(users) and len(domains) >= 3
    assert all(u["email"].isascii() for u in users)
    # Teams of very uneven size, and people in none.
    sizes = sorted(len(members) for members in state.team_members.values())
    assert sizes[-1] > 10 * sizes[len(sizes) // 2]
    assert 0.05 * len(users) < sum(1 for u in users if not u["teams"]) < 0.2 * len(users)


def test_names_past_the_10000th_are_not_plain_ascii():
    """Why big accounts are hard: listed by name, the tail of the list is accented and non-Latin names."""
    state = seed_account(SandboxState(), users=12000, teams=150, schedules=10, escalation_policies=5, seed=42)
    tail = list(state.users.values())[10_000:]
    assert sum(1 for u in tail if not u["name"][:1].isascii()) > 0.9 * len(tail)
