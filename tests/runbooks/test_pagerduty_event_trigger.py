"""Runbooks `on: pagerduty_event`: started once per matching PagerDuty event, with `PagerDuty.*`
rendered; never by an echo of our own change; validated, exported and dry-run like any runbook."""

import json

import pytest
import responses

from apps.incidents.services import incident_update
from apps.runbooks.dryrun import runbook_dry_run
from apps.runbooks.loader import runbook_to_spec, spec_problems
from apps.runbooks.models import RunbookRun
from tests.conftest import PD_URL
from tests.pagerduty.test_webhooks import RESOLVE_STEP, connection, deliver, event, linked  # noqa: F401 (fixtures)
from tests.runbooks.helpers import make_runbook, pd_incident

pytestmark = pytest.mark.django_db

ASK_STEP = {
    "key": "ask",
    "action": "pagerduty.add_responder",
    "connection": "default",
    "with": {
        "from": "sre@example.com",
        "incident_id": "{{PagerDuty.incident_id}}",
        "responder_id": "PEP5678",
        "responder_type": "escalation_policy",
        "requester_id": "PREQ001",
        "message": "{{PagerDuty.agent}} acknowledged {{PagerDuty.incident_id}} ({{PagerDuty.status}})",
    },
}
ON_ACK = {"on": "pagerduty_event", "events": ["incident.acknowledged"]}


def asked(pd) -> list[dict]:
    return [json.loads(c.request.body) for c in pd.calls if c.request.url.endswith("/responder_requests")]


def test_runs_once_per_acknowledgement_with_the_agent_rendered(client, pd, linked, django_capture_on_commit_callbacks):  # noqa: F811
    incident, _ = linked
    make_runbook("on-ack", steps=[ASK_STEP], trigger=ON_ACK)
    pd.add(responses.POST, f"{PD_URL}/incidents/Q1ABCDEF/responder_requests", json={"responder_request": {}})

    deliver(client, django_capture_on_commit_callbacks, event(agent="Alice Ng"), webhook_id="ack-1")
    deliver(client, django_capture_on_commit_callbacks, event(agent="Alice Ng"), webhook_id="ack-1")  # redelivered
    deliver(client, django_capture_on_commit_callbacks, event("incident.annotated"))  # not in events
    [run] = RunbookRun.objects.all()
    assert run.status == "succeeded", [s.error for s in run.step_runs.all()]
    assert [a["message"] for a in asked(pd)] == ["Alice Ng acknowledged Q1ABCDEF (acknowledged)"]

    deliver(client, django_capture_on_commit_callbacks, event("incident.unacknowledged", status="triggered"))
    deliver(client, django_capture_on_commit_callbacks, event(agent="Bob Ray"))
    assert RunbookRun.objects.filter(incident=incident).count() == 2
    assert [a["message"] for a in asked(pd)][-1] == "Bob Ray acknowledged Q1ABCDEF (acknowledged)"


def test_an_echo_of_our_own_change_starts_nothing(client, pd, linked, django_capture_on_commit_callbacks):  # noqa: F811
    incident, _ = linked
    make_runbook("resolve-on-closure", steps=[RESOLVE_STEP], trigger={"on": "status_changed", "to": ["Resolved"]})
    make_runbook("on-resolve", steps=[ASK_STEP], trigger={"on": "pagerduty_event", "events": ["incident.resolved"]})
    pd.add(responses.PUT, f"{PD_URL}/incidents/Q1ABCDEF", json={"incident": pd_incident(status="resolved")})
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Resolved", actor="alice")

    deliver(client, django_capture_on_commit_callbacks, event("incident.resolved"))

    assert list(RunbookRun.objects.values_list("runbook__slug", flat=True)) == ["resolve-on-closure"]
    assert asked(pd) == []


def _spec(**changes):
    spec = {
        "slug": "on-ack",
        "name": "On acknowledgement",
        "trigger": dict(ON_ACK),
        "steps": [ASK_STEP],
    }
    spec.update(changes)
    return spec


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"trigger": {"on": "pagerduty_event", "events": ["incident.exploded"]}}, "unknown PagerDuty event type"),
        (
            {"trigger": {"on": "status_changed", "events": ["incident.acknowledged"]}},
            "only applies to on: pagerduty_event",
        ),
        ({"trigger": {"on": "status_changed"}}, "PagerDuty.* variables exist only"),
        ({"trigger": {"on": "pagerduty_event", "events": "incident.acknowledged, x"}}, "unknown PagerDuty event type"),
    ],
)
def test_the_validator_knows_the_trigger_and_its_variables(changes, message):
    problems = [str(p) for p in spec_problems(_spec(**changes))]
    assert any(message in p for p in problems), problems


def test_a_valid_runbook_round_trips_and_dry_runs_with_a_sample_event(pd_connection):
    assert [str(p) for p in spec_problems(_spec())] == []
    runbook = make_runbook("on-ack", steps=[ASK_STEP], trigger=ON_ACK)
    assert runbook_to_spec(runbook)["trigger"] == ON_ACK

    [step] = runbook_dry_run(runbook=runbook, sample=True)
    assert step["status"] != "error", step
    assert step["rendered"]["message"].startswith("Alice Ng acknowledged ")
