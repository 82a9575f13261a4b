"""Pending approvals in the admin: on the run page, on the incident page and in a list, with
approve and reject buttons for the approvers group only."""

import pytest
from auditlog.models import LogEntry
from django.urls import reverse

from apps.incidents.services import incident_update
from apps.runbooks.models import RunbookRun, RunStatus
from tests.factories import IncidentFactory
from tests.runbooks.helpers import PAGE_STEP, add_create_ok, make_runbook, writes
from tests.runbooks.test_control_steps import APPROVE_STEP

pytestmark = pytest.mark.django_db


@pytest.fixture
def waiting_run(pd, pd_connection, django_capture_on_commit_callbacks):
    make_runbook(steps=[{**APPROVE_STEP, "with": {"message": "Page {{Activity.short_id}} now?"}}, PAGE_STEP])
    incident = IncidentFactory(severity=1)
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Investigating", actor="test")
    return RunbookRun.objects.get()


def signed_in(client, user):
    client.force_login(user)
    return client


def approve_url(run, verb="approve"):
    return reverse(f"admin:runbooks_runbookrun_{verb}", args=[run.pk])


def test_run_page_shows_the_question_and_buttons_to_approvers_only(waiting_run, client, role_user):
    page = reverse("admin:runbooks_runbookrun_change", args=[waiting_run.pk])
    html = signed_in(client, role_user("Responders")).get(page).content.decode()
    assert f"Page {waiting_run.incident.short_id} now?" in html
    assert f'formaction="{approve_url(waiting_run)}?next=' in html
    assert f'formaction="{approve_url(waiting_run, "reject")}?next=' in html
    assert f'name="approval_comment_{waiting_run.pk}"' in html
    client.logout()
    html = signed_in(client, role_user("Viewers")).get(page).content.decode()
    assert f"Page {waiting_run.incident.short_id} now?" in html
    assert "formaction" not in html


def test_incident_page_lists_its_pending_approvals(waiting_run, client, role_user):
    page = reverse("admin:incidents_incident_change", args=[waiting_run.incident_id])
    html = signed_in(client, role_user("Responders")).get(page).content.decode()
    assert "Pending approvals" in html
    assert f'formaction="{approve_url(waiting_run)}?next=' in html


def test_list_approve_with_comment_continues_the_run(
    waiting_run, client, role_user, pd, django_capture_on_commit_callbacks
):
    carol = role_user("Responders", username="carol")
    signed_in(client, carol)
    listing = reverse("admin:runbooks_runbookrun_approvals")
    html = client.get(listing).content.decode()
    assert "Pending approvals" in html and f"Page {waiting_run.incident.short_id} now?" in html
    add_create_ok(pd)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(
            f"{approve_url(waiting_run)}?next={listing}", {f"approval_comment_{waiting_run.pk}": "ok by me"}
        )
    assert answer.status_code == 302 and answer["Location"] == listing
    run = RunbookRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED
    assert run.step_runs.get(key="ask").outputs["comment"] == "ok by me"
    assert writes(pd) == [("POST", "/incidents")]
    assert LogEntry.objects.get(additional_data__event="run.approve").actor == carol
    assert "No run is waiting" in client.get(listing).content.decode()


def test_reject_from_the_run_page_and_a_second_decision_is_refused(
    waiting_run, client, root_user, pd, django_capture_on_commit_callbacks
):
    signed_in(client, root_user)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(approve_url(waiting_run, "reject"), {f"approval_comment_{waiting_run.pk}": "no"})
        again = client.post(approve_url(waiting_run), follow=True)
    assert RunbookRun.objects.get().status == RunStatus.FAILED
    assert "already decided: rejected by root" in again.content.decode()
    assert len(pd.calls) == 0


def test_off_site_next_is_ignored(waiting_run, client, root_user, django_capture_on_commit_callbacks):
    signed_in(client, root_user)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(approve_url(waiting_run, "reject") + "?next=https://evil.example/")
    assert answer["Location"] == reverse("admin:runbooks_runbookrun_change", args=[waiting_run.pk])
