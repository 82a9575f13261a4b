"""Reads over imported on-call data: for runbook steps (ids for emails) and for "who is on call now".

"On call now" is answered from the imported final schedule, so it costs no PagerDuty request; it
is only as fresh as the last sync and only known inside the synced window (`rendered_until`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from apps.core.errors import DomainError
from apps.oncall.models import (
    EscalationRule,
    EscalationTarget,
    OncallEscalationPolicy,
    OncallSchedule,
    OncallUser,
    ScheduleEntry,
)
from apps.pagerduty.models import PagerDutyConnection


@dataclass(frozen=True)
class OnCall:
    """One person on call: through a schedule (with the shift) or named directly by a policy rule."""

    user_pagerduty_id: str
    user: OncallUser | None
    schedule: OncallSchedule | None = None
    escalation_level: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    # The shift is an override's (an imported override entry covers it): shown as such in the admin.
    override: bool = False

    def as_dict(self) -> dict:
        return {
            "user": {
                "id": self.user_pagerduty_id,
                "name": self.user.name if self.user else None,
                "email": self.user.email if self.user else None,
            },
            "schedule": {"id": self.schedule.pagerduty_id, "name": self.schedule.name} if self.schedule else None,
            "escalation_level": self.escalation_level,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "override": self.override,
        }


def oncall_user_id_for_email(*, connection: PagerDutyConnection, email: str) -> str | None:
    """The PagerDuty user id for an email (any case) among imported users still present upstream."""
    email = (email or "").strip()
    if not email:
        return None
    return (
        OncallUser.objects.filter(connection=connection, email__iexact=email, deleted_upstream_at__isnull=True)
        .order_by("pagerduty_id")
        .values_list("pagerduty_id", flat=True)
        .first()
    )


def oncall_responder_type(*, connection: PagerDutyConnection, pagerduty_id: str) -> str | None:
    """ "user", "escalation_policy", or None when no imported object has that id."""
    pagerduty_id = (pagerduty_id or "").strip()
    if not pagerduty_id:
        return None
    live = {"connection": connection, "pagerduty_id": pagerduty_id, "deleted_upstream_at__isnull": True}
    if OncallUser.objects.filter(**live).exists():
        return "user"
    if OncallEscalationPolicy.objects.filter(**live).exists():
        return "escalation_policy"
    return None


def oncall_now_for_schedules(
    *, schedules: Iterable[OncallSchedule], at: datetime | None = None
) -> dict[int, list[OnCall]]:
    """Schedule pk → who is on call at `at`, for many schedules in two queries."""
    at = at or timezone.now()
    schedules = list(schedules)
    result: dict[int, list[OnCall]] = {s.pk: [] for s in schedules}
    if not schedules:
        return result
    by_pk = {s.pk: s for s in schedules}
    entries = ScheduleEntry.objects.filter(
        schedule_id__in=list(by_pk), kind=ScheduleEntry.Kind.FINAL, start__lte=at, end__gt=at
    ).select_related("user")
    overridden = set(
        ScheduleEntry.objects.filter(
            schedule_id__in=list(by_pk), kind=ScheduleEntry.Kind.OVERRIDE, start__lte=at, end__gt=at
        ).values_list("schedule_id", "user_pagerduty_id")
    )
    for entry in entries.order_by("schedule_id", "start"):
        result[entry.schedule_id].append(
            OnCall(
                user_pagerduty_id=entry.user_pagerduty_id,
                user=entry.user,
                schedule=by_pk[entry.schedule_id],
                start=entry.start,
                end=entry.end,
                override=(entry.schedule_id, entry.user_pagerduty_id) in overridden,
            )
        )
    return result


def oncall_now_for_policies(
    *, policies: Iterable[OncallEscalationPolicy], at: datetime | None = None
) -> dict[int, list[OnCall]]:
    """Policy pk → who each level pages at `at` (users named directly, and whoever the schedules say)."""
    at = at or timezone.now()
    policies = list(policies)
    result: dict[int, list[OnCall]] = {p.pk: [] for p in policies}
    if not policies:
        return result
    rules = list(
        EscalationRule.objects.filter(policy_id__in=list(result)).prefetch_related("targets__user", "targets__schedule")
    )
    schedules = {t.schedule_id: t.schedule for r in rules for t in r.targets.all() if t.schedule_id}
    shifts = oncall_now_for_schedules(schedules=schedules.values(), at=at)
    for rule in sorted(rules, key=lambda r: (r.policy_id, r.position)):
        level = rule.position + 1
        for target in rule.targets.all():
            if target.target_type == EscalationTarget.Type.USER:
                result[rule.policy_id].append(
                    OnCall(user_pagerduty_id=target.target_pagerduty_id, user=target.user, escalation_level=level)
                )
            elif target.schedule_id:
                for shift in shifts.get(target.schedule_id, []):
                    result[rule.policy_id].append(
                        OnCall(
                            user_pagerduty_id=shift.user_pagerduty_id,
                            user=shift.user,
                            schedule=shift.schedule,
                            escalation_level=level,
                            start=shift.start,
                            end=shift.end,
                        )
                    )
    return result


def oncall_now(
    *,
    schedule: OncallSchedule | None = None,
    escalation_policy: OncallEscalationPolicy | None = None,
    at: datetime | None = None,
) -> list[OnCall]:
    """Who is on call at `at` (default now) on one schedule or one escalation policy."""
    if (schedule is None) == (escalation_policy is None):
        raise DomainError("Ask about exactly one schedule or one escalation policy.")
    if at is not None and timezone.is_naive(at):
        raise DomainError("The time must include a time zone (e.g. 2026-11-23T09:00:00Z).", field="at")
    if schedule is not None:
        return oncall_now_for_schedules(schedules=[schedule], at=at)[schedule.pk]
    return oncall_now_for_policies(policies=[escalation_policy], at=at)[escalation_policy.pk]


def oncall_window_note(*, schedule: OncallSchedule, at: datetime | None = None) -> str:
    """Why a schedule may show nobody: never synced, or `at` outside the synced window."""
    at = at or timezone.now()
    if schedule.rendered_since is None or schedule.rendered_until is None:
        return "never rendered: sync schedules to see who is on call"
    if not (schedule.rendered_since <= at < schedule.rendered_until):
        return (
            f"outside the synced window {schedule.rendered_since:%Y-%m-%d} – {schedule.rendered_until:%Y-%m-%d}: "
            "sync again"
        )
    return ""


def oncall_empty_levels(
    *, policies: Iterable[OncallEscalationPolicy], by_policy: dict[int, list[OnCall]], at: datetime
) -> dict[int, list[int]]:
    """Policy pk → levels (1-based) with nobody on call at `at`: coverage gaps, from the imported data.

    A level through a schedule we cannot read at `at` (not imported, or outside its synced window) is
    unknown rather than empty, and is left out.
    """
    policies = list(policies)
    levels: dict[int, set[int]] = {p.pk: set() for p in policies}
    unknown: dict[int, set[int]] = {p.pk: set() for p in policies}
    for policy_id, position in EscalationRule.objects.filter(policy__in=policies).values_list("policy_id", "position"):
        levels[policy_id].add(position + 1)
    targets = EscalationTarget.objects.filter(rule__policy__in=policies).select_related("rule", "schedule")
    for target in targets:
        policy_id, level = target.rule.policy_id, target.rule.position + 1
        levels[policy_id].add(level)
        if target.target_type != EscalationTarget.Type.USER and (
            target.schedule is None or oncall_window_note(schedule=target.schedule, at=at)
        ):
            unknown[policy_id].add(level)
    covered = {pk: {e.escalation_level for e in entries} for pk, entries in by_policy.items()}
    return {pk: sorted(found - covered.get(pk, set()) - unknown[pk]) for pk, found in levels.items()}


def oncall_schedules_named(*, connection: PagerDutyConnection, name: str) -> list[str]:
    """PagerDuty ids of the imported schedules (still present upstream) whose name or local alias
    is `name`, any case: one id, none, or several when the name is ambiguous."""
    name = (name or "").strip()
    if not name:
        return []
    live = OncallSchedule.objects.filter(connection=connection, deleted_upstream_at__isnull=True)
    by_name = live.filter(name__iexact=name) | live.filter(local_alias__iexact=name)
    return sorted(set(by_name.values_list("pagerduty_id", flat=True)))


def oncall_overrides_upcoming(*, schedule: OncallSchedule, at: datetime | None = None):
    """The schedule's imported overrides that have not ended (as of the last sync), soonest first."""
    at = at or timezone.now()
    return (
        ScheduleEntry.objects.filter(schedule=schedule, kind=ScheduleEntry.Kind.OVERRIDE, end__gt=at)
        .select_related("user")
        .order_by("start", "pk")
    )


def oncall_schedule_is_v3(*, connection: PagerDutyConnection, pagerduty_id: str) -> bool:
    """Whether an imported schedule with this id is a v3 (shift-based) one."""
    return OncallSchedule.objects.filter(
        connection=connection, pagerduty_id=pagerduty_id, kind=OncallSchedule.Kind.V3
    ).exists()
