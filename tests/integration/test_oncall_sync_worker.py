"""On-call sync on a real worker: the worker dies mid-plan, PagerDuty stumbles mid-plan. Nothing mocked."""

import os
import signal

import pytest

from apps.oncall import services, tasks
from apps.oncall.models import OncallUser, SyncRun
from apps.pagerduty.services import connection_upsert
from apps.sandbox import SandboxServer, SandboxState, seed_account
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
SIZES = {"users": 1500, "teams": 10, "schedules": 60, "escalation_policies": 10, "services": 10, "seed": 5}


@pytest.fixture
def slow_stand_in():
    """40 ms a request: a plan takes a few seconds, long enough to kill the worker in the middle of it."""
    state = SandboxState(tokens={"sandbox-token"}, latency_ms=40)
    seed_account(state, **SIZES)
    with SandboxServer(state, host="127.0.0.1", port=0).start() as server:
        yield server, state


def test_worker_killed_mid_plan_plans_again_once_and_applies_once(celery_worker_process, slow_stand_in):
    worker = celery_worker_process
    server, state = slow_stand_in
    connection = connection_upsert(
        name="default", api_key="sandbox-token", from_email="sre@example.com", api_url=server.url
    )
    run = services.sync_run_create(connection=connection, options={})
    tasks.sync_plan.delay(run.pk)
    wait_for(lambda: len(state.find_requests("GET", "/users")) >= 5, message="planning under way")
    [child] = worker.pool_children()
    os.kill(child, signal.SIGKILL)

    # The message comes back (acks_late); the new process finds the dead one's lease, waits it out, plans again.
    wait_for(
        lambda: SyncRun.objects.get(pk=run.pk).status != SyncRun.Status.PLANNING,
        timeout=120,
        message=f"plan after the kill\n{worker.output()}",
    )
    run.refresh_from_db()
    assert run.status == SyncRun.Status.PLANNED, run.error
    assert run.plan_attempts == 2
    first_pages = [r for r in state.find_requests("GET", "/users") if r["query"]["offset"] == ["0"]]
    assert len(first_pages) == 2, "planned again from the start"
    users = run.plan["records"]["users"]
    assert len(users) == SIZES["users"] == len({u["id"] for u in users})
    assert SyncRun.objects.count() == 1

    services.sync_run_request_apply(sync_run_id=run.pk)
    tasks.sync_apply.delay(run.pk)
    tasks.sync_apply.delay(run.pk)  # a duplicate message
    wait_for(lambda: SyncRun.objects.get(pk=run.pk).status == SyncRun.Status.APPLIED, timeout=60, message="applied")
    assert OncallUser.objects.count() == SIZES["users"]
    assert SyncRun.objects.get(pk=run.pk).apply_attempts == 1
