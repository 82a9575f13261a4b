"""Fixtures for the on-call sync: a seeded PagerDuty stand-in over real HTTP and a connection to it."""

from datetime import UTC, datetime

import pytest

from apps.oncall import services
from apps.pagerduty.client import RetryPolicy
from apps.pagerduty.services import connection_client, connection_upsert
from apps.sandbox import SandboxServer, SandboxState, seed_account

TOKEN = "sandbox-token"
# Fixed clock for plans: the window (and so rendered entries) is the same on every run.
NOW = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)
SMALL = {"users": 50, "teams": 5, "schedules": 10, "escalation_policies": 5, "services": 8, "seed": 42}


class Sandbox:
    def __init__(self, state: SandboxState, server: SandboxServer):
        self.state = state
        self.server = server
        self.url = server.url

    def seed(self, **sizes) -> SandboxState:
        return seed_account(self.state, **{**SMALL, **sizes})


@pytest.fixture
def sandbox():
    state = SandboxState(tokens={TOKEN}, rate_limit_per_minute=100_000, teams_ability=True)
    seed_account(state, **SMALL)
    with SandboxServer(state, host="127.0.0.1", port=0).start() as server:
        yield Sandbox(state, server)


@pytest.fixture
def sandbox_connection(db, sandbox):
    return connection_upsert(name="default", api_key=TOKEN, from_email="sre@example.com", api_url=sandbox.url)


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def make_client(sleeps):
    def make(connection):
        return connection_client(
            connection=connection,
            retry=RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_cap=0.05),
            sleep=sleeps.append,
        )

    return make


@pytest.fixture
def plan_run(make_client):
    """Create and plan a SyncRun against the stand-in; returns the planned run."""

    def run(connection, now=NOW, **options):
        sync_run = services.sync_run_create(connection=connection, options=options)
        return services.sync_run_plan(sync_run_id=sync_run.pk, client=make_client(connection), now=now)

    return run


@pytest.fixture
def apply_run():
    def run(sync_run, *, delete_missing=False, now=NOW):
        services.sync_run_request_apply(sync_run_id=sync_run.pk, delete_missing=delete_missing)
        return services.sync_run_apply(sync_run_id=sync_run.pk, now=now)

    return run
