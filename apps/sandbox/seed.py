"""Deterministic PagerDuty account generator for the stand-in.

The same arguments give byte-identical data (one `random.Random(seed)`, a fixed time anchor, no
set iteration), so tests, the demo and benchmarks can rely on names and ids. The well-known objects
in state.py exist whatever the sizes and count towards them; everything else is spread over teams
(each schedule, escalation policy and service belongs to exactly one team) so `team_ids[]` filters
partition the data — the way a client must page an account past the 10,000-record limit.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from itertools import accumulate

from . import names
from . import schedules as sched
from .state import (
    ADMIN_EMAIL,
    ADMIN_USER_ID,
    ADMIN_USER_NAME,
    API_BASE,
    CHECKOUT_ESCALATION_POLICY_ID,
    CHECKOUT_INTEGRATION_KEY,
    CHECKOUT_SCHEDULE_ID,
    CHECKOUT_SERVICE_ID,
    PRIORITY_IDS,
    RESPONDER_EMAIL,
    RESPONDER_USER_ID,
    RESPONDER_USER_NAME,
    SRE_TEAM_ID,
    WEB_BASE,
    SandboxState,
    make_ref,
)

# Fixed anchor (a Monday): generated times never depend on when the seed runs.
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

JOB_TITLES = (
    "Site Reliability Engineer",
    "Senior Site Reliability Engineer",
    "Staff Engineer",
    "Software Engineer",
    "Senior Software Engineer",
    "Platform Engineer",
    "Database Administrator",
    "Network Engineer",
    "Security Engineer",
    "Engineering Manager",
    "Director of Engineering",
    "Incident Commander",
    "Support Engineer",
    "Data Engineer",
    "Product Manager",
)
TIME_ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "America/Lima",
    "Europe/London",
    "Europe/Dublin",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/Warsaw",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "UTC",
)
COLORS = ("purple", "red", "green", "blue", "teal", "orange", "brown", "dark-slate-grey", "cayenne", "turquoise")
TEAM_WORDS = [
    "Payments",
    "Checkout",
    "Search",
    "Identity",
    "Billing",
    "Catalog",
    "Inventory",
    "Shipping",
    "Notifications",
    "Messaging",
    "Mobile",
    "Web",
    "Frontend",
    "Storage",
    "Database",
    "Networking",
    "Kubernetes",
    "Observability",
    "Security",
    "Data",
    "Analytics",
    "Growth",
    "Ads",
    "Recommendations",
    "Fraud",
    "Ledger",
    "Orders",
    "Pricing",
    "Accounts",
    "Onboarding",
    "Support",
    "Edge",
    "CDN",
    "Streaming",
    "Media",
    "Maps",
    "Logistics",
    "Compliance",
    "Warehouse",
    "Reporting",
    "Integrations",
    "Partners",
    "Gateway",
    "Auth",
    "Email",
    "Voice",
    "Chat",
    "Scheduling",
    "Marketplace",
    "Loyalty",
    "Subscriptions",
    "Infra",
    "Release",
    "Tooling",
    "Experimentation",
    "ML",
    "Platform",
]
TEAM_QUALIFIERS = ("", "Core", "Platform", "Infra", "EMEA", "APAC", "Americas", "Mobile", "Data", "Edge")
SCHEDULE_KINDS = (
    "Primary",
    "Secondary",
    "Follow the Sun",
    "Business Hours",
    "Weekend",
    "Night Shift",
    "Shadow",
    "Backup",
)
POLICY_KINDS = ("on-call", "Critical", "Business Hours", "Escalation", "Tier 1", "Tier 2")
SERVICE_KINDS = ("API", "Worker", "Web", "Database", "Queue", "Cache", "Cron", "Gateway", "Batch", "Frontend")
ROLE_WEIGHTS = (("user", 70), ("limited_user", 12), ("observer", 8), ("admin", 8), ("read_only_user", 2))
TEAM_ROLE_WEIGHTS = (("responder", 80), ("manager", 8), ("observer", 12))
SERVICE_STATUS_WEIGHTS = (("active", 84), ("warning", 4), ("critical", 3), ("maintenance", 3), ("disabled", 6))
TURN_LENGTHS = ((86400, 40), (604800, 45), (43200, 10), (1209600, 5))


def _weighted(rng: random.Random, table) -> object:
    values, weights = zip(*table, strict=True)
    return rng.choices(values, weights=weights)[0]


def _avatar(email: str) -> str:
    digest = hashlib.md5(email.encode(), usedforsecurity=False).hexdigest()
    return f"https://secure.gravatar.com/avatar/{digest}.png?d=mm&r=PG"


class _Generator:
    def __init__(self, state: SandboxState, rng: random.Random):
        self.state = state
        self.rng = rng
        self.emails: set[str] = set()
        self.team_order: list[str] = []
        self.team_pool: dict[str, list[str]] = {}
        self.schedules_by_team: dict[str, list[str]] = {}
        self.policies_by_team: dict[str, list[str]] = {}
        self.names: set[str] = set()

    def new_id(self) -> str:
        return self.state.new_id(self.rng)

    def unique_name(self, base: str) -> str:
        name, n = base, 2
        while name in self.names:
            name, n = f"{base} {n}", n + 1
        self.names.add(name)
        return name

    # -- priorities, teams, users -----------------------------------------------------------------

    def priorities(self) -> None:
        descriptions = {
            "P1": "Critical issue that warrants public notification and liaison with executive teams",
            "P2": "Critical system issue actively impacting many customers' ability to use the product",
            "P3": "Stability or minor customer-impacting issues that require immediate attention",
            "P4": "Minor issues requiring action, but not affecting customer ability to use the product",
            "P5": "Cosmetic issues or bugs, not affecting customer ability to use the product",
        }
        for name, pid in PRIORITY_IDS.items():
            self.state.reserve_id(pid)
            self.state.priorities[pid] = {
                "id": pid,
                "type": "priority",
                "summary": name,
                "self": f"{API_BASE}/priorities/{pid}",
                "html_url": None,
                "name": name,
                "description": descriptions[name],
            }

    def team(self, team_id: str, name: str, description: str) -> dict:
        team = {
            "id": team_id,
            "type": "team",
            "summary": name,
            "self": f"{API_BASE}/teams/{team_id}",
            "html_url": f"{WEB_BASE}/teams/{team_id}",
            "name": name,
            "description": description,
            "default_role": "manager",
            "parent": None,
        }
        self.state.teams[team_id] = team
        self.state.team_members[team_id] = []
        self.team_order.append(team_id)
        self.team_pool[team_id] = []
        return team

    def teams(self, count: int) -> None:
        self.state.reserve_id(SRE_TEAM_ID)
        self.team(SRE_TEAM_ID, "SRE", "Site reliability engineering: owns the checkout on-call")
        combos = [f"{w} {q}".strip() for q in TEAM_QUALIFIERS for w in TEAM_WORDS]
        extra = max(0, count - 1)
        names = self.rng.sample(combos, min(extra, len(combos)))
        while len(names) < extra:
            names.append(f"Team {len(names) + 1}")
        for name in names:
            self.team(self.new_id(), name, f"The {name} team")

    def user(self, user_id: str, name: str, email: str, role: str, time_zone: str, job_title: str) -> dict:
        rng = self.rng
        ref_of = {}
        cms = []

        def contact(kind: str, label: str, address: str, **extra) -> None:
            cm_id = self.new_id()
            cm = {
                "id": cm_id,
                "type": kind,
                "summary": label,
                "self": f"{API_BASE}/users/{user_id}/contact_methods/{cm_id}",
                "html_url": None,
                "label": label,
                "address": address,
                **extra,
            }
            self.state.contact_methods[cm_id] = cm
            ref = {k: cm[k] for k in ("id", "summary", "self", "html_url")}
            ref["type"] = f"{kind}_reference"
            ref_of[kind] = ref
            cms.append(ref)

        contact("email_contact_method", "Default", email, send_short_email=False, enabled=True)
        if rng.random() < 0.8:
            country = rng.choice((1, 1, 1, 44, 49, 33, 81, 61, 91, 55))
            number = f"{rng.randrange(200, 999)}{rng.randrange(1000000, 9999999)}"
            contact("phone_contact_method", "Mobile", number, country_code=country, enabled=True, blacklisted=False)
            if rng.random() < 0.75:
                contact("sms_contact_method", "Mobile", number, country_code=country, enabled=True, blacklisted=False)
        if rng.random() < 0.4:
            device = rng.choice(("ios", "android"))
            created = sched.format_time(EPOCH + timedelta(days=rng.randrange(0, 700)))
            contact(
                "push_notification_contact_method",
                "iPhone" if device == "ios" else "Pixel",
                f"{rng.getrandbits(64):016x}",
                device_type=device,
                created_at=created,
                blacklisted=False,
                sounds=[],
            )
        rules = []
        plan = [("email_contact_method", 0, "high"), ("email_contact_method", 0, "low")]
        if "push_notification_contact_method" in ref_of:
            plan.insert(1, ("push_notification_contact_method", 0, "high"))
        if "phone_contact_method" in ref_of:
            plan.insert(1, ("phone_contact_method", rng.choice((1, 3, 5, 10)), "high"))
        if "sms_contact_method" in ref_of:
            plan.insert(1, ("sms_contact_method", 0, "high"))
        for kind, delay, urgency in plan:
            rule_id = self.new_id()
            channel = kind.replace("_contact_method", "").replace("_notification", "").capitalize()
            rule = {
                "id": rule_id,
                "type": "assignment_notification_rule",
                "summary": f"{delay} minutes: channel {channel}",
                "self": f"{API_BASE}/users/{user_id}/notification_rules/{rule_id}",
                "html_url": None,
                "start_delay_in_minutes": delay,
                "contact_method": ref_of[kind],
                "urgency": urgency,
            }
            self.state.notification_rules[rule_id] = rule
            rules.append({k: rule[k] for k in ("id", "summary", "self", "html_url")})
            rules[-1]["type"] = "assignment_notification_rule_reference"
        user = {
            "id": user_id,
            "type": "user",
            "summary": name,
            "self": f"{API_BASE}/users/{user_id}",
            "html_url": f"{WEB_BASE}/users/{user_id}",
            "name": name,
            "email": email,
            "time_zone": time_zone,
            "color": rng.choice(COLORS),
            "role": role,
            "avatar_url": _avatar(email),
            "description": None,
            "invitation_sent": False,
            "job_title": job_title,
            "teams": [],
            "contact_methods": cms,
            "notification_rules": rules,
            "coordinations": [],
            "billed": role not in ("observer", "read_only_user"),
            "locale": "en-US",
        }
        self.state.users[user_id] = user
        self.emails.add(email)
        return user

    def join(self, team_id: str, user_id: str, role: str) -> None:
        team = self.state.teams[team_id]
        self.state.team_members[team_id].append({"user": self.state.user_ref(user_id), "role": role})
        self.state.users[user_id]["teams"].append(make_ref("team", team_id, team["name"]))
        if role != "observer":
            self.team_pool[team_id].append(user_id)

    def team_weights(self) -> list[float]:
        """Teams of very uneven size: a few hold thousands, most a few dozen (Zipf-like, ranks shuffled)."""
        ranks = list(range(len(self.team_order)))
        self.rng.shuffle(ranks)
        return [1.0 / (rank + 1) ** 1.1 for rank in ranks]

    def pick_teams(self, n: int, cum_weights: list[float]) -> list[str]:
        chosen: list[str] = []
        for _ in range(8 * n):
            if len(chosen) >= min(n, len(self.team_order)):
                break
            team_id = self.rng.choices(self.team_order, cum_weights=cum_weights)[0]
            if team_id not in chosen:
                chosen.append(team_id)
        return chosen

    def users(self, count: int) -> None:
        rng = self.rng
        for uid, name, email, role, title in (
            (ADMIN_USER_ID, ADMIN_USER_NAME, ADMIN_EMAIL, "admin", "Site Reliability Engineer"),
            (RESPONDER_USER_ID, RESPONDER_USER_NAME, RESPONDER_EMAIL, "user", "Software Engineer"),
        ):
            self.state.reserve_id(uid)
            self.user(uid, name, email, role, "UTC", title)
        self.join(SRE_TEAM_ID, ADMIN_USER_ID, "manager")
        self.join(SRE_TEAM_ID, RESPONDER_USER_ID, "responder")
        cum_weights = list(accumulate(self.team_weights()))
        for i in range(max(0, count - 2)):
            person = names.person(rng)
            email, n = f"{person.email_local}@{person.domain}", 2
            while email in self.emails:
                email, n = f"{person.email_local}{n}@{person.domain}", n + 1
            role = "owner" if i == 0 else _weighted(rng, ROLE_WEIGHTS)
            title = "Integration" if person.is_bot else rng.choice(JOB_TITLES)
            user = self.user(self.new_id(), person.name, email, role, rng.choice(TIME_ZONES), title)
            draw = rng.random()
            # About one person in ten (and most bots) in no team, most in one, some in several.
            if person.is_bot:
                n_teams = 0 if draw < 0.7 else 1
            else:
                n_teams = 0 if draw < 0.10 else 1 if draw < 0.75 else 2 if draw < 0.95 else 3
            for team_id in self.pick_teams(n_teams, cum_weights):
                if not self.state.team_members[team_id]:
                    team_role = "manager"
                elif role in ("observer", "read_only_user"):
                    team_role = "observer"
                else:
                    team_role = _weighted(rng, TEAM_ROLE_WEIGHTS)
                self.join(team_id, user["id"], team_role)

    # -- schedules, escalation policies, services ---------------------------------------------------

    def pick_users(self, team_id: str, k: int) -> list[str]:
        pool = self.team_pool.get(team_id) or []
        if len(pool) < k:
            pool = list(dict.fromkeys(pool + self.rng.sample(list(self.state.users), min(k, len(self.state.users)))))
        return self.rng.sample(pool, min(k, len(pool)))

    def layer(self, index: int, tz, start: datetime, user_ids: list[str], turn: int, restrictions) -> dict:
        return {
            "id": self.new_id(),
            "name": f"Layer {index}",
            "start": sched.format_time(start, tz),
            "end": None,
            "rotation_virtual_start": sched.format_time(start, tz),
            "rotation_turn_length_seconds": turn,
            "users": [{"user": self.state.user_ref(uid)} for uid in user_ids],
            "restrictions": restrictions,
        }

    def schedule(self, schedule_id: str, name: str, team_id: str, time_zone: str, layers: list[dict]) -> dict:
        users = {}
        for layer in layers:
            for u in layer["users"]:
                users.setdefault(u["user"]["id"], dict(u["user"]))
        team = self.state.teams[team_id]
        return {
            "id": schedule_id,
            "type": "schedule",
            "summary": name,
            "self": f"{API_BASE}/schedules/{schedule_id}",
            "html_url": f"{WEB_BASE}/schedules/{schedule_id}",
            "name": name,
            "time_zone": time_zone,
            "description": f"{name} rotation",
            "escalation_policies": [],
            "users": list(users.values()),
            "teams": [make_ref("team", team_id, team["name"])],
            "schedule_layers": layers,
            "_overrides": [],
        }

    def random_schedule(self, team_id: str, name: str) -> dict:
        rng = self.rng
        time_zone = rng.choice(TIME_ZONES)
        tz = sched.get_zone(time_zone)
        n_layers = 1 if (d := rng.random()) < 0.5 else 2 if d < 0.85 else 3
        layers = []
        for index in range(1, n_layers + 1):
            day = EPOCH.date() + timedelta(days=rng.randrange(0, 540))
            hour = rng.choice((0, 8, 9, 10, 17))
            start = datetime(day.year, day.month, day.day, hour, tzinfo=tz)
            restrictions = []
            draw = rng.random()
            if index > 1 or draw < 0.3:
                if draw < 0.7:
                    restrictions.append(
                        {
                            "type": "daily_restriction",
                            "start_time_of_day": rng.choice(("08:00:00", "09:00:00", "10:00:00", "18:00:00")),
                            "duration_seconds": rng.choice((8, 9, 10, 12)) * 3600,
                        }
                    )
                else:
                    restrictions.append(
                        {
                            "type": "weekly_restriction",
                            "start_day_of_week": rng.choice((1, 6)),
                            "start_time_of_day": "09:00:00",
                            "duration_seconds": rng.choice((4 * 86400 + 8 * 3600, 2 * 86400)),
                        }
                    )
            user_ids = self.pick_users(team_id, rng.randint(2, 6))
            layers.append(self.layer(index, tz, start, user_ids, _weighted(rng, TURN_LENGTHS), restrictions))
        schedule = self.schedule(self.new_id(), name, team_id, time_zone, layers)
        if rng.random() < 0.2:
            for _ in range(rng.randint(1, 3)):
                start = EPOCH + timedelta(days=rng.randrange(0, 1460), hours=rng.randrange(0, 24))
                user_id = rng.choice(self.pick_users(team_id, 1) or list(self.state.users))
                schedule["_overrides"].append(
                    {
                        "id": self.new_id(),
                        "start": sched.format_time(start, tz),
                        "end": sched.format_time(start + timedelta(hours=rng.choice((4, 8, 12, 24))), tz),
                        "user": self.state.user_ref(user_id),
                    }
                )
        return schedule

    def schedules(self, count: int) -> None:
        self.state.reserve_id(CHECKOUT_SCHEDULE_ID)
        layer = self.layer(1, UTC, EPOCH, [ADMIN_USER_ID, RESPONDER_USER_ID], 604800, [])
        checkout = self.schedule(CHECKOUT_SCHEDULE_ID, "Checkout primary", SRE_TEAM_ID, "UTC", [layer])
        self.state.schedules[CHECKOUT_SCHEDULE_ID] = checkout
        self.schedules_by_team.setdefault(SRE_TEAM_ID, []).append(CHECKOUT_SCHEDULE_ID)
        self.names.add(checkout["name"])
        for i in range(max(0, count - 1)):
            team_id = self.team_order[(i + 1) % len(self.team_order)]
            name = self.unique_name(f"{self.state.teams[team_id]['name']} {self.rng.choice(SCHEDULE_KINDS)}")
            schedule = self.random_schedule(team_id, name)
            self.state.schedules[schedule["id"]] = schedule
            self.schedules_by_team.setdefault(team_id, []).append(schedule["id"])
        # Newer "v3" (shift-based) schedules: targets of type schedule_v3_reference, served by /v3/schedules
        # only. One unrestricted rotation each, so their /v3 shape (a repeating event per rotation) is exact.
        for i in range(max(1, count // 20)):
            team_id = self.team_order[(i + 1) % len(self.team_order)]
            name = self.unique_name(f"{self.state.teams[team_id]['name']} Rotation v3")
            schedule = self.random_schedule(team_id, name)
            schedule["schedule_layers"] = schedule["schedule_layers"][:1]
            schedule["schedule_layers"][0]["restrictions"] = []
            schedule["type"] = "schedule_v3"
            schedule["self"] = f"{API_BASE}/v3/schedules/{schedule['id']}"
            self.state.schedules_v3[schedule["id"]] = schedule

    def target(self, team_id: str, prefer_schedule: bool) -> dict:
        rng = self.rng
        team_schedules = self.schedules_by_team.get(team_id) or []
        if rng.random() < 0.05 and self.state.schedules_v3:
            v3 = self.state.schedules_v3[rng.choice(list(self.state.schedules_v3))]
            return make_ref("schedule_v3", v3["id"], v3["name"])
        if prefer_schedule and team_schedules and rng.random() < 0.8:
            schedule = self.state.schedules[rng.choice(team_schedules)]
            return make_ref("schedule", schedule["id"], schedule["name"])
        user_id = self.pick_users(team_id, 1)[0]
        return self.state.user_ref(user_id)

    def policy(self, policy_id: str, name: str, team_id: str, rules: list[dict], num_loops: int) -> dict:
        team = self.state.teams[team_id]
        policy = {
            "id": policy_id,
            "type": "escalation_policy",
            "summary": name,
            "self": f"{API_BASE}/escalation_policies/{policy_id}",
            "html_url": f"{WEB_BASE}/escalation_policies/{policy_id}",
            "name": name,
            "description": f"Escalation for {team['name']}",
            "on_call_handoff_notifications": "if_has_services",
            "escalation_rules": rules,
            "services": [],
            "num_loops": num_loops,
            "teams": [make_ref("team", team_id, team["name"])],
        }
        for rule in rules:
            for target in rule["targets"]:
                if target["type"] in ("schedule_reference", "schedule_v3_reference"):
                    schedules = (
                        self.state.schedules if target["type"] == "schedule_reference" else self.state.schedules_v3
                    )
                    refs = schedules[target["id"]]["escalation_policies"]
                    if all(r["id"] != policy_id for r in refs):
                        refs.append(make_ref("escalation_policy", policy_id, name))
        self.state.escalation_policies[policy_id] = policy
        self.policies_by_team.setdefault(team_id, []).append(policy_id)
        return policy

    def escalation_policies(self, count: int) -> None:
        rng = self.rng
        self.state.reserve_id(CHECKOUT_ESCALATION_POLICY_ID)
        rules = [
            {
                "id": self.new_id(),
                "escalation_delay_in_minutes": 30,
                "targets": [make_ref("schedule", CHECKOUT_SCHEDULE_ID, "Checkout primary")],
            },
            {
                "id": self.new_id(),
                "escalation_delay_in_minutes": 30,
                "targets": [self.state.user_ref(RESPONDER_USER_ID)],
            },
        ]
        self.policy(CHECKOUT_ESCALATION_POLICY_ID, "Checkout on-call", SRE_TEAM_ID, rules, 1)
        self.names.add("Checkout on-call")
        for i in range(max(0, count - 1)):
            team_id = self.team_order[(i + 1) % len(self.team_order)]
            name = self.unique_name(f"{self.state.teams[team_id]['name']} {rng.choice(POLICY_KINDS)}")
            rules = []
            for level in range(rng.randint(1, 3)):
                targets: dict[str, dict] = {}
                for _ in range(rng.choice((1, 1, 1, 2))):
                    ref = self.target(team_id, prefer_schedule=level == 0 or rng.random() < 0.4)
                    targets.setdefault(ref["id"], ref)
                rules.append(
                    {
                        "id": self.new_id(),
                        "escalation_delay_in_minutes": rng.choice((5, 10, 15, 30, 60)),
                        "targets": list(targets.values()),
                    }
                )
            self.policy(self.new_id(), name, team_id, rules, rng.choice((0, 0, 1, 2, 3)))

    def service(self, service_id: str, name: str, team_id: str, policy_id: str, status: str, key: str, urgency_rule):
        team = self.state.teams[team_id]
        policy = self.state.escalation_policies[policy_id]
        integration_id = self.new_id()
        created = sched.format_time(
            EPOCH + timedelta(days=self.rng.randrange(0, 365), seconds=self.rng.randrange(86400))
        )
        integration = {
            "id": integration_id,
            "type": "events_api_v2_inbound_integration",
            "summary": "Events API v2",
            "self": f"{API_BASE}/services/{service_id}/integrations/{integration_id}",
            "html_url": f"{WEB_BASE}/services/{service_id}/integrations/{integration_id}",
            "name": "Events API v2",
            "service": make_ref("service", service_id, name),
            "created_at": created,
            "vendor": None,
            "integration_key": key,
        }
        self.state.integrations[integration_id] = integration
        service = {
            "id": service_id,
            "type": "service",
            "summary": name,
            "self": f"{API_BASE}/services/{service_id}",
            "html_url": f"{WEB_BASE}/service-directory/{service_id}",
            "name": name,
            "description": f"{name}, run by {team['name']}",
            "auto_resolve_timeout": self.rng.choice((14400, None)),
            "acknowledgement_timeout": self.rng.choice((600, 1800, None)),
            "created_at": created,
            "updated_at": created,
            "status": status,
            "last_incident_timestamp": None,
            "alert_creation": "create_alerts_and_incidents",
            "escalation_policy": make_ref("escalation_policy", policy_id, policy["name"]),
            "teams": [make_ref("team", team_id, team["name"])],
            "integrations": [
                {
                    "id": integration_id,
                    "type": "events_api_v2_inbound_integration_reference",
                    "summary": "Events API v2",
                    "self": integration["self"],
                    "html_url": integration["html_url"],
                }
            ],
            "incident_urgency_rule": urgency_rule,
            "support_hours": None,
            "scheduled_actions": [],
            "addons": [],
            "alert_grouping_parameters": {"type": None},
            "integration_key": key,
        }
        self.state.services[service_id] = service
        policy["services"].append(make_ref("service", service_id, name))
        return service

    def services(self, count: int) -> None:
        rng = self.rng
        self.state.reserve_id(CHECKOUT_SERVICE_ID)
        self.service(
            CHECKOUT_SERVICE_ID,
            "Checkout API",
            SRE_TEAM_ID,
            CHECKOUT_ESCALATION_POLICY_ID,
            "active",
            CHECKOUT_INTEGRATION_KEY,
            {"type": "constant", "urgency": "high"},
        )
        self.names.add("Checkout API")
        for i in range(max(0, count - 1)):
            team_id = self.team_order[(i + 1) % len(self.team_order)]
            policies = self.policies_by_team.get(team_id) or list(self.state.escalation_policies)
            word = self.state.teams[team_id]["name"].split()[0]
            name = self.unique_name(f"{word} {rng.choice(SERVICE_KINDS)}")
            draw = rng.random()
            urgency_rule = (
                {"type": "severity_based"}
                if draw < 0.2
                else {"type": "constant", "urgency": "low" if draw < 0.35 else "high"}
            )
            self.service(
                self.new_id(),
                name,
                team_id,
                rng.choice(policies),
                _weighted(rng, SERVICE_STATUS_WEIGHTS),
                f"{rng.getrandbits(128):032x}",
                urgency_rule,
            )


def _sorted_in_place(collection: dict, key) -> None:
    items = sorted(collection.items(), key=lambda kv: (key(kv[1]), kv[0]))
    collection.clear()
    collection.update(items)


def seed_account(
    state: SandboxState,
    users: int = 20,
    teams: int = 3,
    schedules: int = 4,
    escalation_policies: int = 3,
    services: int = 4,
    seed: int = 1,
) -> SandboxState:
    """Replace the state's directory with a generated account; returns the state.

    Sizes are totals including the well-known objects (so users=12000 gives 12,000 users); sizes
    smaller than the well-known set still give the well-known set. Incidents, events, recorded
    requests and faults are cleared too.
    """
    rng = random.Random(seed)
    with state.lock:
        state.clear_directory()
        gen = _Generator(state, rng)
        gen.priorities()
        gen.teams(teams)
        gen.users(users)
        gen.schedules(schedules)
        gen.escalation_policies(escalation_policies)
        gen.services(services)
        # List endpoints return names in alphabetical order, as PagerDuty does.
        for collection in (
            state.users,
            state.teams,
            state.schedules,
            state.schedules_v3,
            state.escalation_policies,
            state.services,
        ):
            _sorted_in_place(collection, lambda obj: obj["name"].lower())
        state.index_directory()
        state.seed_params = {
            "users": users,
            "teams": teams,
            "schedules": schedules,
            "escalation_policies": escalation_policies,
            "services": services,
            "seed": seed,
        }
        state._runtime_seed = seed
        state.reset(faults=False)
    return state
