"""Creating a schedule override in PagerDuty (POST /schedules/{id}/overrides), for the runbook
action `pagerduty.create_override` and the schedule admin page alike.

An override has no dedup key: sending it twice creates two. So an attempt whose answer was lost is
never repeated blindly; the schedule's overrides are read first (`schedule_override_find`) and an
override for the same user and window is taken as ours.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from apps.core.errors import DomainError
from apps.pagerduty import payloads
from apps.pagerduty.client import PagerDutyClient

TIME_TEXT_MAX = 64
# An override longer than this is a rotation, not an override; PagerDuty itself has no stated cap.
OVERRIDE_MAX = timedelta(days=366)
# PagerDuty may round or re-zone what it stores; matching an override tolerates this much.
MATCH_TOLERANCE = timedelta(minutes=1)
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_NOW = re.compile(r"^now(?:\s*\+\s*(\d{1,6})\s*([mhd]))?$", re.IGNORECASE)
_AFTER_START = re.compile(r"^\+\s*(\d{1,6})\s*([mhd])$", re.IGNORECASE)


def _delta(amount: str, unit: str) -> timedelta:
    return timedelta(**{_UNITS[unit.lower()]: int(amount)})


def _absolute(text: str, *, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise DomainError(
            f"{field}: {text!r} is not a time; use ISO 8601 with an offset (2026-03-01T18:00:00+01:00), "
            "now, or now+<n>m|h|d",
            field=field,
        ) from None
    if value.tzinfo is None:
        raise DomainError(
            f"{field}: {text!r} has no UTC offset, so it could mean several instants; add one (Z or +01:00)",
            field=field,
        )
    return value.astimezone(UTC)


def override_window(*, start: str, end: str, now: datetime) -> tuple[datetime, datetime]:
    """(start, end) in UTC from what an author wrote: ISO 8601 with an offset, `now`,
    `now+<n>m|h|d`; `end` may also be `+<n>m|h|d` after start. `now` is passed in, read once."""
    now = now.astimezone(UTC).replace(second=0, microsecond=0)
    parsed = {}
    for field, text in (("start", start), ("end", end)):
        text = (text or "").strip()
        if not text:
            raise DomainError(f"{field} is required but rendered empty", field=field)
        if len(text) > TIME_TEXT_MAX:
            raise DomainError(f"{field}: at most {TIME_TEXT_MAX} characters, not {len(text)}", field=field)
        parsed[field] = text
    found = _NOW.match(parsed["start"])
    if found:
        begins = now + (_delta(found.group(1), found.group(2)) if found.group(1) else timedelta())
    elif _AFTER_START.match(parsed["start"]):
        raise DomainError("start: +<n>m|h|d is only for end (after start); use now+<n>m|h|d", field="start")
    else:
        begins = _absolute(parsed["start"], field="start")
    found = _NOW.match(parsed["end"])
    after = _AFTER_START.match(parsed["end"])
    if found:
        ends = now + (_delta(found.group(1), found.group(2)) if found.group(1) else timedelta())
    elif after:
        ends = begins + _delta(after.group(1), after.group(2))
    else:
        ends = _absolute(parsed["end"], field="end")
    if ends <= begins:
        raise DomainError(f"end ({iso(ends)}) must be after start ({iso(begins)})", field="end")
    if ends - begins > OVERRIDE_MAX:
        raise DomainError(f"an override may last at most {OVERRIDE_MAX.days} days", field="end")
    return begins, ends


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def override_matches(override: dict, *, user_id: str, start: datetime, end: datetime) -> bool:
    found_start, found_end = parse_time(override.get("start")), parse_time(override.get("end"))
    return (
        (override.get("user") or {}).get("id") == user_id
        and found_start is not None
        and found_end is not None
        and abs(found_start - start) <= MATCH_TOLERANCE
        and abs(found_end - end) <= MATCH_TOLERANCE
    )


def schedule_override_find(
    *, client: PagerDutyClient, schedule_id: str, user_id: str, start: datetime, end: datetime
) -> dict | None:
    """The override for this user and window that PagerDuty lists on the schedule, or None."""
    listed = client.list_schedule_overrides(
        schedule_id, since=iso(start - MATCH_TOLERANCE), until=iso(end + MATCH_TOLERANCE)
    )
    for override in listed:
        if override_matches(override, user_id=user_id, start=start, end=end):
            return override
    return None


class OverrideRefused(DomainError):
    """PagerDuty answered the request but refused this override (its per-override status)."""


def schedule_override_create(
    *,
    client: PagerDutyClient,
    schedule_id: str,
    user_id: str,
    start: datetime,
    end: datetime,
    from_email: str | None = None,
) -> tuple[dict, bool]:
    """Create one override; (override as PagerDuty holds it, adopted). `adopted` is True when an
    attempt whose answer was lost had created it and the look-up found it, so nothing was re-sent.

    Raises OverrideRefused with PagerDuty's errors when the per-override status is not a success,
    and PagerDutyError (outcome_unknown set when it cannot be told) for failures of the request."""
    body = payloads.overrides_payload(start=iso(start), end=iso(end), user_id=user_id)
    adopted = []

    def look_up():
        found = schedule_override_find(client=client, schedule_id=schedule_id, user_id=user_id, start=start, end=end)
        if found is None:
            return None
        adopted.append(found)
        return [{"status": 201, "override": found}]

    answer = client.create_schedule_overrides(schedule_id, body, from_email=from_email, verify=look_up)
    return override_result(answer), bool(adopted)


def override_result(answer: list) -> dict:
    """The one override of our request from PagerDuty's per-override list, or OverrideRefused."""
    item = answer[0] if answer and isinstance(answer[0], dict) else {}
    status = item.get("status")
    override = item.get("override") if isinstance(item.get("override"), dict) else {}
    errors = [str(e) for e in item.get("errors") or []]
    if status is not None and not (isinstance(status, int | float) and 200 <= status < 300):
        detail = "; ".join(errors) or "no reason given"
        raise OverrideRefused(f"PagerDuty refused the override (status {status}): {detail}", field="start")
    if not override.get("id"):
        raise OverrideRefused(
            f"PagerDuty answered without the override's id ({str(answer)[:200]!r}); check the schedule",
            field="schedule_id",
        )
    return override


# --- from the admin --------------------------------------------------------------------------------

USER_TEXT_MAX = 254


def oncall_override_user_id(*, client: PagerDutyClient, connection, value: str) -> str:
    """A PagerDuty user id from an id or an email: imported users first, else GET /users?query=."""
    from apps.oncall.models import OncallUser
    from apps.oncall.selectors import oncall_user_id_for_email

    value = (value or "").strip()
    if not value:
        raise DomainError("user is required: a PagerDuty user id or email", field="user")
    if len(value) > USER_TEXT_MAX:
        raise DomainError(f"user: at most {USER_TEXT_MAX} characters", field="user")
    if "@" not in value:
        if not value.isalnum():
            raise DomainError(f"user must be a PagerDuty user id or an email, not {value!r}", field="user")
        return value
    imported = oncall_user_id_for_email(connection=connection, email=value)
    if imported:
        return imported
    for user in client.find_users(query=value):
        if (user.get("email") or "").lower() == value.lower():
            return user["id"]
    known = OncallUser.objects.filter(connection=connection).count()
    raise DomainError(f"user: no PagerDuty user has the email {value!r} ({known} users imported)", field="user")


def oncall_override_create(*, schedule, user: str, start: str, end: str, actor=None, now: datetime | None = None):
    """Create an override on an imported classic schedule for a person in the admin; audited.

    Returns (override, adopted) as `schedule_override_create` does; bad input raises DomainError
    naming the field before anything is sent."""
    from apps.audit.services import audit_record
    from apps.oncall.models import OncallSchedule
    from apps.pagerduty.services import connection_client

    if schedule.kind != OncallSchedule.Kind.CLASSIC:
        raise DomainError("Overrides can be created here for classic (layered) schedules only", field="schedule")
    if schedule.deleted_upstream_at is not None:
        raise DomainError("This schedule is no longer in PagerDuty (a sync found it deleted)", field="schedule")
    begins, ends = override_window(start=start, end=end, now=now or datetime.now(UTC))
    client = connection_client(connection=schedule.connection)
    user_id = oncall_override_user_id(client=client, connection=schedule.connection, value=user)
    override, adopted = schedule_override_create(
        client=client, schedule_id=schedule.pagerduty_id, user_id=user_id, start=begins, end=ends
    )
    audit_record(
        target=schedule,
        event="oncall.override",
        details={
            "override_id": override.get("id", ""),
            "schedule_id": schedule.pagerduty_id,
            "user_id": user_id,
            "start": iso(begins),
            "end": iso(ends),
            "adopted": adopted,
        },
        actor=actor,
    )
    return override, adopted
