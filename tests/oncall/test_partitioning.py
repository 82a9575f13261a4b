"""Past the 10,000-offset cap, against a PagerDuty double we can bend: how the import reaches everyone
when PagerDuty's search or list order is not what we count on, and what it costs."""

import json
import math
import random
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
import responses

from apps.oncall.importer import FetchOptions, Importer
from apps.pagerduty.client import PagerDutyClient, RetryPolicy
from tests.oncall.conftest import NOW

URL = "https://pd.test"
SCRIPTS = ["Ana", "Zoë", "Łukasz", "Дмитрий", "王", "محمد", "김", "Νίκος"]


class Directory:
    """/users and /teams of a big account, with PagerDuty's paging rules and a choice of search behaviour."""

    def __init__(self, n_users: int, n_teams: int, seed: int, *, search_emails=True, filtered_order="name"):
        rng = random.Random(seed)
        self.teams = [{"id": f"PT{i:05d}", "name": f"Team {i}"} for i in range(n_teams)]
        self.users = []
        for i in range(n_users):
            first = rng.choice(SCRIPTS)
            teams = rng.sample(self.teams, rng.choice((0, 1, 1, 1, 2))) if self.teams else []
            self.users.append(
                {
                    "id": f"PU{i:06d}",
                    "name": f"{first} {i}",
                    "email": f"user.{i}{rng.choice('abcdefghij')}@example.com",
                    "teams": [{"id": t["id"], "type": "team_reference"} for t in teams],
                    "contact_methods": [],
                }
            )
        self.users.sort(key=lambda u: u["name"].lower())
        self.search_emails = search_emails
        self.filtered_order = filtered_order

    def _matches(self, user, query):
        q = query.lower()
        return q in user["name"].lower() or (self.search_emails and q in user["email"].lower())

    def users_callback(self, request):
        q = parse_qs(urlparse(request.url).query)
        offset, limit = int(q["offset"][0]), int(q["limit"][0])
        if offset + limit > 10_000:
            return 400, {}, json.dumps({"error": {"message": "Offset + limit must not exceed 10000", "code": 2001}})
        items = self.users
        filtered = False
        if "team_ids[]" in q:
            wanted = set(q["team_ids[]"])
            items = [u for u in items if wanted & {t["id"] for t in u["teams"]}]
            filtered = True
        if q.get("query"):
            items = [u for u in items if self._matches(u, q["query"][0])]
            filtered = True
        if filtered and self.filtered_order == "reversed":
            items = list(reversed(items))
        body = {
            "users": items[offset : offset + limit],
            "limit": limit,
            "offset": offset,
            "more": offset + limit < len(items),
            "total": len(items),
        }
        return 200, {}, json.dumps(body)

    def teams_callback(self, request):
        q = parse_qs(urlparse(request.url).query)
        offset, limit = int(q["offset"][0]), int(q["limit"][0])
        page = self.teams[offset : offset + limit]
        body = {
            "teams": page,
            "limit": limit,
            "offset": offset,
            "more": offset + limit < len(self.teams),
            "total": len(self.teams),
        }
        return 200, {}, json.dumps(body)

    def serve(self, pd):
        pd.add_callback(responses.GET, f"{URL}/users", callback=self.users_callback)
        pd.add_callback(responses.GET, f"{URL}/teams", callback=self.teams_callback)


def fetch_users(directory, pd):
    directory.serve(pd)
    client = PagerDutyClient(api_key="k-123", api_url=URL, retry=RetryPolicy(max_attempts=2), sleep=lambda s: None)
    snap = Importer(client).fetch(FetchOptions(resources=("teams", "users"), since=NOW, until=NOW + timedelta(days=1)))
    return snap, snap.stats["users"]


def test_email_partitions_complete_the_list_past_the_prefix(pd):
    directory = Directory(11_500, 40, seed=1)
    snap, stats = fetch_users(directory, pd)
    assert {u["id"] for u in snap.objects["users"]} == {u["id"] for u in directory.users}
    assert stats.prefix_requests == 100 and stats.head_reads == 0 and set(stats.phase_requests) == {"email"}
    # Ten email partitions ("a@" … "j@"), each read past its share of the first 10,000: 1,500 users in
    # about 15 pages plus one request per partition, plus the probes of characters nobody ends with.
    assert stats.requests <= 100 + 15 + 10 + 36 + 1
    assert not [w for w in snap.warnings if w["code"] == "incomplete"]


def test_a_search_that_ignores_emails_is_noticed_at_once_and_teams_take_over(pd):
    directory = Directory(11_500, 40, seed=2, search_emails=False)
    snap, stats = fetch_users(directory, pd)
    assert {u["id"] for u in snap.objects["users"]} == {u["id"] for u in directory.users}
    assert any("does not match emails" in note for note in stats.notes)
    # One probe showed it; then team batches, then names for the people in no team.
    assert stats.phase_requests["email"] == 1
    assert stats.phase_requests["teams"] > 0 and stats.phase_requests["names"] > 0
    assert stats.unreachable == 0


def test_a_different_list_order_costs_more_but_loses_nobody(pd):
    """Our count of where a partition's new objects start is a hint; the count of what was read is the proof."""
    directory = Directory(10_800, 20, seed=3, filtered_order="reversed")
    snap, stats = fetch_users(directory, pd)
    assert {u["id"] for u in snap.objects["users"]} == {u["id"] for u in directory.users}
    assert stats.head_reads > 0 and stats.unreachable == 0


@pytest.mark.parametrize("n_users", [10_000, 9_999])
def test_at_or_under_the_cap_there_is_nothing_to_partition(pd, n_users):
    directory = Directory(n_users, 5, seed=4)
    snap, stats = fetch_users(directory, pd)
    assert len(snap.objects["users"]) == n_users
    assert stats.requests == math.ceil(n_users / 100) and not stats.partitioned
