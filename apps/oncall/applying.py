"""Write a plan: an idempotent, bulk upsert keyed on (connection, PagerDuty id).

Work is done a page (100 records) at a time with a fixed number of queries per page, whatever the
page holds: read the page's rows, compare each with its planned record, upsert only what differs
(`bulk_create(update_conflicts=True)`, which updates rows in place, so ids, local aliases and notes
survive), then replace the children of the changed parents in bulk. Each resource type is one
transaction. A record equal to its row is not written at all, which is why applying the same plan
twice changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from apps.oncall import records as rec
from apps.oncall.importer import ESCALATION_POLICIES, RESOURCE_LABELS, RESOURCE_TYPES, SCHEDULES, SERVICES, USERS
from apps.oncall.models import (
    EscalationRule,
    EscalationTarget,
    OncallEscalationPolicy,
    OncallSchedule,
    OncallService,
    OncallTeam,
    OncallUser,
    ScheduleEntry,
    ScheduleLayer,
    ScheduleLayerMember,
    TeamMembership,
)
from apps.oncall.planning import FROM_DB, MODELS, existing_rows
from apps.pagerduty.models import PagerDutyConnection

PAGE_SIZE = 100
DELETE_CHUNK = 500
COMMON_FIELDS = ["name", "html_url", "synced_at", "deleted_upstream_at", "updated_at"]
PARENT_FIELDS = {
    "teams": ["description"],
    USERS: ["email", "time_zone", "role", "job_title", "contact_methods"],
    SCHEDULES: ["kind", "description", "time_zone", "team_ids", "rendered_since", "rendered_until", "rotations"],
    ESCALATION_POLICIES: ["description", "num_loops", "on_call_handoff_notifications", "team_ids"],
    SERVICES: ["description", "status", "escalation_policy", "escalation_policy_pagerduty_id", "team_ids"],
}

Progress = Callable[[str, int, int], None]
# Both kinds of schedule are rows of OncallSchedule, so both kinds of target link to one.
_SCHEDULE_TARGETS = (EscalationTarget.Type.SCHEDULE, EscalationTarget.Type.SCHEDULE_V3)


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _id_map(model, connection, ids) -> dict[str, int]:
    ids = [i for i in set(ids) if i]
    if not ids:
        return {}
    return dict(model.objects.filter(connection=connection, pagerduty_id__in=ids).values_list("pagerduty_id", "pk"))


class PlanApplier:
    def __init__(self, *, connection: PagerDutyConnection, plan: dict, delete_missing: bool, now: datetime | None):
        self.connection = connection
        self.plan = plan
        self.delete_missing = delete_missing
        self.now = now or timezone.now()

    # --- whole plan -----------------------------------------------------------------------------

    def apply(self, progress: Progress | None = None) -> dict:
        report: dict = {"resources": {}}
        for resource in RESOURCE_TYPES:
            records = self.plan.get("records", {}).get(resource)
            if records is None:
                continue
            counts = {"created": 0, "updated": 0, "unchanged": 0, "gone_flagged": 0, "deleted": 0}
            with transaction.atomic():
                # Two applies for one account (two wizard tabs) would race on the same rows: take turns.
                PagerDutyConnection.objects.select_for_update().filter(pk=self.connection.pk).first()
                done = 0
                for page in _chunks(records, PAGE_SIZE):
                    created, updated = self._apply_page(resource, page)
                    counts["created"] += created
                    counts["updated"] += updated
                    counts["unchanged"] += len(page) - created - updated
                    done += len(page)
                    if progress:
                        progress(resource, done, len(records))
                flagged, deleted = self._handle_gone(resource)
                counts["gone_flagged"], counts["deleted"] = flagged, deleted
            if progress and not records:
                progress(resource, 0, 0)
            report["resources"][resource] = {"label": RESOURCE_LABELS[resource], **counts}
        with transaction.atomic():
            report["relinked"] = self._relink()
        return report

    # --- one page -----------------------------------------------------------------------------

    def _apply_page(self, resource: str, page: list[dict]) -> tuple[int, int]:
        rows = {
            row.pagerduty_id: row
            for row in existing_rows(
                connection=self.connection, resource=resource, ids=[r["id"] for r in page], rendered=True
            )
        }
        to_write, changed, rendered_changed = [], [], []
        created = updated = 0
        for record in page:
            row = rows.get(record["id"])
            old = FROM_DB[resource](row) if row is not None else None
            definition_changed = old is None or bool(rec.diff(old, record))
            window_changed = resource == SCHEDULES and (old is None or old["rendered"] != record["rendered"])
            restored = row is not None and row.deleted_upstream_at is not None
            if not (definition_changed or window_changed or restored):
                continue
            to_write.append(record)
            if definition_changed:
                changed.append(record)
            if window_changed:
                rendered_changed.append(record)
            if row is None:
                created += 1
            else:
                updated += 1
        if not to_write:
            return 0, 0
        self._upsert_parents(resource, to_write)
        model = MODELS[resource]
        pks = _id_map(model, self.connection, [r["id"] for r in to_write])
        if resource == USERS:
            self._sync_memberships(changed, pks, rows)
        elif resource == SCHEDULES:
            self._sync_layers(changed, pks, rows)
            self._sync_entries(rendered_changed, pks)
        elif resource == ESCALATION_POLICIES:
            self._sync_rules(changed, pks, rows)
        return created, updated

    def _parent(self, resource: str, record: dict, policy_pks: dict[str, int]):
        model = MODELS[resource]
        obj = model(
            connection=self.connection,
            pagerduty_id=record["id"],
            name=record["name"][:255],
            html_url=record.get("html_url") or "",
            synced_at=self.now,
            deleted_upstream_at=None,
        )
        if resource == USERS:
            obj.email, obj.time_zone, obj.role = record["email"], record["time_zone"], record["role"]
            obj.job_title = record["job_title"][:255]
            obj.contact_methods = record.get("contact_methods") or []
        elif resource == SCHEDULES:
            obj.description, obj.time_zone, obj.team_ids = record["description"], record["time_zone"], record["teams"]
            obj.kind, obj.rotations = record.get("kind") or OncallSchedule.Kind.CLASSIC, record.get("rotations") or []
            obj.rendered_since = rec.parse_iso(record["rendered"]["since"])
            obj.rendered_until = rec.parse_iso(record["rendered"]["until"])
        elif resource == ESCALATION_POLICIES:
            obj.description, obj.num_loops, obj.team_ids = record["description"], record["num_loops"], record["teams"]
            obj.on_call_handoff_notifications = record["on_call_handoff_notifications"]
        elif resource == SERVICES:
            obj.description, obj.status, obj.team_ids = record["description"], record["status"], record["teams"]
            obj.escalation_policy_pagerduty_id = record["escalation_policy"] or ""
            obj.escalation_policy_id = policy_pks.get(record["escalation_policy"] or "")
        else:
            obj.description = record["description"]
        return obj

    def _upsert_parents(self, resource: str, records: list[dict]) -> None:
        policy_pks = (
            _id_map(OncallEscalationPolicy, self.connection, [r["escalation_policy"] for r in records])
            if resource == SERVICES
            else {}
        )
        objs = [self._parent(resource, r, policy_pks) for r in records]
        # Local-only fields (local_alias, notes) are absent from update_fields: an update never touches them.
        MODELS[resource].objects.bulk_create(
            objs,
            update_conflicts=True,
            unique_fields=["connection", "pagerduty_id"],
            update_fields=COMMON_FIELDS + PARENT_FIELDS[resource],
        )

    # --- children -----------------------------------------------------------------------------

    def _sync_memberships(self, changed: list[dict], pks: dict[str, int], rows: dict) -> None:
        if not changed:
            return
        team_pks = _id_map(OncallTeam, self.connection, [t["id"] for r in changed for t in r["teams"]])
        to_create, to_update, to_delete = [], [], []
        for record in changed:
            user_pk = pks[record["id"]]
            wanted = {t["id"]: t["role"] or "" for t in record["teams"]}
            row = rows.get(record["id"])
            current = {m.team_pagerduty_id: m for m in row.memberships.all()} if row is not None else {}
            for team_id, membership in current.items():
                if team_id not in wanted:
                    to_delete.append(membership.pk)
                elif membership.role != wanted[team_id] or membership.team_id != team_pks.get(team_id):
                    membership.role, membership.team_id = wanted[team_id], team_pks.get(team_id)
                    to_update.append(membership)
            for team_id, role in wanted.items():
                if team_id not in current:
                    to_create.append(
                        TeamMembership(
                            user_id=user_pk, team_id=team_pks.get(team_id), team_pagerduty_id=team_id, role=role
                        )
                    )
        if to_delete:
            TeamMembership.objects.filter(pk__in=to_delete).delete()
        if to_update:
            TeamMembership.objects.bulk_update(to_update, ["role", "team"])
        if to_create:
            TeamMembership.objects.bulk_create(to_create)

    def _sync_layers(self, changed: list[dict], pks: dict[str, int], rows: dict) -> None:
        if not changed:
            return
        layers, wanted_keys = [], set()
        for record in changed:
            schedule_pk = pks[record["id"]]
            for layer in record["layers"]:
                wanted_keys.add((schedule_pk, layer["id"]))
                layers.append(
                    ScheduleLayer(
                        schedule_id=schedule_pk,
                        pagerduty_id=layer["id"],
                        position=layer["position"],
                        name=layer["name"][:255],
                        start=rec.parse_iso(layer["start"]),
                        end=rec.parse_iso(layer["end"]),
                        rotation_virtual_start=rec.parse_iso(layer["rotation_virtual_start"]),
                        rotation_turn_length_seconds=layer["rotation_turn_length_seconds"],
                        restrictions=layer["restrictions"],
                    )
                )
        stale = [
            layer.pk
            for record in changed
            if (row := rows.get(record["id"])) is not None
            for layer in row.layers.all()
            if (row.pk, layer.pagerduty_id) not in wanted_keys
        ]
        if stale:
            ScheduleLayer.objects.filter(pk__in=stale).delete()
        if layers:
            ScheduleLayer.objects.bulk_create(
                layers,
                update_conflicts=True,
                unique_fields=["schedule", "pagerduty_id"],
                update_fields=[
                    "position",
                    "name",
                    "start",
                    "end",
                    "rotation_virtual_start",
                    "rotation_turn_length_seconds",
                    "restrictions",
                ],
            )
        schedule_pks = [pks[r["id"]] for r in changed]
        layer_pks = {
            (schedule_pk, layer_id): pk
            for schedule_pk, layer_id, pk in ScheduleLayer.objects.filter(schedule_id__in=schedule_pks).values_list(
                "schedule_id", "pagerduty_id", "pk"
            )
        }
        # Members have no identity of their own (a position in a rotation): replaced per layer in bulk.
        ScheduleLayerMember.objects.filter(layer_id__in=list(layer_pks.values())).delete()
        user_pks = _id_map(
            OncallUser, self.connection, [u for r in changed for layer in r["layers"] for u in layer["users"]]
        )
        ScheduleLayerMember.objects.bulk_create(
            [
                ScheduleLayerMember(
                    layer_id=layer_pks[(pks[r["id"]], layer["id"])],
                    position=position,
                    user_id=user_pks.get(user_id),
                    user_pagerduty_id=user_id,
                )
                for r in changed
                for layer in r["layers"]
                for position, user_id in enumerate(layer["users"])
            ]
        )

    def _sync_entries(self, changed: list[dict], pks: dict[str, int]) -> None:
        if not changed:
            return
        # Rendered entries are a cache of PagerDuty's computation for the window: replaced whole.
        ScheduleEntry.objects.filter(schedule_id__in=[pks[r["id"]] for r in changed]).delete()
        user_pks = _id_map(
            OncallUser,
            self.connection,
            [e[2] for r in changed for kind in ("final", "overrides") for e in r["rendered"][kind]],
        )
        ScheduleEntry.objects.bulk_create(
            [
                ScheduleEntry(
                    schedule_id=pks[r["id"]],
                    kind=ScheduleEntry.Kind.FINAL if kind == "final" else ScheduleEntry.Kind.OVERRIDE,
                    start=rec.parse_iso(start),
                    end=rec.parse_iso(end),
                    user_id=user_pks.get(user_id),
                    user_pagerduty_id=user_id,
                )
                for r in changed
                for kind in ("final", "overrides")
                for start, end, user_id in r["rendered"][kind]
            ]
        )

    def _sync_rules(self, changed: list[dict], pks: dict[str, int], rows: dict) -> None:
        if not changed:
            return
        rules, wanted_keys = [], set()
        for record in changed:
            policy_pk = pks[record["id"]]
            for rule in record["rules"]:
                wanted_keys.add((policy_pk, rule["id"]))
                rules.append(
                    EscalationRule(
                        policy_id=policy_pk,
                        pagerduty_id=rule["id"],
                        position=rule["position"],
                        escalation_delay_in_minutes=rule["delay"],
                    )
                )
        stale = [
            rule.pk
            for record in changed
            if (row := rows.get(record["id"])) is not None
            for rule in row.rules.all()
            if (row.pk, rule.pagerduty_id) not in wanted_keys
        ]
        if stale:
            EscalationRule.objects.filter(pk__in=stale).delete()
        if rules:
            EscalationRule.objects.bulk_create(
                rules,
                update_conflicts=True,
                unique_fields=["policy", "pagerduty_id"],
                update_fields=["position", "escalation_delay_in_minutes"],
            )
        rule_pks = {
            (policy_pk, rule_id): pk
            for policy_pk, rule_id, pk in EscalationRule.objects.filter(
                policy_id__in=[pks[r["id"]] for r in changed]
            ).values_list("policy_id", "pagerduty_id", "pk")
        }
        EscalationTarget.objects.filter(rule_id__in=list(rule_pks.values())).delete()
        targets = [(r, rule, pos, t) for r in changed for rule in r["rules"] for pos, t in enumerate(rule["targets"])]
        user_pks = _id_map(
            OncallUser, self.connection, [t["id"] for _, _, _, t in targets if t["type"] == "user_reference"]
        )
        schedule_pks = _id_map(
            OncallSchedule, self.connection, [t["id"] for _, _, _, t in targets if t["type"] in _SCHEDULE_TARGETS]
        )
        EscalationTarget.objects.bulk_create(
            [
                EscalationTarget(
                    rule_id=rule_pks[(pks[r["id"]], rule["id"])],
                    position=position,
                    target_type=t["type"],
                    target_pagerduty_id=t["id"],
                    user_id=user_pks.get(t["id"]) if t["type"] == "user_reference" else None,
                    schedule_id=schedule_pks.get(t["id"]) if t["type"] in _SCHEDULE_TARGETS else None,
                )
                for r, rule, position, t in targets
            ]
        )

    # --- gone upstream, dangling references -----------------------------------------------------------

    def _handle_gone(self, resource: str) -> tuple[int, int]:
        section = self.plan.get("resources", {}).get(resource) or {}
        if not section.get("gone_checked"):
            return 0, 0
        ids = [g["id"] for g in section.get("gone") or []]
        model = MODELS[resource]
        flagged = deleted = 0
        for chunk in _chunks(ids, DELETE_CHUNK):
            qs = model.objects.filter(connection=self.connection, pagerduty_id__in=chunk)
            if self.delete_missing:
                deleted += qs.delete()[1].get(model._meta.label, 0)
            else:
                flagged += qs.filter(deleted_upstream_at__isnull=True).update(deleted_upstream_at=self.now)
        return flagged, deleted

    def _relink(self) -> int:
        """Point references at rows imported after them (a layer's user imported by a later sync)."""
        relinked = 0
        conn = self.connection
        specs = [
            (TeamMembership, {"user__connection": conn}, "team", "team_pagerduty_id", OncallTeam),
            (ScheduleLayerMember, {"layer__schedule__connection": conn}, "user", "user_pagerduty_id", OncallUser),
            (ScheduleEntry, {"schedule__connection": conn}, "user", "user_pagerduty_id", OncallUser),
            (
                EscalationTarget,
                {"rule__policy__connection": conn, "target_type": EscalationTarget.Type.USER},
                "user",
                "target_pagerduty_id",
                OncallUser,
            ),
            (
                EscalationTarget,
                {"rule__policy__connection": conn, "target_type__in": _SCHEDULE_TARGETS},
                "schedule",
                "target_pagerduty_id",
                OncallSchedule,
            ),
            (
                OncallService,
                {"connection": conn},
                "escalation_policy",
                "escalation_policy_pagerduty_id",
                OncallEscalationPolicy,
            ),
        ]
        for model, scope, fk, id_field, target in specs:
            dangling = list(
                model.objects.filter(**scope, **{f"{fk}__isnull": True})
                .exclude(**{id_field: ""})
                .values_list("pk", id_field)
            )
            if not dangling:
                continue
            found = _id_map(target, conn, [pd_id for _, pd_id in dangling])
            fixes = [model(pk=pk, **{f"{fk}_id": found[pd_id]}) for pk, pd_id in dangling if pd_id in found]
            if fixes:
                model.objects.bulk_update(fixes, [fk], batch_size=500)
                relinked += len(fixes)
        return relinked
