"""Celery tasks (duplicate deliveries do nothing), the periodic re-sync, and the management command."""

import pytest
from django.core.management import CommandError, call_command

from apps.oncall import services, tasks
from apps.oncall.models import OncallUser, SyncRun
from tests.oncall.conftest import SMALL


def test_sync_apply_twice_applies_once(sandbox_connection, plan_run):
    run = plan_run(sandbox_connection)
    services.sync_run_request_apply(sync_run_id=run.pk)
    assert tasks.sync_apply.delay(run.pk).get() == "applied"
    applied = SyncRun.objects.get(pk=run.pk).report["applied_at"]
    OncallUser.objects.update(name="edited locally")
    # A redelivered message finds the run applied and returns without writing.
    assert tasks.sync_apply.delay(run.pk).get() == "applied"
    assert SyncRun.objects.get(pk=run.pk).report["applied_at"] == applied
    assert set(OncallUser.objects.values_list("name", flat=True)) == {"edited locally"}
    assert tasks.sync_apply.delay(999_999).get() is None


def test_apply_needs_a_request_first(sandbox_connection, plan_run):
    run = plan_run(sandbox_connection)
    assert tasks.sync_apply.delay(run.pk).get() == "planned"
    assert OncallUser.objects.count() == 0
    _, queued = services.sync_run_request_apply(sync_run_id=run.pk)
    _, again = services.sync_run_request_apply(sync_run_id=run.pk)
    assert (queued, again) == (True, False)


def test_periodic_resync_reuses_the_last_options(sandbox_connection, plan_run, apply_run, monkeypatch, make_client):
    apply_run(plan_run(sandbox_connection, resources=["users"]))
    # The worker builds its own client; point it at the fast-retry one the tests use.
    monkeypatch.setattr(services, "connection_client", lambda connection, **kwargs: make_client(connection))
    ids = tasks.sync_periodic.delay().get()
    [run] = SyncRun.objects.filter(pk__in=ids)
    assert run.trigger == SyncRun.Trigger.PERIODIC and run.options["resources"] == ["users"]
    tasks.sync_plan.delay(run.pk).get()
    run.refresh_from_db()
    assert run.status == SyncRun.Status.APPLIED and run.delete_missing is False
    assert run.report["resources"]["users"]["unchanged"] == SMALL["users"]


def test_command_plan_then_apply(sandbox_connection, capsys):
    call_command("oncall_sync", "default", "--plan", "--resources", "users,teams")
    out = capsys.readouterr().out
    assert "Users" in out and f"create {SMALL['users']:>6}" in out
    run = SyncRun.objects.get()
    assert run.status == SyncRun.Status.PLANNED and OncallUser.objects.count() == 0

    call_command("oncall_sync", "default", "--apply", "--sync-run", str(run.pk))
    assert "applied" in capsys.readouterr().out
    assert OncallUser.objects.count() == SMALL["users"]
    with pytest.raises(CommandError, match="only a planned sync"):
        call_command("oncall_sync", "default", "--apply", "--sync-run", str(run.pk))

    call_command("oncall_sync", "default", "--apply", "--json")
    assert '"unchanged"' in capsys.readouterr().out


def test_command_rejects_bad_input(sandbox_connection):
    with pytest.raises(CommandError, match="No PagerDuty connection named 'nope'"):
        call_command("oncall_sync", "nope", "--plan")
    with pytest.raises(CommandError, match="Unknown resource"):
        call_command("oncall_sync", "default", "--plan", "--resources", "pets")
    with pytest.raises(CommandError, match="window"):
        call_command("oncall_sync", "default", "--plan", "--window-days", "0")
