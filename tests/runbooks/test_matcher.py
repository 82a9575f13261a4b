"""Which runbooks start a run for an incident change: the trigger kind, the from/to statuses and
the conditions each refuse on their own.

Most tests go the production way (incident service → on_commit → dispatch → run rows) and count the
runs each runbook got; runbooks have no steps, so a run is the whole observable effect. The last
ones call the matcher with unsaved objects for cases the services cannot produce today (a disabled
runbook reaching the matcher, an event without a severity)."""

import pytest

from apps.incidents.models import Incident, IncidentEvent, IncidentEventKind
from apps.incidents.services import incident_trigger_runbook, incident_update
from apps.runbooks.matcher import runbook_matches
from apps.runbooks.models import Runbook, RunbookRun, TriggerOn
from tests.factories import IncidentFactory
from tests.runbooks.helpers import make_runbook

pytestmark = pytest.mark.django_db


@pytest.fixture
def dispatched(django_capture_on_commit_callbacks):
    """Run a block of incident changes and dispatch their events as production does on commit."""

    def run(block):
        with django_capture_on_commit_callbacks(execute=True):
            return block()

    return run


def runs_of(slug: str) -> list[tuple[str, str, str]]:
    """(event kind, from, to) of every run the runbook got, oldest first."""
    return [
        (run.event.kind, run.event.from_status, run.event.to_status)
        for run in RunbookRun.objects.filter(runbook__slug=slug).select_related("event").order_by("pk")
    ]


def new_incident(dispatched, **fields) -> Incident:
    return dispatched(lambda: IncidentFactory(**fields))


def update(dispatched, incident, **changes) -> None:
    dispatched(lambda: incident_update(incident_id=incident.pk, actor="test", **changes))


def test_a_created_runbook_runs_once_on_creation_and_never_on_later_changes(dispatched):
    make_runbook("on-created", trigger={"on": "created"}, steps=[])
    make_runbook("on-status", trigger={"on": "status_changed"}, steps=[])
    make_runbook("on-severity", trigger={"on": "severity_changed"}, steps=[])

    incident = new_incident(dispatched, severity=2)
    update(dispatched, incident, status="Investigating")
    update(dispatched, incident, severity=1)
    update(dispatched, incident, status="Resolved", severity=0)

    assert runs_of("on-created") == [("created", "", "Detected")]
    assert runs_of("on-status") == [
        ("status_changed", "Detected", "Investigating"),
        ("status_changed", "Investigating", "Resolved"),
    ]
    assert [kind for kind, _, _ in runs_of("on-severity")] == ["severity_changed", "severity_changed"]


def test_a_manual_runbook_runs_only_when_asked_for_by_name(dispatched):
    make_runbook("by-hand", trigger={"on": "manual"}, steps=[])
    make_runbook("other-by-hand", trigger={"on": "manual"}, steps=[])
    incident = new_incident(dispatched)
    update(dispatched, incident, status="Investigating", severity=0)
    assert runs_of("by-hand") == []

    dispatched(lambda: incident_trigger_runbook(incident_id=incident.pk, runbook_slug="by-hand"))

    assert runs_of("by-hand") == [("manual", "", "Investigating")]
    assert runs_of("other-by-hand") == []


def test_the_to_filter_refuses_other_statuses(dispatched):
    make_runbook("to-investigating", trigger={"on": "status_changed", "to": ["Investigating"]}, steps=[])
    incident = new_incident(dispatched)
    update(dispatched, incident, status="Identified")
    assert runs_of("to-investigating") == []
    update(dispatched, incident, status="Investigating")
    assert runs_of("to-investigating") == [("status_changed", "Identified", "Investigating")]


def test_the_from_filter_refuses_other_origins(dispatched):
    make_runbook("reopened", trigger={"on": "status_changed", "from": ["Resolved"]}, steps=[])
    incident = new_incident(dispatched)
    update(dispatched, incident, status="Investigating")
    update(dispatched, incident, status="Resolved")
    assert runs_of("reopened") == []
    update(dispatched, incident, status="Monitoring")
    assert runs_of("reopened") == [("status_changed", "Resolved", "Monitoring")]


def test_from_and_to_must_both_hold(dispatched):
    make_runbook("escalated", trigger={"on": "status_changed", "from": ["Detected"], "to": ["Investigating"]}, steps=[])
    detected_to_identified = new_incident(dispatched)
    update(dispatched, detected_to_identified, status="Identified")
    identified_to_investigating = detected_to_identified
    update(dispatched, identified_to_investigating, status="Investigating")
    assert runs_of("escalated") == []

    incident = new_incident(dispatched)
    update(dispatched, incident, status="Investigating")
    assert runs_of("escalated") == [("status_changed", "Detected", "Investigating")]


def test_status_filters_do_not_apply_to_severity_changes(dispatched):
    # `to` lists statuses: a severity change keeps the status, so it must not be judged by them.
    make_runbook("sev-up", trigger={"on": "severity_changed", "to": ["Resolved"]}, steps=[])
    incident = new_incident(dispatched, severity=3)
    update(dispatched, incident, severity=1)
    assert [kind for kind, _, _ in runs_of("sev-up")] == ["severity_changed"]


def test_the_services_condition_refuses_other_services(dispatched):
    make_runbook("checkout-only", conditions={"services": ["checkout"]}, steps=[])
    search = new_incident(dispatched, service="search")
    update(dispatched, search, status="Investigating")
    assert runs_of("checkout-only") == []
    checkout = new_incident(dispatched, service="checkout")
    update(dispatched, checkout, status="Investigating")
    assert runs_of("checkout-only") == [("status_changed", "Detected", "Investigating")]


def test_the_environments_condition_refuses_other_environments(dispatched):
    make_runbook("prod-only", conditions={"environments": ["production"]}, steps=[])
    staging = new_incident(dispatched, environment="staging")
    update(dispatched, staging, status="Investigating")
    production = new_incident(dispatched, environment="production")
    update(dispatched, production, status="Investigating")
    assert RunbookRun.objects.filter(runbook__slug="prod-only").get().event.incident_id == production.pk


def test_severity_is_judged_as_it_was_at_the_change_not_as_it_is_at_dispatch(dispatched):
    # Both changes commit together; the events are dispatched afterwards, when the incident is SEV3.
    make_runbook("sev1-investigating", conditions={"severity": [0, 1]}, steps=[])
    make_runbook("sev3-any-status", trigger={"on": "status_changed"}, conditions={"severity": [3]}, steps=[])
    incident = new_incident(dispatched, severity=1)

    def investigate_then_downgrade():
        incident_update(incident_id=incident.pk, status="Investigating")
        incident_update(incident_id=incident.pk, severity=3)

    dispatched(investigate_then_downgrade)

    assert Incident.objects.get(pk=incident.pk).severity == 3
    assert runs_of("sev1-investigating") == [("status_changed", "Detected", "Investigating")]
    assert runs_of("sev3-any-status") == []


def test_a_severity_change_is_judged_by_the_new_severity(dispatched):
    make_runbook("became-critical", trigger={"on": "severity_changed"}, conditions={"severity": [0, 1]}, steps=[])
    incident = new_incident(dispatched, severity=1)
    update(dispatched, incident, severity=3)
    assert runs_of("became-critical") == []
    update(dispatched, incident, severity=0)
    assert len(runs_of("became-critical")) == 1


# --- the matcher alone, for states the services do not produce ---------------------------------


def unsaved(**fields) -> tuple[Runbook, Incident]:
    runbook = Runbook(slug="rb", enabled=True, trigger_on=TriggerOn.STATUS_CHANGED, **fields)
    incident = Incident(severity=1, status="Investigating", service="checkout", environment="production")
    return runbook, incident


def test_a_disabled_runbook_does_not_match_even_when_everything_else_does():
    runbook, incident = unsaved()
    event = IncidentEvent(kind=IncidentEventKind.STATUS_CHANGED, from_status="Detected", to_status="Investigating")
    assert runbook_matches(runbook, event, incident) is True
    runbook.enabled = False
    assert runbook_matches(runbook, event, incident) is False


@pytest.mark.parametrize(("incident_severity", "matches"), [(1, True), (3, False)])
def test_an_event_without_a_severity_is_judged_by_the_incident_severity(incident_severity, matches):
    runbook, incident = unsaved(condition_severity=[0, 1])
    incident.severity = incident_severity
    event = IncidentEvent(
        kind=IncidentEventKind.STATUS_CHANGED, from_status="Detected", to_status="Investigating", to_severity=None
    )
    assert runbook_matches(runbook, event, incident) is matches


def test_matching_runbooks_come_with_their_steps_from_one_statement():
    """The dispatch task's read: the candidates and their steps in one statement, each runbook
    holding its own steps in order (inputs as stored), a runbook without steps holding none, and
    nothing read again when the steps or their runbook are used."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.runbooks.selectors import runbooks_matching_event
    from tests.factories import RunbookFactory, StepFactory

    two = RunbookFactory(slug="b-two", trigger_to=["Identified"])
    StepFactory(runbook=two, position=2, key="later", inputs={"title": "{{Activity.title}}", "n": [1, 2]})
    StepFactory(runbook=two, position=1, key="first", inputs={})
    empty = RunbookFactory(slug="a-empty", trigger_to=[])
    RunbookFactory(slug="c-other", trigger_to=["Resolved"])
    StepFactory(runbook=RunbookFactory(slug="d-off", enabled=False, trigger_to=[]), key="never")
    incident = IncidentFactory()
    event = IncidentEvent.objects.create(
        incident=incident, kind=IncidentEventKind.STATUS_CHANGED, from_status="Investigating", to_status="Identified"
    )
    event = IncidentEvent.objects.select_related("incident").get(pk=event.pk)

    with CaptureQueriesContext(connection) as queries:
        matched = runbooks_matching_event(event=event)
        held = {rb.slug: [(s.key, s.inputs, s.runbook.slug) for s in rb.steps.all()] for rb in matched}
    assert len(queries) == 1
    assert [rb.pk for rb in matched] == [empty.pk, two.pk]
    assert held == {
        "a-empty": [],
        "b-two": [("first", {}, "b-two"), ("later", {"title": "{{Activity.title}}", "n": [1, 2]}, "b-two")],
    }
    assert matched[1].trigger_to == ["Identified"] and matched[1].updated_at == two.updated_at


def test_the_dispatched_event_comes_with_its_incident_and_whether_it_has_a_link():
    """The dispatch task's first read, one statement: the event, its incident held as select_related
    would hold it, and whether any PagerDuty link exists (the first page then looks for none)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.runbooks.models import PagerDutyIncidentLink
    from apps.runbooks.selectors import event_for_dispatch

    plain, linked = IncidentFactory(title="plain one"), IncidentFactory(title="linked one")
    PagerDutyIncidentLink.objects.create(incident=linked, pagerduty_incident_id="QABC")
    events = {
        incident.title: IncidentEvent.objects.create(
            incident=incident, kind=IncidentEventKind.STATUS_CHANGED, to_status="Identified", details={"k": "v"}
        )
        for incident in (plain, linked, plain)
    }
    for title, expected in events.items():
        with CaptureQueriesContext(connection) as queries:
            event = event_for_dispatch(event_id=expected.pk)
            seen = (event.pk, event.to_status, event.details, event.incident.title, event.incident.created_at)
        assert len(queries) == 1
        assert seen == (expected.pk, "Identified", {"k": "v"}, title, expected.incident.created_at)
        assert event.incident_linked is (title == "linked one")
    assert event_for_dispatch(event_id=max(e.pk for e in events.values()) + 1) is None
