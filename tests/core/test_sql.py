"""apps.core.sql.insert_with_children: a run, its steps and the event's stamp in one statement on
PostgreSQL, all or nothing on every database, and objects holding the keys the rows got."""

import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db import connection as db
from django.db.models import F, Q
from django.db.models.sql.compiler import SQLUpdateCompiler
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.core.sql import (
    CompiledQuery,
    CompiledUpdate,
    insert_row,
    insert_with_children,
    update_all_columns,
    update_row,
)
from apps.incidents.models import IncidentEvent
from apps.runbooks.models import PagerDutyIncidentLink, RunbookRun, StepRun
from tests.factories import IncidentFactory, RunbookFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def event():
    incident = IncidentFactory()
    return IncidentEvent.objects.create(incident=incident, kind="status_changed", to_status="Identified")


def _run(event, runbook):
    return RunbookRun(runbook=runbook, incident=event.incident, event=event)


def _steps(*keys):
    return [
        StepRun(position=i, key=key, action="pagerduty.create_incident", inputs={"n": i}) for i, key in enumerate(keys)
    ]


_UNDISPATCHED = CompiledUpdate(lambda pk: IncidentEvent.objects.filter(pk=pk, dispatched_at__isnull=True), -(2**62) + 3)


def _stamp(event, when=None):
    """The event stamped dispatched, unless it already is: the UPDATE insert_with_children ends with."""
    return _UNDISPATCHED.statement(event.pk, dispatched_at=when or timezone.now())


@pytest.mark.django_db(transaction=True)
def test_writes_the_parent_its_children_and_the_update_and_gives_them_their_keys(event):
    """Outside a transaction (a worker's autocommit): on PostgreSQL one statement, nothing around it."""
    run, steps = _run(event, RunbookFactory()), _steps("a", "b", "c")
    stamp = timezone.now()
    with CaptureQueriesContext(db) as queries:
        insert_with_children(run, steps, link="run", then=_stamp(event, stamp))
    if db.vendor == "postgresql":
        assert [q["sql"].split(" ", 2)[:2] for q in queries.captured_queries] == [["WITH", "new_parent"]]

    assert run.pk is not None and not run._state.adding
    stored = list(StepRun.objects.filter(run=run).order_by("position").values_list("pk", "key", "inputs", "run_id"))
    assert stored == [(s.pk, s.key, s.inputs, run.pk) for s in steps]
    assert [s.run_id for s in steps] == [run.pk] * 3 and not any(s._state.adding for s in steps)
    assert RunbookRun.objects.get(pk=run.pk).created_at == run.created_at  # auto_now_add, as save() sets it
    event.refresh_from_db()
    assert event.dispatched_at == stamp


def test_a_parent_without_children_and_without_update(event):
    run = _run(event, RunbookFactory())
    insert_with_children(run, [], link="run")
    assert RunbookRun.objects.filter(pk=run.pk).exists() and not StepRun.objects.exists()
    event.refresh_from_db()
    assert event.dispatched_at is None


def test_a_child_refused_leaves_nothing_written(event):
    """Two steps with the same key break uniq_step_run_key: not the run either, nor the stamp."""
    with pytest.raises(IntegrityError):
        insert_with_children(
            _run(event, RunbookFactory()),
            _steps("a", "a"),
            link="run",
            then=_stamp(event),
        )
    assert not RunbookRun.objects.exists() and not StepRun.objects.exists()
    event.refresh_from_db()
    assert event.dispatched_at is None


def test_a_parent_refused_inside_a_transaction_leaves_the_transaction_usable(event):
    """A second run for the same (runbook, event) is refused; the caller's transaction goes on (a
    savepoint of its own), as runs_create_for_event relies on to look for the existing run."""
    runbook = RunbookFactory()
    insert_with_children(_run(event, runbook), _steps("a"), link="run")
    with transaction.atomic():
        with pytest.raises(IntegrityError):
            insert_with_children(
                _run(event, runbook),
                _steps("b"),
                link="run",
                then=_stamp(event),
            )
        assert RunbookRun.objects.filter(runbook=runbook, event=event).count() == 1
    assert list(StepRun.objects.values_list("key", flat=True)) == ["a"]
    event.refresh_from_db()
    assert event.dispatched_at is None


def test_the_update_touches_only_the_rows_its_queryset_names(event):
    other = IncidentEvent.objects.create(incident=event.incident, kind="status_changed", to_status="Resolved")
    already = timezone.now()
    IncidentEvent.objects.filter(pk=other.pk).update(dispatched_at=already)
    insert_with_children(
        _run(event, RunbookFactory()),
        _steps("a"),
        link="run",
        then=_stamp(other),
    )
    event.refresh_from_db()
    other.refresh_from_db()
    assert event.dispatched_at is None and other.dispatched_at == already


# --- CompiledQuery: compiled once per connection, run with each call's parameters ------------------


def _events_by(_shape, actor):
    return IncidentEvent.objects.filter(actor=actor).order_by("pk").values_list("pk", "kind", "details")


def test_a_compiled_query_answers_as_the_queryset_would_with_each_calls_parameters():
    incident = IncidentFactory()
    made = [
        IncidentEvent.objects.create(incident=incident, kind=kind, actor=actor, details={"n": n})
        for n, (actor, kind) in enumerate([("ann", "severity_changed"), ("bob", "status_changed"), ("ann", "manual")])
    ]
    builds = []

    def build(shape, actor):
        builds.append(shape)
        return _events_by(shape, actor)

    query = CompiledQuery(build, "\x00placeholder\x00")
    for actor in ("ann", "bob", "ann", "nobody"):
        assert query.rows("events", actor) == list(_events_by(None, actor))
    assert builds == ["events"]  # built and compiled once; every call after ran the same SQL
    # The JSON column converted as values_list() converts it: a dict, not its text.
    assert query.rows("events", "ann") == [(made[0].pk, "severity_changed", {"n": 0}), (made[2].pk, "manual", {"n": 2})]
    assert query.rows("events", "bob") == [(made[1].pk, "status_changed", {"n": 1})]
    assert query.rows("events", "nobody") == []


def test_each_shape_is_compiled_on_its_own():
    incident = IncidentFactory()
    for kind in ("severity_changed", "status_changed", "manual"):
        IncidentEvent.objects.create(incident=incident, kind=kind)

    query = CompiledQuery(
        lambda kinds: IncidentEvent.objects.filter(kind__in=kinds).values_list("kind").order_by("kind")
    )
    assert query.rows(("severity_changed",)) == [("severity_changed",)]
    assert query.rows(("manual", "status_changed")) == [("manual",), ("status_changed",)]


def test_a_placeholder_that_does_not_reach_the_sql_as_one_parameter_is_refused():
    # Used twice, it would leave the second use holding the placeholder's value forever.
    twice = CompiledQuery(
        lambda _shape, pk: IncidentEvent.objects.filter(Q(pk=pk) | Q(incident__number=pk)).values_list("pk"), 987654321
    )
    with pytest.raises(ImproperlyConfigured, match="987654321 is 2 parameters"):
        twice.rows(None, 1)
    # Transformed by a lookup (icontains wraps it in %…%), it is not the value the caller gives.
    transformed = CompiledQuery(
        lambda _shape, text: IncidentEvent.objects.filter(actor__icontains=text).values_list("pk"), "x\x00"
    )
    with pytest.raises(ImproperlyConfigured, match="is 0 parameters"):
        transformed.rows(None, "someone")


# --- CompiledUpdate, insert_row, update_all_columns: writes compiled once per connection -----------


@pytest.fixture
def steps(event):
    run = _run(event, RunbookFactory())
    children = _steps("page", "resolve")
    insert_with_children(run, children, link="run")
    return run, children


def _by_run_and_token(pk, token):
    return RunbookRun.objects.filter(pk=pk, lease_token=token)


def test_a_compiled_update_writes_what_queryset_update_writes(steps):
    run, (page, resolve) = steps
    builds = []

    def build(pk, token):
        builds.append((pk, token))
        return _by_run_and_token(pk, token)

    leased = CompiledUpdate(build, -(2**62) + 1, "\x00token\x00")
    run.lease_token = "mine"
    run.save()
    when = timezone.now()
    assert leased.update(run.pk, "theirs", status="running", lease_expires_at=when) == 0  # not its lease
    run.refresh_from_db()
    assert (run.status, run.lease_expires_at) == ("pending", None)
    assert leased.update(run.pk, "mine", status="running", lease_expires_at=when) == 1
    run.refresh_from_db()
    assert (run.status, run.lease_expires_at) == ("running", when)
    # Another run's row: the key is each call's own, not the first call's.
    other = _run(event=run.event, runbook=RunbookFactory())
    other.lease_token = "mine"
    insert_with_children(other, [], link="run")
    assert leased.update(other.pk, "mine", status="failed", lease_expires_at=when) == 1
    run.refresh_from_db()
    assert run.status == "running" and RunbookRun.objects.get(pk=other.pk).status == "failed"
    assert len(builds) == 2  # the filter once to learn the model, once to compile the one shape
    # None is NULL: a statement of its own shape.
    assert leased.update(run.pk, "mine", status="succeeded", lease_expires_at=None) == 1
    run.refresh_from_db()
    assert (run.status, run.lease_expires_at) == ("succeeded", None)


def test_every_kind_of_value_is_prepared_by_its_field(steps):
    run, (page, resolve) = steps
    started = timezone.now()
    for attempt in (1, 2):
        update_row(
            StepRun,
            page.pk,
            status="running",
            rendered={"title": f"Database down ({attempt})", "n": [attempt]},
            response={"status": 201, "body": {"ok": True}},
            started_at=started,
            finished_at=None,
            attempts=F("attempts") + 1,
            step=None,
        )
    page.refresh_from_db()
    assert page.status == "running"
    assert page.rendered == {"title": "Database down (2)", "n": [2]}
    assert page.response == {"status": 201, "body": {"ok": True}}
    assert (page.started_at, page.finished_at, page.attempts) == (started, None, 2)
    resolve.refresh_from_db()
    assert (resolve.status, resolve.attempts, resolve.rendered) == ("pending", 0, {})  # only the row named


def test_a_model_instance_for_a_foreign_key_writes_its_key(steps, event):
    run, (page, resolve) = steps
    link = PagerDutyIncidentLink.objects.create(incident=event.incident, pagerduty_incident_id="PABC123")
    update_row(PagerDutyIncidentLink, link.pk, sent_by=page, sent_status="triggered")
    link.refresh_from_db()
    assert (link.sent_by_id, link.sent_status) == (page.pk, "triggered")
    update_row(PagerDutyIncidentLink, link.pk, sent_by=resolve)
    link.refresh_from_db()
    assert link.sent_by_id == resolve.pk


def test_a_uuid_placeholder_takes_each_calls_key(event):
    ours = event.incident
    theirs = IncidentFactory()
    for incident in (ours, theirs):
        PagerDutyIncidentLink.objects.create(incident=incident, pagerduty_incident_id="PSAME01")
    of_incident = CompiledUpdate(
        lambda incident_id, pd: PagerDutyIncidentLink.objects.filter(incident_id=incident_id, pagerduty_incident_id=pd),
        uuid.UUID("00000000-0000-4000-8000-000000000001"),
        "\x00pd\x00",
    )
    assert of_incident.update(ours.pk, "PSAME01", status="resolved") == 1
    assert of_incident.update(str(theirs.pk), "POTHER1", status="resolved") == 0
    statuses = dict(PagerDutyIncidentLink.objects.values_list("incident_id", "status"))
    assert statuses == {ours.pk: "resolved", theirs.pk: "triggered"}


def test_a_where_placeholder_django_transforms_is_refused(steps):
    run, _ = steps
    transformed = CompiledUpdate(lambda token: RunbookRun.objects.filter(lease_token__icontains=token), "tok\x00")
    with pytest.raises(ImproperlyConfigured, match="is 0 parameters"):
        transformed.update("mine", status="failed")
    run.refresh_from_db()
    assert run.status == "pending"


def test_a_value_written_otherwise_than_prepared_is_refused(steps, monkeypatch):
    run, (page, _) = steps
    as_sql = SQLUpdateCompiler.as_sql

    def altered(self):
        sql, params = as_sql(self)
        return sql, ("something else", *params[1:])

    monkeypatch.setattr(SQLUpdateCompiler, "as_sql", altered)
    with pytest.raises(ImproperlyConfigured, match="not the values prepared for it"):
        CompiledUpdate(lambda pk: StepRun.objects.filter(pk=pk), -(2**62) + 2).update(page.pk, error="boom")
    page.refresh_from_db()
    assert page.error == ""


def test_insert_row_writes_one_statement_and_gives_the_key(event):
    with CaptureQueriesContext(db) as captured:
        made = [IncidentEvent(incident=event.incident, kind="manual", runbook_slug=f"rb-{n}") for n in range(3)]
        for one in made:
            insert_row(one)
    assert len(captured.captured_queries) == 3
    for one in made:
        stored = IncidentEvent.objects.get(pk=one.pk)
        assert (stored.runbook_slug, stored.incident_id) == (one.runbook_slug, event.incident.pk)
        assert stored.created_at == one.created_at and one.created_at is not None  # auto_now_add, as save() stamps it
        assert not one._state.adding


def test_an_insert_written_otherwise_than_prepared_is_refused(event, monkeypatch):
    from apps.core import sql

    compiled = sql._insert_compiled

    def altered(*args):
        text, params = compiled(*args)
        return text, ["something else", *params[1:]]

    monkeypatch.setattr(sql, "_insert_compiled", altered)
    monkeypatch.setattr(sql, "_INSERTS", sql._PerConnection())  # nothing compiled by earlier tests
    with pytest.raises(ImproperlyConfigured, match="not the values prepared for it"):
        insert_row(IncidentEvent(incident=event.incident, kind="manual"))
    assert not IncidentEvent.objects.filter(kind="manual").exists()


def test_update_all_columns_writes_the_row_as_save_would(event):
    incident = event.incident
    before = incident.updated_at
    incident.title, incident.status, incident.resolved_at = "Checkout is down", "Resolved", timezone.now()
    assert update_all_columns(incident) == 1
    stored = type(incident).objects.get(pk=incident.pk)
    assert (stored.title, stored.status, stored.resolved_at) == ("Checkout is down", "Resolved", incident.resolved_at)
    assert stored.updated_at == incident.updated_at and incident.updated_at > before  # auto_now stamped
    assert stored.number == incident.number and stored.created_at == incident.created_at


@pytest.mark.django_db(transaction=True)
def test_a_parent_and_children_of_the_same_shape_are_written_each_with_its_own_values(event):
    """The statement is compiled once per shape; each call's rows are its own."""
    second = IncidentEvent.objects.create(incident=event.incident, kind="status_changed", to_status="Resolved")
    written = []
    for target, keys in ((event, ("page", "resolve")), (second, ("ack", "note"))):
        run, steps = _run(target, RunbookFactory()), _steps(*keys)
        steps[1].inputs = {"for": target.to_status}
        insert_with_children(run, steps, link="run", then=_stamp(target))
        written.append((run, steps))
    for (run, steps), target in zip(written, (event, second), strict=True):
        stored = RunbookRun.objects.get(pk=run.pk)
        assert (stored.event_id, stored.runbook_id) == (target.pk, run.runbook_id)
        rows = list(StepRun.objects.filter(run=run).order_by("position").values_list("key", "inputs", "run_id"))
        assert rows == [(s.key, s.inputs, run.pk) for s in steps]
        target.refresh_from_db()
        assert target.dispatched_at is not None
    assert [s.inputs for s in written[1][1]] == [{"n": 0}, {"for": "Resolved"}]
