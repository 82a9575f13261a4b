"""Fixtures for the PagerDuty stand-in: a seeded state served on a free port, and a client for it.

These tests need no database: the stand-in is plain Python and talks real HTTP.
"""

import os

import pytest
import requests

from apps.sandbox import (
    ADMIN_EMAIL,
    CHECKOUT_SERVICE_ID,
    DEFAULT_TOKEN,
    SandboxServer,
    SandboxState,
    events_spec_path,
    rest_spec_path,
    seed_account,
)
from apps.sandbox.contract import spec_hint

PD_ACCEPT = "application/vnd.pagerduty+json;version=2"


class Api:
    """A client that behaves as the project's PagerDuty client should: token, Accept, From."""

    def __init__(self, url: str, token: str = DEFAULT_TOKEN, from_email: str | None = ADMIN_EMAIL):
        self.url = url
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Token token={token}", "Accept": PD_ACCEPT})
        if from_email:
            self.session.headers["From"] = from_email

    def get(self, path: str, params=None, **kwargs) -> requests.Response:
        return self.session.get(self.url + path, params=params, timeout=10, **kwargs)

    def post(self, path: str, json=None, **kwargs) -> requests.Response:
        return self.session.post(self.url + path, json=json, timeout=10, **kwargs)

    def put(self, path: str, json=None, **kwargs) -> requests.Response:
        return self.session.put(self.url + path, json=json, timeout=10, **kwargs)

    def create_incident(self, key: str | None = "disk-full", service_id: str = CHECKOUT_SERVICE_ID, **fields):
        incident = {
            "type": "incident",
            "title": fields.pop("title", "Disk full on db-1"),
            "service": {"id": service_id, "type": "service_reference"},
            **fields,
        }
        if key is not None:
            incident["incident_key"] = key
        return self.post("/incidents", {"incident": incident})

    def resolve(self, incident_id: str, resolution: str = "fixed") -> requests.Response:
        body = {"incident": {"type": "incident_reference", "status": "resolved", "resolution": resolution}}
        return self.put(f"/incidents/{incident_id}", body)

    def close(self) -> None:
        self.session.close()


def require_spec(events: bool = False) -> None:
    """Skip when the OpenAPI spec is absent (a developer machine), but fail under CI=true."""
    path = events_spec_path() if events else rest_spec_path()
    if path.is_file():
        return
    message = f"PagerDuty OpenAPI spec not found at {path}; to run the contract tests, {spec_hint(events)}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: the spec must be present)")
    pytest.skip(message)


@pytest.fixture
def sandbox_state():
    state = SandboxState(tokens={DEFAULT_TOKEN})
    return seed_account(state, users=50, teams=5, schedules=10, escalation_policies=5, services=8, seed=42)


@pytest.fixture
def sandbox(sandbox_state):
    with SandboxServer(sandbox_state, host="127.0.0.1", port=0).start() as server:
        yield server


@pytest.fixture
def api(sandbox):
    client = Api(sandbox.url)
    yield client
    client.close()
