"""Snapshot + our tables → a plan: what an apply would create, update, leave alone and flag as gone.

Read-only. The plan is plain JSON (it is stored on the SyncRun and rendered by the wizard) and holds
every fetched record, so an apply writes exactly what was reviewed without asking PagerDuty again.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from apps.oncall import records as rec
from apps.oncall.importer import (
    ESCALATION_POLICIES,
    RESOURCE_LABELS,
    RESOURCE_TYPES,
    SCHEDULES,
    SERVICES,
    TEAMS,
    USERS,
    Snapshot,
)
from apps.oncall.models import (
    EscalationTarget,
    OncallEscalationPolicy,
    OncallSchedule,
    OncallService,
    OncallTeam,
    OncallUser,
)
from apps.pagerduty.models import PagerDutyConnection

PLAN_VERSION = 1
MODELS = {
    TEAMS: OncallTeam,
    USERS: OncallUser,
    SCHEDULES: OncallSchedule,
    ESCALATION_POLICIES: OncallEscalationPolicy,
    SERVICES: OncallService,
}
FROM_DB = {
    TEAMS: rec.team_from_db,
    USERS: rec.user_from_db,
    SCHEDULES: rec.schedule_from_db,
    ESCALATION_POLICIES: rec.escalation_policy_from_db,
    SERVICES: rec.service_from_db,
}
READ_CHUNK = 2000
# The plan lists this many changed objects per type in full; counts are always exact.
MAX_LISTED = 5000


def prefetch_for(resource: str, *, rendered: bool) -> list[str]:
    if resource == USERS:
        return ["memberships"]
    if resource == SCHEDULES:
        return ["layers__members", "entries"] if rendered else ["layers__members"]
    if resource == ESCALATION_POLICIES:
        return ["rules__targets"]
    return []


def existing_rows(*, connection: PagerDutyConnection, resource: str, ids=None, rendered: bool = False):
    """Our rows of one type, with what their records need, read in chunks (queries grow with rows/2000)."""
    qs = MODELS[resource].objects.filter(connection=connection)
    if ids is not None:
        qs = qs.filter(pagerduty_id__in=list(ids))
    qs = qs.prefetch_related(*prefetch_for(resource, rendered=rendered)).order_by("pk")
    return qs.iterator(chunk_size=READ_CHUNK)


def _upstream_records(snapshot: Snapshot, resource: str) -> tuple[list[dict], list[dict]]:
    objects = snapshot.objects.get(resource) or []
    unsupported: list[dict] = []
    if resource == TEAMS:
        out = [rec.team_from_api(o) for o in objects]
    elif resource == USERS:
        out = [rec.user_from_api(o, teams_known=snapshot.teams_ability) for o in objects]
    elif resource == SCHEDULES:
        opts = snapshot.options
        out = [rec.schedule_from_api(o, since=opts.since, until=opts.until) for o in objects]
    elif resource == ESCALATION_POLICIES:
        out = []
        for o in objects:
            record, dropped = rec.escalation_policy_from_api(o)
            out.append(record)
            unsupported.extend(dropped)
    else:
        out = [rec.service_from_api(o) for o in objects]
    return out, unsupported


def _settle_user(record: dict, old: dict | None, roles: dict | None) -> None:
    """Fill in what this fetch did not tell: team roles and, without full contact methods, the ones we hold."""
    if record["contact_methods"] is None:
        record["contact_methods"] = (old or {}).get("contact_methods") or []
    _settle_user_teams(record, old, roles)


def _settle_user_teams(record: dict, old: dict | None, roles: dict | None) -> None:
    """Fill in team roles: imported ones when asked for, else the ones we already hold."""
    old_roles = {t["id"]: t["role"] for t in (old or {}).get("teams") or []}
    if record["teams"] is None:
        # No teams ability: membership is unknown, so keep whatever we hold.
        record["teams"] = (old or {}).get("teams") or []
        return
    for team in record["teams"]:
        known = roles.get((team["id"], record["id"])) if roles is not None else None
        team["role"] = known if known is not None else old_roles.get(team["id"], "")


def plan_build(*, connection: PagerDutyConnection, snapshot: Snapshot, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    options = snapshot.options
    plan: dict = {
        "version": PLAN_VERSION,
        "generated_at": rec.iso(now),
        "connection": {"id": connection.pk, "name": connection.name, "api_url": connection.api_url},
        "options": {
            "resources": [r for r in RESOURCE_TYPES if r in options.resources],
            "team_ids": list(options.team_ids),
            "query": options.query,
            "team_roles": options.team_roles,
        },
        "window": {"since": rec.iso(options.since), "until": rec.iso(options.until)},
        "teams_ability": snapshot.teams_ability,
        "v3_listed": snapshot.v3_listed,
        "resources": {},
        "records": {},
        "warnings": list(snapshot.warnings),
        "fetch": snapshot.fetch_report(),
    }
    fetched_ids: dict[str, set[str]] = {}
    for resource in RESOURCE_TYPES:
        if resource not in snapshot.objects:
            continue
        upstream, unsupported = _upstream_records(snapshot, resource)
        fetched_ids[resource] = {r["id"] for r in upstream}
        plan["records"][resource] = upstream
        plan["resources"][resource] = _plan_resource(connection, snapshot, resource, upstream)
        if unsupported:
            plan["warnings"].append(
                {
                    "code": "unsupported_target",
                    "resource": resource,
                    "message": f"{len(unsupported)} escalation targets are of a type we cannot represent "
                    f"({', '.join(sorted({str(u['target'].get('type')) for u in unsupported}))}); they are left out.",
                    "ids": sorted({u["policy"] for u in unsupported}),
                }
            )
    plan["warnings"].extend(_content_warnings(connection, plan, fetched_ids))
    return plan


def _plan_resource(connection, snapshot: Snapshot, resource: str, upstream: list[dict]) -> dict:
    complete = snapshot.complete.get(resource, True)
    filtered = snapshot.options.filtered
    # Absence means "gone" only when we saw the whole list: not filtered, nothing out of reach.
    gone_checked = complete and not filtered and (resource != TEAMS or snapshot.teams_ability)
    # v3 schedules come from another list: absence means "gone" only when that list was read whole too.
    v3_gone_checked = gone_checked and snapshot.v3_listed is True
    by_id = {r["id"]: r for r in upstream}
    create, update, gone = [], [], []
    unchanged = 0
    seen: set[str] = set()
    for row in existing_rows(connection=connection, resource=resource, rendered=False):
        seen.add(row.pagerduty_id)
        old = rec.schedule_from_db(row, rendered=False) if resource == SCHEDULES else FROM_DB[resource](row)
        new = by_id.get(row.pagerduty_id)
        if new is None:
            is_v3 = resource == SCHEDULES and row.kind == OncallSchedule.Kind.V3
            if v3_gone_checked if is_v3 else gone_checked:
                gone.append(
                    {
                        "id": row.pagerduty_id,
                        "name": row.name,
                        "flagged_at": rec.iso(row.deleted_upstream_at),
                    }
                )
            continue
        if resource == USERS:
            _settle_user(new, old, snapshot.team_roles)
        changes = rec.diff(old, new)
        if row.deleted_upstream_at is not None:
            changes.insert(0, {"field": "deleted_upstream", "old": True, "new": False})
        if changes:
            update.append({"id": row.pagerduty_id, "name": new["name"], "changes": changes})
        else:
            unchanged += 1
    for record in upstream:
        if record["id"] not in seen:
            if resource == USERS:
                _settle_user(record, None, snapshot.team_roles)
            create.append({"id": record["id"], "name": record["name"]})
    return {
        "label": RESOURCE_LABELS[resource],
        "complete": complete,
        "gone_checked": gone_checked,
        "counts": {
            "fetched": len(upstream),
            "create": len(create),
            "update": len(update),
            "unchanged": unchanged,
            "gone": len(gone),
        },
        "create": create[:MAX_LISTED],
        "update": update[:MAX_LISTED],
        # Never cut: an apply with delete_missing acts on exactly this list.
        "gone": gone,
        "truncated_lists": max(len(create), len(update)) > MAX_LISTED,
    }


def _content_warnings(connection, plan: dict, fetched_ids: dict[str, set[str]]) -> list[dict]:
    warnings = []
    records = plan["records"]
    users = records.get(USERS) or []
    no_email = [u["id"] for u in users if not u["email"]]
    if no_email:
        warnings.append(
            {
                "code": "user_without_email",
                "resource": USERS,
                "message": f"{len(no_email)} users have no email: runbook steps cannot find them by email.",
                "ids": sorted(no_email),
            }
        )
    v3_targets: dict[str, set[str]] = {}
    for p in records.get(ESCALATION_POLICIES) or []:
        for rule in p["rules"]:
            for t in rule["targets"]:
                if t["type"] == EscalationTarget.Type.SCHEDULE_V3:
                    v3_targets.setdefault(t["id"], set()).add(p["id"])
    if v3_targets:
        held = fetched_ids.get(SCHEDULES, set()) | set(
            OncallSchedule.objects.filter(connection=connection, pagerduty_id__in=list(v3_targets)).values_list(
                "pagerduty_id", flat=True
            )
        )
        missing = sorted(set(v3_targets) - held)
        if missing:
            if SCHEDULES not in fetched_ids:
                why = "schedules were not part of this import"
            elif plan.get("v3_listed") is False:
                why = "PagerDuty would not list v3 schedules for this key (see the warning above)"
            else:
                why = "GET /v3/schedules did not return them (PagerDuty leaves out schedules this key may not read)"
            policies = sorted({pid for sid in missing for pid in v3_targets[sid]})
            warnings.append(
                {
                    "code": "schedule_v3_target",
                    "resource": ESCALATION_POLICIES,
                    "message": f"{len(missing)} v3 schedules targeted by {len(policies)} escalation policies are not "
                    f"imported: {why}. The targets keep their ids; who is on call through them is not known from "
                    f"the imported data (the live view asks PagerDuty). Schedules: {', '.join(missing[:20])}.",
                    "ids": policies,
                }
            )
    referenced_users = {uid for s in records.get(SCHEDULES) or [] for layer in s["layers"] for uid in layer["users"]}
    referenced_users |= {
        uid
        for s in records.get(SCHEDULES) or []
        for rotation in s.get("rotations") or []
        for event in rotation["events"]
        for uid in event["assignment"]["members"]
        if uid
    }
    referenced_users |= {
        t["id"]
        for p in records.get(ESCALATION_POLICIES) or []
        for rule in p["rules"]
        for t in rule["targets"]
        if t["type"] == EscalationTarget.Type.USER
    }
    if referenced_users:
        known = fetched_ids.get(USERS, set()) | set(
            OncallUser.objects.filter(connection=connection, pagerduty_id__in=list(referenced_users)).values_list(
                "pagerduty_id", flat=True
            )
        )
        missing = referenced_users - known
        if missing:
            warnings.append(
                {
                    "code": "unresolved_reference",
                    "resource": USERS,
                    "message": f"{len(missing)} users referenced by schedules or escalation policies are neither in "
                    "this import nor already imported; they are kept as PagerDuty ids and linked when imported.",
                    "ids": sorted(missing),
                }
            )
    if plan["options"]["team_ids"] or plan["options"]["query"]:
        warnings.append(
            {
                "code": "filtered",
                "resource": "",
                "message": "The import is filtered by team or name, so objects missing from it are not flagged as "
                "gone upstream.",
                "ids": [],
            }
        )
    return warnings


def plan_summary(plan: dict) -> dict:
    """Counts per type for lists and the command line."""
    return {resource: section["counts"] for resource, section in plan["resources"].items()}
