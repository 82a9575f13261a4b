"""Sync when PagerDuty, the worker or the database fail: 429s and 5xx mid-plan, a plan whose worker
died, an apply that failed, an old plan confirmed late, lost messages."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import OperationalError
from django.utils import timezone

from apps.core.errors import DomainError
from apps.oncall import planning, services, tasks
from apps.oncall.applying import PlanApplier
from apps.oncall.models import (
    EscalationTarget,
    OncallEscalationPolicy,
    OncallSchedule,
    OncallService,
    OncallTeam,
    OncallUser,
    SyncRun,
    TeamMembership,
)
from apps.pagerduty.client import RetryPolicy
from apps.pagerduty.services import connection_client
from tests.oncall.conftest import NOW

SIZES = {"users": 300, "teams": 12, "schedules": 30, "escalation_policies": 15, "services": 20, "seed": 9}


def comparable(plan: dict) -> dict:
    """What a plan says, without when it was made or what fetching it cost."""
    return {"resources": plan["resources"], "records": plan["records"], "warnings": plan["warnings"]}


def patient_client(connection, sleeps):
    return connection_client(
        connection=connection,
        retry=RetryPolicy(max_attempts=8, backoff_base=0.01, backoff_cap=0.05),
        sleep=sleeps.append,
    )


def plan(connection, client):
    run = services.sync_run_create(connection=connection, options={})
    return services.sync_run_plan(sync_run_id=run.pk, client=client, now=NOW)


def test_a_plan_with_injected_429s_and_503s_matches_a_clean_one(sandbox_connection, sandbox, sleeps, apply_run):
    state = sandbox.seed(**SIZES)
    clean = plan(sandbox_connection, patient_client(sandbox_connection, sleeps))
    assert clean.status == SyncRun.Status.PLANNED and clean.plan["fetch"]["retries"] == 0

    # Bursts where PagerDuty says how long to wait, bursts of 5xx, and a fifth of everything else failing.
    state.add_script(
        [
            {"method": "GET", "path": "/users", "status": 429, "headers": {"ratelimit-reset": "2"}, "times": 3},
            {"method": "GET", "path": "/schedules/*", "status": 503, "times": 4},
            {"method": "GET", "path": "/v3/schedules", "status": 502},
            {"method": "GET", "path": "/escalation_policies", "status": 429, "times": 2},
        ]
    )
    state.set_faults({"error_rate": 0.2, "error_statuses": [429, 500, 503], "seed": 14, "script": state.faults.script})
    state.reset_requests()
    sleeps.clear()
    stormy = plan(sandbox_connection, patient_client(sandbox_connection, sleeps))
    assert stormy.status == SyncRun.Status.PLANNED, stormy.error
    assert comparable(stormy.plan) == comparable(clean.plan)
    fetch = stormy.plan["fetch"]
    failed = [r for r in state.requests if r["status"] >= 429]
    assert fetch["retries"] == len(failed) > 20
    assert fetch["requests"] == clean.plan["fetch"]["requests"] + len(failed) == len(state.requests)
    assert 2.0 in sleeps  # the announced ratelimit-reset was waited out

    run = apply_run(stormy)
    assert run.status == SyncRun.Status.APPLIED
    assert OncallUser.objects.count() == SIZES["users"] and OncallTeam.objects.count() == SIZES["teams"]


def test_pagerduty_failing_past_the_retries_is_planned_again_later(sandbox_connection, sandbox, make_client, plan_run):
    clean = plan_run(sandbox_connection)
    sandbox.state.add_script({"method": "GET", "path": "/services", "status": 503, "times": 4})
    run = plan_run(sandbox_connection)
    assert run.status == SyncRun.Status.PLANNING and run.plan is None
    assert run.plan_attempts == 1 and "Attempt 1 of 4" in run.error and "503" in run.error
    assert 25 < services.sync_run_wait_seconds(run=run) <= 30
    # Delivered again too early, it waits; once due, it plans from the start and succeeds.
    assert services.sync_run_plan(sync_run_id=run.pk, client=make_client(sandbox_connection), now=NOW).plan is None
    SyncRun.objects.filter(pk=run.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    run = services.sync_run_plan(sync_run_id=run.pk, client=make_client(sandbox_connection), now=NOW)
    assert run.status == SyncRun.Status.PLANNED and run.plan_attempts == 2 and run.error == ""
    assert comparable(run.plan) == comparable(clean.plan)
    assert services.sync_run_wait_seconds(run=run) is None


def test_planning_gives_up_after_its_attempts(sandbox_connection, sandbox, make_client):
    run = services.sync_run_create(connection=sandbox_connection, options={"resources": ["services"]})
    sandbox.state.add_script({"method": "GET", "path": "/services", "status": 503, "times": None})
    for _attempt in range(services.PLAN_MAX_ATTEMPTS):
        SyncRun.objects.filter(pk=run.pk).update(next_attempt_at=None)
        run = services.sync_run_plan(sync_run_id=run.pk, client=make_client(sandbox_connection), now=NOW)
    assert run.status == SyncRun.Status.FAILED and "503" in run.error
    assert run.plan_attempts == services.PLAN_MAX_ATTEMPTS


def test_a_plan_whose_worker_died_is_made_again_once(sandbox_connection, sandbox, make_client, plan_run):
    clean = plan_run(sandbox_connection)
    run = services.sync_run_create(connection=sandbox_connection, options={})
    # A worker claimed it and died mid-fetch: its lease is fresh, so a redelivery waits instead of doubling up.
    SyncRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now(), plan_attempts=1, started_at=timezone.now())
    sandbox.state.reset_requests()
    held = services.sync_run_plan(sync_run_id=run.pk, client=make_client(sandbox_connection), now=NOW)
    assert held.plan is None and sandbox.state.requests == []
    assert 100 < services.sync_run_wait_seconds(run=held) <= 121
    assert run.pk not in services.sync_runs_recover()["plan"]

    # The lease lapses without a sign of life: the sweep sends the task again, which plans from the start.
    lapsed = timezone.now() - timedelta(minutes=3)
    SyncRun.objects.filter(pk=run.pk).update(heartbeat_at=lapsed, updated_at=lapsed)
    assert run.pk in services.sync_runs_recover()["plan"]
    run = services.sync_run_plan(sync_run_id=run.pk, client=make_client(sandbox_connection), now=NOW)
    assert run.status == SyncRun.Status.PLANNED and run.plan_attempts == 2
    assert comparable(run.plan) == comparable(clean.plan)
    users = run.plan["records"]["users"]
    assert len(users) == len({u["id"] for u in users})


def test_two_planners_store_one_plan(sandbox_connection, sandbox, make_client, monkeypatch):
    """The lease lapsed while the first planner was only slow: whichever finishes first wins, once."""
    run = services.sync_run_create(connection=sandbox_connection, options={"resources": ["teams"]})
    real_build = planning.plan_build
    first = {}

    def build_while_another_finishes(**kwargs):
        plan = real_build(**kwargs)
        first["plan"] = {**plan, "by": "the other worker"}
        SyncRun.objects.filter(pk=run.pk).update(plan=first["plan"], status=SyncRun.Status.PLANNED)
        return plan

    monkeypatch.setattr(services, "plan_build", build_while_another_finishes)
    result = services.sync_run_plan(sync_run_id=run.pk, client=make_client(sandbox_connection), now=NOW)
    assert result.status == SyncRun.Status.PLANNED and result.plan["by"] == "the other worker"


def _break_once(monkeypatch, method: str, error: Exception):
    real = getattr(PlanApplier, method)
    calls = []

    def broken(self, *args, **kwargs):
        if not calls:
            calls.append(1)
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PlanApplier, method, broken)


def counts() -> dict:
    return {
        model.__name__: model.objects.count()
        for model in (
            OncallTeam,
            OncallUser,
            TeamMembership,
            OncallSchedule,
            OncallEscalationPolicy,
            EscalationTarget,
            OncallService,
        )
    }


def test_a_failed_apply_is_retried_as_is(sandbox_connection, sandbox, plan_run, monkeypatch):
    state = sandbox.seed(**SIZES)
    run = plan_run(sandbox_connection)
    services.sync_run_request_apply(sync_run_id=run.pk)
    # Teams, users and schedules are committed; escalation policies fail half way.
    _break_once(monkeypatch, "_sync_rules", RuntimeError("disk full"))
    run = services.sync_run_apply(sync_run_id=run.pk, now=NOW)
    assert run.status == SyncRun.Status.FAILED and "disk full" in run.error
    assert OncallUser.objects.count() == SIZES["users"] and OncallEscalationPolicy.objects.count() == 0

    run = services.sync_run_retry_apply(sync_run_id=run.pk)
    assert run.status == SyncRun.Status.QUEUED
    run = services.sync_run_apply(sync_run_id=run.pk, now=NOW)
    assert run.status == SyncRun.Status.APPLIED and run.apply_attempts == 2
    report = run.report["resources"]
    # What the failed attempt committed is not written again; the rest is.
    assert report["users"]["created"] == 0 and report["users"]["unchanged"] == SIZES["users"]
    assert report["escalation_policies"]["created"] == SIZES["escalation_policies"]
    assert "disk full" in run.report["failed_attempts"][0]["error"]
    memberships = sum(len(u["teams"]) for u in state.users.values())
    assert counts()["TeamMembership"] == memberships and counts()["OncallService"] == SIZES["services"]
    # The same as a clean import: a fresh plan finds nothing to change.
    again = plan_run(sandbox_connection)
    assert all(s["counts"]["create"] == s["counts"]["update"] == 0 for s in again.plan["resources"].values())
    with pytest.raises(DomainError, match="only an apply that failed"):
        services.sync_run_retry_apply(sync_run_id=run.pk)


def test_a_database_hiccup_during_apply_is_applied_again_by_itself(sandbox_connection, plan_run, monkeypatch):
    run = plan_run(sandbox_connection)
    services.sync_run_request_apply(sync_run_id=run.pk)
    _break_once(monkeypatch, "_sync_layers", OperationalError("server closed the connection unexpectedly"))
    run = services.sync_run_apply(sync_run_id=run.pk, now=NOW)
    assert run.status == SyncRun.Status.QUEUED and "Attempt 1 of 3" in run.error
    assert 25 < services.sync_run_wait_seconds(run=run) <= 30
    assert services.sync_run_apply(sync_run_id=run.pk, now=NOW).status == SyncRun.Status.QUEUED  # not due yet
    SyncRun.objects.filter(pk=run.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    run = services.sync_run_apply(sync_run_id=run.pk, now=NOW)
    assert run.status == SyncRun.Status.APPLIED and run.apply_attempts == 2


def test_an_older_plan_is_not_applied_over_a_newer_one(sandbox_connection, plan_run, apply_run):
    older = plan_run(sandbox_connection)
    newer = apply_run(plan_run(sandbox_connection))
    assert newer.status == SyncRun.Status.APPLIED
    run = apply_run(older)
    assert run.status == SyncRun.Status.FAILED and f"Sync #{newer.pk}" in run.error and "Plan again" in run.error
    with pytest.raises(DomainError, match="would undo it"):
        services.sync_run_retry_apply(sync_run_id=run.pk)


def test_the_sweep_delivers_lost_and_orphaned_applies_again(sandbox_connection, plan_run):
    lost = plan_run(sandbox_connection, resources=["teams"])
    services.sync_run_request_apply(sync_run_id=lost.pk)
    orphan = plan_run(sandbox_connection, resources=["teams"])
    long_ago = timezone.now() - timedelta(minutes=5)
    SyncRun.objects.filter(pk=orphan.pk).update(status=SyncRun.Status.APPLYING, heartbeat_at=long_ago)
    fresh = plan_run(sandbox_connection, resources=["teams"])
    services.sync_run_request_apply(sync_run_id=fresh.pk)
    SyncRun.objects.filter(pk=lost.pk).update(updated_at=long_ago)

    found = tasks.sync_recover.delay().get()
    assert found == {"plan": [], "apply": sorted([lost.pk, orphan.pk])}
    statuses = dict(SyncRun.objects.filter(pk__in=[lost.pk, orphan.pk, fresh.pk]).values_list("pk", "status"))
    assert statuses[lost.pk] == statuses[orphan.pk] == SyncRun.Status.APPLIED
    assert statuses[fresh.pk] == SyncRun.Status.QUEUED


def test_retry_button_in_the_admin(
    client, sandbox_connection, plan_run, monkeypatch, django_capture_on_commit_callbacks
):
    run = plan_run(sandbox_connection)
    services.sync_run_request_apply(sync_run_id=run.pk)
    _break_once(monkeypatch, "_sync_rules", RuntimeError("disk full"))
    services.sync_run_apply(sync_run_id=run.pk, now=NOW)
    client.force_login(User.objects.create_superuser("boss", "b@example.com", "pw-123456789"))
    page = client.get(f"/admin/oncall/sync/{run.pk}/").content.decode()
    assert "Retry the apply" in page and "disk full" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/admin/oncall/sync/{run.pk}/retry/")
    assert response.status_code == 302
    assert SyncRun.objects.get(pk=run.pk).status == SyncRun.Status.APPLIED
    assert client.post(f"/admin/oncall/sync/{run.pk}/retry/").status_code == 302
    staff = User.objects.create_user("staff", password="pw-123456789", is_staff=True)
    client.force_login(staff)
    assert client.post(f"/admin/oncall/sync/{run.pk}/retry/").status_code == 403


def test_command_retries_a_failed_apply(sandbox_connection, plan_run, monkeypatch, capsys):
    run = plan_run(sandbox_connection)
    services.sync_run_request_apply(sync_run_id=run.pk)
    _break_once(monkeypatch, "_sync_rules", RuntimeError("disk full"))
    services.sync_run_apply(sync_run_id=run.pk)
    call_command("oncall_sync", "default", "--apply", "--sync-run", str(run.pk))
    assert "applied" in capsys.readouterr().out and SyncRun.objects.get(pk=run.pk).status == SyncRun.Status.APPLIED


def test_waiting_out_pagerduty_renews_the_lease(sandbox_connection, settings):
    """A worker sleeping through a long 429 is alive: its lease must not lapse while it waits."""
    settings.ONCALL_SYNC_LEASE_SECONDS = 4
    run = services.sync_run_create(connection=sandbox_connection, options={})
    long_ago = timezone.now() - timedelta(minutes=5)
    SyncRun.objects.filter(pk=run.pk).update(heartbeat_at=long_ago)
    services._heartbeat_sleep(run.pk)(2.2)
    assert SyncRun.objects.get(pk=run.pk).heartbeat_at > long_ago + timedelta(minutes=4)
