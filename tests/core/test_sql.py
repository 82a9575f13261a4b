"""apps.core.sql.insert_with_children: a run, its steps and the event's stamp in one statement on
PostgreSQL, all or nothing on every database, and objects holding the keys the rows got."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db import connection as db
from django.db.models import Q
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.core.sql import CompiledQuery, insert_with_children
from apps.incidents.models import IncidentEvent
from apps.runbooks.models import RunbookRun, StepRun
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


def _undispatched(event):
    return IncidentEvent.objects.filter(pk=event.pk, dispatched_at__isnull=True)


@pytest.mark.django_db(transaction=True)
def test_writes_the_parent_its_children_and_the_update_and_gives_them_their_keys(event):
    """Outside a transaction (a worker's autocommit): on PostgreSQL one statement, nothing around it."""
    run, steps = _run(event, RunbookFactory()), _steps("a", "b", "c")
    stamp = timezone.now()
    with CaptureQueriesContext(db) as queries:
        insert_with_children(run, steps, link="run", then=(_undispatched(event), {"dispatched_at": stamp}))
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
            then=(_undispatched(event), {"dispatched_at": timezone.now()}),
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
                then=(_undispatched(event), {"dispatched_at": timezone.now()}),
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
        then=(_undispatched(other), {"dispatched_at": timezone.now()}),
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
