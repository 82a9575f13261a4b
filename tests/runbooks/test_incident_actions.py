"""The incident-changing actions, notes and overrides (issue 12): the exact request PagerDuty
receives (checked against the official spec by the `pd` fixture), the outputs, and what a retry or
a lost answer does — never a note, an override or an escalation twice."""

from datetime import UTC, datetime, timedelta

import pytest
import requests
import responses
from django.utils import timezone

from apps.incidents.services import incident_update
from apps.oncall.models import OncallSchedule, OncallUser
from apps.runbooks import tasks
from apps.runbooks.models import PagerDutyIncidentLink, RunbookRun, StepRun
from tests.conftest import FROM_EMAIL, PD_URL
from tests.factories import IncidentFactory
from tests.runbooks.helpers import body, make_runbook, pd_incident, writes

pytestmark = pytest.mark.django_db
INCIDENT_URL = f"{PD_URL}/incidents/QINC001"


def run_steps(steps, capture, *, incident=None, link=True, connection=None):
    """One runbook of `steps` fired on a fresh incident linked to PagerDuty incident QINC001."""
    make_runbook(steps=steps)
    incident = incident or IncidentFactory(owner="alice@example.com")
    if link:
        PagerDutyIncidentLink.objects.create(
            incident=incident, connection=connection, pagerduty_incident_id="QINC001", status="triggered"
        )
    with capture(execute=True):
        incident_update(incident_id=incident.pk, status="Investigating", actor="test")
    return RunbookRun.objects.get()


def step(action, key="change", **fields):
    return {"key": key, "action": action, "connection": "default", "with": fields}


def put_ok(pd, **incident):
    pd.add(responses.PUT, INCIDENT_URL, json={"incident": {**pd_incident("QINC001"), **incident}})


# --- acknowledge ---------------------------------------------------------------------------------


def test_acknowledge_sends_status_to_the_linked_incident(pd, pd_connection, django_capture_on_commit_callbacks):
    pd.add(responses.GET, INCIDENT_URL, json={"incident": pd_incident("QINC001")})
    put_ok(pd, status="acknowledged")
    run = run_steps(
        [step("pagerduty.acknowledge_incident")], django_capture_on_commit_callbacks, connection=pd_connection
    )
    assert run.status == "succeeded"
    put = pd.calls[-1].request
    assert (put.method, put.url) == ("PUT", INCIDENT_URL)
    assert put.headers["From"] == FROM_EMAIL
    assert body(pd.calls[-1]) == {"incident": {"type": "incident_reference", "status": "acknowledged"}}
    assert run.step_runs.get().outputs == {
        "incident_id": "QINC001",
        "status": "acknowledged",
        "already_acknowledged": False,
    }
    assert PagerDutyIncidentLink.objects.get().status == "acknowledged"


def test_acknowledge_never_reopens_a_resolved_incident(pd, pd_connection, django_capture_on_commit_callbacks):
    pd.add(responses.GET, INCIDENT_URL, json={"incident": pd_incident("QINC001", status="resolved")})
    run = run_steps([step("pagerduty.acknowledge_incident")], django_capture_on_commit_callbacks)
    step_run = run.step_runs.get()
    assert step_run.status == "skipped"
    assert "would reopen" in step_run.error
    assert writes(pd) == []


def test_acknowledge_without_any_incident_fails_clearly(pd, pd_connection, django_capture_on_commit_callbacks):
    run = run_steps([step("pagerduty.acknowledge_incident")], django_capture_on_commit_callbacks, link=False)
    assert run.step_runs.get().status == "failed"
    assert "No PagerDuty incident" in run.step_runs.get().error
    assert len(pd.calls) == 0


# --- reassign ------------------------------------------------------------------------------------


def test_reassign_mixes_ids_and_emails(pd, pd_connection, django_capture_on_commit_callbacks):
    OncallUser.objects.create(connection=pd_connection, pagerduty_id="PALICE1", name="Alice", email="alice@example.com")
    pd.add(
        responses.GET,
        f"{PD_URL}/users",
        json={"users": [{"id": "PBOB001", "email": "bob@example.com"}], "more": False},
    )
    put_ok(
        pd, assignments=[{"assignee": {"id": i, "type": "user_reference"}} for i in ("PALICE1", "PBOB001", "PCAROL1")]
    )
    run = run_steps(
        [step("pagerduty.reassign_incident", assignee_ids="{{Activity.owner}}, bob@example.com,PCAROL1")],
        django_capture_on_commit_callbacks,
    )
    assert run.status == "succeeded", run.step_runs.get().error
    assert body(pd.calls[-1]) == {
        "incident": {
            "type": "incident_reference",
            "assignments": [
                {"assignee": {"id": "PALICE1", "type": "user_reference"}},
                {"assignee": {"id": "PBOB001", "type": "user_reference"}},
                {"assignee": {"id": "PCAROL1", "type": "user_reference"}},
            ],
        }
    }
    assert run.step_runs.get().outputs["assignee_ids"] == ["PALICE1", "PBOB001", "PCAROL1"]


def test_reassign_to_an_escalation_policy(pd, pd_connection, django_capture_on_commit_callbacks):
    put_ok(pd, escalation_policy={"id": "PEP5678", "type": "escalation_policy_reference"})
    run = run_steps(
        [step("pagerduty.reassign_incident", escalation_policy_id="PEP5678")], django_capture_on_commit_callbacks
    )
    assert body(pd.calls[-1])["incident"] == {
        "type": "incident_reference",
        "escalation_policy": {"id": "PEP5678", "type": "escalation_policy_reference"},
    }
    assert run.step_runs.get().outputs["escalation_policy_id"] == "PEP5678"


def test_reassign_with_both_or_neither_fails_naming_the_field(pd, pd_connection, django_capture_on_commit_callbacks):
    run = run_steps(
        [
            step("pagerduty.reassign_incident", key="both", assignee_ids="PCAROL1", escalation_policy_id="PEP5678"),
        ],
        django_capture_on_commit_callbacks,
    )
    assert "not both" in run.step_runs.get().error
    assert len(pd.calls) == 0


# --- escalate ------------------------------------------------------------------------------------


def test_escalate_sends_an_integer_level(pd, pd_connection, django_capture_on_commit_callbacks):
    put_ok(pd)
    run = run_steps(
        [step("pagerduty.escalate_incident", escalation_level="{{Activity.severity}}")],
        django_capture_on_commit_callbacks,
        incident=IncidentFactory(severity=2),
    )
    assert body(pd.calls[-1]) == {"incident": {"type": "incident_reference", "escalation_level": 2}}
    assert run.step_runs.get().outputs == {"incident_id": "QINC001", "status": "triggered", "escalation_level": 2}


def test_escalate_refuses_a_level_that_is_not_a_number(pd, pd_connection, django_capture_on_commit_callbacks):
    run = run_steps([step("pagerduty.escalate_incident", escalation_level="two")], django_capture_on_commit_callbacks)
    assert "escalation_level must be a whole number" in run.step_runs.get().error
    assert len(pd.calls) == 0


def test_escalate_is_never_resent_after_a_lost_answer(pd, pd_connection, django_capture_on_commit_callbacks):
    pd.add(responses.PUT, INCIDENT_URL, body=requests.ConnectionError("reset after sending"))
    run = run_steps([step("pagerduty.escalate_incident", escalation_level="2")], django_capture_on_commit_callbacks)
    step_run = run.step_runs.get()
    assert step_run.status == "failed"
    assert step_run.error.startswith("Outcome unknown")
    assert writes(pd) == [("PUT", "/incidents/QINC001")]


# --- urgency and priority ------------------------------------------------------------------------


def test_set_urgency_explicit_and_from_severity(pd, pd_connection, django_capture_on_commit_callbacks):
    put_ok(pd, urgency="low")
    put_ok(pd, urgency="high")
    run = run_steps(
        [
            step("pagerduty.set_urgency", key="explicit", urgency="low"),
            step("pagerduty.set_urgency", key="mapped"),
        ],
        django_capture_on_commit_callbacks,
        incident=IncidentFactory(severity=0),
    )
    assert [body(c)["incident"]["urgency"] for c in pd.calls] == ["low", "high"]
    assert [s.outputs["urgency"] for s in run.step_runs.order_by("position")] == ["low", "high"]


def test_set_urgency_lost_answer_is_sent_again_then_read(
    pd, pd_connection, django_capture_on_commit_callbacks, fast_retries
):
    for _ in range(5):
        pd.add(responses.PUT, INCIDENT_URL, status=502, json={"error": {"message": "Bad Gateway"}})
    pd.add(responses.GET, INCIDENT_URL, json={"incident": pd_incident("QINC001") | {"urgency": "low"}})
    run = run_steps([step("pagerduty.set_urgency", urgency="low")], django_capture_on_commit_callbacks)
    # Idempotent: retried within the policy, then PagerDuty's incident shows the change held.
    assert run.step_runs.get().status == "succeeded"
    assert [c.request.method for c in pd.calls] == ["PUT"] * 5 + ["GET"]


PRIORITIES = {
    "priorities": [
        {"id": "PSLWBL8", "type": "priority", "name": "P1", "summary": "P1"},
        {"id": "P53ZZH5", "type": "priority", "name": "P2", "summary": "P2"},
    ],
    "more": False,
}


def test_set_priority_by_name_reads_priorities_once_per_run(pd, pd_connection, django_capture_on_commit_callbacks):
    pd.add(responses.GET, f"{PD_URL}/priorities", json=PRIORITIES)
    put_ok(pd, priority={"id": "P53ZZH5", "type": "priority_reference", "summary": "P2"})
    put_ok(pd, priority={"id": "PSLWBL8", "type": "priority_reference", "summary": "P1"})
    run = run_steps(
        [
            step("pagerduty.set_priority", key="first", priority="p2"),
            step("pagerduty.set_priority", key="second", priority="P1"),
        ],
        django_capture_on_commit_callbacks,
    )
    assert [c.request.method for c in pd.calls] == ["GET", "PUT", "PUT"]
    assert [body(c)["incident"]["priority"] for c in pd.calls[1:]] == [
        {"id": "P53ZZH5", "type": "priority_reference"},
        {"id": "PSLWBL8", "type": "priority_reference"},
    ]
    first = run.step_runs.get(key="first").outputs
    assert (first["priority_id"], first["priority_name"], first["status"]) == ("P53ZZH5", "P2", "triggered")


@pytest.mark.parametrize("answer", [{"json": {"priorities": [], "more": False}}, {"status": 404, "json": {}}])
def test_set_priority_on_an_account_without_priorities_says_so(
    pd, pd_connection, django_capture_on_commit_callbacks, answer
):
    pd.add(responses.GET, f"{PD_URL}/priorities", **answer)
    run = run_steps([step("pagerduty.set_priority", priority="P1")], django_capture_on_commit_callbacks)
    assert "has no priorities" in run.step_runs.get().error
    assert writes(pd) == []


def test_set_priority_unknown_name_lists_what_exists(pd, pd_connection, django_capture_on_commit_callbacks):
    pd.add(responses.GET, f"{PD_URL}/priorities", json=PRIORITIES)
    run = run_steps([step("pagerduty.set_priority", priority="SEV1")], django_capture_on_commit_callbacks)
    assert "the account has P1, P2" in run.step_runs.get().error


# --- notes ---------------------------------------------------------------------------------------

NOTES_URL = f"{INCIDENT_URL}/notes"


def note(content, note_id="PNOTE01", at=None):
    stamp = (at or timezone.now()).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"id": note_id, "content": content, "created_at": stamp, "user": {"id": "PALICE1", "type": "user_reference"}}


def test_add_note_sends_content_and_returns_its_id(pd, pd_connection, django_capture_on_commit_callbacks):
    pd.add(responses.POST, NOTES_URL, json={"note": note("x")})
    run = run_steps(
        [step("pagerduty.add_note", content='{{Activity.short_id}}: R&D <db> "x"')], django_capture_on_commit_callbacks
    )
    incident = run.incident
    assert body(pd.calls[0]) == {"note": {"content": f'{incident.short_id}: R&D <db> "x"'}}
    assert pd.calls[0].request.headers["From"] == FROM_EMAIL
    assert run.step_runs.get().outputs == {"incident_id": "QINC001", "note_id": "PNOTE01", "deduplicated": False}


def test_add_note_lost_answer_finds_the_note_and_never_sends_twice(
    pd, pd_connection, django_capture_on_commit_callbacks
):
    pd.add(responses.POST, NOTES_URL, body=requests.ConnectionError("reset after sending"))
    content = "Mitigated by failover"
    # An older note with the same words (another run, long ago) is not ours.
    old = note(content, "POLD001", at=timezone.now() - timedelta(hours=3))
    pd.add(responses.GET, NOTES_URL, json={"notes": [old, note(content, "PNOTE02")]})
    run = run_steps([step("pagerduty.add_note", content=content)], django_capture_on_commit_callbacks)
    step_run = run.step_runs.get()
    assert step_run.status == "succeeded", step_run.error
    assert step_run.outputs == {"incident_id": "QINC001", "note_id": "PNOTE02", "deduplicated": True}
    assert writes(pd) == [("POST", "/incidents/QINC001/notes")]
    assert [e.method for e in step_run.exchanges.all()] == ["POST", "GET"]


def test_add_note_sends_the_steps_own_from(pd, pd_connection, django_capture_on_commit_callbacks):
    pd.add(responses.POST, NOTES_URL, json={"note": note("x")})
    run_steps(
        [step("pagerduty.add_note", content="Rolled back", **{"from": "{{Activity.owner}}"})],
        django_capture_on_commit_callbacks,
    )
    assert pd.calls[0].request.headers["From"] == "alice@example.com" != FROM_EMAIL


def test_add_note_look_up_gets_twice_the_patience(pd, pd_connection, django_capture_on_commit_callbacks, fast_retries):
    """The notes read decides whether the note is sent again: seven failed reads are more than
    PAGERDUTY_MAX_ATTEMPTS (5) but within the look-up's ten, so the note is found, not re-sent."""
    content = "Mitigated by failover"
    pd.add(responses.POST, NOTES_URL, body=requests.ConnectionError("reset after sending"))
    for _ in range(7):
        pd.add(responses.GET, NOTES_URL, status=502, json={"error": {"message": "Bad Gateway"}})
    pd.add(responses.GET, NOTES_URL, json={"notes": [note(content, "PNOTE05")]})
    run = run_steps([step("pagerduty.add_note", content=content)], django_capture_on_commit_callbacks)
    step_run = run.step_runs.get()
    assert step_run.status == "succeeded", step_run.error
    assert step_run.outputs == {"incident_id": "QINC001", "note_id": "PNOTE05", "deduplicated": True}
    assert writes(pd) == [("POST", "/incidents/QINC001/notes")]
    assert [e.method for e in step_run.exchanges.all()] == ["POST"] + ["GET"] * 8


def test_add_note_not_landed_is_sent_once_more(pd, pd_connection, django_capture_on_commit_callbacks, fast_retries):
    content = "Mitigated by failover"
    pd.add(responses.POST, NOTES_URL, status=503, json={"error": {"message": "Service Unavailable"}})
    pd.add(responses.GET, NOTES_URL, json={"notes": [note(content, "POLD001", at=timezone.now() - timedelta(hours=3))]})
    pd.add(responses.POST, NOTES_URL, json={"note": note(content, "PNOTE03")})
    run = run_steps([step("pagerduty.add_note", content=content)], django_capture_on_commit_callbacks)
    step_run = run.step_runs.get()
    assert step_run.outputs == {"incident_id": "QINC001", "note_id": "PNOTE03", "deduplicated": False}
    assert [e.method for e in step_run.exchanges.all()] == ["POST", "GET", "POST"]


def test_add_note_worker_died_after_the_answer_adopts_it(
    pd, pd_connection, django_capture_on_commit_callbacks, monkeypatch
):
    from apps.runbooks.executors.pagerduty_changes import AddNote

    pd.add(responses.POST, NOTES_URL, json={"note": note("hello", "PNOTE04")})
    real = AddNote._outputs

    def die(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(AddNote, "_outputs", die)
    with pytest.raises(SystemExit):
        run_steps([step("pagerduty.add_note", content="hello")], django_capture_on_commit_callbacks)
    run = RunbookRun.objects.get()
    monkeypatch.setattr(AddNote, "_outputs", real)
    RunbookRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    tasks.execute_run.apply(args=[run.pk])
    step_run = StepRun.objects.get()
    assert step_run.status == "succeeded"
    assert step_run.outputs["note_id"] == "PNOTE04"
    assert writes(pd) == [("POST", "/incidents/QINC001/notes")]


def test_add_note_too_long_fails_before_sending(pd, pd_connection, django_capture_on_commit_callbacks):
    run = run_steps(
        [step("pagerduty.add_note", content="{{Activity.summary}}" * 3)],
        django_capture_on_commit_callbacks,
        incident=IncidentFactory(summary="x" * 9_000),
    )
    assert "at most 25000" in run.step_runs.get().error
    assert len(pd.calls) == 0


# --- overrides -----------------------------------------------------------------------------------

OVERRIDES_URL = f"{PD_URL}/schedules/PSCHED1/overrides"


def override_answer(sent, override_id="QOVR001", status=201, errors=None):
    item = {"status": status, "override": {**sent, "id": override_id}}
    if errors:
        item["errors"] = errors
        del item["override"]["id"]
    return [item]


def imported_schedule_and_user(connection):
    OncallSchedule.objects.create(connection=connection, pagerduty_id="PSCHED1", name="Primary on-call")
    OncallUser.objects.create(connection=connection, pagerduty_id="PALICE1", name="Alice", email="alice@example.com")


def test_create_override_by_names_now_plus_twelve_hours(pd, pd_connection, django_capture_on_commit_callbacks):
    imported_schedule_and_user(pd_connection)
    sent = {}

    def answer(request):
        import json

        sent.update(json.loads(request.body)["overrides"][0])
        return 201, {}, json.dumps(override_answer(sent))

    pd.add_callback(responses.POST, OVERRIDES_URL, callback=answer)
    before = datetime.now(UTC).replace(second=0, microsecond=0)
    run = run_steps(
        [
            step(
                "pagerduty.create_override",
                schedule_id="primary ON-CALL",
                user_id="{{Activity.owner}}",
                start="now",
                end="+12h",
            )
        ],
        django_capture_on_commit_callbacks,
        link=False,
    )
    step_run = run.step_runs.get()
    assert step_run.status == "succeeded", step_run.error
    start = datetime.fromisoformat(sent["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(sent["end"].replace("Z", "+00:00"))
    assert before <= start <= before + timedelta(minutes=1)
    assert end - start == timedelta(hours=12)
    assert body(pd.calls[0]) == {
        "overrides": [
            {
                "start": sent["start"],
                "end": sent["end"],
                "user": {"id": "PALICE1", "type": "user_reference"},
                "time_zone": "UTC",
            }
        ]
    }
    assert pd.calls[0].request.headers["From"] == FROM_EMAIL
    assert step_run.outputs == {
        "override_id": "QOVR001",
        "schedule_id": "PSCHED1",
        "user_id": "PALICE1",
        "start": sent["start"],
        "end": sent["end"],
        "deduplicated": False,
    }


def test_create_override_refused_per_override_shows_pagerduty_errors(
    pd, pd_connection, django_capture_on_commit_callbacks
):
    sent = {"start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z", "user": {"id": "PALICE1"}}
    pd.add(
        responses.POST, OVERRIDES_URL, status=201, json=override_answer(sent, status=400, errors=["User is not valid"])
    )
    run = run_steps(
        [
            step(
                "pagerduty.create_override",
                schedule_id="PSCHED1",
                user_id="PALICE1",
                start="2030-01-01T01:00:00+01:00",
                end="+1d",
            )
        ],
        django_capture_on_commit_callbacks,
        link=False,
    )
    step_run = run.step_runs.get()
    assert step_run.status == "failed"
    assert "refused the override (status 400): User is not valid" in step_run.error
    assert body(pd.calls[0])["overrides"][0]["start"] == "2030-01-01T00:00:00Z"
    assert body(pd.calls[0])["overrides"][0]["end"] == "2030-01-02T00:00:00Z"


OVERRIDE_STEP = step(
    "pagerduty.create_override",
    schedule_id="PSCHED1",
    user_id="PALICE1",
    start="2030-01-01T00:00:00Z",
    end="2030-01-02T00:00:00Z",
    **{"from": "{{Activity.owner}}"},
)


def test_create_override_takes_the_single_override_answer_and_the_steps_from(
    pd, pd_connection, django_capture_on_commit_callbacks
):
    """The deprecated single-override form answers {"override": {...}}: it is the one override, created."""
    created = {"id": "QOVR009", "start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z"}
    pd.add(responses.POST, OVERRIDES_URL, status=201, json={"override": created})
    run = run_steps([OVERRIDE_STEP], django_capture_on_commit_callbacks, link=False)
    step_run = run.step_runs.get()
    assert step_run.status == "succeeded", step_run.error
    assert (step_run.outputs["override_id"], step_run.outputs["deduplicated"]) == ("QOVR009", False)
    assert pd.calls[0].request.headers["From"] == "alice@example.com"


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        ({"overrides": "x" * 300}, repr(str({"overrides": "x" * 300})[:200])),
        ({"override": "QOVR009"}, repr(str({"override": "QOVR009"}))),
        ("created", repr("created")),
    ],
    ids=["no-override", "override-not-object", "a-string"],
)
def test_create_override_answer_pagerduty_never_gives_fails_clearly(
    pd, pd_connection, django_capture_on_commit_callbacks, answer, shown
):
    pd.add(responses.POST, OVERRIDES_URL, status=201, json=answer)
    run = run_steps([OVERRIDE_STEP], django_capture_on_commit_callbacks, link=False)
    step_run = run.step_runs.get()
    assert step_run.status == "failed"
    assert step_run.error == f"PagerDuty: an overrides answer that is not a list: {shown}"


def test_create_override_lost_answer_looks_up_before_resending(pd, pd_connection, django_capture_on_commit_callbacks):
    pd.add(responses.POST, OVERRIDES_URL, body=requests.ConnectionError("reset after sending"))
    found = {
        "id": "QOVR009",
        "start": "2030-01-01T00:00:00Z",
        "end": "2030-01-01T08:00:00Z",
        "user": {"id": "PALICE1", "type": "user_reference"},
    }
    pd.add(responses.GET, OVERRIDES_URL, json={"overrides": [found]})
    run = run_steps(
        [
            step(
                "pagerduty.create_override",
                schedule_id="PSCHED1",
                user_id="PALICE1",
                start="2030-01-01T00:00:00Z",
                end="+8h",
            )
        ],
        django_capture_on_commit_callbacks,
        link=False,
    )
    step_run = run.step_runs.get()
    assert step_run.status == "succeeded", step_run.error
    assert step_run.outputs["override_id"] == "QOVR009"
    assert step_run.outputs["deduplicated"] is True
    assert writes(pd) == [("POST", "/schedules/PSCHED1/overrides")]


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2030-01-01T00:00:00", "+1h", "no UTC offset"),
        ("tomorrow", "+1h", "is not a time"),
        ("now", "now", "must be after start"),
        ("+1h", "+2h", "only for end"),
        ("now", "+400d", "at most 366 days"),
    ],
)
def test_create_override_bad_times_fail_naming_the_field(
    pd, pd_connection, django_capture_on_commit_callbacks, start, end, message
):
    run = run_steps(
        [step("pagerduty.create_override", schedule_id="PSCHED1", user_id="PALICE1", start=start, end=end)],
        django_capture_on_commit_callbacks,
        link=False,
    )
    assert message in run.step_runs.get().error
    assert len(pd.calls) == 0


def test_create_override_unknown_schedule_name_fails(pd, pd_connection, django_capture_on_commit_callbacks):
    run = run_steps(
        [step("pagerduty.create_override", schedule_id="Nights", user_id="PALICE1", start="now", end="+1h")],
        django_capture_on_commit_callbacks,
        link=False,
    )
    assert "no imported schedule is named 'Nights'" in run.step_runs.get().error


def test_create_override_on_a_v3_schedule_is_refused(pd, pd_connection, django_capture_on_commit_callbacks):
    OncallSchedule.objects.create(connection=pd_connection, pagerduty_id="PSCHV31", name="Shifts", kind="schedule_v3")
    run = run_steps(
        [step("pagerduty.create_override", schedule_id="Shifts", user_id="PALICE1", start="now", end="+1h")],
        django_capture_on_commit_callbacks,
        link=False,
    )
    assert "v3 (shift-based) schedule" in run.step_runs.get().error
    assert len(pd.calls) == 0
