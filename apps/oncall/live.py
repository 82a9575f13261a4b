"""Who is on call, live from PagerDuty, for any window up to 90 days ahead — beside the imported snapshot.

The imported schedules answer "who is on call" without a request but only as fresh as the last sync;
this asks PagerDuty itself:

- `GET /oncalls` (since/until, schedule_ids[], escalation_policy_ids[]) gives every shift per
  escalation policy and level, through classic and v3 schedules alike, and the users a policy names
  directly (permanent: no start, no end);
- `GET /schedules/{id}/overrides` (v3: `/v3/schedules/{id}/overrides`) gives the overrides by id,
  so a shift is labelled an override from PagerDuty's own list, not guessed from the rendered
  overrides layer. The same `Override` objects are what creating one (POST, later) will return;
- each person's next shift after the window, with `earliest=true` (one request per hand-off time);
- contact methods come from the imported users (imported with `include[]=contact_methods`);
- coverage gaps: a schedule or an escalation level that has nobody for part of the window.

Nothing here writes to the database. Bad input raises DomainError (a 400 with the field); PagerDuty
errors propagate as PagerDutyError for the caller to answer (502).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from apps.core.errors import DomainError
from apps.oncall import records as rec
from apps.oncall.models import (
    EscalationRule,
    EscalationTarget,
    OncallEscalationPolicy,
    OncallSchedule,
    OncallUser,
    ScheduleEntry,
)
from apps.pagerduty.client import PagerDutyClient, RetryPolicy
from apps.pagerduty.errors import PagerDutyNotFound
from apps.pagerduty.models import PagerDutyConnection
from apps.pagerduty.services import connection_client

# PagerDuty computes on-call at most 90 days ahead; a longer window is refused before asking.
MAX_WINDOW = timedelta(days=90)
MAX_IDS = 50
MAX_ONCALL_PAGES = 20
# Live on-call is read while a person (or an API caller) waits: a slow or unreachable PagerDuty
# falls back to the snapshot within seconds instead of holding a web worker through five retries.
LIVE_READ_RETRY = RetryPolicy(max_attempts=2, backoff_base=0.5, backoff_cap=1.0, max_announced_wait=2.0)
# One overrides request per schedule: beyond this many schedules in one answer, narrow the question.
MAX_OVERRIDE_SCHEDULES = 50
# Next shifts: one request per distinct hand-off time, for at most this many times and rounds.
MAX_NEXT_SHIFT_CALLS = 6
NEXT_SHIFT_ROUNDS = 2
SNAPSHOT_LIMIT = 100
PD_ID_PATTERN = r"^P[A-Z0-9]{5,}$"
_PD_ID = re.compile(r"P[A-Z0-9]{5,}")
_SCHEDULE_TARGETS = (EscalationTarget.Type.SCHEDULE, EscalationTarget.Type.SCHEDULE_V3)


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


@dataclass(frozen=True)
class Override:
    """One override of a schedule, as PagerDuty lists it (id included: it is what deleting one needs)."""

    id: str
    schedule_id: str
    start: datetime
    end: datetime
    user_id: str
    user_name: str = ""
    replaces_user_id: str = ""  # v3 overrides say whom they replace; classic ones do not

    def overlaps(self, start: datetime | None, end: datetime | None) -> bool:
        return (end is None or self.start < end) and (start is None or self.end > start)

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "schedule_id": self.schedule_id,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "user": {"id": self.user_id, "name": self.user_name or None},
            "replaces_user_id": self.replaces_user_id or None,
        }


@dataclass
class LiveShift:
    """One entry of /oncalls: a person on call for a policy's level, through a schedule or named directly."""

    user_id: str
    user_name: str
    escalation_policy_id: str
    escalation_policy_name: str
    escalation_level: int
    schedule_id: str | None
    schedule_name: str
    schedule_type: str
    start: datetime | None
    end: datetime | None
    overrides: list[Override] = field(default_factory=list)
    overrides_checked: bool = True

    @property
    def permanent(self) -> bool:
        return self.start is None and self.end is None

    @property
    def is_override(self) -> bool:
        return bool(self.overrides)

    def covers(self, at: datetime) -> bool:
        return (self.start is None or self.start <= at) and (self.end is None or at < self.end)

    def as_dict(self) -> dict:
        return {
            "user": {"id": self.user_id, "name": self.user_name or None},
            "escalation_policy": {"id": self.escalation_policy_id, "name": self.escalation_policy_name or None},
            "escalation_level": self.escalation_level,
            "schedule": (
                {"id": self.schedule_id, "name": self.schedule_name or None, "type": self.schedule_type}
                if self.schedule_id
                else None
            ),
            "start": _iso(self.start),
            "end": _iso(self.end),
            "override": self.is_override,
            "overrides": [o.as_dict() for o in self.overrides],
            "overrides_checked": self.overrides_checked,
        }


@dataclass
class Person:
    user_id: str
    name: str
    email: str
    contact_methods: list[dict]
    imported: bool
    next_shift: LiveShift | None = None
    next_shift_note: str = ""

    def as_dict(self) -> dict:
        return {
            "user": {"id": self.user_id, "name": self.name or None, "email": self.email or None},
            "imported": self.imported,
            "contact_methods": self.contact_methods,
            "next_shift": self.next_shift.as_dict() if self.next_shift else None,
            "next_shift_note": self.next_shift_note,
        }


@dataclass
class Gap:
    """Part of the window where a schedule, or a policy's level, has nobody on call."""

    kind: str  # "schedule" | "escalation_level"
    intervals: list[tuple[datetime, datetime]]
    schedule_id: str = ""
    schedule_name: str = ""
    escalation_policy_id: str = ""
    escalation_policy_name: str = ""
    escalation_level: int | None = None

    @property
    def label(self) -> str:
        if self.kind == "schedule":
            return f"schedule {self.schedule_name or self.schedule_id}"
        return f"{self.escalation_policy_name or self.escalation_policy_id} level {self.escalation_level}"

    def as_dict(self) -> dict:
        out: dict = {"kind": self.kind, "intervals": [{"start": _iso(a), "end": _iso(b)} for a, b in self.intervals]}
        if self.kind == "schedule":
            out["schedule"] = {"id": self.schedule_id, "name": self.schedule_name or None}
        else:
            out["escalation_policy"] = {"id": self.escalation_policy_id, "name": self.escalation_policy_name or None}
            out["escalation_level"] = self.escalation_level
        return out


@dataclass
class LiveOnCall:
    connection: str
    since: datetime
    until: datetime
    fetched_at: datetime
    shifts: list[LiveShift]
    people: list[Person]
    gaps: list[Gap]
    overrides: dict[str, list[Override]]
    snapshot: list[dict]
    requests: int
    notes: list[str]

    def as_dict(self) -> dict:
        return {
            "source": "pagerduty",
            "connection": self.connection,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "fetched_at": _iso(self.fetched_at),
            "oncalls": [s.as_dict() for s in self.shifts],
            "people": [p.as_dict() for p in self.people],
            "gaps": [g.as_dict() for g in self.gaps],
            "overrides": {sid: [o.as_dict() for o in items] for sid, items in self.overrides.items()},
            "snapshot": self.snapshot,
            "requests": self.requests,
            "notes": self.notes,
        }


# --- input ---------------------------------------------------------------------------------------


def live_window_clean(
    *, since: datetime | None, until: datetime | None, now: datetime, notes: list[str] | None = None
) -> tuple[datetime, datetime]:
    """Both default to now (until: to since); aware times only. PagerDuty computes on-call for at most
    90 days, at most 90 days ahead: a window beyond that is narrowed, and `notes` says how — the
    answer carries the window it covers, so nothing is cut silently."""
    notes = notes if notes is not None else []
    for name, value in (("since", since), ("until", until)):
        if value is not None and timezone.is_naive(value):
            raise DomainError("Give a time with a zone, e.g. 2026-11-23T09:00:00Z.", field=name)
    since = (since or now).astimezone(UTC).replace(microsecond=0)
    until = (until or since).astimezone(UTC).replace(microsecond=0)
    horizon = (now + MAX_WINDOW).astimezone(UTC).replace(microsecond=0)
    if until < since:
        notes.append(f"until ({_iso(until)}) was before since: answering for the moment {_iso(since)}.")
        until = since
    if until - since > MAX_WINDOW:
        notes.append(
            f"The window asked for is {(until - since).days} days long; PagerDuty computes on-call for at most "
            f"90 days, so this answer stops at {_iso(since + MAX_WINDOW)}."
        )
        until = since + MAX_WINDOW
    if until > horizon:
        notes.append(f"PagerDuty computes on-call at most 90 days ahead: this answer stops at {_iso(horizon)}.")
        until = horizon
        since = min(since, horizon)
    return since, until


def live_ids_clean(values, *, field_name: str) -> list[str]:
    ids: list[str] = []
    for value in values or ():
        for part in str(value).split(","):
            part = part.strip(" ")
            if part and part not in ids:
                ids.append(part)
    bad = [i for i in ids if not _PD_ID.fullmatch(i)]
    if bad:
        raise DomainError(f"Not PagerDuty ids: {', '.join(bad[:5])} (they look like PABC123).", field=field_name)
    if len(ids) > MAX_IDS:
        raise DomainError(f"At most {MAX_IDS} ids at a time ({len(ids)} given).", field=field_name)
    return ids


# --- fetching --------------------------------------------------------------------------------------


def _ref(value) -> tuple[str, str, str]:
    value = value if isinstance(value, dict) else {}
    return (
        str(value.get("id") or ""),
        str(value.get("summary") or value.get("name") or ""),
        str(value.get("type") or ""),
    )


def _shift(entry: dict) -> LiveShift:
    user_id, user_name, _ = _ref(entry.get("user"))
    policy_id, policy_name, _ = _ref(entry.get("escalation_policy"))
    schedule_id, schedule_name, schedule_type = _ref(entry.get("schedule"))
    return LiveShift(
        user_id=user_id,
        user_name=user_name,
        escalation_policy_id=policy_id,
        escalation_policy_name=policy_name,
        escalation_level=int(entry.get("escalation_level") or 0),
        schedule_id=schedule_id or None,
        schedule_name=schedule_name,
        schedule_type=schedule_type.removesuffix("_reference") if schedule_id else "",
        start=rec.parse_iso(rec.iso(entry.get("start"))),
        end=rec.parse_iso(rec.iso(entry.get("end"))),
    )


class _LiveReader:
    def __init__(self, connection: PagerDutyConnection, client: PagerDutyClient, now: datetime):
        self.connection = connection
        self.client = client
        self.now = now
        self.notes: list[str] = []

    def overrides(self, schedule_id: str, kind: str, since: datetime, until: datetime) -> list[Override] | None:
        """The schedule's overrides in the window; None when PagerDuty does not know the schedule."""
        window = {"since": _iso(since), "until": _iso(until)}
        kinds = [kind, "schedule_v3" if kind != "schedule_v3" else "schedule"]
        for attempt in kinds:
            try:
                if attempt == "schedule_v3":
                    items = self.client.list_v3_schedule_overrides(schedule_id, **window)
                    return [
                        Override(
                            id=str(o.get("id") or ""),
                            schedule_id=schedule_id,
                            start=rec.parse_iso(rec.iso(o.get("start_time"))),
                            end=rec.parse_iso(rec.iso(o.get("end_time"))),
                            user_id=str((o.get("overriding_member") or {}).get("user_id") or ""),
                            replaces_user_id=str((o.get("overridden_member") or {}).get("user_id") or ""),
                        )
                        for o in items
                        if o.get("start_time") and o.get("end_time")
                    ]
                items = self.client.list_schedule_overrides(schedule_id, **window)
                return [
                    Override(
                        id=str(o.get("id") or ""),
                        schedule_id=schedule_id,
                        start=rec.parse_iso(rec.iso(o.get("start"))),
                        end=rec.parse_iso(rec.iso(o.get("end"))),
                        user_id=_ref(o.get("user"))[0],
                        user_name=_ref(o.get("user"))[1],
                    )
                    for o in items
                    if o.get("start") and o.get("end")
                ]
            except PagerDutyNotFound:
                # An id we only know from a request: it may be the other kind of schedule.
                continue
        return None

    def next_shifts(
        self, people: list[str], after: datetime, schedule_ids: list[str], policy_ids: list[str]
    ) -> tuple[dict[str, LiveShift], set[str]]:
        """Each person's earliest shift starting at or after `after` (in the same scope), and who was not looked up.

        `earliest=true` gives one entry per (policy, level, person): the first one overlapping the window.
        When that is a shift still running at `after`, the next one of that pair starts when it ends, so a
        second round asks again from there (grouped by that time: rotations hand off together).
        """
        horizon = self.now + MAX_WINDOW
        best: dict[str, LiveShift] = {}
        pending: dict[str, datetime] = {uid: after for uid in people}
        not_looked_up: set[str] = set()
        for _round in range(NEXT_SHIFT_ROUNDS):
            groups: dict[datetime, list[str]] = defaultdict(list)
            for uid, since in pending.items():
                if since < horizon:
                    groups[since].append(uid)
            pending = {}
            ordered = sorted(groups.items())
            for _since, uids in ordered[MAX_NEXT_SHIFT_CALLS:]:
                not_looked_up.update(uids)
            for since, uids in ordered[:MAX_NEXT_SHIFT_CALLS]:
                for start in range(0, len(uids), 100):
                    chunk = uids[start : start + 100]
                    entries, _complete = self.client.list_oncalls(
                        since=_iso(since),
                        until=_iso(horizon),
                        user_ids=chunk,
                        schedule_ids=schedule_ids,
                        escalation_policy_ids=policy_ids,
                        earliest=True,
                        max_pages=5,
                    )
                    for shift in map(_shift, entries):
                        if shift.start is None:
                            continue  # named directly by a policy: always on call, not a shift
                        if shift.start >= since:
                            current = best.get(shift.user_id)
                            if current is None or shift.start < current.start:
                                best[shift.user_id] = shift
                        elif shift.end is not None:
                            # Still running at `since`: this pair's next shift starts no earlier than its end.
                            known = best.get(shift.user_id)
                            if known is None or shift.end < known.start:
                                pending[shift.user_id] = min(pending.get(shift.user_id, shift.end), shift.end)
            # Ask again only for people whose best answer could still be beaten.
            pending = {uid: since for uid, since in pending.items() if uid not in best or since < best[uid].start}
            if not pending:
                break
        not_looked_up.update(uid for uid in pending if uid not in best)
        return best, not_looked_up


def _uncovered(spans: list[tuple[datetime | None, datetime | None]], since: datetime, until: datetime):
    """Parts of [since, until] nobody covers; for an instant (since == until), the instant when nobody is on."""
    if since == until:
        covered = any((s is None or s <= since) and (e is None or since < e) for s, e in spans)
        return [] if covered else [(since, until)]
    intervals = sorted(
        (max(s or since, since), min(e or until, until))
        for s, e in spans
        if (s is None or s < until) and (e is None or e > since)
    )
    gaps, cursor = [], since
    for start, end in intervals:
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < until:
        gaps.append((cursor, until))
    return gaps


def oncall_live_fetch(
    *,
    connection: PagerDutyConnection,
    since: datetime | None = None,
    until: datetime | None = None,
    schedule_ids=(),
    escalation_policy_ids=(),
    client: PagerDutyClient | None = None,
    now: datetime | None = None,
) -> LiveOnCall:
    now = now or timezone.now()
    window_notes: list[str] = []
    since, until = live_window_clean(since=since, until=until, now=now, notes=window_notes)
    schedule_ids = live_ids_clean(schedule_ids, field_name="schedule_ids")
    policy_ids = live_ids_clean(escalation_policy_ids, field_name="escalation_policy_ids")
    client = client or connection_client(
        connection=connection, retry=LIVE_READ_RETRY, timeout=settings.PAGERDUTY_INTERACTIVE_TIMEOUT_SECONDS
    )
    started = client.requests_made
    reader = _LiveReader(connection, client, now)
    notes = reader.notes
    notes.extend(window_notes)

    entries, complete = client.list_oncalls(
        since=_iso(since),
        until=_iso(until),
        schedule_ids=schedule_ids,
        escalation_policy_ids=policy_ids,
        max_pages=MAX_ONCALL_PAGES,
    )
    if not complete:
        raise DomainError(
            f"More than {MAX_ONCALL_PAGES * 100} on-call entries in this window: narrow it with schedule_ids or "
            "escalation_policy_ids, or ask for a shorter window.",
            field="until",
        )
    shifts = sorted(
        map(_shift, entries),
        key=lambda s: (s.escalation_policy_name.lower(), s.escalation_policy_id, s.escalation_level, s.start or since),
    )

    # --- imported data: names, kinds, levels and targets --------------------------------------------
    imported_schedules = {
        s.pagerduty_id: s
        for s in OncallSchedule.objects.filter(
            connection=connection, pagerduty_id__in=[*schedule_ids, *{s.schedule_id for s in shifts if s.schedule_id}]
        )
    }

    # --- overrides, by id, per schedule --------------------------------------------------------------
    in_answer: dict[str, str] = {}
    for sid in schedule_ids:
        in_answer[sid] = imported_schedules[sid].kind if sid in imported_schedules else "schedule"
    for shift in shifts:
        if shift.schedule_id:
            in_answer.setdefault(shift.schedule_id, shift.schedule_type or "schedule")
    overrides: dict[str, list[Override]] = {}
    unchecked = list(in_answer)[MAX_OVERRIDE_SCHEDULES:]
    for sid in list(in_answer)[:MAX_OVERRIDE_SCHEDULES]:
        found = reader.overrides(sid, in_answer[sid], since, until)
        if found is None:
            notes.append(f"PagerDuty does not know schedule {sid}.")
            continue
        overrides[sid] = found
    if unchecked:
        notes.append(
            f"{len(in_answer)} schedules are in this answer; overrides were read for the first "
            f"{MAX_OVERRIDE_SCHEDULES} only (one request each). Shifts of the other {len(unchecked)} are marked "
            "overrides_checked=false: ask about fewer schedules to see them."
        )
    for shift in shifts:
        if shift.schedule_id in overrides:
            shift.overrides = [
                o
                for o in overrides[shift.schedule_id]
                if o.user_id == shift.user_id and o.overlaps(shift.start, shift.end)
            ]
        elif shift.schedule_id:
            shift.overrides_checked = False

    # --- people: contact methods from the import, next shift from PagerDuty ---------------------------
    people_ids = list(dict.fromkeys(s.user_id for s in shifts if s.user_id))
    users = {u.pagerduty_id: u for u in OncallUser.objects.filter(connection=connection, pagerduty_id__in=people_ids)}
    names = {s.user_id: s.user_name for s in shifts}
    next_shifts, not_looked_up = reader.next_shifts(people_ids, until, schedule_ids, policy_ids)
    always = {s.user_id for s in shifts if s.permanent} - {s.user_id for s in shifts if not s.permanent}
    people = []
    for uid in people_ids:
        user = users.get(uid)
        note = ""
        if uid in always and uid not in next_shifts:
            note = "always on call here: named directly by an escalation policy"
        elif uid in not_looked_up:
            note = "not looked up: too many different hand-off times in one request"
        elif uid not in next_shifts:
            note = "none before PagerDuty's 90-day horizon"
        people.append(
            Person(
                user_id=uid,
                name=(user.name if user else "") or names.get(uid, ""),
                email=user.email if user else "",
                contact_methods=list(user.contact_methods or []) if user else [],
                imported=user is not None,
                next_shift=next_shifts.get(uid),
                next_shift_note=note,
            )
        )
    if any(not p.imported for p in people):
        notes.append("Some people on call are not imported: sync users to see their contact methods.")

    gaps = _gaps(connection, shifts, since, until, schedule_ids, policy_ids, notes)
    snapshot = _snapshot(connection, shifts, since, list(in_answer)[:SNAPSHOT_LIMIT])
    return LiveOnCall(
        connection=connection.name,
        since=since,
        until=until,
        fetched_at=now,
        shifts=shifts,
        people=people,
        gaps=gaps,
        overrides=overrides,
        snapshot=snapshot,
        requests=client.requests_made - started,
        notes=notes,
    )


def oncall_snapshot_only(
    *, connection: PagerDutyConnection, since: datetime | None, until: datetime | None, schedule_ids=(), reason: str
) -> dict:
    """What we can still say when PagerDuty does not answer: the imported answer, marked as such.

    Who is on call is asked for in an incident; an SRE is better served by the last sync (with its
    age and the reason PagerDuty failed) than by an error page."""
    now = timezone.now()
    notes = [f"PagerDuty did not answer ({reason}); showing the imported snapshot from the last sync only."]
    since, until = live_window_clean(since=since, until=until, now=now, notes=notes)
    ids = live_ids_clean(schedule_ids, field_name="schedule_ids") or list(
        OncallSchedule.objects.filter(connection=connection, deleted_upstream_at__isnull=True)
        .order_by("name")
        .values_list("pagerduty_id", flat=True)[:SNAPSHOT_LIMIT]
    )
    return {
        "source": "snapshot",
        "connection": connection.name,
        "since": _iso(since),
        "until": _iso(until),
        "fetched_at": None,
        "oncalls": [],
        "people": [],
        "gaps": [],
        "overrides": {},
        "snapshot": _snapshot(connection, [], since, list(ids)[:SNAPSHOT_LIMIT]),
        "requests": 0,
        "notes": notes,
    }


def _gaps(connection, shifts, since, until, schedule_ids, policy_ids, notes) -> list[Gap]:
    """Schedules and escalation levels in scope with nobody on call for part of the window."""
    live_policies = OncallEscalationPolicy.objects.filter(connection=connection, deleted_upstream_at__isnull=True)
    if policy_ids:
        scope_policies = list(dict.fromkeys(policy_ids))
    elif schedule_ids:
        scope_policies = []
    else:
        scope_policies = list(
            dict.fromkeys(
                [*live_policies.values_list("pagerduty_id", flat=True), *(s.escalation_policy_id for s in shifts)]
            )
        )
    policies = {p.pagerduty_id: p for p in live_policies.filter(pagerduty_id__in=scope_policies)}
    rules = EscalationRule.objects.filter(policy__in=policies.values()).select_related("policy")
    levels: dict[tuple[str, int], str] = {}
    for rule in rules:
        levels[(rule.policy.pagerduty_id, rule.position + 1)] = rule.policy.name
    for shift in shifts:
        if shift.escalation_policy_id in scope_policies:
            levels.setdefault((shift.escalation_policy_id, shift.escalation_level), shift.escalation_policy_name)
    missing_policies = [pid for pid in scope_policies if pid not in policies]
    if missing_policies:
        notes.append(
            f"{len(missing_policies)} escalation policies are not imported, so a level of theirs with nobody at all "
            "cannot be seen here: sync escalation policies."
        )
    # Schedules PagerDuty reports on-call for: targets of some escalation policy (or seen in the answer).
    targeted = set(
        EscalationTarget.objects.filter(
            rule__policy__connection=connection, target_type__in=_SCHEDULE_TARGETS
        ).values_list("target_pagerduty_id", flat=True)
    )
    scope_schedules = list(schedule_ids)
    if not schedule_ids:
        scope_targets = EscalationTarget.objects.filter(
            rule__policy__pagerduty_id__in=scope_policies,
            rule__policy__connection=connection,
            target_type__in=_SCHEDULE_TARGETS,
        ).values_list("target_pagerduty_id", flat=True)
        scope_schedules = list(dict.fromkeys([*scope_targets, *(s.schedule_id for s in shifts if s.schedule_id)]))
    seen_in_answer = {s.schedule_id for s in shifts if s.schedule_id}
    by_schedule: dict[str, list] = defaultdict(list)
    by_level: dict[tuple[str, int], list] = defaultdict(list)
    schedule_names: dict[str, str] = {}
    for shift in shifts:
        by_level[(shift.escalation_policy_id, shift.escalation_level)].append((shift.start, shift.end))
        if shift.schedule_id:
            by_schedule[shift.schedule_id].append((shift.start, shift.end))
            schedule_names[shift.schedule_id] = shift.schedule_name
    known_names = dict(
        OncallSchedule.objects.filter(connection=connection, pagerduty_id__in=scope_schedules).values_list(
            "pagerduty_id", "name"
        )
    )
    gaps = []
    for sid in scope_schedules:
        if sid not in targeted and sid not in seen_in_answer:
            notes.append(
                f"Schedule {sid} is in no escalation policy we know of: PagerDuty reports on-call only through "
                "escalation policies, so its coverage is not checked here."
            )
            continue
        holes = _uncovered(by_schedule.get(sid, []), since, until)
        if holes:
            name = schedule_names.get(sid) or known_names.get(sid, "")
            gaps.append(Gap(kind="schedule", intervals=holes, schedule_id=sid, schedule_name=name))
    for (pid, level), name in sorted(levels.items(), key=lambda kv: (kv[1].lower(), kv[0])):
        holes = _uncovered(by_level.get((pid, level), []), since, until)
        if holes:
            gaps.append(
                Gap(
                    kind="escalation_level",
                    intervals=holes,
                    escalation_policy_id=pid,
                    escalation_policy_name=name,
                    escalation_level=level,
                )
            )
    return gaps


def _snapshot(connection, shifts: list[LiveShift], at: datetime, schedule_ids: list[str]) -> list[dict]:
    """The imported answer for the same schedules at `since`, and whether it agrees with PagerDuty's."""
    schedules = {
        s.pagerduty_id: s for s in OncallSchedule.objects.filter(connection=connection, pagerduty_id__in=schedule_ids)
    }
    entries = ScheduleEntry.objects.filter(
        schedule__in=schedules.values(), kind=ScheduleEntry.Kind.FINAL, start__lte=at, end__gt=at
    ).values_list("schedule__pagerduty_id", "user_pagerduty_id")
    imported: dict[str, set[str]] = defaultdict(set)
    for sid, uid in entries:
        imported[sid].add(uid)
    live: dict[str, set[str]] = defaultdict(set)
    for shift in shifts:
        if shift.schedule_id and shift.covers(at):
            live[shift.schedule_id].add(shift.user_id)
    out = []
    for sid in schedule_ids:
        schedule = schedules.get(sid)
        if schedule is None:
            out.append({"schedule": {"id": sid, "name": None}, "imported": False, "note": "not imported"})
            continue
        inside = schedule.rendered_since is not None and schedule.rendered_since <= at < schedule.rendered_until
        out.append(
            {
                "schedule": {"id": sid, "name": schedule.name},
                "imported": True,
                "synced_at": _iso(schedule.synced_at),
                "on_call": sorted(imported[sid]) if inside else None,
                "live_on_call": sorted(live[sid]),
                "agrees": (imported[sid] == live[sid]) if inside else None,
                "note": "" if inside else "outside the synced window: sync again to compare",
            }
        )
    return out
