"""The in-memory PagerDuty account behind the stand-in, and the rules PagerDuty applies to it.

Everything here is plain Python (no Django): the HTTP layer in server.py parses requests and calls
these methods; the domain rules (dedup keys, status transitions, assignment through escalation
policies, Events API v2) live here so REST and Events share them. One `threading.RLock` guards the
whole account: the server is threaded, and tests read `state.*` while requests are in flight.
"""

from __future__ import annotations

import fnmatch
import math
import random
import string
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import schedules as sched
from .contract import ContractChecker

DEFAULT_TOKEN = "sandbox-token"
API_BASE = "https://api.pagerduty.com"
WEB_BASE = "https://sandbox.pagerduty.com"
ID_ALPHABET = string.ascii_uppercase + string.digits

# Well-known objects, present after every seed_account() whatever the sizes.
ADMIN_USER_ID = "PSREADM"
ADMIN_USER_NAME = "Demo SRE"
ADMIN_EMAIL = "sre@example.com"
RESPONDER_USER_ID = "PRESPND"
RESPONDER_USER_NAME = "Demo Responder"
RESPONDER_EMAIL = "responder@example.com"
SRE_TEAM_ID = "PTEAM01"
CHECKOUT_SCHEDULE_ID = "PSCHED1"
CHECKOUT_ESCALATION_POLICY_ID = "PEP0001"
CHECKOUT_SERVICE_ID = "PSVC001"
CHECKOUT_INTEGRATION_KEY = "5a4db0c0ffee4e0b9c1d2e3f4a5b6c7d"
PRIORITY_IDS = {"P1": "PPRIO01", "P2": "PPRIO02", "P3": "PPRIO03", "P4": "PPRIO04", "P5": "PPRIO05"}

DEFAULT_ABILITIES = (
    "teams",
    "read_only_users",
    "service_support_hours",
    "urgencies",
    "coordinated_responding",
    "incident_priorities",
    "advanced_reports",
)

OPEN_STATUSES = ("triggered", "acknowledged")
DEDUP_ERROR = "Open incident with matching dedup key already exists on this service"
# Top-level keys kept for the sandbox's own bookkeeping, never sent over HTTP.
HIDDEN_KEYS = frozenset({"resolve_count", "integration_key"})
# An incident's log is bounded: the oldest entries go first.
LOG_ENTRIES_KEPT = 1000
CHANNEL_SUMMARIES = {"api": "The PagerDuty APIs", "website": "The PagerDuty website", "note": "A note"}

_REF_PATHS = {
    "user": ("users", "users"),
    "team": ("teams", "teams"),
    "service": ("services", "service-directory"),
    "escalation_policy": ("escalation_policies", "escalation_policies"),
    "schedule": ("schedules", "schedules"),
    "schedule_v3": ("v3/schedules", "schedules"),
    "priority": ("priorities", None),
    "incident": ("incidents", "incidents"),
}


class ApiError(Exception):
    """A refusal in PagerDuty's error shape: `{"error": {"message", "code", "errors"}}`."""

    def __init__(self, status: int, message: str, code: int, errors: Iterable[str] | None = (), headers=None):
        super().__init__(f"{status} {message}: {list(errors or [])}")
        self.status = status
        self.message = message
        self.code = code
        # None leaves `errors` out, as PagerDuty does on 401 and 429.
        self.errors = None if errors is None else list(errors)
        self.headers = dict(headers or {})

    def body(self) -> dict:
        error = {"message": self.message, "code": self.code}
        if self.errors is not None:
            error["errors"] = self.errors
        return {"error": error}


def invalid(*errors: str) -> ApiError:
    return ApiError(400, "Invalid Input Provided", 2001, errors)


def not_found(*errors: str) -> ApiError:
    return ApiError(404, "Not Found", 2100, errors)


def missing_ability(ability: str) -> ApiError:
    return ApiError(
        402,
        "Account does not have the abilities to perform the action",
        2014,
        [f"The account does not have the '{ability}' ability"],
    )


def make_ref(kind: str, obj_id: str, summary: str | None) -> dict:
    api_path, web_path = _REF_PATHS[kind]
    ref = {
        "id": obj_id,
        "type": f"{kind}_reference",
        "summary": summary,
        "self": f"{API_BASE}/{api_path}/{obj_id}",
        "html_url": f"{WEB_BASE}/{web_path}/{obj_id}" if web_path else None,
    }
    return ref


def public(obj: dict) -> dict:
    """The object as the API returns it: without the sandbox's bookkeeping keys."""
    return {k: v for k, v in obj.items() if k[0] != "_" and k not in HIDDEN_KEYS}


def iso(dt: datetime) -> str:
    return sched.format_time(dt)


ERROR_MESSAGES = {
    400: ("Invalid Input Provided", 2001),
    401: ("Authentication failed", 2006),
    402: ("Account does not have the abilities to perform the action", 2014),
    403: ("Access Denied", 2010),
    404: ("Not Found", 2100),
    429: ("Rate Limit Exceeded", 2020),
    500: ("Internal Server Error", 2000),
    502: ("Bad Gateway", 2000),
    503: ("Service Unavailable", 2000),
    504: ("Gateway Timeout", 2000),
}


def default_error_body(status: int) -> dict:
    message, code = ERROR_MESSAGES.get(status, ("Error", 2000))
    return ApiError(status, message, code, None if status in (401, 429) else []).body()


_SCRIPT_KEYS = {"method", "path", "status", "headers", "body", "times", "after", "delay_ms"}


def normalize_script_entry(entry: Any) -> dict:
    """Validate one scripted response and fill its defaults; ValueError names what is wrong."""
    if not isinstance(entry, dict):
        raise ValueError("a script entry must be a JSON object")
    unknown = set(entry) - _SCRIPT_KEYS
    if unknown:
        raise ValueError(f"unknown script keys {sorted(unknown)}; allowed: {sorted(_SCRIPT_KEYS)}")
    status = entry.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not (status == 0 or 100 <= status <= 599):
        raise ValueError("script 'status' must be an HTTP status code, or 0 to drop the connection")
    times = entry.get("times", 1)
    if times is not None and (not isinstance(times, int) or times < 1):
        raise ValueError("script 'times' must be a positive integer, or null for every matching request")
    headers = entry.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("script 'headers' must be an object")
    delay = entry.get("delay_ms", 0) or 0
    if not isinstance(delay, int | float) or delay < 0:
        raise ValueError("script 'delay_ms' must be a non-negative number")
    out = {
        "method": (entry.get("method") or "*").upper(),
        "path": entry.get("path") or "*",
        "status": status,
        "headers": {str(k): str(v) for k, v in headers.items()},
        "times": times,
        "after": bool(entry.get("after", False)),
        "delay_ms": delay,
    }
    if "body" in entry:
        out["body"] = entry["body"]
    return out


@dataclass
class Faults:
    """Injected failures: random errors, random lost answers, added latency and a FIFO script of
    canned responses. `error_rate` fails a request before it is carried out; `lost_answer_rate`
    carries it out, then drops the connection without answering (the client cannot know)."""

    error_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500, 503])
    latency_ms: float = 0
    script: list[dict] = field(default_factory=list)
    seed: int = 0
    lost_answer_rate: float = 0.0

    def __post_init__(self):
        if not 0.0 <= float(self.error_rate) <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        self.error_rate = float(self.error_rate)
        if not 0.0 <= float(self.lost_answer_rate) <= 1.0:
            raise ValueError("lost_answer_rate must be between 0 and 1")
        self.lost_answer_rate = float(self.lost_answer_rate)
        self.error_statuses = [int(s) for s in self.error_statuses] or [500]
        if any(not 400 <= s <= 599 for s in self.error_statuses):
            raise ValueError("error_statuses must be HTTP error statuses (4xx/5xx)")
        if float(self.latency_ms) < 0:
            raise ValueError("latency_ms must not be negative")
        self.script = [normalize_script_entry(e) for e in self.script]
        self._rng = random.Random(self.seed)

    @classmethod
    def from_dict(cls, data: Any) -> Faults:
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        allowed = {"error_rate", "error_statuses", "latency_ms", "script", "seed", "lost_answer_rate"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc

    def to_dict(self) -> dict:
        return {
            "error_rate": self.error_rate,
            "error_statuses": list(self.error_statuses),
            "latency_ms": self.latency_ms,
            "script": [dict(e) for e in self.script],
            "seed": self.seed,
            "lost_answer_rate": self.lost_answer_rate,
        }

    def add_script(self, entries: Iterable[Any]) -> None:
        self.script.extend(normalize_script_entry(e) for e in entries)

    def take(self, method: str, path: str) -> dict | None:
        """The first scripted response matching the request, consumed (FIFO)."""
        for i, entry in enumerate(self.script):
            if entry["method"] not in ("*", method.upper()):
                continue
            pattern = entry["path"]
            if pattern != path and not ("*" in pattern and fnmatch.fnmatchcase(path, pattern)):
                continue
            if entry["times"] is not None:
                entry["times"] -= 1
                if entry["times"] <= 0:
                    del self.script[i]
            return entry
        return None

    def roll(self) -> int | None:
        """The status of a random failure for this request, or None. Deterministic from `seed`."""
        if self.error_rate <= 0:
            return None
        if self._rng.random() < self.error_rate:
            return self._rng.choice(self.error_statuses)
        return None

    def roll_lost_answer(self) -> bool:
        """Whether the answer to a request just carried out is lost. Deterministic from `seed`."""
        return self.lost_answer_rate > 0 and self._rng.random() < self.lost_answer_rate


class SandboxState:
    """One PagerDuty account in memory. Read the attributes under `state.lock` while a server runs."""

    def __init__(
        self,
        tokens: Iterable[str] | None = None,
        rate_limit_per_minute: int = 960,
        teams_ability: bool = True,
        *,
        abilities: Iterable[str] | None = None,
        faults: Faults | dict | None = None,
        error_rate: float = 0.0,
        error_statuses: Iterable[int] = (500, 503),
        latency_ms: float = 0,
        fault_seed: int = 0,
        contract: bool | ContractChecker = True,
        clock: Callable[[], datetime] | None = None,
        max_recorded_requests: int | None = None,
        events_rate_limit: int = 120,
        events_rate_window_seconds: float = 60.0,
    ):
        self.lock = threading.RLock()
        self.tokens = set(tokens) if tokens is not None else {DEFAULT_TOKEN}
        self.rate_limit_per_minute = int(rate_limit_per_minute)
        # Events API v2: about 120 events a minute per routing key. The window is configurable so a
        # test can compress a minute (e.g. 120 per 6 s) and still exercise the same ratio.
        self.events_rate_limit = int(events_rate_limit)
        self.events_rate_window_seconds = float(events_rate_window_seconds)
        self.events_throttled = 0
        names = list(abilities) if abilities is not None else list(DEFAULT_ABILITIES)
        if teams_ability and "teams" not in names:
            names.insert(0, "teams")
        if not teams_ability:
            names = [a for a in names if a != "teams"]
        self.abilities = names
        if isinstance(faults, dict):
            faults = Faults.from_dict(faults)
        self.faults = faults or Faults(
            error_rate=error_rate, error_statuses=list(error_statuses), latency_ms=latency_ms, seed=fault_seed
        )
        if contract is True:
            contract = ContractChecker()
        self.contract: ContractChecker | None = contract or None
        self._clock = clock or (lambda: datetime.now(UTC))
        self.max_recorded_requests = max_recorded_requests
        self.base_url: str | None = None
        self.seed_params: dict | None = None

        self.users: dict[str, dict] = {}
        self.contact_methods: dict[str, dict] = {}
        self.notification_rules: dict[str, dict] = {}
        self.teams: dict[str, dict] = {}
        self.team_members: dict[str, list[dict]] = {}
        self.schedules: dict[str, dict] = {}
        self.schedules_v3: dict[str, dict] = {}
        self.escalation_policies: dict[str, dict] = {}
        self.services: dict[str, dict] = {}
        self.integrations: dict[str, dict] = {}
        self.priorities: dict[str, dict] = {}

        self.incidents: dict[str, dict] = {}
        self.notes: dict[str, list[dict]] = {}
        self.events: list[dict] = []
        self.change_events: list[dict] = []
        self.requests: list[dict] = []

        self._ids: set[str] = set()
        self._runtime_seed = 0
        self._rng = random.Random("sandbox-runtime:0")
        self._incident_counter = 0
        self._open_keys: dict[tuple[str, str], str] = {}
        self._rate_windows: dict[str, list[float]] = {}
        self._event_rate_windows: dict[str, list[float]] = {}
        self._users_by_email: dict[str, str] = {}
        self._services_by_key: dict[str, str] = {}
        self._user_teams: dict[str, list[str]] = {}
        self._user_order: dict[str, int] = {}

    # -- general -------------------------------------------------------------------------------

    @property
    def teams_ability(self) -> bool:
        return "teams" in self.abilities

    @teams_ability.setter
    def teams_ability(self, enabled: bool) -> None:
        with self.lock:
            if enabled and "teams" not in self.abilities:
                self.abilities.insert(0, "teams")
            elif not enabled:
                self.abilities = [a for a in self.abilities if a != "teams"]

    @property
    def contract_enabled(self) -> bool:
        return self.contract is not None and self.contract.enabled

    @property
    def contract_skip_reason(self) -> str | None:
        if self.contract is None:
            return "disabled by configuration"
        return None if self.contract.enabled else self.contract.reason

    def now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def new_id(self, rng: random.Random | None = None, prefix: str = "P", length: int = 6) -> str:
        rng = rng or self._rng
        with self.lock:
            while True:
                candidate = prefix + "".join(rng.choices(ID_ALPHABET, k=length))
                if candidate not in self._ids:
                    self._ids.add(candidate)
                    return candidate

    def reserve_id(self, obj_id: str) -> str:
        with self.lock:
            if obj_id in self._ids:
                raise ValueError(f"id {obj_id} already used")
            self._ids.add(obj_id)
            return obj_id

    def clear_directory(self) -> None:
        with self.lock:
            for collection in (
                self.users,
                self.contact_methods,
                self.notification_rules,
                self.teams,
                self.team_members,
                self.schedules,
                self.schedules_v3,
                self.escalation_policies,
                self.services,
                self.integrations,
                self.priorities,
            ):
                collection.clear()
            self._ids.clear()
            self.reset(faults=False)

    def index_directory(self) -> None:
        """Rebuild lookups after the directory changed (seed_account calls it)."""
        with self.lock:
            self._users_by_email = {u["email"].lower(): uid for uid, u in self.users.items()}
            self._services_by_key = {
                s["integration_key"]: sid for sid, s in self.services.items() if s.get("integration_key")
            }
            self._user_teams = {uid: [t["id"] for t in u.get("teams", [])] for uid, u in self.users.items()}
            self._user_order = {uid: n for n, uid in enumerate(self.users)}

    def counts(self) -> dict:
        with self.lock:
            return {
                "users": len(self.users),
                "teams": len(self.teams),
                "schedules": len(self.schedules),
                "schedules_v3": len(self.schedules_v3),
                "escalation_policies": len(self.escalation_policies),
                "services": len(self.services),
                "priorities": len(self.priorities),
                "incidents": len(self.incidents),
                "events": len(self.events),
                "requests": len(self.requests),
            }

    def directory_snapshot(self) -> dict:
        """Every seeded collection, for comparing two seeds byte for byte."""
        with self.lock:
            return {
                "users": self.users,
                "contact_methods": self.contact_methods,
                "notification_rules": self.notification_rules,
                "teams": self.teams,
                "team_members": self.team_members,
                "schedules": self.schedules,
                "schedules_v3": self.schedules_v3,
                "escalation_policies": self.escalation_policies,
                "services": self.services,
                "integrations": self.integrations,
                "priorities": self.priorities,
            }

    def user_teams(self, user_id: str) -> list[str]:
        return self._user_teams.get(user_id, [])

    def users_in_order(self, user_ids: Iterable[str]) -> list[str]:
        """The given user ids in the order GET /users lists them (by name)."""
        order = self._user_order
        return sorted((uid for uid in user_ids if uid in order), key=order.__getitem__)

    # -- requests, auth, rate limits -------------------------------------------------------------

    def record_request(self, record: dict) -> None:
        with self.lock:
            self.requests.append(record)
            cap = self.max_recorded_requests
            if cap is not None and len(self.requests) > cap:
                del self.requests[: len(self.requests) - cap]

    def reset_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    def find_requests(self, method: str | None = None, path: str | None = None) -> list[dict]:
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r["method"] == method.upper()) and (path is None or r["path"] == path)
            ]

    def authenticate(self, authorization: str | None) -> str | None:
        """The token when the header is exactly `Token token=<known token>`, else None."""
        if not authorization or not authorization.startswith("Token token="):
            return None
        token = authorization[len("Token token=") :]
        with self.lock:
            return token if token in self.tokens else None

    def consume_rate(self, token: str) -> tuple[bool, dict[str, str]]:
        """Count one request against the token's fixed 60 s window; (allowed, ratelimit headers)."""
        limit = self.rate_limit_per_minute
        with self.lock:
            now = time.monotonic()
            window = self._rate_windows.get(token)
            if window is None or now >= window[0] + 60:
                window = [now, 0]
                self._rate_windows[token] = window
            reset = max(1, math.ceil(window[0] + 60 - now))
            allowed = window[1] < limit
            if allowed:
                window[1] += 1
            headers = {
                "ratelimit-limit": str(limit),
                "ratelimit-remaining": str(max(0, limit - int(window[1]))),
                "ratelimit-reset": str(reset),
            }
            return allowed, headers

    def consume_event_rate(self, routing_key: str) -> bool:
        """Count one event against its routing key's fixed window; False (a 429) past the limit."""
        with self.lock:
            now = time.monotonic()
            window = self._event_rate_windows.get(routing_key)
            if window is None or now >= window[0] + self.events_rate_window_seconds:
                window = [now, 0]
                self._event_rate_windows[routing_key] = window
            if window[1] >= self.events_rate_limit:
                self.events_throttled += 1
                return False
            window[1] += 1
            return True

    def set_faults(self, faults: Faults | dict) -> Faults:
        with self.lock:
            self.faults = faults if isinstance(faults, Faults) else Faults.from_dict(faults)
            return self.faults

    def add_script(self, entries: Iterable[dict] | dict) -> None:
        if isinstance(entries, dict):
            entries = [entries]
        with self.lock:
            self.faults.add_script(entries)

    def reset(self, faults: bool = True) -> None:
        """Forget incidents, events, recorded requests, rate windows and (by default) faults.

        The directory (users, teams, schedules, policies, services) is kept.
        """
        with self.lock:
            for inc_id in self.incidents:
                self._ids.discard(inc_id)
            self.incidents.clear()
            self.notes.clear()
            self.events.clear()
            self.change_events.clear()
            self.requests.clear()
            self._open_keys.clear()
            self._rate_windows.clear()
            self._event_rate_windows.clear()
            self.events_throttled = 0
            self._incident_counter = 0
            self._rng = random.Random(f"sandbox-runtime:{self._runtime_seed}")
            if faults:
                self.faults = Faults()

    # -- lookups --------------------------------------------------------------------------------

    def user_ref(self, user_id: str) -> dict:
        return make_ref("user", user_id, self.users[user_id]["name"])

    def requester(self, from_header: str | None) -> dict:
        """The user named by the From header of a write, or the refusal PagerDuty gives."""
        if not from_header or not from_header.strip():
            raise invalid('You must specify a user\'s email address in the "From" header to perform this action')
        with self.lock:
            user_id = self._users_by_email.get(from_header.strip().lower())
            if user_id is None:
                raise invalid(
                    f"Requester User Not Found: no user on this account has the email "
                    f"{from_header.strip()!r} given in the From header"
                )
            return self.users[user_id]

    def _ref_from(self, kind: str, value: Any, collection: dict, what: str) -> dict:
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            raise invalid(f'{what} must be a reference object {{"id": ..., "type": "{kind}_reference"}}')
        obj = collection.get(value["id"])
        if obj is None:
            raise invalid(f"{what} {value['id']} not found")
        return obj

    def _priority_from(self, value: Any) -> dict | None:
        if value is None:
            return None
        if isinstance(value, str):
            for p in self.priorities.values():
                if p["name"].lower() == value.lower():
                    return p
            raise invalid(f"Priority {value!r} not found")
        return self._ref_from("priority", value, self.priorities, "Priority")

    def rule_assignees(self, policy: dict, level: int = 1) -> list[dict]:
        """Users an escalation rule notifies now: direct user targets and who is on call on schedules."""
        rules = policy.get("escalation_rules") or []
        if not rules:
            return []
        rule = rules[min(max(level, 1), len(rules)) - 1]
        now = self.now()
        seen: dict[str, dict] = {}
        for target in rule.get("targets", []):
            if target["type"] == "user_reference" and target["id"] in self.users:
                seen.setdefault(target["id"], self.user_ref(target["id"]))
            elif target["type"] in ("schedule_reference", "schedule_v3_reference"):
                schedule = self.schedules.get(target["id"]) or self.schedules_v3.get(target["id"])
                user = sched.user_on_call(schedule, now) if schedule else None
                if user is not None:
                    seen.setdefault(user["id"], self.user_ref(user["id"]))
        return list(seen.values())

    # -- incidents ------------------------------------------------------------------------------

    def log(
        self,
        incident: dict,
        entry_type: str,
        summary: str,
        agent: dict | None,
        channel: str = "api",
        note: str | None = None,
    ) -> dict:
        """One entry of the incident's log (GET /incidents/{id}/log_entries), as PagerDuty keeps it:
        who (agent), how (channel: api, website, note…), when. Kept under `_log`, in order."""
        log_id = self.new_id(prefix="Q", length=13)
        entry = {
            "id": log_id,
            "type": entry_type,
            "summary": summary,
            "self": f"{API_BASE}/log_entries/{log_id}?incident_id={incident['id']}",
            "html_url": f"{WEB_BASE}/incidents/{incident['id']}/log_entries/{log_id}",
            "created_at": iso(self.now()),
            "agent": dict(agent) if agent else None,
            "channel": {"type": channel, "summary": CHANNEL_SUMMARIES.get(channel, channel)},
            "service": dict(incident["service"]),
            "incident": make_ref("incident", incident["id"], incident["summary"]),
            "teams": [dict(t) for t in incident.get("teams") or []],
            "contexts": [],
            "event_details": {},
        }
        if note is not None:
            entry["note"] = note
        incident.setdefault("_log", []).append(entry)
        del incident["_log"][:-LOG_ENTRIES_KEPT]
        return entry

    def get_incident(self, incident_id: str) -> dict:
        incident = self.incidents.get(incident_id)
        if incident is None:
            raise not_found(f"Incident {incident_id} not found")
        return incident

    def create_incident(self, body: Any, requester: dict) -> dict:
        """POST /incidents: validate like PagerDuty, then open the incident."""
        if not isinstance(body, dict) or not isinstance(body.get("incident"), dict):
            raise invalid('The request body must be {"incident": {...}}')
        data = body["incident"]
        errors = []
        if data.get("type") != "incident":
            errors.append("incident.type must be 'incident'")
        title = data.get("title")
        if not isinstance(title, str) or not title.strip():
            errors.append("incident.title must be a non-empty string")
        if "service" not in data:
            errors.append("incident.service is required")
        if "urgency" in data and data["urgency"] not in ("high", "low"):
            errors.append("incident.urgency must be 'high' or 'low'")
        if "assignments" in data and "escalation_policy" in data:
            errors.append("You can specify assignments or an escalation policy, but not both")
        if errors:
            raise invalid(*errors)
        with self.lock:
            service = self._ref_from("service", data["service"], self.services, "Service")
            if service.get("status") == "disabled":
                raise invalid(f"Service {service['id']} is disabled; incidents cannot be created on it")
            policy = None
            if "escalation_policy" in data:
                policy = self._ref_from(
                    "escalation_policy", data["escalation_policy"], self.escalation_policies, "Escalation Policy"
                )
            assignees = None
            if "assignments" in data:
                assignees = self._assignees_from(data["assignments"])
            priority = self._priority_from(data.get("priority"))
            details = (data.get("body") or {}).get("details") if isinstance(data.get("body"), dict) else None
            return self.open_incident(
                service,
                title=title,
                urgency=data.get("urgency"),
                incident_key=data.get("incident_key"),
                details=details,
                changed_by=self.user_ref(requester["id"]),
                policy=policy,
                assignees=assignees,
                priority=priority,
                conference_bridge=data.get("conference_bridge"),
            )

    def _assignees_from(self, assignments: Any) -> list[dict]:
        if not isinstance(assignments, list) or not assignments:
            raise invalid('assignments must be a non-empty list of {"assignee": {"id", "type"}}')
        refs = []
        for i, a in enumerate(assignments):
            assignee = a.get("assignee") if isinstance(a, dict) else None
            user = self._ref_from("user", assignee, self.users, f"assignments[{i}].assignee user")
            refs.append(self.user_ref(user["id"]))
        return refs

    def open_incident(
        self,
        service: dict,
        *,
        title: str,
        urgency: str | None,
        incident_key: str | None,
        details: Any,
        changed_by: dict,
        policy: dict | None = None,
        assignees: list[dict] | None = None,
        priority: dict | None = None,
        conference_bridge: dict | None = None,
        via_events: bool = False,
    ) -> dict:
        with self.lock:
            key = incident_key if incident_key else self._rng.getrandbits(128).to_bytes(16, "big").hex()
            if (service["id"], key) in self._open_keys:
                raise invalid(DEDUP_ERROR)
            if policy is None:
                policy = self.escalation_policies.get(service["escalation_policy"]["id"])
            now = self.now()
            stamp = iso(now)
            if assignees is None:
                assignees = self.rule_assignees(policy) if policy else []
                assigned_via = "escalation_policy"
            else:
                assigned_via = "direct_assignment"
            self._incident_counter += 1
            number = self._incident_counter
            incident_id = self.new_id()
            incident = {
                "id": incident_id,
                "type": "incident",
                "summary": f"[#{number}] {title}",
                "self": f"{API_BASE}/incidents/{incident_id}",
                "html_url": f"{WEB_BASE}/incidents/{incident_id}",
                "incident_number": number,
                "title": title,
                "description": title,
                "created_at": stamp,
                "updated_at": stamp,
                "status": "triggered",
                "incident_key": key,
                "service": make_ref("service", service["id"], service["name"]),
                "assignments": [{"at": stamp, "assignee": a} for a in assignees],
                "assigned_via": assigned_via,
                "last_status_change_at": stamp,
                "last_status_change_by": changed_by,
                "resolved_at": None,
                "first_trigger_log_entry": {
                    "type": "trigger_log_entry_reference",
                    "summary": "Triggered through the Events API" if via_events else "Triggered through the API",
                },
                "alert_counts": {"all": 1 if via_events else 0, "triggered": 1 if via_events else 0, "resolved": 0},
                "is_mergeable": True,
                "incident_type": {"name": "incident_default"},
                "escalation_policy": make_ref("escalation_policy", policy["id"], policy["name"]) if policy else None,
                "teams": [dict(t) for t in service.get("teams", [])],
                "pending_actions": [],
                "acknowledgements": [],
                "priority": make_ref("priority", priority["id"], priority["name"]) if priority else None,
                "resolve_reason": None,
                "conference_bridge": conference_bridge,
                "incidents_responders": [],
                "responder_requests": [],
                "urgency": urgency or service.get("incident_urgency_rule", {}).get("urgency") or "high",
                "body": {"type": "incident_body", "details": details},
                "resolve_count": 0,
                # Epoch seconds: sortable, and state.incidents stays JSON-serializable.
                "_created": now.timestamp(),
                "_resolved": None,
                "_resolution": None,
                "_escalation_level": 1,
            }
            trigger = self.log(
                incident,
                "trigger_log_entry",
                "Triggered through the Events API" if via_events else "Triggered through the API",
                changed_by,
            )
            incident["first_trigger_log_entry"].update(
                id=trigger["id"], self=trigger["self"], html_url=trigger["html_url"]
            )
            self.incidents[incident_id] = incident
            self.notes[incident_id] = []
            self._open_keys[(service["id"], key)] = incident_id
            return incident

    def update_incident(self, incident_id: str, data: Any, requester: dict, channel: str = "api") -> dict:
        """PUT /incidents/{id} body's `incident` object; validation happens before any change."""
        with self.lock:
            incident = self.get_incident(incident_id)
            apply = self._plan_update(incident, data, requester, channel)
            apply()
            return incident

    def bulk_update(self, body: Any, requester: dict) -> list[dict]:
        """PUT /incidents: all updates are validated first so a refusal changes nothing."""
        items = body.get("incidents") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise invalid('The request body must be {"incidents": [{"id", "type", ...}, ...]}')
        if len(items) > 250:
            raise invalid(f"You can update at most 250 incidents at a time ({len(items)} given)")
        with self.lock:
            plans = []
            for i, item in enumerate(items):
                if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                    raise invalid(f"incidents[{i}].id is required")
                incident = self.get_incident(item["id"])
                plans.append((incident, self._plan_update(incident, item, requester)))
            for _, apply in plans:
                apply()
            return [incident for incident, _ in plans]

    def _plan_update(self, incident: dict, data: Any, requester: dict, channel: str = "api") -> Callable[[], None]:
        if not isinstance(data, dict):
            raise invalid("incident must be an object")
        if data.get("type") not in ("incident", "incident_reference"):
            raise invalid("incident.type must be 'incident' or 'incident_reference'")
        status = data.get("status")
        if status is not None and status not in ("triggered", "acknowledged", "resolved"):
            raise invalid("status must be one of triggered, acknowledged, resolved")
        if "urgency" in data and data["urgency"] not in ("high", "low"):
            raise invalid("urgency must be 'high' or 'low'")
        if "assignments" in data and "escalation_policy" in data:
            raise invalid("You can specify assignments or an escalation policy, but not both")
        if "title" in data and (not isinstance(data["title"], str) or not data["title"].strip()):
            raise invalid("title must be a non-empty string")
        current = incident["status"]
        service = self.services.get(incident["service"]["id"])
        if "service" in data:
            service = self._ref_from("service", data["service"], self.services, "Service")
        policy = None
        if "escalation_policy" in data:
            policy = self._ref_from(
                "escalation_policy", data["escalation_policy"], self.escalation_policies, "Escalation Policy"
            )
        assignees = self._assignees_from(data["assignments"]) if "assignments" in data else None
        priority = self._priority_from(data["priority"]) if "priority" in data else None
        level = data.get("escalation_level")
        if level is not None:
            target_policy = policy or self.escalation_policies.get((incident["escalation_policy"] or {}).get("id"))
            rules = (target_policy or {}).get("escalation_rules") or []
            if not isinstance(level, int) or not 1 <= level <= len(rules):
                raise invalid(f"escalation_level must be between 1 and {len(rules)}")
        if status == "triggered" and current == "acknowledged":
            raise invalid("An acknowledged incident cannot be set back to triggered")
        reopening = current == "resolved" and status in OPEN_STATUSES
        key = (service["id"], incident["incident_key"])
        moving = service["id"] != incident["service"]["id"] and current in OPEN_STATUSES
        if (reopening or moving) and key in self._open_keys:
            raise invalid(DEDUP_ERROR)

        def apply() -> None:
            now = self.now()
            stamp = iso(now)
            actor = self.user_ref(requester["id"])
            changed = False
            for field_name in ("title", "urgency", "conference_bridge"):
                if field_name in data:
                    incident[field_name] = data[field_name]
                    changed = True
            if "title" in data:
                incident["summary"] = f"[#{incident['incident_number']}] {data['title']}"
                incident["description"] = data["title"]
            if "priority" in data:
                incident["priority"] = make_ref("priority", priority["id"], priority["name"]) if priority else None
                changed = True
            if "service" in data and service["id"] != incident["service"]["id"]:
                if incident["status"] in OPEN_STATUSES:
                    self._open_keys.pop((incident["service"]["id"], incident["incident_key"]), None)
                    self._open_keys[key] = incident["id"]
                incident["service"] = make_ref("service", service["id"], service["name"])
                incident["teams"] = [dict(t) for t in service.get("teams", [])]
                changed = True
            if policy is not None:
                incident["escalation_policy"] = make_ref("escalation_policy", policy["id"], policy["name"])
                incident["_escalation_level"] = 1
            if level is not None:
                incident["_escalation_level"] = level
            if assignees is not None:
                incident["assignments"] = [{"at": stamp, "assignee": a} for a in assignees]
                incident["assigned_via"] = "direct_assignment"
                changed = True
            elif policy is not None or level is not None:
                current_policy = self.escalation_policies.get(incident["escalation_policy"]["id"])
                incident["assignments"] = [
                    {"at": stamp, "assignee": a}
                    for a in self.rule_assignees(current_policy, incident["_escalation_level"])
                ]
                incident["assigned_via"] = "escalation_policy"
                changed = True
            if status == "resolved":
                incident["resolve_count"] += 1
                if incident["status"] != "resolved":
                    self._open_keys.pop((incident["service"]["id"], incident["incident_key"]), None)
                    incident.update(
                        status="resolved",
                        resolved_at=stamp,
                        last_status_change_at=stamp,
                        last_status_change_by=actor,
                        assignments=[],
                        pending_actions=[],
                        _resolved=now.timestamp(),
                        _resolution=data.get("resolution"),
                    )
                    counts = incident["alert_counts"]
                    counts["resolved"] += counts["triggered"]
                    counts["triggered"] = 0
                    changed = True
                    self.log(incident, "resolve_log_entry", f"Resolved by {actor['summary']}", actor, channel)
            elif status == "acknowledged" and incident["status"] != "acknowledged":
                if incident["status"] == "resolved":
                    self._reopen(incident, now)
                    self.log(incident, "trigger_log_entry", f"Reopened by {actor['summary']}", actor, channel)
                self.log(incident, "acknowledge_log_entry", f"Acknowledged by {actor['summary']}", actor, channel)
                incident["status"] = "acknowledged"
                incident["acknowledgements"].append({"at": stamp, "acknowledger": actor})
                incident["last_status_change_at"] = stamp
                incident["last_status_change_by"] = actor
                changed = True
            elif status == "triggered" and incident["status"] == "resolved":
                self._reopen(incident, now)
                self.log(incident, "trigger_log_entry", f"Reopened by {actor['summary']}", actor, channel)
                incident["last_status_change_at"] = stamp
                incident["last_status_change_by"] = actor
                changed = True
            if changed:
                incident["updated_at"] = stamp

        return apply

    def _reopen(self, incident: dict, now: datetime) -> None:
        incident.update(status="triggered", resolved_at=None, _resolved=None, acknowledgements=[])
        self._open_keys[(incident["service"]["id"], incident["incident_key"])] = incident["id"]
        policy = self.escalation_policies.get((incident["escalation_policy"] or {}).get("id"))
        incident["assignments"] = [
            {"at": iso(now), "assignee": a} for a in (self.rule_assignees(policy) if policy else [])
        ]
        incident["assigned_via"] = "escalation_policy"

    def add_note(self, incident_id: str, body: Any, requester: dict, channel: str = "api") -> dict:
        note = body.get("note") if isinstance(body, dict) else None
        content = note.get("content") if isinstance(note, dict) else None
        if not isinstance(content, str) or not content.strip():
            raise invalid('The request body must be {"note": {"content": "<non-empty string>"}}')
        if len(content) > 25000:
            raise invalid("Note content must be at most 25000 characters")
        with self.lock:
            incident = self.get_incident(incident_id)
            stamp = iso(self.now())
            note = {
                "id": self.new_id(),
                "user": self.user_ref(requester["id"]),
                "channel": {"summary": "The PagerDuty website or APIs"},
                "content": content,
                "created_at": stamp,
                "updated_at": stamp,
            }
            self.notes[incident_id].append(note)
            self.log(incident, "annotate_log_entry", "Note added", note["user"], channel, note=content)
            return note

    def add_responder_request(self, incident_id: str, body: Any, requester: dict) -> dict:
        """POST /incidents/{id}/responder_requests; targets must use the wrapped form the live API takes."""
        if "coordinated_responding" not in self.abilities:
            raise missing_ability("coordinated_responding")
        if not isinstance(body, dict):
            raise invalid("The request body must be a JSON object")
        errors = []
        if not isinstance(body.get("requester_id"), str):
            errors.append("requester_id is required (the id of the user asking for help)")
        if not isinstance(body.get("message"), str) or not body["message"].strip():
            errors.append("message is required")
        targets = body.get("responder_request_targets")
        if not isinstance(targets, list) or not targets:
            errors.append("responder_request_targets must be a non-empty list")
            targets = []
        unwrapped = []
        for i, item in enumerate(targets):
            inner = item.get("responder_request_target") if isinstance(item, dict) else None
            if not isinstance(inner, dict):
                errors.append(
                    f"responder_request_targets[{i}] must be wrapped as "
                    '{"responder_request_target": {"id": ..., "type": ...}}; a flat {"id", "type"} '
                    "target is refused by the live API"
                )
                continue
            if inner.get("type") not in ("user_reference", "escalation_policy_reference"):
                errors.append(
                    f"responder_request_targets[{i}].responder_request_target.type must be "
                    "'user_reference' or 'escalation_policy_reference'"
                )
                continue
            unwrapped.append(inner)
        if errors:
            raise invalid(*errors)
        with self.lock:
            incident = self.get_incident(incident_id)
            if incident["status"] == "resolved":
                raise invalid(f"Incident {incident_id} is resolved; responders cannot be requested")
            requester_user = self.users.get(body["requester_id"])
            if requester_user is None:
                raise invalid(f"Requester {body['requester_id']} not found")
            resolved_targets = []
            for inner in unwrapped:
                if inner["type"] == "user_reference":
                    obj = self.users.get(inner.get("id"))
                    if obj is None:
                        raise invalid(f"Responder request target user {inner.get('id')} not found")
                    resolved_targets.append(("user", obj, [self.user_ref(obj["id"])]))
                else:
                    obj = self.escalation_policies.get(inner.get("id"))
                    if obj is None:
                        raise invalid(f"Responder request target escalation policy {inner.get('id')} not found")
                    resolved_targets.append(("escalation_policy", obj, self.rule_assignees(obj)))
            stamp = iso(self.now())
            incident_ref = make_ref("incident", incident["id"], incident["summary"])
            requester_ref = self.user_ref(requester_user["id"])
            out_targets = []
            for kind, obj, users in resolved_targets:
                responders = []
                for user in users:
                    responder = {
                        "state": "pending",
                        "user": user,
                        "incident": incident_ref,
                        "updated_at": stamp,
                        "message": body["message"],
                        "requester": requester_ref,
                        "requested_at": stamp,
                    }
                    responders.append(responder)
                    incident["incidents_responders"].append(responder)
                out_targets.append(
                    {
                        "responder_request_target": {
                            "type": kind,
                            "id": obj["id"],
                            "summary": obj["name"],
                            "incidents_responders": responders,
                        }
                    }
                )
            request = {
                "incident": incident_ref,
                "requester": requester_ref,
                "requested_at": stamp,
                "message": body["message"],
                "responder_request_targets": out_targets,
            }
            incident["responder_requests"].append(request)
            targets_text = ", ".join(t["responder_request_target"]["summary"] for t in out_targets)
            self.log(
                incident,
                "assign_log_entry",
                f"Responders requested by {requester_ref['summary']}: {targets_text}",
                requester_ref,
                note=body["message"],
            )
            incident["updated_at"] = stamp
            return request

    # -- Events API v2 --------------------------------------------------------------------------

    def process_event(self, body: Any) -> tuple[int, dict]:
        """POST /v2/enqueue: PagerDuty's validation, then trigger/acknowledge/resolve."""
        errors = validate_event(body)
        if errors:
            return 400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        with self.lock:
            action = body["event_action"]
            dedup_key = body.get("dedup_key") or self._rng.getrandbits(128).to_bytes(16, "big").hex()
            record = {
                "received_at": iso(self.now()),
                "routing_key": body["routing_key"],
                "event_action": action,
                "dedup_key": dedup_key,
                "payload": body.get("payload"),
                "body": body,
                "result": None,
                "incident_id": None,
            }
            self.events.append(record)
            service_id = self._services_by_key.get(body["routing_key"])
            service = self.services.get(service_id) if service_id else None
            open_id = self._open_keys.get((service_id, dedup_key)) if service else None
            if service is None:
                record["result"] = "dropped: no service has this integration key"
            elif action == "trigger":
                if open_id:
                    counts = self.incidents[open_id]["alert_counts"]
                    counts["all"] += 1
                    counts["triggered"] += 1
                    record.update(result="deduplicated", incident_id=open_id)
                elif service.get("status") == "disabled":
                    record["result"] = "dropped: service is disabled"
                else:
                    payload = body["payload"]
                    urgency = service.get("incident_urgency_rule", {}).get("urgency") or "high"
                    if service.get("incident_urgency_rule", {}).get("type") == "severity_based":
                        urgency = "high" if payload["severity"] in ("critical", "error") else "low"
                    incident = self.open_incident(
                        service,
                        title=payload["summary"],
                        urgency=urgency,
                        incident_key=dedup_key,
                        details=payload.get("custom_details"),
                        changed_by=make_ref("service", service["id"], service["name"]),
                        via_events=True,
                    )
                    record.update(result="incident_created", incident_id=incident["id"])
            elif open_id is None:
                record["result"] = "dropped: no open alert with this dedup_key"
            else:
                incident = self.incidents[open_id]
                actor = make_ref("service", service["id"], service["name"])
                stamp = iso(self.now())
                if action == "acknowledge":
                    if incident["status"] == "triggered":
                        incident.update(status="acknowledged", last_status_change_at=stamp, updated_at=stamp)
                        incident["last_status_change_by"] = actor
                        incident["acknowledgements"].append({"at": stamp, "acknowledger": actor})
                        self.log(incident, "acknowledge_log_entry", "Acknowledged through the Events API", actor)
                    record.update(result="acknowledged", incident_id=open_id)
                else:
                    incident["resolve_count"] += 1
                    self._open_keys.pop((service_id, dedup_key), None)
                    incident.update(
                        status="resolved",
                        resolved_at=stamp,
                        updated_at=stamp,
                        last_status_change_at=stamp,
                        last_status_change_by=actor,
                        assignments=[],
                        _resolved=self.now().timestamp(),
                    )
                    counts = incident["alert_counts"]
                    counts["resolved"] += counts["triggered"]
                    counts["triggered"] = 0
                    self.log(incident, "resolve_log_entry", "Resolved through the Events API", actor)
                    record.update(result="resolved", incident_id=open_id)
            return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}

    def process_change_event(self, body: Any) -> tuple[int, dict]:
        errors = []
        if not isinstance(body, dict):
            errors.append("Event object must be a JSON object")
        else:
            key = body.get("routing_key")
            if not isinstance(key, str) or not key:
                errors.append("'routing_key' is missing or blank")
            elif len(key) != 32:
                errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
            payload = body.get("payload")
            if not isinstance(payload, dict):
                errors.append("'payload' is missing or blank")
            else:
                if not isinstance(payload.get("summary"), str) or not payload["summary"].strip():
                    errors.append("'payload.summary' is missing or blank")
                elif len(payload["summary"]) > 1024:
                    errors.append("'payload.summary' is too long (maximum is 1024 characters)")
        if errors:
            return 400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        with self.lock:
            self.change_events.append({"received_at": iso(self.now()), "body": body})
        return 202, {"status": "success", "message": "Change event processed"}


SEVERITIES = ("critical", "error", "warning", "info")


def validate_event(body: Any) -> list[str]:
    """The checks the Events API v2 applies before accepting an event, in its own words."""
    if not isinstance(body, dict):
        return ["Event object must be a JSON object"]
    errors = []
    key = body.get("routing_key")
    if not isinstance(key, str) or not key:
        errors.append("'routing_key' is missing or blank")
    elif len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = body.get("event_action")
    if not action:
        errors.append("'event_action' is missing or blank")
    elif action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid (must be one of the following: 'trigger', 'acknowledge' or 'resolve')")
    dedup_key = body.get("dedup_key")
    if dedup_key is not None and not isinstance(dedup_key, str):
        errors.append("'dedup_key' must be a string")
    elif isinstance(dedup_key, str) and len(dedup_key) > 255:
        errors.append("'dedup_key' is too long (maximum is 255 characters)")
    elif action in ("acknowledge", "resolve") and not dedup_key:
        errors.append("'dedup_key' is missing or blank")
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or blank")
        else:
            summary = payload.get("summary")
            if not isinstance(summary, str) or not summary.strip():
                errors.append("'payload.summary' is missing or blank")
            elif len(summary) > 1024:
                errors.append("'payload.summary' is too long (maximum is 1024 characters)")
            source = payload.get("source")
            if not isinstance(source, str) or not source.strip():
                errors.append("'payload.source' is missing or blank")
            severity = payload.get("severity")
            if not severity:
                errors.append("'payload.severity' is missing or blank")
            elif severity not in SEVERITIES:
                errors.append(
                    "'payload.severity' is invalid (must be one of the following: "
                    "'critical', 'warning', 'error' or 'info')"
                )
            timestamp = payload.get("timestamp")
            if timestamp is not None:
                try:
                    sched.parse_time(timestamp)
                except (TypeError, ValueError, AttributeError):
                    errors.append("'payload.timestamp' is invalid (must be an ISO 8601 date-time)")
    return errors


def parse_window_time(value: str, name: str) -> datetime:
    try:
        return sched.parse_time(value)
    except (TypeError, ValueError) as exc:
        raise invalid(f"{name} must be an ISO 8601 date-time ({value!r} given)") from exc
