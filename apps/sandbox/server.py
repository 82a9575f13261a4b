"""HTTP front of the PagerDuty stand-in: REST API, Events API v2 and the `/_sandbox/` admin API.

One request goes: admin? → injected latency → scripted response (unless `after`) → random fault →
Events API, or REST: auth (401) → rate limit (429) → headers (406/415) → OpenAPI contract (400)
→ handler → scripted `after` replacement, or a random lost answer → recorded in `state.requests` → sent.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import schedules as sched
from .contract import announce_skip
from .state import (
    ADMIN_EMAIL,
    ADMIN_USER_ID,
    API_BASE,
    CHECKOUT_ESCALATION_POLICY_ID,
    CHECKOUT_INTEGRATION_KEY,
    CHECKOUT_SCHEDULE_ID,
    CHECKOUT_SERVICE_ID,
    PRIORITY_IDS,
    RESPONDER_EMAIL,
    RESPONDER_USER_ID,
    SRE_TEAM_ID,
    ApiError,
    Faults,
    SandboxState,
    default_error_body,
    invalid,
    iso,
    make_ref,
    missing_ability,
    not_found,
    parse_window_time,
    public,
    validate_event,
)
from .webhooks import hub_for

MAX_LIMIT = 100
DEFAULT_LIMIT = 25
MAX_OFFSET_PLUS_LIMIT = 10000
INCIDENT_DEFAULT_WINDOW = timedelta(days=30)
INCIDENT_MAX_WINDOW = timedelta(days=183)
ONCALL_HORIZON = timedelta(days=90)
SCHEDULE_DEFAULT_WINDOW = timedelta(days=14)
PD_MEDIA_TYPE = "application/vnd.pagerduty+json"

WELL_KNOWN = {
    "admin_user_id": ADMIN_USER_ID,
    "admin_email": ADMIN_EMAIL,
    "responder_user_id": RESPONDER_USER_ID,
    "responder_email": RESPONDER_EMAIL,
    "team_id": SRE_TEAM_ID,
    "schedule_id": CHECKOUT_SCHEDULE_ID,
    "escalation_policy_id": CHECKOUT_ESCALATION_POLICY_ID,
    "service_id": CHECKOUT_SERVICE_ID,
    "integration_key": CHECKOUT_INTEGRATION_KEY,
    "priority_ids": PRIORITY_IDS,
}


class Headers(dict):
    """Request headers as sent (original spelling), looked up case-insensitively."""

    def _key(self, name: str) -> str | None:
        if dict.__contains__(self, name):
            return name
        lowered = name.lower()
        for key in self.keys():
            if key.lower() == lowered:
                return key
        return None

    def __getitem__(self, name: str) -> str:
        key = self._key(name)
        if key is None:
            raise KeyError(name)
        return dict.__getitem__(self, key)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) is not None

    def get(self, name: str, default: Any = None) -> Any:
        key = self._key(name)
        return default if key is None else dict.__getitem__(self, key)


class Request:
    def __init__(self, method: str, path: str, query: dict[str, list[str]], headers: Headers, raw: bytes):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.raw = raw
        self.has_body = bool(raw.strip())
        self.json: Any = None
        self.json_error: str | None = None
        if self.has_body:
            try:
                self.json = json.loads(raw)
            except ValueError as exc:
                self.json_error = str(exc)

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def qlist(self, name: str) -> list[str]:
        return list(self.query.get(name, []))

    def qset(self, name: str) -> set[str]:
        return set(self.qlist(name))


class Response:
    def __init__(self, status: int, body: Any = None, headers: dict | None = None, *, drop: bool = False):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.drop = drop


# -- query helpers -------------------------------------------------------------------------------


def int_param(req: Request, name: str, default: int | None) -> int | None:
    value = req.q(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise invalid(f"{name} must be an integer ({value!r} given)") from None


def bool_param(req: Request, name: str) -> bool:
    value = req.q(name)
    if value in (None, "", "false"):
        return False
    if value == "true":
        return True
    raise invalid(f"{name} must be true or false ({value!r} given)")


def includes(req: Request, allowed: tuple[str, ...]) -> set[str]:
    values = req.qset("include[]")
    unknown = values - set(allowed)
    if unknown:
        raise invalid(f"include[] values {sorted(unknown)} are not supported here; allowed: {list(allowed)}")
    return values


def zone_param(req: Request, default: str | None = "UTC"):
    name = req.q("time_zone") or default
    try:
        return sched.get_zone(name)
    except ValueError:
        raise invalid(f"time_zone {name!r} is not a valid time zone") from None


def team_filter(state: SandboxState, req: Request) -> set[str]:
    team_ids = req.qset("team_ids[]")
    if team_ids and not state.teams_ability:
        raise missing_ability("teams")
    return team_ids


def paginate(
    req: Request,
    key: str,
    items: list,
    render: Callable[[Any], Any] = public,
    *,
    default_limit: int = DEFAULT_LIMIT,
    max_limit: int = MAX_LIMIT,
) -> dict:
    """Classic pagination: limit (default 25, clamped to 100), offset, more, total (only with total=true)."""
    limit = int_param(req, "limit", default_limit)
    offset = int_param(req, "offset", 0)
    if limit < 1:
        raise invalid("limit must be a positive integer")
    if offset < 0:
        raise invalid("offset must not be negative")
    limit = min(limit, max_limit)
    if offset + limit > MAX_OFFSET_PLUS_LIMIT:
        raise invalid(
            f"Offset + limit must not exceed {MAX_OFFSET_PLUS_LIMIT} (offset {offset} + limit {limit} = "
            f"{offset + limit}); classic pagination stops there, narrow the query with filters instead"
        )
    page = items[offset : offset + limit]
    return {
        key: [render(item) for item in page],
        "limit": limit,
        "offset": offset,
        "more": offset + len(page) < len(items),
        "total": len(items) if bool_param(req, "total") else None,
    }


def name_query(req: Request, obj: dict) -> bool:
    query = req.q("query")
    return not query or query.lower() in obj["name"].lower()


def in_teams(obj: dict, team_ids: set[str]) -> bool:
    return not team_ids or any(t["id"] in team_ids for t in obj.get("teams", []))


# -- REST handlers -------------------------------------------------------------------------------


def list_incidents(state: SandboxState, req: Request) -> tuple[int, dict]:
    team_ids = team_filter(state, req)
    statuses = req.qset("statuses[]")
    bad = statuses - {"triggered", "acknowledged", "resolved"}
    if bad:
        raise invalid(f"statuses[] values {sorted(bad)} are not valid; use triggered, acknowledged, resolved")
    urgencies = req.qset("urgencies[]")
    if urgencies - {"high", "low"}:
        raise invalid("urgencies[] values must be high or low")
    service_ids = req.qset("service_ids[]")
    user_ids = req.qset("user_ids[]")
    incident_key = req.q("incident_key")
    since = until = None
    if req.q("date_range") not in (None, "all"):
        raise invalid("date_range must be 'all'")
    if req.q("date_range") != "all":
        now = state.now()
        until = parse_window_time(req.q("until"), "until") if req.q("until") else None
        since = parse_window_time(req.q("since"), "since") if req.q("since") else None
        if since is None:
            since = (until or now) - INCIDENT_DEFAULT_WINDOW
        if until is None:
            until = max(now, since) if req.q("since") else now
        if until < since:
            raise invalid("until must not be before since")
        if until - since > INCIDENT_MAX_WINDOW:
            raise invalid("The date range (since to until) must not exceed 6 months; use date_range=all")
    sort_keys = []
    for part in filter(None, (req.q("sort_by") or "").split(",")):
        field, _, direction = part.partition(":")
        if field not in ("incident_number", "created_at", "resolved_at", "urgency") or direction not in (
            "",
            "asc",
            "desc",
        ):
            raise invalid(
                f"sort_by {part!r} is not valid; use incident_number|created_at|resolved_at|urgency[:asc|desc]"
            )
        sort_keys.append((field, direction == "desc"))
    if len(sort_keys) > 2:
        raise invalid("sort_by takes at most two fields")
    with state.lock:
        items = []
        for inc in state.incidents.values():
            # Like PagerDuty, an empty incident_key filters nothing (a classic dedup-lookup bug).
            if incident_key and inc["incident_key"] != incident_key:
                continue
            if statuses and inc["status"] not in statuses:
                continue
            if urgencies and inc["urgency"] not in urgencies:
                continue
            if service_ids and inc["service"]["id"] not in service_ids:
                continue
            if team_ids and not in_teams(inc, team_ids):
                continue
            if user_ids and not any(a["assignee"]["id"] in user_ids for a in inc["assignments"]):
                continue
            if since is not None and not (since.timestamp() <= inc["_created"] <= until.timestamp()):
                continue
            items.append(inc)
        items.sort(key=lambda i: (i["_created"], i["incident_number"]))
        sort_values = {
            "incident_number": lambda i: i["incident_number"],
            "created_at": lambda i: i["_created"],
            "resolved_at": lambda i: (i["_resolved"] is None, i["_resolved"] or i["_created"]),
            "urgency": lambda i: i["urgency"] == "low",
        }
        for field, descending in reversed(sort_keys):
            items.sort(key=sort_values[field], reverse=descending)
        return 200, paginate(req, "incidents", items)


def create_incident(state: SandboxState, req: Request) -> tuple[int, dict]:
    requester = state.requester(req.headers.get("From"))
    incident = state.create_incident(req.json, requester)
    hub_for(state).emit("incident.triggered", incident, state.user_ref(requester["id"]))
    return 201, {"incident": public(incident)}


def bulk_update_incidents(state: SandboxState, req: Request) -> tuple[int, dict]:
    requester = state.requester(req.headers.get("From"))
    with state.lock:
        before = {i["id"]: i["status"] for i in state.incidents.values()}
        incidents = state.bulk_update(req.json, requester)
        for incident in incidents:
            emit_status_change(state, incident, before.get(incident["id"]), requester)
        return 200, {
            "incidents": [public(i) for i in incidents],
            "limit": len(incidents),
            "offset": 0,
            "more": False,
            "total": None,
        }


def get_incident(state: SandboxState, req: Request, incident_id: str) -> tuple[int, dict]:
    with state.lock:
        return 200, {"incident": public(state.get_incident(incident_id))}


def update_incident(state: SandboxState, req: Request, incident_id: str) -> tuple[int, dict]:
    requester = state.requester(req.headers.get("From"))
    data = req.json.get("incident") if isinstance(req.json, dict) else None
    if data is None:
        raise invalid('The request body must be {"incident": {"type": "incident_reference", ...}}')
    with state.lock:
        before = state.get_incident(incident_id)["status"]
        incident = state.update_incident(incident_id, data, requester)
        emit_status_change(state, incident, before, requester)
        return 200, {"incident": public(incident)}


def emit_status_change(state: SandboxState, incident: dict, before: str | None, requester: dict) -> None:
    """The webhook PagerDuty sends when an incident's status changed."""
    after = incident["status"]
    if after == before:
        return
    event_type = {
        "acknowledged": "incident.acknowledged",
        "resolved": "incident.resolved",
        "triggered": "incident.reopened" if before == "resolved" else "incident.unacknowledged",
    }[after]
    hub_for(state).emit(event_type, incident, state.user_ref(requester["id"]))


def create_responder_request(state: SandboxState, req: Request, incident_id: str) -> tuple[int, dict]:
    requester = state.requester(req.headers.get("From"))
    with state.lock:
        state.get_incident(incident_id)
        return 200, {"responder_request": state.add_responder_request(incident_id, req.json, requester)}


def create_note(state: SandboxState, req: Request, incident_id: str) -> tuple[int, dict]:
    requester = state.requester(req.headers.get("From"))
    with state.lock:
        incident = state.get_incident(incident_id)
        note = state.add_note(incident_id, req.json, requester)
        emit_note(state, incident, note, requester)
        return 200, {"note": note}


def emit_note(state: SandboxState, incident: dict, note: dict, requester: dict) -> None:
    data = {
        "id": note["id"],
        "type": "incident_note",
        "content": note["content"],
        "trimmed": False,
        "incident": {"id": incident["id"], "type": "incident_reference", "html_url": incident.get("html_url")},
    }
    hub_for(state).emit("incident.annotated", incident, state.user_ref(requester["id"]), data)


def list_log_entries(state: SandboxState, req: Request, incident_id: str) -> tuple[int, dict]:
    """GET /incidents/{id}/log_entries: newest first, within since/until (default: the last day —
    PagerDuty's default window is short too, so callers page by explicit windows); the channel
    only with include[]=channels."""
    include = includes(req, ("incidents", "services", "channels", "teams"))
    now = state.now()
    until = parse_window_time(req.q("until"), "until") if req.q("until") else now
    since = parse_window_time(req.q("since"), "since") if req.q("since") else until - timedelta(days=1)
    if until < since:
        raise invalid("until must not be before since")
    with state.lock:
        incident = state.get_incident(incident_id)
        entries = [
            e for e in incident.get("_log", []) if since <= parse_window_time(e["created_at"], "created_at") <= until
        ]
    entries.reverse()

    def render(entry: dict) -> dict:
        shown = dict(entry)
        if "channels" not in include:
            shown["channel"] = {"type": entry["channel"]["type"]}
        return shown

    return 200, paginate(req, "log_entries", entries, render)


def list_notes(state: SandboxState, req: Request, incident_id: str) -> tuple[int, dict]:
    with state.lock:
        state.get_incident(incident_id)
        return 200, {"notes": list(state.notes.get(incident_id, []))}


USER_INCLUDES = ("contact_methods", "notification_rules", "teams", "subdomains", "calendar_urls")


def render_user(state: SandboxState, user: dict, include: set[str]) -> dict:
    out = public(user)
    if "contact_methods" in include:
        out["contact_methods"] = [state.contact_methods[r["id"]] for r in user["contact_methods"]]
    if "notification_rules" in include:
        out["notification_rules"] = [state.notification_rules[r["id"]] for r in user["notification_rules"]]
    if "teams" in include:
        out["teams"] = [public(state.teams[r["id"]]) for r in user["teams"]]
    return out


def list_users(state: SandboxState, req: Request) -> tuple[int, dict]:
    include = includes(req, USER_INCLUDES[:4])
    team_ids = team_filter(state, req)
    query = (req.q("query") or "").lower()
    with state.lock:
        if team_ids:
            # Walk the teams' members rather than every user: big accounts are paged team by team.
            member_ids = {m["user"]["id"] for t in team_ids for m in state.team_members.get(t, [])}
            candidates = [state.users[uid] for uid in state.users_in_order(member_ids)]
        else:
            candidates = state.users.values()
        items = [u for u in candidates if not query or query in u["name"].lower() or query in u["email"].lower()]
        return 200, paginate(req, "users", items, lambda u: render_user(state, u, include))


def get_user(state: SandboxState, req: Request, user_id: str) -> tuple[int, dict]:
    include = includes(req, USER_INCLUDES)
    with state.lock:
        user = state.users.get(user_id)
        if user is None:
            raise not_found(f"User {user_id} not found")
        return 200, {"user": render_user(state, user, include)}


def get_current_user(state: SandboxState, req: Request) -> tuple[int, dict]:
    raise invalid(
        "Because this request was made using an account-level access token, we were unable to determine "
        "the user's identity. Please use a user-level token."
    )


def require_teams(state: SandboxState) -> None:
    if not state.teams_ability:
        raise missing_ability("teams")


def list_teams(state: SandboxState, req: Request) -> tuple[int, dict]:
    require_teams(state)
    with state.lock:
        return 200, paginate(req, "teams", [t for t in state.teams.values() if name_query(req, t)])


def get_team(state: SandboxState, req: Request, team_id: str) -> tuple[int, dict]:
    require_teams(state)
    with state.lock:
        team = state.teams.get(team_id)
        if team is None:
            raise not_found(f"Team {team_id} not found")
        return 200, {"team": public(team)}


def list_team_members(state: SandboxState, req: Request, team_id: str) -> tuple[int, dict]:
    require_teams(state)
    include = includes(req, ("users",))
    with state.lock:
        if team_id not in state.teams:
            raise not_found(f"Team {team_id} not found")

        def render(member: dict) -> dict:
            if "users" in include:
                return {"user": render_user(state, state.users[member["user"]["id"]], set()), "role": member["role"]}
            return dict(member)

        return 200, paginate(req, "members", state.team_members[team_id], render)


SCHEDULE_SUMMARY_KEYS = (
    "id",
    "type",
    "summary",
    "self",
    "html_url",
    "name",
    "time_zone",
    "description",
    "escalation_policies",
    "users",
    "teams",
)


def list_schedules(state: SandboxState, req: Request) -> tuple[int, dict]:
    include = includes(req, ("schedule_layers", "overrides_subschedule", "final_schedule"))
    team_ids = team_filter(state, req)
    zone_param(req)

    def render(schedule: dict) -> dict:
        out = {k: schedule[k] for k in SCHEDULE_SUMMARY_KEYS}
        if "schedule_layers" in include:
            # The list never renders entries; fetch each schedule with since/until for those.
            out["schedule_layers"] = [public(layer) for layer in schedule["schedule_layers"]]
        return out

    with state.lock:
        items = [s for s in state.schedules.values() if name_query(req, s) and in_teams(s, team_ids)]
        return 200, paginate(req, "schedules", items, render)


def get_schedule(state: SandboxState, req: Request, schedule_id: str) -> tuple[int, dict]:
    with state.lock:
        schedule = state.schedules.get(schedule_id)
        if schedule is None:
            raise not_found(f"Schedule {schedule_id} not found")
        out_tz = zone_param(req, schedule["time_zone"])
        since = parse_window_time(req.q("since"), "since") if req.q("since") else None
        until = parse_window_time(req.q("until"), "until") if req.q("until") else None
        if since is not None and until is None:
            until = since + SCHEDULE_DEFAULT_WINDOW
        elif until is not None and since is None:
            since = until - SCHEDULE_DEFAULT_WINDOW
        if since is not None and until < since:
            raise invalid("until must not be before since")
        out = {k: schedule[k] for k in SCHEDULE_SUMMARY_KEYS}
        out.update(sched.render_schedule(schedule, since, until, out_tz, overflow=bool_param(req, "overflow")))
        return 200, {"schedule": out}


def _window(req: Request, *, required: bool) -> tuple:
    since = parse_window_time(req.q("since"), "since") if req.q("since") else None
    until = parse_window_time(req.q("until"), "until") if req.q("until") else None
    if required and (since is None or until is None):
        raise invalid("since and until are required")
    if since is not None and until is not None and until < since:
        raise invalid("until must not be before since")
    return since, until


def list_schedule_overrides(state: SandboxState, req: Request, schedule_id: str) -> tuple[int, dict]:
    """GET /schedules/{id}/overrides: overrides overlapping [since, until], cut at the bounds unless overflow.

    The spec documents the answer as 201; PagerDuty answers a list with 200, and so does the stand-in.
    """
    with state.lock:
        schedule = state.schedules.get(schedule_id)
        if schedule is None:
            raise not_found(f"Schedule {schedule_id} not found")
        since, until = _window(req, required=True)
        tz = sched.get_zone(schedule.get("time_zone"))
        overflow, editable = bool_param(req, "overflow"), bool_param(req, "editable")
        now = state.now()
        out = []
        for override in sorted(schedule["_overrides"], key=lambda o: (sched.parse_time(o["start"]), o["id"])):
            start, end = sched.parse_time(override["start"]), sched.parse_time(override["end"])
            if not (start < until and end > since):
                continue
            if editable:
                # Only overrides that have not started can still be changed; PagerDuty then sends only ids.
                if start > now:
                    out.append({"id": override["id"]})
                continue
            if not overflow:
                start, end = max(start, since), min(end, until)
            out.append(
                {
                    "id": override["id"],
                    "start": sched.format_time(start, tz),
                    "end": sched.format_time(end, tz),
                    "user": dict(override["user"]),
                }
            )
        return 200, {"overrides": out}


# PagerDuty takes several overrides in one request; a bound keeps one request's work small.
MAX_OVERRIDES_PER_REQUEST = 100


def create_schedule_overrides(state: SandboxState, req: Request, schedule_id: str) -> tuple[int, list]:
    """POST /schedules/{id}/overrides: 201 with one `{status, errors?, override}` per override asked for.

    Each override is judged on its own, as PagerDuty does: a bad one gets status 400 with errors
    while the others are created. A malformed request as a whole answers 400."""
    state.requester(req.headers.get("From"))
    body = req.json
    items = body.get("overrides") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise invalid('The request body must be {"overrides": [{"start", "end", "user", "time_zone"}, ...]}')
    if len(items) > MAX_OVERRIDES_PER_REQUEST:
        raise invalid(f"At most {MAX_OVERRIDES_PER_REQUEST} overrides per request ({len(items)} given)")
    with state.lock:
        schedule = state.schedules.get(schedule_id)
        if schedule is None:
            raise not_found(f"Schedule {schedule_id} not found")
        tz = sched.get_zone(schedule.get("time_zone"))
        results = []
        for item in items:
            errors, start, end, user_id = _override_problems(state, item)
            shown = {k: item.get(k) for k in ("start", "end") if isinstance(item, dict)}
            if isinstance(item, dict) and isinstance(item.get("user"), dict):
                shown["user"] = state.user_ref(user_id) if user_id else dict(item["user"])
            if errors:
                results.append({"status": 400, "errors": errors, "override": shown})
                continue
            override = {
                "id": state.new_id(prefix="Q", length=13),
                "start": sched.format_time(start, tz),
                "end": sched.format_time(end, tz),
                "user": state.user_ref(user_id),
            }
            schedule["_overrides"].append(override)
            results.append({"status": 201, "override": dict(override)})
        return 201, results


def _override_problems(state: SandboxState, item) -> tuple[list[str], object, object, str]:
    if not isinstance(item, dict):
        return ["Each override must be an object"], None, None, ""
    errors: list[str] = []
    times = {}
    for name in ("start", "end"):
        value = item.get(name)
        try:
            times[name] = sched.parse_time(value) if isinstance(value, str) else None
        except ValueError:
            times[name] = None
        if times[name] is None:
            errors.append(f"Override {name} must be an ISO 8601 date-time")
    if "time_zone" in item:
        try:
            sched.get_zone(item["time_zone"])
        except (ValueError, TypeError):
            errors.append(f"Unknown time zone {item['time_zone']!r}")
    user = item.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or user_id not in state.users:
        errors.append("Override user is not valid")
        user_id = ""
    if times.get("start") and times.get("end") and times["end"] <= times["start"]:
        errors.append("Override must end after its start")
    return errors, times.get("start"), times.get("end"), user_id


def list_v3_schedules(state: SandboxState, req: Request) -> tuple[int, dict]:
    team_ids = team_filter(state, req)
    with state.lock:
        items = [s for s in state.schedules_v3.values() if name_query(req, s) and in_teams(s, team_ids)]
        return 200, paginate(
            req,
            "schedules",
            items,
            lambda s: make_ref("schedule_v3", s["id"], s["name"]),
            default_limit=100,
            max_limit=1000,
        )


def _v3_schedule(state: SandboxState, schedule_id: str) -> dict:
    schedule = state.schedules_v3.get(schedule_id)
    if schedule is None:
        raise not_found(f"Schedule {schedule_id} not found")
    return schedule


def get_v3_schedule(state: SandboxState, req: Request, schedule_id: str) -> tuple[int, dict]:
    include = includes(req, ("final_schedule",))
    with state.lock:
        schedule = _v3_schedule(state, schedule_id)
        out_tz = zone_param(req, schedule["time_zone"])
        since, until = _window(req, required=False)
        out = {
            "id": schedule["id"],
            "type": "schedule_v3",
            "name": schedule["name"],
            "time_zone": schedule["time_zone"],
            "description": schedule["description"],
            "teams": [dict(t) for t in schedule["teams"]],
            "escalation_policies": [dict(p) for p in schedule["escalation_policies"]],
            "rotations": sched.v3_rotations(schedule, API_BASE),
            "self": f"{API_BASE}/v3/schedules/{schedule['id']}",
            "html_url": schedule["html_url"],
        }
        if "final_schedule" in include and since is not None and until is not None:
            out["final_schedule"] = sched.v3_final_schedule(
                schedule, since, until, out_tz, overflow=bool_param(req, "overflow")
            )
        return 200, {"schedule": out}


def list_v3_overrides(state: SandboxState, req: Request, schedule_id: str) -> tuple[int, dict]:
    with state.lock:
        schedule = _v3_schedule(state, schedule_id)
        since, until = _window(req, required=True)
        out_tz = zone_param(req, schedule["time_zone"])
        shifts = sched.v3_override_shifts(schedule, since, until, out_tz, bool_param(req, "overflow"))
        return 200, paginate(req, "overrides", shifts, dict)


EP_INCLUDES = ("services", "teams", "targets", "escalation_rule_assignment_strategies")


def render_policy(state: SandboxState, policy: dict, include: set[str]) -> dict:
    out = public(policy)
    if "targets" in include:
        rules = []
        for rule in policy["escalation_rules"]:
            targets = []
            for t in rule["targets"]:
                if t["type"] == "user_reference" and t["id"] in state.users:
                    targets.append(public(state.users[t["id"]]))
                elif t["type"] == "schedule_reference" and t["id"] in state.schedules:
                    targets.append({k: state.schedules[t["id"]][k] for k in SCHEDULE_SUMMARY_KEYS})
                else:
                    targets.append(t)
            rules.append({**rule, "targets": targets})
        out["escalation_rules"] = rules
    if "services" in include:
        out["services"] = [public(state.services[r["id"]]) for r in policy["services"] if r["id"] in state.services]
    if "teams" in include:
        out["teams"] = [public(state.teams[r["id"]]) for r in policy["teams"] if r["id"] in state.teams]
    return out


def list_escalation_policies(state: SandboxState, req: Request) -> tuple[int, dict]:
    include = includes(req, EP_INCLUDES)
    team_ids = team_filter(state, req)
    user_ids = req.qset("user_ids[]")
    sort_by = req.q("sort_by") or "name"
    if sort_by not in ("name", "name:asc", "name:desc"):
        raise invalid("sort_by must be name, name:asc or name:desc")

    def targets_user(policy: dict) -> bool:
        return any(
            t["type"] == "user_reference" and t["id"] in user_ids
            for rule in policy["escalation_rules"]
            for t in rule["targets"]
        )

    with state.lock:
        items = [
            p
            for p in state.escalation_policies.values()
            if name_query(req, p) and in_teams(p, team_ids) and (not user_ids or targets_user(p))
        ]
        if sort_by == "name:desc":
            items.reverse()
        return 200, paginate(req, "escalation_policies", items, lambda p: render_policy(state, p, include))


def get_escalation_policy(state: SandboxState, req: Request, policy_id: str) -> tuple[int, dict]:
    include = includes(req, EP_INCLUDES)
    with state.lock:
        policy = state.escalation_policies.get(policy_id)
        if policy is None:
            raise not_found(f"Escalation policy {policy_id} not found")
        return 200, {"escalation_policy": render_policy(state, policy, include)}


SERVICE_INCLUDES = ("escalation_policies", "teams", "integrations", "auto_pause_notifications_parameters")


def render_service(state: SandboxState, service: dict, include: set[str]) -> dict:
    out = public(service)
    if "escalation_policies" in include:
        policy = state.escalation_policies.get(service["escalation_policy"]["id"])
        if policy is not None:
            out["escalation_policy"] = public(policy)
    if "teams" in include:
        out["teams"] = [public(state.teams[r["id"]]) for r in service["teams"] if r["id"] in state.teams]
    if "integrations" in include:
        out["integrations"] = [dict(state.integrations[r["id"]]) for r in service["integrations"]]
    if "auto_pause_notifications_parameters" in include:
        out["auto_pause_notifications_parameters"] = {"enabled": False, "timeout": None}
    return out


def list_services(state: SandboxState, req: Request) -> tuple[int, dict]:
    include = includes(req, SERVICE_INCLUDES)
    team_ids = team_filter(state, req)
    zone_param(req)
    sort_by = req.q("sort_by") or "name"
    if sort_by not in ("name", "name:asc", "name:desc"):
        raise invalid("sort_by must be name, name:asc or name:desc")
    exact = req.q("name")
    with state.lock:
        items = [
            s
            for s in state.services.values()
            if name_query(req, s) and in_teams(s, team_ids) and (exact is None or s["name"] == exact)
        ]
        if sort_by == "name:desc":
            items.reverse()
        return 200, paginate(req, "services", items, lambda s: render_service(state, s, include))


def get_service(state: SandboxState, req: Request, service_id: str) -> tuple[int, dict]:
    include = includes(req, SERVICE_INCLUDES)
    with state.lock:
        service = state.services.get(service_id)
        if service is None:
            raise not_found(f"Service {service_id} not found")
        return 200, {"service": render_service(state, service, include)}


def list_priorities(state: SandboxState, req: Request) -> tuple[int, dict]:
    with state.lock:
        if "incident_priorities" not in state.abilities:
            # What PagerDuty answers on an account with priorities turned off.
            raise not_found("Priorities are not enabled for this account")
        return 200, paginate(req, "priorities", list(state.priorities.values()))


def list_abilities(state: SandboxState, req: Request) -> tuple[int, dict]:
    with state.lock:
        return 200, {"abilities": list(state.abilities)}


def list_oncalls(state: SandboxState, req: Request) -> tuple[int, dict]:
    include = includes(req, ("escalation_policies", "users", "schedules"))
    out_tz = zone_param(req)
    now = state.now()
    since = parse_window_time(req.q("since"), "since") if req.q("since") else now
    until = parse_window_time(req.q("until"), "until") if req.q("until") else now
    if until < since:
        raise invalid("The until time cannot be before the since time")
    if until > now + ONCALL_HORIZON + timedelta(minutes=1):
        raise invalid("On-call shifts are limited to 90 days in the future: until must be at most now + 90 days")
    earliest = bool_param(req, "earliest")
    policy_ids = req.qset("escalation_policy_ids[]")
    schedule_ids = req.qset("schedule_ids[]")
    user_ids = req.qset("user_ids[]")
    with state.lock:
        cache: dict[str, list[sched.Span]] = {}
        rows = []
        for order, policy in enumerate(state.escalation_policies.values()):
            if policy_ids and policy["id"] not in policy_ids:
                continue
            policy_ref = make_ref("escalation_policy", policy["id"], policy["name"])
            for level, rule in enumerate(policy["escalation_rules"], start=1):
                for target in rule["targets"]:
                    if target["type"] == "user_reference":
                        if schedule_ids or target["id"] not in state.users:
                            continue
                        rows.append((order, level, policy_ref, None, state.user_ref(target["id"]), None, None))
                        continue
                    if schedule_ids and target["id"] not in schedule_ids:
                        continue
                    schedule = state.schedules.get(target["id"]) or state.schedules_v3.get(target["id"])
                    if schedule is None:
                        continue
                    if target["id"] not in cache:
                        cache[target["id"]] = sched.oncall_spans(schedule, since, until)
                    kind = "schedule_v3" if target["type"] == "schedule_v3_reference" else "schedule"
                    schedule_ref = make_ref(kind, schedule["id"], schedule["name"])
                    for span in cache[target["id"]]:
                        rows.append((order, level, policy_ref, schedule_ref, dict(span.user), span.start, span.end))
        if user_ids:
            rows = [r for r in rows if r[4]["id"] in user_ids]
        rows.sort(key=lambda r: (r[0], r[1], r[5] is not None, r[5] or since))
        if earliest:
            seen = set()
            kept = []
            for row in rows:
                key = (row[2]["id"], row[1], row[4]["id"])
                if key not in seen:
                    seen.add(key)
                    kept.append(row)
            rows = kept

        def render(row) -> dict:
            _, level, policy_ref, schedule_ref, user_ref, start, end = row
            entry = {
                "escalation_policy": policy_ref,
                "escalation_level": level,
                "schedule": schedule_ref,
                "user": user_ref,
                "start": sched.format_time(start, out_tz) if start else None,
                "end": sched.format_time(end, out_tz) if end else None,
            }
            if "users" in include:
                entry["user"] = public(state.users[user_ref["id"]])
            if "escalation_policies" in include:
                entry["escalation_policy"] = public(state.escalation_policies[policy_ref["id"]])
            if "schedules" in include and schedule_ref and schedule_ref["id"] in state.schedules:
                entry["schedule"] = {k: state.schedules[schedule_ref["id"]][k] for k in SCHEDULE_SUMMARY_KEYS}
            return entry

        return 200, paginate(req, "oncalls", rows, render)


def create_webhook_subscription(state: SandboxState, req: Request) -> tuple[int, dict]:
    return 200, {"webhook_subscription": hub_for(state).subscribe(req.json)}


def list_webhook_subscriptions(state: SandboxState, req: Request) -> tuple[int, dict]:
    hub = hub_for(state)
    return 200, paginate(req, "webhook_subscriptions", [hub.render(s) for s in list(hub.subscriptions.values())])


def get_webhook_subscription(state: SandboxState, req: Request, subscription_id: str) -> tuple[int, dict]:
    hub = hub_for(state)
    return 200, {"webhook_subscription": hub.render(hub.get(subscription_id))}


def delete_webhook_subscription(state: SandboxState, req: Request, subscription_id: str) -> tuple[int, None]:
    hub_for(state).delete(subscription_id)
    return 204, None


def ping_webhook_subscription(state: SandboxState, req: Request, subscription_id: str) -> tuple[int, None]:
    hub_for(state).ping(subscription_id)
    return 202, None


ID = r"(?P<{}>[^/]+)"
ROUTES: list[tuple[str, str, Callable]] = [
    ("GET", "/incidents", list_incidents),
    ("POST", "/incidents", create_incident),
    ("PUT", "/incidents", bulk_update_incidents),
    ("GET", "/incidents/{incident_id}", get_incident),
    ("PUT", "/incidents/{incident_id}", update_incident),
    ("POST", "/incidents/{incident_id}/responder_requests", create_responder_request),
    ("POST", "/incidents/{incident_id}/notes", create_note),
    ("GET", "/incidents/{incident_id}/notes", list_notes),
    ("GET", "/incidents/{incident_id}/log_entries", list_log_entries),
    ("GET", "/users", list_users),
    ("GET", "/users/me", get_current_user),
    ("GET", "/users/{user_id}", get_user),
    ("GET", "/teams", list_teams),
    ("GET", "/teams/{team_id}", get_team),
    ("GET", "/teams/{team_id}/members", list_team_members),
    ("GET", "/schedules", list_schedules),
    ("GET", "/schedules/{schedule_id}", get_schedule),
    ("GET", "/schedules/{schedule_id}/overrides", list_schedule_overrides),
    ("POST", "/schedules/{schedule_id}/overrides", create_schedule_overrides),
    ("GET", "/v3/schedules", list_v3_schedules),
    ("GET", "/v3/schedules/{schedule_id}", get_v3_schedule),
    ("GET", "/v3/schedules/{schedule_id}/overrides", list_v3_overrides),
    ("GET", "/escalation_policies", list_escalation_policies),
    ("GET", "/escalation_policies/{policy_id}", get_escalation_policy),
    ("GET", "/oncalls", list_oncalls),
    ("GET", "/services", list_services),
    ("GET", "/services/{service_id}", get_service),
    ("GET", "/priorities", list_priorities),
    ("GET", "/abilities", list_abilities),
    ("POST", "/webhook_subscriptions", create_webhook_subscription),
    ("GET", "/webhook_subscriptions", list_webhook_subscriptions),
    ("GET", "/webhook_subscriptions/{subscription_id}", get_webhook_subscription),
    ("DELETE", "/webhook_subscriptions/{subscription_id}", delete_webhook_subscription),
    ("POST", "/webhook_subscriptions/{subscription_id}/ping", ping_webhook_subscription),
]


def _compile_routes():
    table: dict[tuple[str, int], list[tuple[list[str], Callable]]] = {}
    for method, template, handler in ROUTES:
        segments = template.strip("/").split("/")
        table.setdefault((method, len(segments)), []).append((segments, handler))
    return table


_ROUTE_TABLE = _compile_routes()


def route(method: str, path: str) -> tuple[Callable, dict] | None:
    """The handler and path parameters; literal segments win (/users/me before /users/{id})."""
    segments = path.strip("/").split("/")
    for template, handler in _ROUTE_TABLE.get((method, len(segments)), []):
        params = {}
        for pattern, actual in zip(template, segments, strict=True):
            if pattern.startswith("{"):
                params[pattern[1:-1]] = actual
            elif pattern != actual:
                break
        else:
            return handler, params
    return None


def path_known(path: str) -> bool:
    return any(route(m, path) for m in ("GET", "POST", "PUT"))


# -- request pipeline ----------------------------------------------------------------------------


def _accept_problem(accept: str | None) -> Response | None:
    if not accept:
        return None
    ranges = [part.strip().lower().replace(" ", "") for part in accept.split(",")]
    for r in ranges:
        if r.startswith(PD_MEDIA_TYPE):
            if "version=" in r and "version=2" not in r:
                error = ApiError(400, "Invalid Input Provided", 2001, [f"Unsupported API version in Accept: {accept}"])
                return Response(error.status, error.body())
            return None
        if r.split(";")[0] in ("*/*", "application/*", "application/json"):
            return None
    error = ApiError(406, "Not Acceptable", 2001, [f"Accept must allow {PD_MEDIA_TYPE};version=2 or application/json"])
    return Response(error.status, error.body())


def handle_rest(state: SandboxState, req: Request) -> Response:
    token = state.authenticate(req.headers.get("Authorization"))
    if token is None:
        error = ApiError(401, "Authentication failed", 2006, None)
        return Response(401, error.body(), {"WWW-Authenticate": 'Token realm="api"'})
    allowed, rate_headers = state.consume_rate(token)
    if not allowed:
        error = ApiError(429, "Rate Limit Exceeded", 2020, None)
        return Response(429, error.body(), rate_headers)
    response = _handle_authenticated(state, req)
    response.headers = {**rate_headers, **response.headers}
    return response


def _handle_authenticated(state: SandboxState, req: Request) -> Response:
    problem = _accept_problem(req.headers.get("Accept"))
    if problem is not None:
        return problem
    if req.has_body:
        content_type = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            error = ApiError(
                415, "Unsupported Media Type", 2001, [f"Content-Type must be application/json ({content_type!r} given)"]
            )
            return Response(error.status, error.body())
        if req.json_error is not None:
            return Response(400, invalid(f"The request body is not valid JSON: {req.json_error}").body())
    if state.contract is not None:
        errors = state.contract.check_rest(req.method, req.path, req.query, req.json, req.has_body)
        if errors:
            error = ApiError(400, "Request does not match the PagerDuty OpenAPI spec", 2001, errors)
            return Response(400, error.body())
    found = route(req.method, req.path)
    if found is None:
        if state.contract_enabled or path_known(req.path):
            # The spec knows this operation (the contract passed) but the sandbox does not serve it.
            error = ApiError(
                501,
                "Not implemented by the PagerDuty sandbox",
                2000,
                [f"{req.method} {req.path} is a PagerDuty operation the sandbox does not implement"],
            )
            return Response(501, error.body())
        return Response(404, not_found(f"{req.method} {req.path} is not a PagerDuty API path").body())
    handler, params = found
    try:
        status, body = handler(state, req, **params)
    except ApiError as error:
        return Response(error.status, error.body(), error.headers)
    return Response(status, body)


def handle_events(state: SandboxState, req: Request) -> Response:
    if req.method != "POST" or req.path not in ("/v2/enqueue", "/v2/change/enqueue"):
        return Response(404, {"status": "Not found", "message": f"{req.method} {req.path} is not an Events API path"})
    if not req.has_body or req.json_error is not None:
        return Response(
            400,
            {
                "status": "Unrecognized object",
                "message": "Event object format is unrecognized",
                "errors": ["JSON parse error"],
            },
        )
    if req.path == "/v2/change/enqueue":
        status, body = state.process_change_event(req.json)
        return Response(status, body)
    routing_key = req.json.get("routing_key") if isinstance(req.json, dict) else None
    if isinstance(routing_key, str) and routing_key and not state.consume_event_rate(routing_key):
        # The Events API's limit is per routing key, and its 429 carries no rate-limit headers.
        return Response(
            429,
            {
                "status": "throttle event",
                "message": "Requests for this service are arriving too quickly.  Please retry later.",
            },
        )
    if not validate_event(req.json) and state.contract is not None:
        errors = state.contract.check_events(req.path, req.json)
        if errors:
            return Response(400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors})
    status, body = state.process_event(req.json)
    return Response(status, body)


def scripted_response(entry: dict) -> Response:
    if entry["status"] == 0:
        return Response(0, None, drop=True)
    body = entry["body"] if "body" in entry else (default_error_body(entry["status"]) if entry["status"] >= 400 else {})
    return Response(entry["status"], body, entry["headers"])


# -- admin API -----------------------------------------------------------------------------------


def handle_admin(state: SandboxState, req: Request) -> Response:
    def bad(message: str) -> Response:
        return Response(400, {"error": {"message": message, "code": 2001, "errors": [message]}})

    if req.has_body and req.json_error is not None:
        return bad(f"body is not valid JSON: {req.json_error}")
    key = (req.method, req.path.rstrip("/"))
    with state.lock:
        if key == ("GET", "/_sandbox/health"):
            return Response(
                200,
                {
                    "status": "ok",
                    "contract_enabled": state.contract_enabled,
                    "contract_skip_reason": state.contract_skip_reason,
                    "url": state.base_url,
                },
            )
        if key == ("GET", "/_sandbox/requests"):
            method = req.q("method")
            return Response(200, {"requests": state.find_requests(method, req.q("path"))})
        if key == ("DELETE", "/_sandbox/requests"):
            count = len(state.requests)
            state.reset_requests()
            return Response(200, {"deleted": count})
        if key == ("GET", "/_sandbox/state"):
            incidents = [{**public(i), "resolve_count": i["resolve_count"]} for i in state.incidents.values()]
            return Response(
                200,
                {
                    "incidents": incidents,
                    "events": state.events,
                    "change_events": state.change_events,
                    "counts": state.counts(),
                    "faults": state.faults.to_dict(),
                    "abilities": state.abilities,
                    "rate_limit_per_minute": state.rate_limit_per_minute,
                    "events_rate_limit": state.events_rate_limit,
                    "events_rate_window_seconds": state.events_rate_window_seconds,
                    "events_throttled": state.events_throttled,
                    "seed": state.seed_params,
                    "well_known": WELL_KNOWN,
                    "contract_enabled": state.contract_enabled,
                },
            )
        if key == ("GET", "/_sandbox/faults"):
            return Response(200, {"faults": state.faults.to_dict()})
        if key == ("POST", "/_sandbox/faults"):
            try:
                faults = Faults.from_dict(req.json if req.has_body else {})
            except (ValueError, TypeError) as exc:
                return bad(f"invalid faults: {exc}")
            state.set_faults(faults)
            return Response(200, {"faults": faults.to_dict()})
        if key == ("POST", "/_sandbox/script"):
            entries = req.json.get("script") if isinstance(req.json, dict) and "script" in req.json else req.json
            if isinstance(entries, dict):
                entries = [entries]
            if not isinstance(entries, list):
                return bad('send a script entry, a list of entries, or {"script": [...]}')
            try:
                state.add_script(entries)
            except ValueError as exc:
                return bad(f"invalid script entry: {exc}")
            return Response(200, {"script": [dict(e) for e in state.faults.script]})
        if key[1].startswith("/_sandbox/webhooks") or key[1].startswith("/_sandbox/incidents/"):
            return handle_webhook_admin(state, req, key, bad)
        if key == ("POST", "/_sandbox/reset"):
            hub_for(state).reset()
            state.reset()
            return Response(200, {"status": "reset", "counts": state.counts()})
        if key == ("POST", "/_sandbox/config"):
            return _admin_config(state, req.json if isinstance(req.json, dict) else {}, bad)
    return Response(404, {"error": {"message": "Not Found", "code": 2100, "errors": [f"no admin endpoint {key}"]}})


def handle_webhook_admin(state: SandboxState, req: Request, key: tuple[str, str], bad) -> Response:
    """`GET/POST /_sandbox/webhooks` (subscriptions with their secrets, deliveries; switches) and
    `POST /_sandbox/incidents/{id}/{acknowledge|resolve|escalate|note}` ({"user": email or id,
    "content", "escalation_level"}): what a person would do in PagerDuty's UI, with the webhooks that follow."""
    hub = hub_for(state)
    data = req.json if isinstance(req.json, dict) else {}
    if key == ("GET", "/_sandbox/webhooks"):
        return Response(200, hub.snapshot())
    if key == ("POST", "/_sandbox/webhooks"):
        unknown = set(data) - {"bad_signature", "retry_delays"}
        if unknown:
            return bad(f"unknown webhook settings {sorted(unknown)}; allowed: bad_signature, retry_delays")
        if "bad_signature" in data:
            hub.bad_signature = bool(data["bad_signature"])
        if "retry_delays" in data:
            delays = data["retry_delays"]
            if (
                not isinstance(delays, list)
                or len(delays) > 10
                or not all(isinstance(d, int | float) and 0 <= d <= 60 for d in delays)
            ):
                return bad("retry_delays: a list of at most 10 waits of 0–60 seconds")
            hub.retry_delays = [float(d) for d in delays]
        return Response(200, hub.snapshot())
    parts = key[1].strip("/").split("/")
    if key[0] != "POST" or len(parts) != 4 or parts[1] != "incidents":
        return Response(404, {"error": {"message": "Not Found", "code": 2100, "errors": [f"no admin endpoint {key}"]}})
    incident_id, act = parts[2], parts[3]
    user_value = str(data.get("user") or RESPONDER_EMAIL)
    user = state.users.get(user_value) or state.users.get(state._users_by_email.get(user_value.lower(), ""))
    if user is None:
        return bad(f"no user {user_value!r} on this account")
    try:
        if act in ("acknowledge", "resolve"):
            status = {"acknowledge": "acknowledged", "resolve": "resolved"}[act]
            before = state.get_incident(incident_id)["status"]
            incident = state.update_incident(
                incident_id, {"type": "incident_reference", "status": status}, user, channel="website"
            )
            emit_status_change(state, incident, before, user)
            return Response(200, {"incident": public(incident)})
        if act == "escalate":
            # As "Escalate" in PagerDuty's UI: to the level given, else the next one.
            current = state.get_incident(incident_id)
            level = data.get("escalation_level", current.get("_escalation_level", 1) + 1)
            incident = state.update_incident(
                incident_id, {"type": "incident_reference", "escalation_level": level}, user, channel="website"
            )
            hub_for(state).emit("incident.escalated", incident, state.user_ref(user["id"]))
            return Response(200, {"incident": public(incident)})
        if act == "note":
            incident = state.get_incident(incident_id)
            note = state.add_note(
                incident_id, {"note": {"content": str(data.get("content") or "")}}, user, channel="website"
            )
            emit_note(state, incident, note, user)
            return Response(200, {"note": note})
    except ApiError as error:
        return Response(error.status, error.body())
    return bad(f"unknown act {act!r}: acknowledge, resolve, escalate or note")


def _admin_config(state: SandboxState, data: dict, bad) -> Response:
    allowed = {
        "rate_limit_per_minute",
        "events_rate_limit",
        "events_rate_window_seconds",
        "teams_ability",
        "tokens",
        "abilities",
    }
    unknown = set(data) - allowed
    if unknown:
        return bad(f"unknown config keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    if "rate_limit_per_minute" in data:
        if not isinstance(data["rate_limit_per_minute"], int) or data["rate_limit_per_minute"] < 1:
            return bad("rate_limit_per_minute must be a positive integer")
        state.rate_limit_per_minute = data["rate_limit_per_minute"]
        state._rate_windows.clear()
    for name in ("events_rate_limit", "events_rate_window_seconds"):
        if name in data:
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1_000_000:
                return bad(f"{name} must be a positive number")
            setattr(state, name, int(value) if name == "events_rate_limit" else float(value))
            state._event_rate_windows.clear()
    if "abilities" in data:
        state.abilities = [str(a) for a in data["abilities"]]
    if "teams_ability" in data:
        state.teams_ability = bool(data["teams_ability"])
    if "tokens" in data:
        state.tokens = {str(t) for t in data["tokens"]}
    return Response(
        200,
        {
            "rate_limit_per_minute": state.rate_limit_per_minute,
            "events_rate_limit": state.events_rate_limit,
            "events_rate_window_seconds": state.events_rate_window_seconds,
            "abilities": state.abilities,
            "tokens": sorted(state.tokens),
        },
    )


# -- HTTP plumbing -------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "PagerDutySandbox/1.0"
    # Idle keep-alive connections must not pin threads forever.
    timeout = 60
    # Headers and body go out in separate writes; with Nagle on, delayed ACKs add ~40 ms per request.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args) -> None:
        if self.server.sandbox.log_requests:
            sys.stderr.write(f"[pagerduty-sandbox] {self.address_string()} {format % args}\n")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        started = time.monotonic()
        sandbox: SandboxServer = self.server.sandbox
        state = sandbox.state
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        headers = Headers(self.headers.items())
        try:
            raw = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        req = Request(self.command, path, query, headers, raw)
        if path == "/_sandbox" or path.startswith("/_sandbox/"):
            self._send(handle_admin(state, req))
            return
        fault = None
        with state.lock:
            latency = float(state.faults.latency_ms or 0)
        if latency:
            time.sleep(latency / 1000.0)
        with state.lock:
            entry = state.faults.take(req.method, path)
        try:
            if entry is not None and not entry["after"]:
                fault = "script"
                response = scripted_response(entry)
            else:
                with state.lock:
                    failure = state.faults.roll()
                if failure is not None:
                    fault = "error_rate"
                    response = Response(failure, default_error_body(failure))
                elif path == "/v2" or path.startswith("/v2/"):
                    response = handle_events(state, req)
                else:
                    response = handle_rest(state, req)
                if entry is not None:
                    # "after": PagerDuty did the work, but the client gets this answer (or none).
                    fault = "script-after"
                    response = scripted_response(entry)
                elif response.status < 400:
                    with state.lock:
                        lost = state.faults.roll_lost_answer()
                    if lost:  # carried out, and the answer never arrives
                        fault = "lost_answer"
                        response = Response(0, None, drop=True)
        except Exception:  # a bug in the sandbox must still answer like a server, and be visible
            traceback.print_exc()
            response = Response(500, default_error_body(500))
        body_bytes = b"" if response.body is None else json.dumps(response.body).encode()
        record = {
            "method": req.method,
            "path": path,
            "query": query,
            "headers": headers,
            "json": req.json,
            "status": response.status,
            "response_json": json.loads(body_bytes) if body_bytes else None,
            "response_headers": dict(response.headers),
            "fault": fault,
            "time": iso(state.now()),
            "duration_ms": round((time.monotonic() - started) * 1000, 3),
        }
        if req.json_error is not None:
            record["body_text"] = raw.decode("utf-8", "replace")
        # Recorded before the scripted delay: PagerDuty has the request even if the answer never arrives.
        state.record_request(record)
        if entry is not None and entry.get("delay_ms"):
            time.sleep(entry["delay_ms"] / 1000.0)
        try:
            self._send(response, body_bytes)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (or was killed): nothing to answer

    def _send(self, response: Response, body_bytes: bytes | None = None) -> None:
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if body_bytes is None:
            body_bytes = b"" if response.body is None else json.dumps(response.body).encode()
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if body_bytes:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body_bytes)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body_bytes)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, sandbox: SandboxServer):
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        # A client that vanished mid-request (a killed worker) is not the stand-in's error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class SandboxServer:
    """Serves a SandboxState over HTTP on a daemon thread; `url` is both the REST and Events base URL."""

    def __init__(self, state: SandboxState, host: str = "127.0.0.1", port: int = 0, *, log_requests: bool = False):
        self.state = state
        self.host = host
        self.requested_port = port
        self.log_requests = log_requests
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SandboxServer:
        if self._httpd is not None:
            return self
        if self.state.contract is None:
            announce_skip("disabled by configuration")
        else:
            self.state.contract.load()
            if not self.state.contract.enabled:
                announce_skip(self.state.contract.reason or "spec unavailable")
        self._httpd = _HTTPServer((self.host, self.requested_port), self)
        self.state.base_url = self.url
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="pagerduty-sandbox", daemon=True
        )
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the sandbox server is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    @property
    def events_url(self) -> str:
        return f"{self.url}/v2/enqueue"

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wait(self) -> None:
        """Block until stop() is called from another thread (or the process is interrupted)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["Headers", "Request", "Response", "SandboxServer", "WELL_KNOWN"]
