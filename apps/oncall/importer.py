"""Fetch an account's on-call directory from PagerDuty: no ORM, plain dicts in, a Snapshot out.

Costs are the point of this module. Every list is read with classic pagination at the largest page
size and `total=true` (so we know what "everything" is), users come with `include[]=teams` and
`include[]=contact_methods` (no per-user calls), and each schedule is fetched once with a fixed UTC
window. Past PagerDuty's 10,000-offset cap a list is read in partitions built from what PagerDuty
guarantees rather than from what names look like (see `_PartitionReader`); whatever is still out of
reach is named in the snapshot rather than dropped.
"""

from __future__ import annotations

import math
import string
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apps.pagerduty.client import MAX_PAGE_SIZE, OFFSET_CAP, OffsetCapReached, PagerDutyClient
from apps.pagerduty.errors import PagerDutyForbidden, PagerDutyNotFound, PagerDutyPaymentRequired

USERS, TEAMS, SCHEDULES, ESCALATION_POLICIES, SERVICES = (
    "users",
    "teams",
    "schedules",
    "escalation_policies",
    "services",
)
# Fetched with schedules and stored as schedules; counted on its own in the fetch report.
SCHEDULES_V3 = "schedules_v3"
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
_INCLUDES = {USERS: ["contact_methods", "teams"]}
# Every list endpoint but /teams takes team_ids[], which is what partitions a large account.
_TEAM_FILTERABLE = {USERS, SCHEDULES, ESCALATION_POLICIES, SERVICES}
# Last resort past the cap: name queries. PagerDuty matches names case-insensitively, so lowercase
# letters and digits cover most names; anything else is caught by the completeness check on `total`.
QUERY_ALPHABET = string.ascii_lowercase + string.digits
MAX_QUERY_DEPTH = 3
# Team batches past the cap: about this many objects (estimated from the prefix) and ids per request.
TEAM_BATCH_OBJECTS = 8_000
TEAM_BATCH_IDS = 50
# Email partitions whose head had to be read too before we stop trusting our count of them.
MAX_EMAIL_HEAD_READS = 3
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
    # Past the cap: requests per way of reaching objects, and partitions whose head had to be read too.
    prefix_requests: int = 0
    phase_requests: dict[str, int] = field(default_factory=dict)
    head_reads: int = 0
    notes: list[str] = field(default_factory=list)

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
            "prefix_requests": self.prefix_requests,
            "phase_requests": dict(self.phase_requests),
            "head_reads": self.head_reads,
            "notes": list(self.notes),
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
    # Whether /v3/schedules could be listed (None: schedules were not asked for).
    v3_listed: bool | None = None
    # (team id, user id) → role, only when roles were asked for.
    team_roles: dict[tuple[str, str], str] | None = None
    requests_made: int = 0
    # Requests PagerDuty answered 429/5xx (or not at all) that were tried again; counted in requests_made.
    retries: int = 0

    def warn(self, code: str, message: str, *, resource: str = "", ids: Iterable[str] = ()) -> None:
        self.warnings.append({"code": code, "resource": resource, "message": message, "ids": sorted(ids)})

    def fetch_report(self) -> dict:
        minimum = sum(s.minimum() for s in self.stats.values())
        return {
            "requests": self.requests_made,
            "minimum": minimum,
            "ratio": round(self.requests_made / minimum, 3) if minimum else None,
            "retries": self.retries,
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


@dataclass
class _TailRead:
    total: int | None = None
    complete: bool = False
    over_cap: bool = False  # more than 10,000 and the caller will split it: only the first page was read
    capped: bool = False  # more than 10,000: read up to the cap, the rest is out of reach this way
    mismatch: bool = False  # the server counts fewer than our own count of the prefix's share


def _team_ids_of(item: dict) -> set[str]:
    return {t["id"] for t in item.get("teams") or [] if isinstance(t, dict) and t.get("id")}


def _matches(item: dict, query: str) -> bool:
    """Our reading of PagerDuty's `query`: part of the name, or (users) of the email, in any case.

    Only ever a hint: a partition is read from where this count says, and proven complete by count.
    """
    q = query.lower()
    return q in str(item.get("name") or item.get("summary") or "").lower() or q in str(item.get("email") or "").lower()


def _char_before_at(item: dict) -> str | None:
    local, at, _domain = str(item.get("email") or "").lower().rpartition("@")
    return local[-1] if at and local else None


def _pack(team_ids: list[str], estimate: dict[str, float]) -> list[list[str]]:
    """First-fit decreasing: batches of teams whose estimated members stay under TEAM_BATCH_OBJECTS."""
    batches: list[tuple[float, list[str]]] = []
    for team_id in sorted(team_ids, key=lambda t: (-estimate[t], t)):
        size = estimate[team_id]
        for i, (load, batch) in enumerate(batches):
            if load + size <= TEAM_BATCH_OBJECTS and len(batch) < TEAM_BATCH_IDS:
                batch.append(team_id)
                batches[i] = (load + size, batch)
                break
        else:
            batches.append((size, [team_id]))
    return [batch for _load, batch in batches]


def _halves(batch: list[str], estimate: dict[str, float]) -> list[list[str]]:
    halves: list[list[str]] = [[], []]
    loads = [0.0, 0.0]
    for team_id in sorted(batch, key=lambda t: (-estimate[t], t)):
        side = 0 if (loads[0], len(halves[0])) <= (loads[1], len(halves[1])) else 1
        halves[side].append(team_id)
        loads[side] += estimate[team_id]
    return [h for h in halves if h]


class _PartitionReader:
    """Reads what lies past the first 10,000 objects of one list.

    Each way of partitioning only reads a partition past the share the prefix already holds of it
    (`Importer._tail`), and stops as soon as the list's `total` is reached.
    """

    def __init__(self, importer, snap, resource, path, key, params, stats, prefix, seen, missing):
        self.importer = importer
        self.snap = snap
        self.resource = resource
        self.path = path
        self.key = key
        self.params = params
        self.stats = stats
        self.prefix = prefix
        self.prefix_ids = set(prefix)
        self.seen = seen
        self.missing = missing

    def _tail(self, params: dict, in_prefix: int, label: str, *, split: bool) -> _TailRead:
        return self.importer._tail(
            self.resource,
            self.path,
            self.key,
            params,
            in_prefix=in_prefix,
            prefix_ids=self.prefix_ids,
            seen=self.seen,
            stats=self.stats,
            label=label,
            split=split,
        )

    def _charge(self, phase: str, before: int) -> None:
        spent = self.importer.client.requests_made - before
        self.stats.phase_requests[phase] = self.stats.phase_requests.get(phase, 0) + spent

    def by_teams(self) -> None:
        """Team members: teams batched in one filtered list each, read past the prefix's members of them."""
        before = self.importer.client.requests_made
        team_ids = self.importer._team_ids_for_partitioning(self.snap, charge_to=self.stats)
        prefix_teams = [_team_ids_of(item) for item in self.prefix.values()]
        counts = Counter(t for teams in prefix_teams for t in teams)
        scale = (self.stats.total or 0) / max(1, len(self.prefix))
        estimate = {t: counts[t] * scale for t in team_ids}
        queue = deque(_pack(team_ids, estimate))
        while queue and self.missing():
            batch = queue.popleft()
            wanted = set(batch)
            in_prefix = sum(1 for teams in prefix_teams if teams & wanted)
            label = f"team {batch[0]}" if len(batch) == 1 else f"{len(batch)} teams"
            result = self._tail({**self.params, "team_ids[]": batch}, in_prefix, label, split=len(batch) > 1)
            if result.over_cap:
                queue.extendleft(reversed(_halves(batch, estimate)))
        self._charge("teams", before)

    def by_email(self) -> None:
        """Every email has one "@", so "x@" for each x splits all users, in teams or not, in disjoint parts."""
        before = self.importer.client.requests_made
        everyone = Counter(c for item in self.prefix.values() if (c := _char_before_at(item)))
        # Endings common among people in no team first (no fallback but names reaches them), then the
        # most common overall, so that reading can stop as soon as the list's total is reached.
        teamless = Counter(c for item in self.prefix.values() if not item.get("teams") and (c := _char_before_at(item)))
        alphabet = sorted(set(everyone) | set(QUERY_ALPHABET), key=lambda c: (-teamless[c], -everyone[c], c))
        misses = 0
        for char in alphabet:
            if not self.missing():
                break
            query = f"{char}@"
            in_prefix = sum(1 for item in self.prefix.values() if _matches(item, query))
            heads = self.stats.head_reads
            result = self._tail({**self.params, "query": query}, in_prefix, f"email …{query}", split=False)
            if result.mismatch or (result.total == 0 and in_prefix > 0):
                self.stats.notes.append(
                    f"PagerDuty counted {result.total} users for query {query!r} where we hold {in_prefix}: its search "
                    "does not match emails the way email partitions need, so they were not used."
                )
                break
            misses = misses + 1 if self.stats.head_reads > heads else misses
            if misses >= MAX_EMAIL_HEAD_READS:
                # Each such partition had to be read whole: team filters reach the rest for less.
                self.stats.notes.append(
                    f"{misses} email partitions did not start where we counted; the rest is read by team and name."
                )
                break
        self._charge("email", before)

    def by_name(self) -> None:
        """Last resort: name queries (a later word starting with x, then any x), split while too big."""
        before = self.importer.client.requests_made
        for queries in ([" " + c for c in QUERY_ALPHABET], list(QUERY_ALPHABET)):
            for query in queries:
                self._by_name(query, 1, self.stats.total)
                if not self.missing():
                    self._charge("names", before)
                    return
        self._charge("names", before)

    def _by_name(self, query: str, depth: int, parent_total: int | None) -> None:
        in_prefix = sum(1 for item in self.prefix.values() if _matches(item, query))
        label = f"query {query!r}"
        result = self._tail({**self.params, "query": query}, in_prefix, label, split=depth < MAX_QUERY_DEPTH)
        if not result.over_cap:
            return
        if parent_total is not None and result.total is not None and result.total >= parent_total:
            # Everyone matches this longer query too (e.g. the shared email domain): splitting it cannot
            # partition anything, so read what the cap allows and leave the rest to other queries.
            self._tail({**self.params, "query": query}, in_prefix, label, split=False)
            return
        for char in QUERY_ALPHABET:
            if not self.missing():
                return
            self._by_name(query + char, depth + 1, result.total)


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
        started, retried = self.client.requests_made, self.client.retries
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
            self._fetch_v3_schedules(snap)
        if options.team_roles and snap.teams_ability:
            self._fetch_team_roles(snap)
        snap.requests_made = self.client.requests_made - started
        snap.retries = self.client.retries - retried
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

    def _pages(self, path: str, key: str, params: dict, *, offset: int = 0):
        """Classic pagination at limit=100 from `offset`. Yields (offset, items, total); stops at the cap.

        The last page before the cap is shortened so that offset + limit never exceeds 10,000.
        """
        while True:
            if offset >= OFFSET_CAP:
                raise OffsetCapReached(path)
            limit = min(MAX_PAGE_SIZE, OFFSET_CAP - offset)
            body = self.client.request("GET", path, params={**params, "limit": limit, "offset": offset}) or {}
            items = body.get(key) or []
            total = body.get("total")
            yield offset, items, total if isinstance(total, int) else None
            if not body.get("more") or not items:
                return
            offset += len(items)

    def _read_all(self, resource, path, key, params, stats, *, key_of=_object_id) -> list[dict]:
        """Everything by offset; past the cap, the first 10,000 are kept and `_Partitioned` is raised."""
        seen: dict[str, dict] = {}
        try:
            for _offset, items, total in self._pages(path, key, params):
                stats.pages += 1
                stats.prefix_requests += 1
                if stats.total is None and total is not None:
                    stats.total = total
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

    # --- past the 10,000-offset cap ---------------------------------------------------------------
    #
    # PagerDuty guarantees: a list read by offset is complete up to offset 10,000; `team_ids[]`
    # returns exactly the objects in any of those teams; `total=true` counts a filtered list. So:
    # 1. the first 10,000 are read by offset (the "prefix", the cheapest data there is);
    # 2. users: every user has an email with one "@", and `query` matches emails, so "a@" … "9@"
    #    split everyone, in a team or not, into ~40 disjoint parts far below the cap;
    # 3. team members (users, when PagerDuty's search does not behave as step 2 needs; schedules,
    #    policies and services always) come from team-filtered lists, many teams per request, each
    #    read only past the members the prefix holds (counted exactly from the prefix's own `teams`);
    # 4. what is still missing falls back to name queries, and anything unreachable is reported.
    # A partition is read from just before the first object we lack, and proven complete by
    # counting: the objects after the prefix's share must all be new and add up to `total`.

    def _tail(self, resource, path, key, params, *, in_prefix, prefix_ids, seen, stats, label, split) -> _TailRead:
        """Read one partition from `in_prefix - 1`; fall back to its head when the count does not prove it whole."""
        stats.partitions.append(label)
        before = self.client.requests_made
        start = max(0, in_prefix - 1)
        result = _TailRead()
        boundary_ok = in_prefix == 0
        later_new = later_old = 0
        try:
            for offset, items, total in self._pages(path, key, params, offset=start):
                stats.pages += 1
                if result.total is None:
                    result.total = total
                    if total is not None and total < in_prefix:
                        # The server counts this filter differently from us: the counting proof cannot hold.
                        result.mismatch = True
                        break
                    if total is not None and total > OFFSET_CAP and split:
                        result.over_cap = True
                for position, item in enumerate(items, start=offset):
                    if position < in_prefix:
                        boundary_ok = item["id"] in prefix_ids
                    elif item["id"] in prefix_ids:
                        later_old += 1
                    else:
                        later_new += 1
                    seen.setdefault(item["id"], item)
                self._report(resource, len(seen), stats.total)
                if result.over_cap:
                    break
        except OffsetCapReached:
            result.capped = True
        total = result.total
        result.complete = (
            total is not None
            and not (result.over_cap or result.capped or result.mismatch)
            and boundary_ok
            and later_old == 0
            and later_new == total - in_prefix
        )
        head_helps = total is not None and not (result.over_cap or result.capped or result.mismatch)
        if not result.complete and start > 0 and head_helps:
            # Our count of the prefix's share was off (order or matching differs): read the head too.
            stats.head_reads += 1
            for offset, items, _total in self._pages(path, key, params):
                stats.pages += 1
                for item in items:
                    seen.setdefault(item["id"], item)
                if offset + len(items) >= start:
                    break
            result.complete = not result.capped
        stats.partition_requests += self.client.requests_made - before
        return result

    def _read_partitioned(self, snap, resource, path, key, params, stats, *, by_team: bool) -> list[dict]:
        prefix, self._partial = self._partial, {}
        seen = dict(prefix)
        stats.partitioned = True
        total = stats.total

        def missing() -> bool:
            return total is None or len(seen) < total

        reader = _PartitionReader(self, snap, resource, path, key, params, stats, prefix, seen, missing)
        if resource == USERS and missing() and not params.get("query"):
            # Emails partition everyone, in or out of teams, in about 40 parts: when PagerDuty's search
            # behaves as we count it, this alone completes the list; teams and names are the fallbacks.
            reader.by_email()
        if by_team and params.get("team_ids[]") is None and missing():
            reader.by_teams()
        if missing() and not params.get("query"):
            reader.by_name()
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
        before = self.client.requests_made
        listed = snap.objects.get(SCHEDULES) or []
        bodies, vanished = self._read_each(listed, "/schedules", params, stats, "schedule details")
        detailed = [body.get("schedule") or summary for summary, body in bodies]
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

    def _fetch_v3_schedules(self, snap: Snapshot) -> None:
        """Shift-based (v3) schedules: not served by /schedules. Listed, then each read with its computed shifts."""
        stats = snap.stats.setdefault(SCHEDULES_V3, ResourceStats())
        params: dict = {"total": "true"}
        if snap.options.query:
            params["query"] = snap.options.query
        if snap.options.team_ids:
            params["team_ids[]"] = list(snap.options.team_ids)
        before = self.client.requests_made
        try:
            listed = self._read_all(SCHEDULES_V3, "/v3/schedules", "schedules", params, stats)
        except _Partitioned:
            listed, self._partial = list(self._partial.values()), {}
            stats.unreachable = (stats.total or 0) - len(listed)
            snap.warn(
                "incomplete",
                f"v3 schedules: PagerDuty reports {stats.total}; only the first {len(listed)} can be listed.",
                resource=SCHEDULES,
            )
        except (PagerDutyNotFound, PagerDutyForbidden, PagerDutyPaymentRequired) as exc:
            stats.requests += self.client.requests_made - before
            snap.v3_listed = False
            snap.warn(
                "schedule_v3_unavailable",
                f"GET /v3/schedules answered {exc.status} ({exc.message}): v3 (shift-based) schedules are not "
                "imported. Escalation targets pointing at them keep their ids; the live on-call view still shows "
                "who is on call through them (PagerDuty's /oncalls covers both kinds).",
                resource=SCHEDULES,
            )
            return
        snap.v3_listed = stats.unreachable == 0
        window = {
            "include[]": ["final_schedule"],
            "since": _iso(snap.options.since),
            "until": _iso(snap.options.until),
            "time_zone": "UTC",
        }
        bodies, vanished = self._read_each(listed, "/v3/schedules", window, stats, "v3 schedule details")
        detailed = [
            {
                **(body.get("schedule") or {}),
                "type": "schedule_v3",
                "id": (body.get("schedule") or {}).get("id") or ref["id"],
            }
            for ref, body in bodies
        ]
        stats.requests += self.client.requests_made - before
        stats.objects = len(detailed)
        if vanished:
            snap.warn(
                "vanished", "v3 schedules deleted in PagerDuty while the import ran", resource=SCHEDULES, ids=vanished
            )
        snap.objects[SCHEDULES] = [*snap.objects.get(SCHEDULES, []), *detailed]

    def _read_each(self, listed: list[dict], path: str, params: dict, stats: ResourceStats, label: str):
        """GET {path}/{id} for each listed object: ([(listed, body)], ids deleted since they were listed)."""
        bodies, vanished = [], []
        for index, summary in enumerate(listed, start=1):
            try:
                bodies.append((summary, self.client.request("GET", f"{path}/{summary['id']}", params=params) or {}))
            except PagerDutyNotFound:
                # Deleted between the list and now: it is gone upstream, not an error.
                vanished.append(summary["id"])
            finally:
                stats.detail_requests += 1
                self._report(label, index, len(listed))
        return bodies, vanished

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
