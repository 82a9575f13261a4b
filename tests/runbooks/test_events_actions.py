"""Events API v2 actions in the engine: the exact event PagerDuty receives (checked against the
official events-v2 spec by the `pd` fixture), outputs later steps use, dedup keys, retries, errors,
and YAML round-trip of the structured fields."""

import json

import pytest
import responses

from apps.incidents.services import incident_update
from apps.pagerduty.services import channel_upsert, event_dedup_key
from apps.runbooks import dryrun
from apps.runbooks.loader import dump_yaml, load_yaml, runbook_to_spec, spec_problems
from apps.runbooks.models import RunbookRun, StepRun
from tests.factories import IncidentFactory
from tests.runbooks.helpers import make_runbook

pytestmark = pytest.mark.django_db

EVENTS = "https://events.pagerduty.com/v2/enqueue"
ROUTING_KEY = "R0123456789abcdef0123456789ABCD"[:31] + "Z"
ACCEPTED = {"status": "success", "message": "Event processed"}

ALERT = {
    "key": "alert",
    "action": "pagerduty.trigger_event",
    "with": {
        "channel": "monitoring",
        "summary": "{{Activity.title}} on {{Activity.service}}",
        "custom_details": {"owner": "{{Activity.owner}}", "env": "{{Activity.environment}}"},
        "links": [{"href": "https://grafana.example.com/d/{{Activity.service}}", "text": "Dashboard"}],
    },
}
RESOLVE = {
    "key": "clear",
    "action": "pagerduty.resolve_event",
    "with": {"channel": "monitoring", "dedup_key": "{{steps.alert.dedup_key}}"},
}


@pytest.fixture
def channel(db):
    return channel_upsert(name="monitoring", routing_key=ROUTING_KEY, summary_prefix="[shop] ", default_source="")


def accept(pd, times=1):
    def answer(request):
        sent = json.loads(request.body)
        return 202, {}, json.dumps({**ACCEPTED, "dedup_key": sent.get("dedup_key") or "generated"})

    for _ in range(times):
        pd.add_callback(responses.POST, EVENTS, callback=answer, content_type="application/json")


def fire(incident, capture, status="Investigating"):
    with capture(execute=True):
        incident_update(incident_id=incident.pk, status=status, actor="test")


def sent(pd, index=0) -> dict:
    return json.loads(pd.calls[index].request.body)


def test_trigger_then_resolve_sends_the_exact_events(pd, channel, django_capture_on_commit_callbacks, settings):
    settings.SITE_URL = "https://rba.example.com"
    make_runbook(steps=[ALERT, RESOLVE])
    incident = IncidentFactory(severity=2, title="Checkout slow", service="checkout", owner="al@example.com")
    accept(pd, times=2)

    fire(incident, django_capture_on_commit_callbacks)

    assert len(pd.calls) == 2
    request = pd.calls[0].request
    assert (request.method, request.url) == ("POST", EVENTS)
    assert request.headers["Content-Type"] == "application/json"
    assert "Authorization" not in request.headers and "From" not in request.headers
    summary = "[shop] Checkout slow on checkout"
    dedup_key = event_dedup_key(channel_name="monitoring", summary=summary)
    assert sent(pd, 0) == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": summary,
            "source": "rba.example.com",  # no source on the step or the channel: SITE_URL's host
            "severity": "warning",  # SEV2
            "custom_details": {
                "owner": "al@example.com",
                "env": incident.environment,
                "incident_url": incident.url,
            },
        },
        "links": [{"href": "https://grafana.example.com/d/checkout", "text": "Dashboard"}],
    }
    assert sent(pd, 1) == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": dedup_key}
    run = RunbookRun.objects.get()
    assert run.status == "succeeded"
    alert, clear = run.step_runs.order_by("position")
    assert alert.outputs == {
        "dedup_key": dedup_key,
        "status": "triggered",
        "message": "Event processed",
        "summary_truncated": False,
    }
    assert clear.outputs["status"] == "resolved" and clear.outputs["dedup_key"] == dedup_key
    assert alert.connection == "" and clear.connection == ""  # events name a channel, not a connection
    assert alert.request["url"] == EVENTS and alert.request["body"]["routing_key"] == "***redacted***"
    assert alert.request["method"] == "POST" and "From" not in alert.request["headers"]


def test_acknowledge_sends_an_acknowledge_event_for_the_key(pd, channel, django_capture_on_commit_callbacks):
    ack = {
        "key": "ack",
        "action": "pagerduty.acknowledge_event",
        "with": {"channel": "monitoring", "dedup_key": "{{steps.alert.dedup_key}}"},
    }
    make_runbook(steps=[ALERT, ack])
    accept(pd, times=2)
    fire(IncidentFactory(), django_capture_on_commit_callbacks)
    dedup_key = sent(pd, 0)["dedup_key"]
    assert sent(pd, 1) == {"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": dedup_key}
    assert StepRun.objects.get(key="ack").outputs["status"] == "acknowledged"


@pytest.mark.parametrize(
    ("answer", "outputs"),
    [
        (
            {"status": "success", "message": "Event processed", "dedup_key": "pd-side-key"},
            {"dedup_key": "pd-side-key", "message": "Event processed"},
        ),
        ({"status": "success", "dedup_key": "pd-side-key"}, {"dedup_key": "pd-side-key", "message": ""}),
    ],
    ids=["pagerdutys-key", "no-message"],
)
def test_outputs_are_what_pagerduty_answered(pd, channel, django_capture_on_commit_callbacks, answer, outputs):
    make_runbook(steps=[ALERT])
    pd.add(responses.POST, EVENTS, status=202, json=answer)
    fire(IncidentFactory(), django_capture_on_commit_callbacks)
    alert = StepRun.objects.get()
    assert alert.outputs == {**outputs, "status": "triggered", "summary_truncated": False}


def test_an_accepted_event_without_its_dedup_key_fails_clearly(pd, channel, django_capture_on_commit_callbacks):
    make_runbook(steps=[ALERT])
    pd.add(responses.POST, EVENTS, status=202, json={"status": "success", "message": "Event processed"})
    fire(IncidentFactory(), django_capture_on_commit_callbacks)
    alert = StepRun.objects.get()
    assert alert.status == "failed"
    assert alert.error == (
        "PagerDuty: an accepted event without its dedup_key: \"{'status': 'success', 'message': 'Event processed'}\""
    )


def test_the_same_summary_gives_the_same_dedup_key_in_every_run(pd, channel, django_capture_on_commit_callbacks):
    make_runbook(steps=[ALERT], trigger={"on": "manual"})
    make_runbook("again", steps=[ALERT], trigger={"on": "status_changed", "to": ["Investigating"]})
    first, second = IncidentFactory(title="Disk full", service="db"), IncidentFactory(title="Disk full", service="db")
    other = IncidentFactory(title="Disk nearly full", service="db")
    accept(pd, times=3)
    for incident in (first, second, other):
        fire(incident, django_capture_on_commit_callbacks)
    keys = [sent(pd, i)["dedup_key"] for i in range(3)]
    assert keys[0] == keys[1] != keys[2]
    assert keys[0] == event_dedup_key(channel_name="monitoring", summary="[shop] Disk full on db")
    assert len(keys[0]) <= 255
    # Another channel with the same summary groups apart.
    assert event_dedup_key(channel_name="other", summary="[shop] Disk full on db") != keys[0]


@pytest.mark.parametrize(("sev", "severity"), [(0, "critical"), (1, "error"), (2, "warning"), (3, "info"), (4, "info")])
def test_severity_follows_sev(pd, channel, django_capture_on_commit_callbacks, sev, severity):
    make_runbook(steps=[ALERT])
    accept(pd)
    fire(IncidentFactory(severity=sev), django_capture_on_commit_callbacks)
    assert sent(pd)["payload"]["severity"] == severity


def test_explicit_fields_win(pd, channel, django_capture_on_commit_callbacks):
    step = {
        **ALERT,
        "with": {
            **ALERT["with"],
            "severity": "critical",
            "source": "web-1",
            "component": "nginx",
            "group": "edge",
            "class": "latency",
            "dedup_key": "ai-sre-{{Activity.id}}",
            "custom_details": {"incident_url": "overridden?"},
        },
    }
    make_runbook(steps=[step])
    incident = IncidentFactory(severity=4)
    accept(pd)
    fire(incident, django_capture_on_commit_callbacks)
    event = sent(pd)
    assert event["dedup_key"] == f"ai-sre-{incident.id}"
    assert {k: event["payload"][k] for k in ("severity", "source", "component", "group", "class")} == {
        "severity": "critical",
        "source": "web-1",
        "component": "nginx",
        "group": "edge",
        "class": "latency",
    }
    # The way back to the incident is always there, whatever the step wrote.
    assert event["payload"]["custom_details"] == {"incident_url": incident.url}


def test_summary_is_capped_at_1024_with_a_visible_note(pd, channel, django_capture_on_commit_callbacks):
    make_runbook(steps=[{**ALERT, "with": {**ALERT["with"], "summary": "{{Activity.summary}}"}}])
    incident = IncidentFactory(summary="x" * 3000)
    accept(pd)
    fire(incident, django_capture_on_commit_callbacks)
    summary = sent(pd)["payload"]["summary"]
    assert len(summary) == 1024 and summary.endswith("…") and summary.startswith("[shop] xxx")
    step = StepRun.objects.get()
    assert step.status == "succeeded" and step.outputs["summary_truncated"] is True
    assert step.request["notes"] == [
        "summary cut from 3,007 to PagerDuty's 1,024 characters (the dedup key is derived from the whole summary)"
    ]
    assert sent(pd)["dedup_key"] == event_dedup_key(channel_name="monitoring", summary="[shop] " + "x" * 3000)


def test_429_and_5xx_are_retried_like_rest(pd, channel, django_capture_on_commit_callbacks, fast_retries):
    make_runbook(steps=[ALERT])
    pd.add(responses.POST, EVENTS, status=429, json={"status": "throttle event", "message": "too quickly"})
    pd.add(responses.POST, EVENTS, status=502, body="")
    accept(pd)
    fire(IncidentFactory(), django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert step.status == "succeeded"
    assert [e.status for e in step.exchanges.all()] == [429, 502, 202]
    assert len({json.dumps(sent(pd, i), sort_keys=True) for i in range(3)}) == 1  # the same event each time


def test_400_fails_at_once_with_pagerduty_errors(pd, channel, django_capture_on_commit_callbacks):
    make_runbook(steps=[ALERT])
    pd.add(
        responses.POST,
        EVENTS,
        status=400,
        json={"status": "invalid event", "message": "Event object is invalid", "errors": ["'payload.source' is blank"]},
    )
    fire(IncidentFactory(), django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert step.status == "failed" and step.attempts == 1
    assert step.error.startswith("PagerDuty 400: Event object is invalid — 'payload.source' is blank. What to do:")


def test_routing_key_never_recorded_in_clear(pd, channel, django_capture_on_commit_callbacks):
    make_runbook(steps=[ALERT])
    pd.add(responses.POST, EVENTS, status=400, json={"status": "x", "message": f"unknown key {ROUTING_KEY}"})
    fire(IncidentFactory(), django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    dump = json.dumps([list(StepRun.objects.values()), list(step.exchanges.values())], default=str)
    assert ROUTING_KEY not in dump
    assert '"routing_key": "***redacted***"' in dump and "unknown key ***redacted***" in dump


def test_acknowledge_needs_a_dedup_key(pd, channel, django_capture_on_commit_callbacks):
    ack = {"key": "ack", "action": "pagerduty.acknowledge_event", "with": {"channel": "monitoring"}}
    assert [str(p) for p in spec_problems({"slug": "a", "name": "a", "trigger": {"on": "manual"}, "steps": [ack]})] == [
        "runbook 'a', step 'ack', field 'dedup_key': is required"
    ]


def test_a_dedup_key_that_renders_empty_fails_before_anything_is_sent(pd, channel, django_capture_on_commit_callbacks):
    resolve = {**RESOLVE, "with": {"channel": "monitoring", "dedup_key": "{{Activity.environment}}"}}
    runbook = make_runbook(steps=[resolve])
    incident = IncidentFactory(environment="")
    said = "dedup_key is required but rendered empty; use the trigger step's {{steps.<key>.dedup_key}}"

    [preview] = dryrun.runbook_dry_run(runbook=runbook, incident=incident, allow_reads=False)
    assert (preview["status"], preview["field"], preview["error"]) == ("error", "dedup_key", said)

    fire(incident, django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert (step.status, step.error) == ("failed", said)
    assert not pd.calls


@pytest.mark.parametrize(("length", "sent"), [(255, True), (256, False)])
def test_a_dedup_key_is_at_most_255_characters(pd, channel, django_capture_on_commit_callbacks, length, sent):
    resolve = {**RESOLVE, "with": {"channel": "monitoring", "dedup_key": "k" * length}}
    runbook = make_runbook(steps=[resolve])
    accept(pd)
    if not sent:
        [preview] = dryrun.runbook_dry_run(runbook=runbook, incident=IncidentFactory(), allow_reads=False)
        assert (preview["status"], preview["field"]) == ("error", "dedup_key")
    fire(IncidentFactory(), django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    if sent:
        assert step.status == "succeeded" and json.loads(pd.calls[0].request.body)["dedup_key"] == "k" * 255
    else:
        assert (step.status, step.error) == ("failed", "dedup_key is 256 characters long; PagerDuty takes at most 255")
        assert not pd.calls


def test_a_link_without_text_shows_its_address(pd, channel, django_capture_on_commit_callbacks):
    make_runbook(steps=[{**ALERT, "with": {**ALERT["with"], "links": [{"href": " https://grafana.example.com/d "}]}}])
    accept(pd)
    fire(IncidentFactory(), django_capture_on_commit_callbacks)
    assert sent(pd)["links"] == [{"href": "https://grafana.example.com/d", "text": "https://grafana.example.com/d"}]


@pytest.mark.parametrize(
    ("fields", "field", "said"),
    [
        ({"summary": "{{Activity.environment}}"}, "summary", "summary is required but rendered empty"),
        (
            {"severity": "{{Activity.title}}"},
            "severity",
            "severity rendered 'urgent'; PagerDuty takes critical, error, warning, info",
        ),
        (
            {"links": [{"href": "https://grafana.example.com"}, {"href": "{{Activity.environment}}", "text": "Logs"}]},
            "links",
            "links[2].href rendered empty; every link needs an href",
        ),
    ],
    ids=["empty-summary", "unknown-severity", "empty-href"],
)
def test_a_trigger_that_renders_wrong_fails_before_sending_naming_the_field(
    pd, channel, django_capture_on_commit_callbacks, fields, field, said
):
    runbook = make_runbook(steps=[{**ALERT, "with": {**ALERT["with"], **fields}}])
    incident = IncidentFactory(environment="", title="urgent")
    [preview] = dryrun.runbook_dry_run(runbook=runbook, incident=incident, allow_reads=False)
    assert (preview["status"], preview["field"], preview["error"]) == ("error", field, said)
    fire(incident, django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert (step.status, step.error) == ("failed", said)
    assert not pd.calls


def test_unknown_channel_fails_the_step_clearly(pd, db, django_capture_on_commit_callbacks):
    make_runbook(steps=[ALERT])
    fire(IncidentFactory(), django_capture_on_commit_callbacks)
    step = StepRun.objects.get()
    assert step.status == "failed" and "No Events API channel named 'monitoring'" in step.error
    assert not pd.calls


def test_yaml_round_trip_keeps_custom_details_and_links(db):
    spec = {
        "slug": "alerting",
        "name": "Alerting",
        "enabled": True,
        "trigger": {"on": "manual"},
        "steps": [ALERT, RESOLVE],
    }
    assert spec_problems(spec) == []
    runbook = make_runbook("alerting", steps=[ALERT, RESOLVE], trigger={"on": "manual"})
    text = dump_yaml(runbook_to_spec(runbook))
    exported = load_yaml(text)[0]
    assert exported["steps"][0] == ALERT  # no `connection:` on an event step
    assert exported["steps"][1] == RESOLVE
    # PostgreSQL's jsonb keeps keys in its own order; the structure and values come back as written.
    assert "    custom_details:\n" in text and "      owner: '{{Activity.owner}}'\n" in text
    assert "    links:\n    - href: https://grafana.example.com/d/{{Activity.service}}\n      text: Dashboard\n" in text
    assert spec_problems(exported) == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("custom_details", "text", "must be a mapping of name → template"),
        ("custom_details", {"a": "{{Activity.nope}}"}, "['a']: Unknown variable {{Activity.nope}}"),
        ("custom_details", {f"k{i}": "v" for i in range(51)}, "has 51 entries; the limit is 50"),
        ("links", {"href": "x"}, "must be a list of {href, text} mappings"),
        ("links", [{"text": "no href"}], "[1].href is required"),
        ("links", [{"href": "x", "title": "t"}], "[1] has unknown keys title; a link has href and text"),
        ("summary", {"a": "b"}, "must be a single template string"),
    ],
)
def test_structured_fields_are_validated_naming_where(field, value, message):
    step = {**ALERT, "with": {**ALERT["with"], field: value}}
    problems = spec_problems({"slug": "a", "name": "a", "trigger": {"on": "manual"}, "steps": [step]})
    where = f"runbook 'a', step 'alert', field '{field}': {message}"
    assert [str(p) for p in problems if str(p).startswith(where)], [str(p) for p in problems]


def test_dry_run_shows_the_event_with_the_key_redacted(channel, settings):
    runbook = make_runbook("preview", steps=[ALERT, RESOLVE], trigger={"on": "manual"})
    results = dryrun.runbook_dry_run(runbook=runbook, sample=True)
    alert, clear = results
    assert alert["status"] == "planned" and alert["sends_request"] is True
    assert alert["request"]["url"] == EVENTS
    assert alert["request"]["body"]["routing_key"] == "***redacted***"
    assert alert["request"]["body"]["payload"]["custom_details"]["incident_url"].startswith(settings.SITE_URL)
    assert alert["derived"]["dedup_key"] == alert["request"]["body"]["dedup_key"]
    assert "derived from the channel and the summary" in alert["derived"]["dedup_key_source"]
    assert clear["request"]["body"] == {
        "routing_key": "***redacted***",
        "event_action": "resolve",
        "dedup_key": "<steps.alert.dedup_key>",
    }


def test_dry_run_warns_when_a_run_resolves_the_alert_it_just_triggered(channel):
    runbook = make_runbook("at-once", steps=[ALERT, RESOLVE], trigger={"on": "manual"})
    alert, clear = dryrun.runbook_dry_run(runbook=runbook, sample=True)
    assert not [n for n in alert["notes"] if "no wait" in n]
    assert [n for n in clear["notes"] if "resolves the alert step 'alert' triggers, with no wait in between" in n]
    other = {**RESOLVE, "with": {"channel": "monitoring", "dedup_key": "some-other-alert"}}
    runbook = make_runbook("elsewhere", steps=[ALERT, other], trigger={"on": "manual"})
    assert not [n for n in dryrun.runbook_dry_run(runbook=runbook, sample=True)[1]["notes"] if "no wait" in n]


def test_trigger_acknowledge_resolve_against_the_stand_in(db, settings, django_capture_on_commit_callbacks):
    """Over real HTTP to the PagerDuty stand-in, which checks every event against the events-v2 spec
    and groups alerts by dedup key: one incident opened, acknowledged, then resolved."""
    from apps.sandbox import CHECKOUT_INTEGRATION_KEY, SandboxServer, SandboxState, seed_account

    settings.PAGERDUTY_ALLOWED_HOSTS = ["127.0.0.1"]
    state = seed_account(SandboxState(), users=5, teams=1, schedules=1, escalation_policies=1, services=2, seed=3)
    ack = {"key": "ack", "action": "pagerduty.acknowledge_event", "with": RESOLVE["with"]}
    with SandboxServer(state, host="127.0.0.1", port=0).start() as server:
        channel_upsert(name="monitoring", routing_key=CHECKOUT_INTEGRATION_KEY, events_url=server.url)
        make_runbook(steps=[ALERT, ack, RESOLVE])
        incident = IncidentFactory(title="Queue backlog", service="checkout")
        fire(incident, django_capture_on_commit_callbacks)
        with state.lock:
            results = [(e["event_action"], e["result"]) for e in state.events]
            opened = list(state.incidents.values())
    assert RunbookRun.objects.get().status == "succeeded", StepRun.objects.values_list("error", flat=True)
    assert results == [("trigger", "incident_created"), ("acknowledge", "acknowledged"), ("resolve", "resolved")]
    assert len(opened) == 1 and opened[0]["status"] == "resolved"
    assert opened[0]["title"] == "Queue backlog on checkout"
    assert opened[0]["incident_key"] == StepRun.objects.get(key="alert").outputs["dedup_key"]
