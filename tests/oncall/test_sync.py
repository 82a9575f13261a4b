"""Plan → apply against the PagerDuty stand-in: what gets written, re-syncs, gone upstream, warnings."""

from django.db import connection as db
from django.test.utils import CaptureQueriesContext

from apps.oncall.applying import PlanApplier
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
    SyncRun,
    TeamMembership,
)
from apps.oncall.selectors import oncall_now
from apps.sandbox import (
    ADMIN_USER_ID,
    CHECKOUT_ESCALATION_POLICY_ID,
    CHECKOUT_SCHEDULE_ID,
    CHECKOUT_SERVICE_ID,
    RESPONDER_USER_ID,
    SRE_TEAM_ID,
)
from tests.oncall.conftest import NOW, SMALL


def writes(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].split()[0].upper() in ("INSERT", "UPDATE", "DELETE")]


def test_first_import_creates_everything(sandbox_connection, plan_run, apply_run, sandbox):
    run = plan_run(sandbox_connection)
    assert run.status == SyncRun.Status.PLANNED, run.error
    counts = {k: v["counts"]["create"] for k, v in run.plan["resources"].items()}
    assert counts == {
        "teams": SMALL["teams"],
        "users": SMALL["users"],
        # Classic schedules and the v3 (shift-based) ones, which come from /v3/schedules.
        "schedules": SMALL["schedules"] + len(sandbox.state.schedules_v3),
        "escalation_policies": SMALL["escalation_policies"],
        "services": SMALL["services"],
    }
    # Planning wrote nothing but the run itself.
    assert OncallUser.objects.count() == 0

    run = apply_run(run)
    assert run.status == SyncRun.Status.APPLIED, run.error
    assert OncallUser.objects.filter(connection=sandbox_connection).count() == SMALL["users"]
    admin = OncallUser.objects.get(pagerduty_id=ADMIN_USER_ID)
    assert admin.email == "sre@example.com" and admin.synced_at is not None
    sre = OncallTeam.objects.get(pagerduty_id=SRE_TEAM_ID)
    assert TeamMembership.objects.filter(team=sre, user=admin).exists()

    schedule = OncallSchedule.objects.get(pagerduty_id=CHECKOUT_SCHEDULE_ID)
    layer = schedule.layers.get()
    assert layer.rotation_turn_length_seconds == 604800
    assert [m.user.pagerduty_id for m in layer.members.order_by("position")] == [ADMIN_USER_ID, RESPONDER_USER_ID]
    assert schedule.rendered_since < NOW < schedule.rendered_until
    assert ScheduleEntry.objects.filter(schedule=schedule, kind="final", start__lte=NOW, end__gt=NOW).count() == 1

    policy = OncallEscalationPolicy.objects.get(pagerduty_id=CHECKOUT_ESCALATION_POLICY_ID)
    rules = list(policy.rules.order_by("position"))
    assert [r.escalation_delay_in_minutes for r in rules] == [30, 30]
    assert rules[0].targets.get().schedule == schedule
    assert rules[1].targets.get().user.pagerduty_id == RESPONDER_USER_ID
    service = OncallService.objects.get(pagerduty_id=CHECKOUT_SERVICE_ID)
    assert service.escalation_policy == policy

    report = run.report["resources"]
    assert report["users"]["created"] == SMALL["users"] and report["users"]["updated"] == 0


def test_applying_the_same_plan_twice_changes_nothing(sandbox_connection, plan_run, apply_run):
    run = apply_run(plan_run(sandbox_connection))
    before = {u.pk: (u.name, u.updated_at) for u in OncallUser.objects.all()}
    with CaptureQueriesContext(db) as queries:
        report = PlanApplier(connection=sandbox_connection, plan=run.plan, delete_missing=False, now=NOW).apply()
    assert writes(queries) == []
    assert all(r["created"] == r["updated"] == 0 for r in report["resources"].values())
    assert {u.pk: (u.name, u.updated_at) for u in OncallUser.objects.all()} == before

    # A fresh plan of the unchanged account is all "unchanged".
    again = plan_run(sandbox_connection)
    for section in again.plan["resources"].values():
        assert section["counts"]["create"] == section["counts"]["update"] == section["counts"]["gone"] == 0


def test_resync_shows_exactly_the_upstream_changes_and_keeps_local_fields(
    sandbox_connection, plan_run, apply_run, sandbox
):
    apply_run(plan_run(sandbox_connection))
    state = sandbox.state
    renamed = next(uid for uid in state.users if uid not in (ADMIN_USER_ID, RESPONDER_USER_ID))
    gone_policy = next(pid for pid in state.escalation_policies if pid != CHECKOUT_ESCALATION_POLICY_ID)
    OncallUser.objects.filter(pagerduty_id=renamed).update(local_alias="Our Alias", notes="pager on desk 4")
    OncallSchedule.objects.filter(pagerduty_id=CHECKOUT_SCHEDULE_ID).update(notes="reviewed quarterly")
    layer_pk = ScheduleLayer.objects.get(schedule__pagerduty_id=CHECKOUT_SCHEDULE_ID).pk

    with state.lock:
        state.users[renamed]["name"] = "Renamed Person"
        state.users[renamed]["summary"] = "Renamed Person"
        layer = state.schedules[CHECKOUT_SCHEDULE_ID]["schedule_layers"][0]
        layer["users"].append({"user": state.user_ref(renamed)})
        del state.escalation_policies[gone_policy]

    run = plan_run(sandbox_connection)
    res = run.plan["resources"]
    assert [(u["id"], [c["field"] for c in u["changes"]]) for u in res["users"]["update"]] == [(renamed, ["name"])]
    assert res["users"]["update"][0]["changes"][0]["new"] == "Renamed Person"
    [schedule_change] = res["schedules"]["update"]
    assert schedule_change["id"] == CHECKOUT_SCHEDULE_ID
    [change] = schedule_change["changes"]
    assert change["field"].endswith(".users") and change["new"][-1] == renamed
    assert [g["id"] for g in res["escalation_policies"]["gone"]] == [gone_policy]
    for kind in ("teams", "services"):
        assert res[kind]["counts"]["update"] == res[kind]["counts"]["gone"] == 0
    assert sum(s["counts"]["create"] for s in res.values()) == 0

    run = apply_run(run)
    assert run.report["resources"]["users"]["updated"] == 1
    assert run.report["resources"]["escalation_policies"]["gone_flagged"] == 1
    user = OncallUser.objects.get(pagerduty_id=renamed)
    assert (user.name, user.local_alias, user.notes) == ("Renamed Person", "Our Alias", "pager on desk 4")
    schedule = OncallSchedule.objects.get(pagerduty_id=CHECKOUT_SCHEDULE_ID)
    assert schedule.notes == "reviewed quarterly"
    layer = schedule.layers.get()
    assert layer.pk == layer_pk, "layers are updated in place, not recreated"
    assert [m.user_pagerduty_id for m in layer.members.order_by("position")][-1] == renamed
    # Gone upstream is flagged, not deleted, unless asked.
    flagged = OncallEscalationPolicy.objects.get(pagerduty_id=gone_policy)
    assert flagged.deleted_upstream_at == NOW

    # Asked to delete: the flagged policy goes, with its rules; services keep the id they point at.
    run = apply_run(plan_run(sandbox_connection), delete_missing=True)
    assert run.report["resources"]["escalation_policies"]["deleted"] == 1
    assert not OncallEscalationPolicy.objects.filter(pagerduty_id=gone_policy).exists()
    assert not EscalationRule.objects.filter(policy__pagerduty_id=gone_policy).exists()
    for service in OncallService.objects.filter(escalation_policy_pagerduty_id=gone_policy):
        assert service.escalation_policy is None


def test_no_teams_ability_warns_skips_teams_and_keeps_memberships(sandbox_connection, plan_run, apply_run, sandbox):
    apply_run(plan_run(sandbox_connection))
    memberships = TeamMembership.objects.count()
    sandbox.state.teams_ability = False
    run = plan_run(sandbox_connection)
    assert run.status == SyncRun.Status.PLANNED, run.error
    assert "teams_ability_missing" in [w["code"] for w in run.plan["warnings"]]
    assert run.plan["resources"]["teams"]["gone_checked"] is False
    assert run.plan["resources"]["users"]["counts"]["update"] == 0
    run = apply_run(run)
    assert run.status == SyncRun.Status.APPLIED
    assert TeamMembership.objects.count() == memberships
    assert OncallTeam.objects.filter(deleted_upstream_at__isnull=False).count() == 0


def test_rate_limit_is_retried_after_the_announced_reset(sandbox_connection, plan_run, sandbox, sleeps):
    sandbox.state.add_script(
        {"method": "GET", "path": "/users", "status": 429, "headers": {"ratelimit-reset": "3"}, "times": 2}
    )
    run = plan_run(sandbox_connection, resources=["users"])
    assert run.status == SyncRun.Status.PLANNED, run.error
    assert sleeps == [3.0, 3.0]
    assert run.plan["fetch"]["requests"] == 3 and run.plan["resources"]["users"]["counts"]["create"] == SMALL["users"]


def test_warnings_users_without_email_and_v3_targets(sandbox_connection, plan_run, sandbox):
    state = sandbox.state
    with state.lock:
        state.users[RESPONDER_USER_ID]["email"] = ""
        policy = state.escalation_policies[CHECKOUT_ESCALATION_POLICY_ID]
        policy["escalation_rules"][1]["targets"].append({"id": "PV3SCHD", "type": "schedule_v3_reference"})
        policy["escalation_rules"][1]["targets"].append({"id": "PXTEAM1", "type": "team_reference"})
    run = plan_run(sandbox_connection)
    warnings = {w["code"]: w for w in run.plan["warnings"]}
    assert warnings["user_without_email"]["ids"] == [RESPONDER_USER_ID]
    assert CHECKOUT_ESCALATION_POLICY_ID in warnings["schedule_v3_target"]["ids"]
    assert "team_reference" in warnings["unsupported_target"]["message"]


def test_filtered_import_does_not_flag_others_as_gone(sandbox_connection, plan_run, apply_run):
    apply_run(plan_run(sandbox_connection))
    run = plan_run(sandbox_connection, team_ids=[SRE_TEAM_ID])
    for section in run.plan["resources"].values():
        assert section["gone_checked"] is False and section["counts"]["gone"] == 0
    assert 0 < run.plan["resources"]["users"]["counts"]["fetched"] < SMALL["users"]
    assert "filtered" in [w["code"] for w in run.plan["warnings"]]


def test_references_to_objects_imported_later_are_linked(sandbox_connection, plan_run, apply_run):
    apply_run(plan_run(sandbox_connection, resources=["schedules", "escalation_policies"]))
    assert EscalationTarget.objects.filter(target_type="user_reference", user__isnull=True).exists()
    run = apply_run(plan_run(sandbox_connection, resources=["users"]))
    assert run.report["relinked"] > 0
    assert not EscalationTarget.objects.filter(target_type="user_reference", user__isnull=True).exists()
    assert not ScheduleEntry.objects.filter(user__isnull=True).exists()


def test_team_roles_when_asked_cost_one_request_per_team(sandbox_connection, plan_run, apply_run, sandbox):
    sandbox.state.reset_requests()
    run = plan_run(sandbox_connection, resources=["teams", "users"], team_roles=True)
    member_calls = [r for r in sandbox.state.requests if r["path"].endswith("/members")]
    assert len(member_calls) == SMALL["teams"]
    assert run.plan["fetch"]["by_resource"]["teams"]["member_requests"] == SMALL["teams"]
    assert run.plan["fetch"]["requests"] == run.plan["fetch"]["minimum"]
    apply_run(run)
    assert TeamMembership.objects.get(user__pagerduty_id=ADMIN_USER_ID, team_pagerduty_id=SRE_TEAM_ID).role == "manager"
    # Without roles next time, the roles we hold are kept rather than blanked.
    again = plan_run(sandbox_connection, resources=["teams", "users"])
    assert again.plan["resources"]["users"]["counts"]["update"] == 0


def test_planning_failure_is_recorded_on_the_run(sandbox_connection, plan_run, sandbox):
    sandbox.state.tokens.clear()
    run = plan_run(sandbox_connection)
    assert run.status == SyncRun.Status.FAILED
    assert "401" in run.error and run.plan is None


def test_v3_schedules_are_imported_and_targets_through_them_resolve(sandbox_connection, plan_run, apply_run, sandbox):
    state = sandbox.state
    v3_id = next(iter(state.schedules_v3))
    with state.lock:
        rules = state.escalation_policies[CHECKOUT_ESCALATION_POLICY_ID]["escalation_rules"]
        rules[1]["targets"] = [{"id": v3_id, "type": "schedule_v3_reference", "summary": "v3"}]
    run = apply_run(plan_run(sandbox_connection))
    assert "schedule_v3_target" not in [w["code"] for w in run.plan["warnings"]]
    schedule = OncallSchedule.objects.get(pagerduty_id=v3_id)
    assert schedule.kind == OncallSchedule.Kind.V3 and not schedule.layers.exists()
    layer = state.schedules_v3[v3_id]["schedule_layers"][0]
    [rotation] = schedule.rotations
    assert rotation["id"] == layer["id"]
    assert rotation["events"][0]["assignment"]["members"] == [u["user"]["id"] for u in layer["users"]]
    assert schedule.entries.filter(kind="final").exists()
    target = EscalationTarget.objects.get(rule__policy__pagerduty_id=CHECKOUT_ESCALATION_POLICY_ID, rule__position=1)
    assert target.target_type == "schedule_v3_reference" and target.schedule == schedule
    policy = OncallEscalationPolicy.objects.get(pagerduty_id=CHECKOUT_ESCALATION_POLICY_ID)
    level_2 = [e for e in oncall_now(escalation_policy=policy, at=NOW) if e.escalation_level == 2]
    assert [e.schedule for e in level_2] == [schedule]


def test_v3_listing_refused_keeps_v3_schedules_and_says_why(sandbox_connection, plan_run, apply_run, sandbox):
    apply_run(plan_run(sandbox_connection))
    sandbox.state.add_script({"method": "GET", "path": "/v3/schedules", "status": 403, "times": None})
    run = plan_run(sandbox_connection)
    assert run.status == SyncRun.Status.PLANNED, run.error
    codes = [w["code"] for w in run.plan["warnings"]]
    assert "schedule_v3_unavailable" in codes
    # Classic schedules are still checked for "gone"; the v3 ones we could not list are not flagged.
    section = run.plan["resources"]["schedules"]
    assert section["gone_checked"] is True and section["gone"] == []
    apply_run(run)
    assert not OncallSchedule.objects.filter(kind="schedule_v3", deleted_upstream_at__isnull=False).exists()
