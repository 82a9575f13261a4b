"""One of everything the API and the admin show, for tests that walk every endpoint."""

import re
from contextlib import contextmanager
from datetime import timedelta

import responses
from django.test import TestCase
from django.utils import timezone

from apps.incidents.services import incident_update
from apps.oncall.models import (
    EscalationRule,
    EscalationTarget,
    OncallEscalationPolicy,
    OncallSchedule,
    OncallUser,
    ScheduleEntry,
)
from apps.pagerduty.models import ServiceMapping
from apps.pagerduty.services import channel_upsert, connection_upsert
from apps.runbooks.loader import read_documents
from apps.runbooks.services import runbook_upsert_from_spec
from config.settings import BASE_DIR
from tests.factories import IncidentFactory

SEED_PD_URL = "https://pd.seed.test"
_UNAUTHORIZED = (401, {}, '{"error": {"message": "Unauthorized", "code": 2006}}')


@contextmanager
def pagerduty_says_401():
    """Every request to any host gets PagerDuty's 401: nothing leaves the process, and every path
    that talks to PagerDuty (connection test, dry-run look-ups, runs fired by a change) answers."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in (responses.GET, responses.POST, responses.PUT, responses.PATCH, responses.DELETE):
            mock.add_callback(method, re.compile(r".*"), callback=lambda request: _UNAUTHORIZED)
        yield mock


def seed_one_of_everything() -> dict:
    """Connection, the example runbooks, incidents, failed runs with exchanges, on-call data.
    Call inside pagerduty_says_401(): the status change fires runbooks that call PagerDuty."""
    connection = connection_upsert(
        name="default", api_key="seed-key-0123456789", from_email="sre@example.com", api_url=SEED_PD_URL
    )
    ServiceMapping.objects.create(connection=connection, service="", pagerduty_service_id="PSVC001")
    channel = channel_upsert(name="monitoring", routing_key="seedROUTINGkey0123456789abcdefAB")
    runbooks = [
        runbook_upsert_from_spec(spec=spec, comment=f"from {source}")[0]
        for source, spec in read_documents(BASE_DIR / "runbooks")
    ]
    # Runs start on commit; run those callbacks now, inside the test's transaction.
    with TestCase.captureOnCommitCallbacks(execute=True):
        incident = IncidentFactory()
        IncidentFactory(title="Resolved one", status="Resolved")
        incident_update(incident_id=incident.pk, status="Investigating", actor="test")
    user = OncallUser.objects.create(connection=connection, pagerduty_id="PUSER01", name="Ada", email="ada@example.com")
    schedule = OncallSchedule.objects.create(
        connection=connection, pagerduty_id="PSCHED1", name="Primary", html_url="https://acme.pagerduty.com/s/1"
    )
    now = timezone.now()
    ScheduleEntry.objects.create(
        schedule=schedule,
        kind="final",
        start=now - timedelta(hours=1),
        end=now + timedelta(hours=1),
        user=user,
        user_pagerduty_id=user.pagerduty_id,
    )
    policy = OncallEscalationPolicy.objects.create(connection=connection, pagerduty_id="PEP0001", name="Ops")
    rule = EscalationRule.objects.create(policy=policy, pagerduty_id="PRULE01", position=0)
    EscalationTarget.objects.create(
        rule=rule, position=0, target_type="schedule_reference", target_pagerduty_id="PSCHED1", schedule=schedule
    )
    return {
        "connection": connection,
        "channel": channel,
        "runbook": runbooks[0],
        "incident": incident,
        "run": incident.runbook_runs.first(),
        "oncall_user": user,
        "schedule": schedule,
        "policy": policy,
    }
