"""Schedule rendering: layers → rendered entries → final schedule, as PagerDuty computes them.

Pure functions over plain dicts in the API's own shapes (a layer is what `schedule_layers[]`
holds; an override is `{"start", "end", "user"}`), so the stand-in and unit tests share them.

Model, matching PagerDuty's documented semantics:
- A layer hands off every `rotation_turn_length_seconds`, counted from `rotation_virtual_start`;
  turn k belongs to `users[k % len(users)]`. The layer only covers [start, end).
- Restrictions (`daily_restriction`, `weekly_restriction`) keep only the parts of each turn that
  fall inside a restriction window; windows are wall-clock times in the schedule's time zone, so
  they follow DST while turn lengths stay absolute seconds.
- In the final schedule a later layer wins wherever it has coverage; overrides win over all layers.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Span:
    """One contiguous on-call period of one user; `user` is the user reference dict."""

    start: datetime
    end: datetime
    user: dict

    @property
    def user_id(self) -> str:
        return self.user["id"]


def get_zone(name: str | None) -> tzinfo:
    if not name or name in ("UTC", "Etc/UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def parse_time(value: str | datetime) -> datetime:
    """ISO 8601 → aware UTC datetime. A value without offset is read as UTC."""
    if isinstance(value, datetime):
        dt = value
    else:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def format_time(dt: datetime, tz: tzinfo | None = None) -> str:
    """PagerDuty style: seconds precision, `Z` for UTC, the offset otherwise."""
    local = dt.astimezone(tz or UTC).replace(microsecond=0)
    if local.utcoffset() == timedelta(0) and (tz is None or tz is UTC or getattr(tz, "key", "") == "UTC"):
        return local.strftime("%Y-%m-%dT%H:%M:%SZ")
    return local.isoformat()


def _parse_time_of_day(value: str) -> time:
    parts = [int(p) for p in value.split(":")]
    while len(parts) < 3:
        parts.append(0)
    return time(parts[0], parts[1], parts[2])


def merge_intervals(intervals: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def restriction_windows(
    restrictions: list[dict], tz: tzinfo, since: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    """UTC intervals within [since, until) where a restricted layer may be on call."""
    windows = []
    # A weekly window can start up to 7 days before `since` and still reach into it.
    day: date = since.astimezone(tz).date() - timedelta(days=8)
    last: date = until.astimezone(tz).date()
    while day <= last:
        for r in restrictions:
            if r["type"] == "weekly_restriction" and day.isoweekday() != int(r.get("start_day_of_week") or 1):
                continue
            start = datetime.combine(day, _parse_time_of_day(r["start_time_of_day"]), tzinfo=tz).astimezone(UTC)
            end = start + timedelta(seconds=int(r["duration_seconds"]))
            if end > since and start < until:
                windows.append((max(start, since), min(end, until)))
        day += DAY
    return merge_intervals(windows)


def _intersect(spans: list[Span], windows: list[tuple[datetime, datetime]]) -> list[Span]:
    out: list[Span] = []
    i = j = 0
    while i < len(spans) and j < len(windows):
        span, (w_start, w_end) = spans[i], windows[j]
        start, end = max(span.start, w_start), min(span.end, w_end)
        if start < end:
            out.append(Span(start, end, span.user))
        if span.end <= w_end:
            i += 1
        else:
            j += 1
    return out


def merge_adjacent(spans: list[Span]) -> list[Span]:
    """Consecutive periods of the same user read as one shift, as PagerDuty renders them."""
    out: list[Span] = []
    for span in spans:
        if out and out[-1].user_id == span.user_id and out[-1].end == span.start:
            out[-1] = Span(out[-1].start, span.end, out[-1].user)
        else:
            out.append(span)
    return out


def layer_spans(layer: dict, since: datetime, until: datetime, tz: tzinfo = UTC) -> list[Span]:
    """The on-call periods of one layer clipped to [since, until), in time order."""
    users = [u.get("user", u) for u in layer.get("users") or []]
    turn = int(layer["rotation_turn_length_seconds"])
    if not users or turn <= 0:
        return []
    lo = max(since, parse_time(layer["start"]))
    hi = until if not layer.get("end") else min(until, parse_time(layer["end"]))
    if lo >= hi:
        return []
    virtual_start = parse_time(layer["rotation_virtual_start"])
    turn_length = timedelta(seconds=turn)
    k = (lo - virtual_start) // turn_length
    turn_start = virtual_start + k * turn_length
    spans = []
    while turn_start < hi:
        turn_end = turn_start + turn_length
        start, end = max(turn_start, lo), min(turn_end, hi)
        if start < end:
            spans.append(Span(start, end, users[k % len(users)]))
        k += 1
        turn_start = turn_end
    restrictions = layer.get("restrictions") or []
    if restrictions:
        spans = _intersect(spans, restriction_windows(restrictions, tz, lo, hi))
    return merge_adjacent(spans)


def override_spans(overrides: list[dict], since: datetime, until: datetime) -> list[Span]:
    spans = []
    for o in overrides:
        start, end = max(parse_time(o["start"]), since), min(parse_time(o["end"]), until)
        if start < end:
            spans.append(Span(start, end, o["user"]))
    return spans


def flatten(stack: list[list[Span]]) -> list[Span]:
    """Paint the stack bottom to top: where several levels cover an instant, the last one wins."""
    points = sorted({t for level in stack for s in level for t in (s.start, s.end)})
    starts = [[s.start for s in level] for level in stack]
    out: list[Span] = []
    for a, b in zip(points, points[1:], strict=False):
        for level, level_starts in zip(reversed(stack), reversed(starts), strict=True):
            i = bisect.bisect_right(level_starts, a) - 1
            if i >= 0 and level[i].end > a:
                out.append(Span(a, b, level[i].user))
                break
    return merge_adjacent(out)


def coverage_percentage(spans: list[Span], since: datetime, until: datetime) -> float:
    total = (until - since).total_seconds()
    if total <= 0:
        return 0.0
    covered = sum((end - start).total_seconds() for start, end in merge_intervals([(s.start, s.end) for s in spans]))
    return round(100.0 * covered / total, 2)


def final_spans(schedule: dict, since: datetime, until: datetime) -> list[Span]:
    """The final schedule (layers, later on top, then overrides) clipped to [since, until)."""
    tz = get_zone(schedule.get("time_zone"))
    stack = [layer_spans(layer, since, until, tz) for layer in schedule.get("schedule_layers") or []]
    # Each override is its own level because overrides may overlap each other; the later one wins.
    for span in override_spans(schedule.get("_overrides") or [], since, until):
        stack.append([span])
    return flatten(stack)


def render_entries(spans: list[Span], tz: tzinfo) -> list[dict]:
    return [{"start": format_time(s.start, tz), "end": format_time(s.end, tz), "user": dict(s.user)} for s in spans]


def _margin(schedule: dict) -> timedelta:
    longest = max(
        [int(layer["rotation_turn_length_seconds"]) for layer in schedule.get("schedule_layers") or []] or [0]
    )
    return timedelta(seconds=longest) + 2 * DAY


def _overlapping(spans: list[Span], since: datetime, until: datetime) -> list[Span]:
    return [s for s in spans if s.start < until and s.end > since]


def render_schedule(
    schedule: dict, since: datetime | None, until: datetime | None, out_tz: tzinfo, overflow: bool = False
) -> dict:
    """`schedule_layers`, `overrides_subschedule` and `final_schedule` as GET /schedules/{id} returns them.

    Without a window the entries are empty and coverage is null, like PagerDuty. With `overflow`
    entries keep their real bounds instead of being cut at since/until (coverage still uses the window).
    """
    tz = get_zone(schedule.get("time_zone"))
    rendered = since is not None and until is not None
    lo, hi = (since - _margin(schedule), until + _margin(schedule)) if rendered and overflow else (since, until)

    def shown(spans: list[Span]) -> list[Span]:
        return _overlapping(spans, since, until) if overflow else spans

    def clipped(spans: list[Span]) -> list[Span]:
        if not overflow:
            return spans
        return [Span(max(s.start, since), min(s.end, until), s.user) for s in _overlapping(spans, since, until)]

    layers_out = []
    stack: list[list[Span]] = []
    for layer in schedule.get("schedule_layers") or []:
        spans = layer_spans(layer, lo, hi, tz) if rendered else []
        stack.append(spans)
        out = {k: v for k, v in layer.items() if not k.startswith("_")}
        out["start"] = format_time(parse_time(layer["start"]), out_tz)
        out["end"] = format_time(parse_time(layer["end"]), out_tz) if layer.get("end") else None
        out["rotation_virtual_start"] = format_time(parse_time(layer["rotation_virtual_start"]), out_tz)
        out["rendered_schedule_entries"] = render_entries(shown(spans), out_tz)
        out["rendered_coverage_percentage"] = coverage_percentage(clipped(spans), since, until) if rendered else None
        layers_out.append(out)
    overrides = override_spans(schedule.get("_overrides") or [], lo, hi) if rendered else []
    final = flatten(stack + [[s] for s in overrides]) if rendered else []
    return {
        "schedule_layers": layers_out,
        "overrides_subschedule": {
            "name": "Overrides",
            "rendered_schedule_entries": render_entries(shown(overrides), out_tz),
            "rendered_coverage_percentage": coverage_percentage(clipped(overrides), since, until) if rendered else None,
        },
        "final_schedule": {
            "name": "Final Schedule",
            "rendered_schedule_entries": render_entries(shown(final), out_tz),
            "rendered_coverage_percentage": coverage_percentage(clipped(final), since, until) if rendered else None,
        },
    }


def oncall_spans(schedule: dict, since: datetime, until: datetime) -> list[Span]:
    """Final-schedule shifts that overlap [since, until] (a point when since == until), unclipped.

    /oncalls reports whole shifts, so the schedule is rendered over a margin around the window.
    """
    margin = _margin(schedule)
    spans = final_spans(schedule, since - margin, until + margin)
    if since == until:
        return [s for s in spans if s.start <= since < s.end]
    return _overlapping(spans, since, until)


def user_on_call(schedule: dict, at: datetime) -> dict | None:
    """The user reference on call at `at` in the final schedule, or None when nobody is."""
    spans = final_spans(schedule, at, at + timedelta(seconds=1))
    return spans[0].user if spans else None


# --- v3 ("shift-based") schedules --------------------------------------------------------------
# The stand-in keeps a v3 schedule in the same shape as a classic one (layers and `_overrides`) and
# shows it the way /v3/schedules does: each layer is a rotation with one repeating event whose
# occurrences are the layer's turns, and the final schedule is a list of computed shift assignments
# that say where each shift came from (a rotation, or an override of it).


def _recurrence(turn_seconds: int) -> str:
    for unit, seconds in (("WEEKLY", 604800), ("DAILY", 86400), ("HOURLY", 3600), ("MINUTELY", 60)):
        if turn_seconds % seconds == 0:
            return f"RRULE:FREQ={unit};INTERVAL={turn_seconds // seconds}"
    return f"RRULE:FREQ=SECONDLY;INTERVAL={turn_seconds}"


def v3_rotations(schedule: dict, api_base: str) -> list[dict]:
    time_zone = schedule.get("time_zone") or "UTC"
    tz = get_zone(time_zone)
    rotations = []
    for layer in schedule.get("schedule_layers") or []:
        turn = int(layer["rotation_turn_length_seconds"])
        first = parse_time(layer["rotation_virtual_start"])
        rotation_self = f"{api_base}/v3/schedules/{schedule['id']}/rotations/{layer['id']}"
        event = {
            "id": f"{layer['id']}E1",
            "type": "schedule_event",
            "name": layer.get("name") or "Rotation",
            "start_time": {"date_time": format_time(first, tz), "time_zone": time_zone},
            "end_time": {"date_time": format_time(first + timedelta(seconds=turn), tz), "time_zone": time_zone},
            "effective_since": format_time(parse_time(layer["start"])),
            "effective_until": format_time(parse_time(layer["end"])) if layer.get("end") else None,
            "recurrence": [_recurrence(turn)],
            "assignment_strategy": {
                "type": "rotating_member_assignment_strategy",
                "shifts_per_member": 1,
                "members": [{"type": "user_member", "user_id": u.get("user", u)["id"]} for u in layer["users"]],
            },
            "self": f"{rotation_self}/events/{layer['id']}E1",
        }
        rotations.append({"id": layer["id"], "type": "schedule_rotation", "events": [event], "self": rotation_self})
    return rotations


def v3_assignments(schedule: dict, since: datetime, until: datetime) -> list[tuple[datetime, datetime, str, dict]]:
    """(start, end, user id, source) of the final schedule in [since, until): overrides win, then later rotations."""
    tz = get_zone(schedule.get("time_zone"))
    layers = [(layer["id"], layer_spans(layer, since, until, tz)) for layer in schedule.get("schedule_layers") or []]
    overrides = []
    for o in schedule.get("_overrides") or []:
        start, end = max(parse_time(o["start"]), since), min(parse_time(o["end"]), until)
        if start < end:
            overrides.append((start, end, o))
    points = sorted(
        {since, until}
        | {t for _id, spans in layers for s in spans for t in (s.start, s.end)}
        | {t for start, end, _o in overrides for t in (start, end)}
    )
    out: list[tuple[datetime, datetime, str, dict]] = []
    for a, b in zip(points, points[1:], strict=False):
        owner = None
        covering_layer = next(
            (lid for lid, spans in reversed(layers) if any(s.start <= a < s.end for s in spans)), None
        )
        for start, end, o in reversed(overrides):
            if start <= a < end:
                source = {"type": "schedule_rotation_override", "override_id": o["id"]}
                if covering_layer or layers:
                    source["rotation_id"] = covering_layer or layers[-1][0]
                owner = (o["user"]["id"], source)
                break
        if owner is None and covering_layer is not None:
            user = next(s.user for s in dict(layers)[covering_layer] if s.start <= a < s.end)
            owner = (user["id"], {"type": "schedule_rotation", "rotation_id": covering_layer})
        if owner is None:
            continue
        if out and out[-1][1] == a and (out[-1][2], out[-1][3]) == owner:
            out[-1] = (out[-1][0], b, *owner)
        else:
            out.append((a, b, *owner))
    return out


def v3_final_schedule(schedule: dict, since: datetime, until: datetime, out_tz: tzinfo, overflow: bool = False) -> dict:
    lo, hi = (since - _margin(schedule), until + _margin(schedule)) if overflow else (since, until)
    assignments = [a for a in v3_assignments(schedule, lo, hi) if a[0] < until and a[1] > since]
    covered = [Span(max(a[0], since), min(a[1], until), {"id": a[2]}) for a in assignments]
    return {
        "type": "final_schedule",
        "rendered_coverage_percentage": coverage_percentage(covered, since, until),
        "computed_shift_assignments": [
            {
                "type": "computed_shift_assignment",
                "start_time": format_time(start, out_tz),
                "end_time": format_time(end, out_tz),
                "member": {"type": "user_member", "user_id": user_id},
                "source": source,
            }
            for start, end, user_id, source in assignments
        ],
    }


def v3_override_shifts(schedule: dict, since: datetime, until: datetime, out_tz: tzinfo, overflow: bool) -> list[dict]:
    tz = get_zone(schedule.get("time_zone"))
    layers = schedule.get("schedule_layers") or []
    out = []
    for o in sorted(schedule.get("_overrides") or [], key=lambda o: (parse_time(o["start"]), o["id"])):
        start, end = parse_time(o["start"]), parse_time(o["end"])
        if not (start < until and end > since):
            continue
        if not overflow:
            start, end = max(start, since), min(end, until)
        replaced = None
        for layer in reversed(layers):
            spans = layer_spans(layer, start, start + timedelta(seconds=1), tz)
            if spans:
                replaced = (layer["id"], spans[0].user["id"])
                break
        out.append(
            {
                "id": o["id"],
                "type": "override_shift",
                "rotation_id": replaced[0] if replaced else (layers[0]["id"] if layers else None),
                "start_time": format_time(start, out_tz),
                "end_time": format_time(end, out_tz),
                "overridden_member": (
                    {"type": "user_member", "user_id": replaced[1]} if replaced else {"type": "empty_member"}
                ),
                "overriding_member": {"type": "user_member", "user_id": o["user"]["id"]},
            }
        )
    return out
