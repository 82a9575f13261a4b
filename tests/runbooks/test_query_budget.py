"""What one 3-step run costs the database: the statements from the moment the worker picks up the
status change until the run has written its outcome.

The runbook is the bench's (`bench/_stack.three_step_runbook`): create the PagerDuty incident, add a
responder, resolve, with ids rather than emails so no look-up is involved. PostgreSQL only, and with
real transactions (`transaction=True`), so the statements are those a worker sends; SQLite numbers
would say little about production. The count is printed (`pytest -s`) and fails above the budget.
"""

import pytest
import responses
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.incidents.models import IncidentEvent
from apps.incidents.services import incident_update
from apps.runbooks import tasks
from apps.runbooks.models import PagerDutyIncidentLink, RunbookRun, StepRunExchange
from apps.runbooks.services import runbook_upsert_from_spec
from bench._stack import three_step_runbook
from tests.conftest import PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import pd_incident

BUDGET = 26

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("the query budget is measured on PostgreSQL: set DATABASE_URL=postgres://…")


def commits(queries) -> int:
    """Each COMMIT, and each write outside a transaction (autocommit: it commits on its own)."""
    count, inside = 0, False
    for query in queries.captured_queries:
        sql = query["sql"]
        if sql == "BEGIN":
            inside = True
        elif sql in ("COMMIT", "ROLLBACK"):
            inside, count = False, count + (sql == "COMMIT")
        elif not inside and sql.startswith(("INSERT", "UPDATE", "DELETE", "WITH")):
            count += 1
    return count


def test_three_step_run_stays_within_the_query_budget(postgresql, pd, pd_connection, monkeypatch):
    spec = three_step_runbook(slug="budget", name="budget", to_status="Identified", requester_id="PSREADM")
    runbook_upsert_from_spec(spec=spec)
    incident = IncidentFactory(severity=2, owner="sre@example.com")
    pd.add(responses.POST, f"{PD_URL}/incidents", json={"incident": pd_incident("QINC001")}, status=201)
    pd.add(responses.POST, f"{PD_URL}/incidents/QINC001/responder_requests", json={"responder_request": {}})
    pd.add(responses.PUT, f"{PD_URL}/incidents/QINC001", json={"incident": pd_incident("QINC001", status="resolved")})
    # The status change is the web request's cost, not the run's: its dispatch is taken by hand.
    monkeypatch.setattr(tasks.dispatch_incident_event, "delay", lambda *args: None)
    incident_update(incident_id=incident.pk, status="Identified", actor="test")
    event = IncidentEvent.objects.get(incident=incident, kind="status_changed")

    with CaptureQueriesContext(connection) as queries:
        tasks.dispatch_incident_event(event.pk)

    run = RunbookRun.objects.get()
    assert run.status == "succeeded", [s.error for s in run.step_runs.all()]
    assert [s.status for s in run.step_runs.order_by("position")] == ["succeeded"] * 3
    assert StepRunExchange.objects.filter(step_run__run=run).count() == 3
    assert PagerDutyIncidentLink.objects.get().status == "resolved"
    print(f"\nqueries for one 3-step run on PostgreSQL: {len(queries)} (budget {BUDGET}), commits {commits(queries)}")
    for query in queries.captured_queries:
        print("   ", query["sql"][:160])
    assert len(queries) <= BUDGET, f"{len(queries)} queries for one 3-step run; the budget is {BUDGET}"
