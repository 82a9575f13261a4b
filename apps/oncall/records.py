"""One shape for "what we know about an object", whether it came from PagerDuty or from our tables.

Plan and apply both compare records, never raw API payloads or model instances, so a field that
PagerDuty sends in two spellings (a reference or a full object, a local time or UTC) cannot show up
as a change. Records are plain JSON values: they are stored in the plan as they are.

Each record has the tracked fields that a diff compares; schedules also carry `rendered` (the final
schedule and overrides inside the sync window), which is refreshed on apply but not reported as a
change: it moves with the clock, not with anybody's edit.
"""

from __future__ import annotations

from datetime import UTC, datetime

from apps.oncall.models import (
    EscalationTarget,
    OncallEscalationPolicy,
    OncallSchedule,
    OncallService,
    OncallTeam,
    OncallUser,
    ScheduleEntry,
)

TARGET_TYPES = {
    "user": EscalationTarget.Type.USER,
    "user_reference": EscalationTarget.Type.USER,
    "schedule": EscalationTarget.Type.SCHEDULE,
    "schedule_reference": EscalationTarget.Type.SCHEDULE,
    "schedule_v3": EscalationTarget.Type.SCHEDULE_V3,
    "schedule_v3_reference": EscalationTarget.Type.SCHEDULE_V3,
}
# Fields that are not compared: identity, and the derived rendering of a schedule.
UNTRACKED = {"id", "rendered"}


def iso(value) -> str | None:
    """Any PagerDuty or database time → `YYYY-MM-DDTHH:MM:SSZ` in UTC; None stays None."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _ref_ids(refs) -> list[str]:
    return sorted({r["id"] for r in refs or [] if isinstance(r, dict) and r.get("id")})


def _text(value) -> str:
    return "" if value is None else str(value)


def _restriction(r: dict) -> dict:
    out = {
        "type": r.get("type") or "",
        "start_time_of_day": _text(r.get("start_time_of_day")),
        "duration_seconds": int(r.get("duration_seconds") or 0),
    }
    if r.get("start_day_of_week") is not None:
        out["start_day_of_week"] = int(r["start_day_of_week"])
    return out


def _entries(entries) -> list[list]:
    out = []
    for e in entries or []:
        user = e.get("user") or {}
        if user.get("id"):
            out.append([iso(e["start"]), iso(e["end"]), user["id"]])
    return sorted(out)


# --- upstream → record -----------------------------------------------------------------------


def team_from_api(obj: dict) -> dict:
    return {
        "id": obj["id"],
        "name": _text(obj.get("name") or obj.get("summary")),
        "description": _text(obj.get("description")),
        "html_url": _text(obj.get("html_url")),
    }


# Contact methods by the type PagerDuty gives them; the address of a push device is a token, never shown.
_CONTACT_TYPES = {
    "email_contact_method": "email",
    "phone_contact_method": "phone",
    "sms_contact_method": "sms",
    "push_notification_contact_method": "push",
}


def _contact_methods(items) -> list[dict] | None:
    """Full contact methods → records; None when PagerDuty only sent references (nothing to compare)."""
    if items is None:
        return None
    out = []
    for cm in items:
        if not isinstance(cm, dict) or not cm.get("id"):
            continue
        kind = _CONTACT_TYPES.get(cm.get("type") or "")
        if kind is None:
            if str(cm.get("type") or "").endswith("_reference"):
                return None
            kind = str(cm.get("type") or "other").removesuffix("_contact_method")
        address = "" if kind == "push" else _text(cm.get("address"))
        if kind in ("phone", "sms") and cm.get("country_code") and address:
            address = f"+{cm['country_code']} {address}"
        out.append(
            {"id": cm["id"], "type": kind, "label": _text(cm.get("label") or cm.get("summary")), "address": address}
        )
    return sorted(out, key=lambda c: (c["type"], c["label"], c["id"]))


def user_from_api(obj: dict, *, teams_known: bool = True) -> dict:
    return {
        "id": obj["id"],
        "name": _text(obj.get("name") or obj.get("summary")),
        "email": _text(obj.get("email")),
        "time_zone": _text(obj.get("time_zone")),
        "role": _text(obj.get("role")),
        "job_title": _text(obj.get("job_title")),
        "html_url": _text(obj.get("html_url")),
        # Roles are filled in by the planner (from /teams/{id}/members, or kept from our rows).
        "teams": [{"id": t, "role": None} for t in _ref_ids(obj.get("teams"))] if teams_known else None,
        # None (kept from our row by the planner) when the list was read without include[]=contact_methods.
        "contact_methods": _contact_methods(obj.get("contact_methods")),
    }


def _schedule_common(obj: dict) -> dict:
    """The fields both kinds of schedule have."""
    return {
        "id": obj["id"],
        "name": _text(obj.get("name") or obj.get("summary")),
        "description": _text(obj.get("description")),
        "time_zone": _text(obj.get("time_zone")),
        "html_url": _text(obj.get("html_url")),
        "teams": _ref_ids(obj.get("teams")),
    }


def schedule_from_api(obj: dict, *, since: datetime, until: datetime) -> dict:
    if obj.get("type") == "schedule_v3":
        return schedule_v3_from_api(obj, since=since, until=until)
    layers = []
    for position, layer in enumerate(obj.get("schedule_layers") or []):
        layers.append(
            {
                "id": layer["id"],
                "position": position,
                "name": _text(layer.get("name")),
                "start": iso(layer.get("start")),
                "end": iso(layer.get("end")),
                "rotation_virtual_start": iso(layer.get("rotation_virtual_start")),
                "rotation_turn_length_seconds": int(layer.get("rotation_turn_length_seconds") or 0),
                "users": [(u.get("user") or u)["id"] for u in layer.get("users") or []],
                "restrictions": [_restriction(r) for r in layer.get("restrictions") or []],
            }
        )
    final = (obj.get("final_schedule") or {}).get("rendered_schedule_entries")
    overrides = (obj.get("overrides_subschedule") or {}).get("rendered_schedule_entries")
    return {
        **_schedule_common(obj),
        "kind": "schedule",
        "layers": layers,
        "rotations": [],
        "rendered": {
            "since": iso(since),
            "until": iso(until),
            "final": _entries(final),
            "overrides": _entries(overrides),
        },
    }


def _zoned(value) -> dict:
    value = value if isinstance(value, dict) else {}
    return {"date_time": iso(value.get("date_time")), "time_zone": _text(value.get("time_zone"))}


def _member(member) -> str:
    """A rotation slot: the user's id, or "" for a slot left empty on purpose."""
    return _text((member or {}).get("user_id")) if (member or {}).get("type") == "user_member" else ""


def _rotation(rotation: dict) -> dict:
    events = []
    for event in rotation.get("events") or []:
        strategy = event.get("assignment_strategy") or {}
        events.append(
            {
                "id": _text(event.get("id")),
                "name": _text(event.get("name")),
                "start_time": _zoned(event.get("start_time")),
                "end_time": _zoned(event.get("end_time")),
                "effective_since": iso(event.get("effective_since")),
                "effective_until": iso(event.get("effective_until")),
                "recurrence": [_text(r) for r in event.get("recurrence") or []],
                "assignment": {
                    "type": _text(strategy.get("type")),
                    "shifts_per_member": strategy.get("shifts_per_member"),
                    "members": [_member(m) for m in strategy.get("members") or []],
                },
            }
        )
    return {"id": _text(rotation.get("id")), "events": events}


def schedule_v3_from_api(obj: dict, *, since: datetime, until: datetime) -> dict:
    """A v3 (shift-based) schedule: no layers; rotations kept as defined; shifts from PagerDuty's own computation."""
    final, overrides = [], []
    for shift in (obj.get("final_schedule") or {}).get("computed_shift_assignments") or []:
        user_id = _member(shift.get("member"))
        if not user_id:
            continue
        row = [iso(shift.get("start_time")), iso(shift.get("end_time")), user_id]
        final.append(row)
        if "override" in _text((shift.get("source") or {}).get("type")):
            overrides.append(row)
    return {
        **_schedule_common(obj),
        "kind": "schedule_v3",
        "layers": [],
        "rotations": [_rotation(r) for r in obj.get("rotations") or [] if isinstance(r, dict)],
        "rendered": {"since": iso(since), "until": iso(until), "final": sorted(final), "overrides": sorted(overrides)},
    }


def escalation_policy_from_api(obj: dict) -> tuple[dict, list[dict]]:
    """The record, and the targets it cannot represent (dropped, reported as warnings)."""
    rules, unsupported = [], []
    for position, rule in enumerate(obj.get("escalation_rules") or []):
        targets = []
        for target in rule.get("targets") or []:
            kind = TARGET_TYPES.get(target.get("type") or "")
            if kind is None or not target.get("id"):
                unsupported.append({"policy": obj["id"], "rule": rule.get("id"), "target": target})
                continue
            targets.append({"type": str(kind), "id": target["id"]})
        rules.append(
            {
                "id": rule["id"],
                "position": position,
                "delay": int(rule.get("escalation_delay_in_minutes") or 0),
                "targets": targets,
            }
        )
    record = {
        "id": obj["id"],
        "name": _text(obj.get("name") or obj.get("summary")),
        "description": _text(obj.get("description")),
        "num_loops": int(obj.get("num_loops") or 0),
        "on_call_handoff_notifications": _text(obj.get("on_call_handoff_notifications")),
        "html_url": _text(obj.get("html_url")),
        "teams": _ref_ids(obj.get("teams")),
        "rules": rules,
    }
    return record, unsupported


def service_from_api(obj: dict) -> dict:
    policy = obj.get("escalation_policy") or {}
    return {
        "id": obj["id"],
        "name": _text(obj.get("name") or obj.get("summary")),
        "description": _text(obj.get("description")),
        "status": _text(obj.get("status")),
        "html_url": _text(obj.get("html_url")),
        "escalation_policy": policy.get("id") or None,
        "teams": _ref_ids(obj.get("teams")),
    }


# --- our rows → record -------------------------------------------------------------------------
# Each takes an instance whose relations were prefetched by `prefetch_for`.


def team_from_db(team: OncallTeam) -> dict:
    return {"id": team.pagerduty_id, "name": team.name, "description": team.description, "html_url": team.html_url}


def user_from_db(user: OncallUser) -> dict:
    return {
        "id": user.pagerduty_id,
        "name": user.name,
        "email": user.email,
        "time_zone": user.time_zone,
        "role": user.role,
        "job_title": user.job_title,
        "html_url": user.html_url,
        "contact_methods": list(user.contact_methods or []),
        "teams": sorted(
            ({"id": m.team_pagerduty_id, "role": m.role} for m in user.memberships.all()), key=lambda t: t["id"]
        ),
    }


def schedule_from_db(schedule: OncallSchedule, *, rendered: bool = True) -> dict:
    """`rendered=False` when entries were not prefetched (planning does not compare them)."""
    layers = [
        {
            "id": layer.pagerduty_id,
            "position": layer.position,
            "name": layer.name,
            "start": iso(layer.start),
            "end": iso(layer.end),
            "rotation_virtual_start": iso(layer.rotation_virtual_start),
            "rotation_turn_length_seconds": layer.rotation_turn_length_seconds,
            "users": [m.user_pagerduty_id for m in sorted(layer.members.all(), key=lambda m: m.position)],
            "restrictions": layer.restrictions,
        }
        for layer in sorted(schedule.layers.all(), key=lambda x: x.position)
    ]
    final, overrides = [], []
    for e in schedule.entries.all() if rendered else ():
        (final if e.kind == ScheduleEntry.Kind.FINAL else overrides).append(
            [iso(e.start), iso(e.end), e.user_pagerduty_id]
        )
    return {
        "id": schedule.pagerduty_id,
        "name": schedule.name,
        "description": schedule.description,
        "time_zone": schedule.time_zone,
        "html_url": schedule.html_url,
        "teams": sorted(schedule.team_ids or []),
        "kind": schedule.kind,
        "layers": layers,
        "rotations": list(schedule.rotations or []),
        "rendered": {
            "since": iso(schedule.rendered_since),
            "until": iso(schedule.rendered_until),
            "final": sorted(final),
            "overrides": sorted(overrides),
        },
    }


def escalation_policy_from_db(policy: OncallEscalationPolicy) -> dict:
    return {
        "id": policy.pagerduty_id,
        "name": policy.name,
        "description": policy.description,
        "num_loops": policy.num_loops,
        "on_call_handoff_notifications": policy.on_call_handoff_notifications,
        "html_url": policy.html_url,
        "teams": sorted(policy.team_ids or []),
        "rules": [
            {
                "id": rule.pagerduty_id,
                "position": rule.position,
                "delay": rule.escalation_delay_in_minutes,
                "targets": [
                    {"type": t.target_type, "id": t.target_pagerduty_id}
                    for t in sorted(rule.targets.all(), key=lambda t: t.position)
                ],
            }
            for rule in sorted(policy.rules.all(), key=lambda r: r.position)
        ],
    }


def service_from_db(service: OncallService) -> dict:
    return {
        "id": service.pagerduty_id,
        "name": service.name,
        "description": service.description,
        "status": service.status,
        "html_url": service.html_url,
        "escalation_policy": service.escalation_policy_pagerduty_id or None,
        "teams": sorted(service.team_ids or []),
    }


# --- diff ----------------------------------------------------------------------------------------


def _keyed(items: list) -> dict | None:
    """A list of dicts with ids is compared element by element; anything else as one value."""
    if items and all(isinstance(i, dict) and "id" in i for i in items):
        return {i["id"]: i for i in items}
    return None


def diff(old: dict, new: dict, *, prefix: str = "") -> list[dict]:
    """Field-level changes from `old` to `new`: [{"field": "layers[PL1].users", "old": …, "new": …}]."""
    changes = []
    for name in sorted(set(old) | set(new)):
        if not prefix and name in UNTRACKED:
            continue
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        path = f"{prefix}{name}"
        if isinstance(before, list) and isinstance(after, list):
            old_keyed, new_keyed = _keyed(before), _keyed(after)
            if (old_keyed is not None or not before) and (new_keyed is not None or not after):
                old_keyed, new_keyed = old_keyed or {}, new_keyed or {}
                for key in sorted(set(old_keyed) | set(new_keyed)):
                    a, b = old_keyed.get(key), new_keyed.get(key)
                    if a == b:
                        continue
                    if a is None or b is None:
                        changes.append({"field": f"{path}[{key}]", "old": a, "new": b})
                    else:
                        changes.extend(_diff_inner(a, b, prefix=f"{path}[{key}]."))
                continue
        changes.append({"field": path, "old": before, "new": after})
    return changes


def _diff_inner(old: dict, new: dict, *, prefix: str) -> list[dict]:
    return diff({k: v for k, v in old.items() if k != "id"}, {k: v for k, v in new.items() if k != "id"}, prefix=prefix)
