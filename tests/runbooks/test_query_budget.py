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

BUDGET = 18
FIRST_RUN_BUDGET = 19

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


def _three_step_run(pd, monkeypatch, incident_id: str):
    """The statements of one run, from the dispatch task picking the status change up to the end."""
    incident = IncidentFactory(severity=2, owner="sre@example.com")
    pd.add(responses.POST, f"{PD_URL}/incidents", json={"incident": pd_incident(incident_id)}, status=201)
    pd.add(responses.POST, f"{PD_URL}/incidents/{incident_id}/responder_requests", json={"responder_request": {}})
    pd.add(
        responses.PUT,
        f"{PD_URL}/incidents/{incident_id}",
        json={"incident": pd_incident(incident_id, status="resolved")},
    )
    # The status change is the web request's cost, not the run's: its dispatch is taken by hand.
    monkeypatch.setattr(tasks.dispatch_incident_event, "delay", lambda *args: None)
    incident_update(incident_id=incident.pk, status="Identified", actor="test")
    event = IncidentEvent.objects.get(incident=incident, kind="status_changed")

    with CaptureQueriesContext(connection) as queries:
        tasks.dispatch_incident_event(event.pk)

    run = RunbookRun.objects.get(incident=incident)
    assert run.status == "succeeded", [s.error for s in run.step_runs.all()]
    assert [s.status for s in run.step_runs.order_by("position")] == ["succeeded"] * 3
    assert StepRunExchange.objects.filter(step_run__run=run).count() == 3
    assert PagerDutyIncidentLink.objects.get(incident=incident).status == "resolved"
    return queries


def test_three_step_run_stays_within_the_query_budget(postgresql, pd, pd_connection, monkeypatch):
    spec = three_step_runbook(slug="budget", name="budget", to_status="Identified", requester_id="PSREADM")
    runbook_upsert_from_spec(spec=spec)

    # A worker's first run of a runbook reads its latest version; later runs of the unchanged
    # runbook find it remembered (apps.runbooks.versions.runbook_version_for_run).
    first = _three_step_run(pd, monkeypatch, "QINC001")
    queries = _three_step_run(pd, monkeypatch, "QINC002")

    print(
        f"\nqueries for one 3-step run on PostgreSQL: {len(queries)} (budget {BUDGET}), commits {commits(queries)}; "
        f"the worker's first run of the runbook: {len(first)} (budget {FIRST_RUN_BUDGET})"
    )
    for query in queries.captured_queries:
        print("   ", query["sql"][:160])
    assert len(first) <= FIRST_RUN_BUDGET, (
        f"{len(first)} queries for a first 3-step run; the budget is {FIRST_RUN_BUDGET}"
    )
    assert len(queries) <= BUDGET, f"{len(queries)} queries for one 3-step run; the budget is {BUDGET}"


def test_a_runs_statements_are_compiled_once_per_connection(postgresql, pd, pd_connection, monkeypatch):
    """After a worker's first run, Django compiles no SQL for the next one: every statement from the
    dispatch task to the run's end comes from apps.core.sql's caches, with the call's values."""
    from django.db.models.sql import compiler

    from apps.runbooks import services

    spec = three_step_runbook(slug="compiled", name="compiled", to_status="Identified", requester_id="PSREADM")
    runbook_upsert_from_spec(spec=spec)
    _three_step_run(pd, monkeypatch, "QINC101")  # compiles the run's statements
    dispatching, compiled = [], []
    for kind in (compiler.SQLCompiler, compiler.SQLInsertCompiler, compiler.SQLUpdateCompiler):

        def counted(self, *args, _as_sql=kind.as_sql, **kwargs):
            if dispatching:
                compiled.append(f"{type(self).__name__} {self.query.model.__name__}")
            return _as_sql(self, *args, **kwargs)

        monkeypatch.setattr(kind, "as_sql", counted)
    event_dispatch = services.event_dispatch

    def dispatch(**kwargs):
        dispatching.append(True)
        try:
            return event_dispatch(**kwargs)
        finally:
            dispatching.clear()

    monkeypatch.setattr(services, "event_dispatch", dispatch)
    queries = _three_step_run(pd, monkeypatch, "QINC102")
    assert len(queries) == BUDGET
    assert compiled == []
