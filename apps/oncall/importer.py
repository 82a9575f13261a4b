"""Fetch an account's on-call directory from PagerDuty: no ORM, plain dicts in, a Snapshot out.

Costs are the point of this module. Every list is read with classic pagination at the largest page
size and `total=true` (so we know what "everything" is), users come with `include[]=teams` (no
per-team member calls for membership), and each schedule is fetched once with a fixed UTC window.
Past PagerDuty's 10,000-offset cap a list is re-read in partitions (per team, then by name
query, split further when a partition is itself too big); whatever is still out of reach is named
in the snapshot rather than dropped.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apps.pagerduty.client import MAX_PAGE_SIZE, OFFSET_CAP, OffsetCapReached, PagerDutyClient
from apps.pagerduty.errors import PagerDutyNotFound, PagerDutyPaymentRequired

USERS, TEAMS, SCHEDULES, ESCALATION_POLICIES, SERVICES = (
    "users",
    "teams",
    "schedules",
    "escalation_policies",
    "services",
)
# Apply order: what is referenced comes before what refers to it.
RESOURCE_TYPES = (TEAMS, USERS, SCHEDULES, ESCALATION_POLICIES, SERVICES)
RESOURCE_LABELS = {
    TEAMS: "Teams",
    USERS: "Users",
    SCHEDULES: "Schedules",
    ESCALATION_POLICIES: "Escalation policies",
    SERVICES: "Services",
}
_PATHS = {
    USERS: ("/users", "users"),
    TEAMS: ("/teams", "teams"),
    SCHEDULES: ("/schedules", "schedules"),
    ESCALATION_POLICIES: ("/escalation_policies", "escalation_policies"),
    SERVICES: ("/services", "services"),
}
_INCLUDES = {USERS: ["teams"]}
# Every list endpoint but /teams takes team_ids[], which is what partitions a large account.
_TEAM_FILTERABLE = {USERS, SCHEDULES, ESCALATION_POLICIES, SERVICES}
# Name queries partition what team filters cannot reach (objects in no team). PagerDuty matches
# names case-insensitively, so lowercase letters and digits cover the names people use; anything
# else is caught by the completeness check against `total`.
QUERY_ALPHABET = string.ascii_lowercase + string.digits
MAX_QUERY_DEPTH = 3
TEAM_FILTER_NEEDS_ABILITY = "Filtering by team needs the account's teams ability, which this account does not have"


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class FetchOptions:
    resources: tuple[str, ...]
    since: datetime
    until: datetime
    team_ids: tuple[str, ...] = ()
    query: str = ""
    team_roles: bool = False

    def __post_init__(self):
        unknown = set(self.resources) - set(RESOURCE_TYPES)
        if unknown:
            raise ValueError(f"unknown resource types: {', '.join(sorted(unknown))}")
        if self.until <= self.since:
            raise ValueError("the schedule window must end after it starts")

    @property
    def filtered(self) -> bool:
        return bool(self.team_ids or self.query)


@dataclass
class ResourceStats:
    requests: int = 0
    pages: int = 0
    detail_requests: int = 0
    member_requests: int = 0
    objects: int = 0
    total: int | None = None
    partitioned: bool = False
    partitions: list[str] = field(default_factory=list)
    partition_requests: int = 0
    unreachable: int = 0

    def minimum(self) -> int:
        """Fewest requests that could have fetched what we got: full pages, plus the per-object calls."""
        return max(1, math.ceil(self.objects / MAX_PAGE_SIZE)) + self.detail_requests + self.member_requests

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "pages": self.pages,
            "detail_requests": self.detail_requests,
            "member_requests": self.member_requests,
            "objects": self.objects,
            "total": self.total,
            "minimum": self.minimum(),
            "partitioned": self.partitioned,
            "partitions": len(self.partitions),
            "partition_requests": self.partition_requests,
            "extra_requests": max(0, self.requests - self.minimum()),
            "unreachable": self.unreachable,
        }


@dataclass
class Snapshot:
    """What PagerDuty holds for the chosen resources, with how complete it is and what it cost."""

    options: FetchOptions
    objects: dict[str, list[dict]] = field(default_factory=dict)
    complete: dict[str, bool] = field(default_factory=dict)
    stats: dict[str, ResourceStats] = field(default_factory=dict)
    warnings: list[dict] = field(default_factory=list)
    teams_ability: bool = True
    # (team id, user id) → role, only when roles were asked for.
    team_roles: dict[tuple[str, str], str] | None = None
    requests_made: int = 0

    def warn(self, code: str, message: str, *, resource: str = "", ids: Iterable[str] = ()) -> None:
        self.warnings.append({"code": code, "resource": resource, "message": message, "ids": sorted(ids)})

    def fetch_report(self) -> dict:
        minimum = sum(s.minimum() for s in self.stats.values())
        return {
            "requests": self.requests_made,
            "minimum": minimum,
            "ratio": round(self.requests_made / minimum, 3) if minimum else None,
            "extra_requests": max(0, self.requests_made - minimum),
            "partition_requests": sum(s.partition_requests for s in self.stats.values()),
            "by_resource": {name: s.as_dict() for name, s in self.stats.items()},
        }


def _object_id(item: dict) -> str:
    return item["id"]


def _member_user_id(item: dict) -> str:
    return (item.get("user") or {}).get("id") or ""


class _Partitioned(Exception):
    """Internal: a list crossed the cap and must be read in partitions."""


class Importer:
    def __init__(self, client: PagerDutyClient, *, on_progress: Callable[[str, int, int | None], None] | None = None):
        self.client = client
        self.on_progress = on_progress
        self._all_team_ids: list[str] | None = None
        # What a list read before it had to switch to partitions; the partitions dedupe against it.
        self._partial: dict[str, dict] = {}

    # --- entry point -------------------------------------------------------------------------

    def fetch(self, options: FetchOptions) -> Snapshot:
        snap = Snapshot(options=options)
        started = self.client.requests_made
        self._all_team_ids = None
        wanted = set(options.resources)
        if TEAMS in wanted or options.team_roles:
            self._fetch_teams(snap, keep=TEAMS in wanted)
        if options.team_ids and not snap.teams_ability:
            raise PagerDutyPaymentRequired(TEAM_FILTER_NEEDS_ABILITY, status=402)
        for resource in (USERS, SCHEDULES, ESCALATION_POLICIES, SERVICES):
            if resource not in wanted:
                continue
            try:
                self._fetch_list(snap, resource)
            except PagerDutyPaymentRequired as exc:
                if not options.team_ids:
                    raise
                raise PagerDutyPaymentRequired(TEAM_FILTER_NEEDS_ABILITY, status=402) from exc
        if SCHEDULES in wanted:
            self._fetch_schedule_details(snap)
        if options.team_roles and snap.teams_ability:
            self._fetch_team_roles(snap)
        snap.requests_made = self.client.requests_made - started
        return snap

    # --- lists ----------------------------------------------------------------------------------

    def _params(self, resource: str, options: FetchOptions) -> dict:
        params: dict = {"total": "true"}
        if resource in _INCLUDES:
            params["include[]"] = list(_INCLUDES[resource])
        if options.query:
            params["query"] = options.query
        if options.team_ids and resource in _TEAM_FILTERABLE:
            params["team_ids[]"] = list(options.team_ids)
        return params

    def _fetch_teams(self, snap: Snapshot, *, keep: bool) -> None:
        # Counted even when only roles were asked for: listing the teams is part of that minimum.
        stats = snap.stats.setdefault(TEAMS, ResourceStats())
        before = self.client.requests_made
        params: dict = {"total": "true"}
        if snap.options.query and not snap.options.team_ids:
            params["query"] = snap.options.query
        try:
            teams = self._read_all(TEAMS, "/teams", "teams", params, stats)
        except PagerDutyPaymentRequired:
            snap.teams_ability = False
            snap.complete[TEAMS] = False
            stats.requests += self.client.requests_made - before
            snap.warn(
                "teams_ability_missing",
                "PagerDuty answered 402 on /teams: this account has no teams ability, so teams and team "
                "memberships are skipped (existing memberships are kept). Everything else is imported.",
                resource=TEAMS,
            )
            if keep:
                snap.objects[TEAMS] = []
            return
        except _Partitioned:
            # /teams takes no team filter, so more than 10,000 teams are partitioned by name only.
            teams = self._read_partitioned(snap, TEAMS, "/teams", "teams", params, stats, by_team=False)
        stats.requests += self.client.requests_made - before
        if snap.options.team_ids:
            wanted = set(snap.options.team_ids)
            teams = [t for t in teams if t["id"] in wanted]
            missing = wanted - {t["id"] for t in teams}
            if missing:
                snap.warn("unknown_team_filter", "These team ids are not on the account", resource=TEAMS, ids=missing)
        self._all_team_ids = [t["id"] for t in teams] if not snap.options.filtered else None
        stats.objects = len(teams)
        if keep:
            snap.objects[TEAMS] = teams
            snap.complete[TEAMS] = stats.unreachable == 0

    def _fetch_list(self, snap: Snapshot, resource: str) -> None:
        path, key = _PATHS[resource]
        stats = snap.stats.setdefault(resource, ResourceStats())
        params = self._params(resource, snap.options)
        before = self.client.requests_made
        try:
            items = self._read_all(resource, path, key, params, stats)
        except _Partitioned:
            items = self._read_partitioned(
                snap, resource, path, key, params, stats, by_team=resource in _TEAM_FILTERABLE
            )
        stats.requests += self.client.requests_made - before
        stats.objects = len(items)
        snap.objects[resource] = items
        snap.complete[resource] = stats.unreachable == 0

    def _pages(self, path: str, key: str, params: dict):
        """Classic pagination at limit=100. Yields (items, total); raises before crossing the cap."""
        offset = 0
        while True:
            if offset + MAX_PAGE_SIZE > OFFSET_CAP:
                raise OffsetCapReached(path, offset)
            body = self.client.request("GET", path, params={**params, "limit": MAX_PAGE_SIZE, "offset": offset}) or {}
            items = body.get(key) or []
            total = body.get("total")
            yield items, total if isinstance(total, int) else None
            if not body.get("more") or not items:
                return
            offset += len(items)

    def _read_all(self, resource, path, key, params, stats, *, key_of=_object_id) -> list[dict]:
        seen: dict[str, dict] = {}
        try:
            for items, total in self._pages(path, key, params):
                stats.pages += 1
                if stats.total is None and total is not None:
                    stats.total = total
                    if total > OFFSET_CAP:
                        # Known from the first page: partition now rather than page up to the cap first.
                        raise OffsetCapReached(path, 0)
                for item in items:
                    seen.setdefault(key_of(item), item)
                self._report(resource, len(seen), stats.total)
        except OffsetCapReached:
            self._partial = seen
            raise _Partitioned from None
        return list(seen.values())

    def _report(self, resource: str, done: int, total: int | None) -> None:
        if self.on_progress:
            self.on_progress(resource, done, total)

    def _collect(self, resource, path, key, params, seen, stats, label, depth=0, parent_total=None) -> None:
        """Read one partition into `seen`; split it by a longer name query when it is itself past the cap."""
        stats.partitions.append(label)
        before = self.client.requests_made
        split = False
        try:
            for items, total in self._pages(path, key, params):
                stats.pages += 1
                for item in items:
                    seen.setdefault(item["id"], item)
                self._report(resource, len(seen), stats.total)
                if total is not None and total > OFFSET_CAP:
                    split = True
                    break
        except OffsetCapReached:
            split = True
        stats.partition_requests += self.client.requests_made - before
        if not split or depth >= MAX_QUERY_DEPTH:
            return
        if parent_total is not None and total is not None and total >= parent_total:
            # Everyone matches this longer query too (e.g. the shared email domain): splitting it
            # further cannot partition anything; other queries have to reach these objects.
            return
        query = params.get("query", "")
        for char in QUERY_ALPHABET:
            self._collect(
                resource,
                path,
                key,
                {**params, "query": query + char},
                seen,
                stats,
                f"{label}+{char}",
                depth + 1,
                total,
            )

    def _read_partitioned(self, snap, resource, path, key, params, stats, *, by_team: bool) -> list[dict]:
        seen, self._partial = self._partial, {}
        stats.partitioned = True
        total = stats.total

        def missing() -> bool:
            return total is None or len(seen) < total

        if by_team and params.get("team_ids[]") is None:
            for team_id in self._team_ids_for_partitioning(snap, charge_to=stats):
                self._collect(resource, path, key, {**params, "team_ids[]": [team_id]}, seen, stats, f"team {team_id}")
        if missing() and not params.get("query"):
            # What no team filter reaches (objects in no team). PagerDuty's `query` matches part of the
            # name (and for users the email), so " x" (a later word starting with x, e.g. the surname)
            # splits people into small groups; plain leading characters are the fallback for names of
            # one word, and for servers that match from the start of the name only.
            for prefixes in ([" " + c for c in QUERY_ALPHABET], list(QUERY_ALPHABET)):
                for prefix in prefixes:
                    self._collect(
                        resource, path, key, {**params, "query": prefix}, seen, stats, f"query {prefix!r}", 1, total
                    )
                    if not missing():
                        break
                if not missing():
                    break
        if total is not None and len(seen) < total:
            stats.unreachable = total - len(seen)
            snap.warn(
                "incomplete",
                f"{RESOURCE_LABELS[resource]}: PagerDuty reports {total} but only {len(seen)} could be reached "
                f"past the 10,000-offset cap, even partitioned by team and by name; {stats.unreachable} are missing. "
                f"Objects missing upstream are not flagged as gone for this type.",
                resource=resource,
            )
        return list(seen.values())

    def _team_ids_for_partitioning(self, snap: Snapshot, *, charge_to: ResourceStats | None = None) -> list[str]:
        if self._all_team_ids is None and snap.teams_ability:
            before = self.client.requests_made
            try:
                teams = self._read_all(TEAMS, "/teams", "teams", {"total": "true"}, ResourceStats())
            except PagerDutyPaymentRequired:
                snap.teams_ability = False
                teams = []
            except _Partitioned:
                teams, self._partial = list(self._partial.values()), {}
            if charge_to is not None:
                # Teams listed only so that a list can be partitioned: that is partitioning's cost.
                charge_to.partition_requests += self.client.requests_made - before
            self._all_team_ids = [t["id"] for t in teams]
        return self._all_team_ids or []

    # --- per-object calls ---------------------------------------------------------------------

    def _fetch_schedule_details(self, snap: Snapshot) -> None:
        stats = snap.stats[SCHEDULES]
        params = {"since": _iso(snap.options.since), "until": _iso(snap.options.until), "time_zone": "UTC"}
        detailed, vanished = [], []
        before = self.client.requests_made
        listed = snap.objects.get(SCHEDULES) or []
        for index, summary in enumerate(listed, start=1):
            try:
                body = self.client.request("GET", f"/schedules/{summary['id']}", params=params) or {}
            except PagerDutyNotFound:
                # Deleted between the list and now: it is gone upstream, not an error.
                vanished.append(summary["id"])
                continue
            finally:
                stats.detail_requests += 1
                self._report("schedule details", index, len(listed))
            detailed.append(body.get("schedule") or summary)
        stats.requests += self.client.requests_made - before
        if vanished:
            snap.warn(
                "vanished",
                "Schedules deleted in PagerDuty while the import ran",
                resource=SCHEDULES,
                ids=vanished,
            )
        snap.objects[SCHEDULES] = detailed
        stats.objects = len(detailed)

    def _fetch_team_roles(self, snap: Snapshot) -> None:
        teams = snap.objects.get(TEAMS)
        team_ids = [t["id"] for t in teams] if teams is not None else self._team_ids_for_partitioning(snap)
        stats = snap.stats.setdefault(TEAMS, ResourceStats())
        roles: dict[tuple[str, str], str] = {}
        before = self.client.requests_made
        for team_id in team_ids:
            page_stats = ResourceStats()
            try:
                members = self._read_all(
                    "team members", f"/teams/{team_id}/members", "members", {}, page_stats, key_of=_member_user_id
                )
            except PagerDutyNotFound:
                continue
            except _Partitioned:
                # /teams/{id}/members takes no filter to partition by; a team that big keeps the first 10,000.
                members, self._partial = list(self._partial.values()), {}
                snap.warn(
                    "incomplete",
                    f"Team {team_id} has more than 10,000 members; roles of the rest are unknown",
                    resource=TEAMS,
                    ids=[team_id],
                )
            finally:
                stats.member_requests += page_stats.pages
            for member in members:
                user = member.get("user") or {}
                if user.get("id"):
                    roles[(team_id, user["id"])] = member.get("role") or ""
        stats.requests += self.client.requests_made - before
        snap.team_roles = roles
