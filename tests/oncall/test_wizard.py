"""The admin wizard, driven step by step through Django's test client against the stand-in."""

from unittest import mock

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.urls import reverse

from apps.oncall import tasks
from apps.oncall.models import OncallUser, SyncRun
from apps.pagerduty.models import PagerDutyConnection
from tests.oncall.conftest import SMALL, TOKEN

WIZARD = "/admin/oncall/sync/"
PREFIX = "sync_wizard_view"


@pytest.fixture
def admin_client(client, db):
    user = User.objects.create_superuser("boss", "boss@example.com", "pw-123456789")
    client.force_login(user)
    return client


def step(client, name, data, **extra):
    return client.post(WIZARD, {f"{PREFIX}-current_step": name, **{f"{name}-{k}": v for k, v in data.items()}}, **extra)


def test_wizard_end_to_end(admin_client, sandbox, django_capture_on_commit_callbacks):
    response = admin_client.get(WIZARD)
    assert response.status_code == 200
    assert b"Choose a PagerDuty connection" in response.content

    # 1. create and test a connection; the key never lands in the session
    response = step(
        admin_client,
        "connection",
        {
            "new_name": "default",
            "new_api_key": TOKEN,
            "new_from_email": "sre@example.com",
            "new_api_url": sandbox.url,
            "test": "on",
        },
    )
    assert response.status_code == 200, response.content
    assert b"Choose what to import" in response.content
    connection = PagerDutyConnection.objects.get(name="default")
    assert str(connection.api_key) == TOKEN and connection.last_test_ok is True
    assert TOKEN not in str(dict(admin_client.session))

    # 2. choose what to import: planning runs on Celery (eager here) after commit
    with django_capture_on_commit_callbacks(execute=True):
        response = step(
            admin_client,
            "scope",
            {"resources": ["teams", "users", "schedules", "escalation_policies", "services"], "window_days": "14"},
        )
    # The review step renders at once and waits for the plan (it polls, then re-renders itself).
    assert response.status_code == 200 and b"Reading" in response.content
    run = SyncRun.objects.get()
    assert run.status == SyncRun.Status.PLANNED, run.error
    response = admin_client.post(WIZARD, {f"{PREFIX}-current_step": "review", "wizard_goto_step": "review"})
    assert b"Review the plan" in response.content and b"Plan for default" in response.content

    # 3. review → 4. confirm
    response = step(admin_client, "review", {"sync_run": run.pk})
    assert b"Apply this plan" in response.content
    with (
        mock.patch.object(tasks.sync_apply, "delay", wraps=tasks.sync_apply.delay) as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = step(admin_client, "confirm", {"sync_run": run.pk, "confirm": "on"})
        assert response.status_code == 302
        assert response["Location"] == reverse("admin:oncall_sync_run", args=[run.pk])
        # The same confirm again (double click, back and resubmit): nothing is applied twice.
        again = step(admin_client, "confirm", {"sync_run": run.pk, "confirm": "on"})
        assert again.status_code == 302 and again["Location"] == response["Location"]
    assert delay.call_count == 1
    run.refresh_from_db()
    assert run.status == SyncRun.Status.APPLIED
    assert OncallUser.objects.count() == SMALL["users"]
    applied_at = run.report["applied_at"]

    page = admin_client.get(response["Location"])
    assert page.status_code == 200
    assert b"Report" in page.content and b"Users" in page.content
    progress = admin_client.get(reverse("admin:oncall_sync_progress", args=[run.pk])).json()
    assert progress["done"] is True and progress["status"] == "applied"
    assert {r["key"]: r["percent"] for r in progress["resources"]}["users"] == 100
    run.refresh_from_db()
    assert run.report["applied_at"] == applied_at


def test_wizard_needs_the_sync_permission(client, role_user):
    client.force_login(role_user("Viewers"))
    assert client.get(WIZARD).status_code == 403
    client.force_login(role_user("On-call managers"))
    assert client.get(WIZARD).status_code == 200


def test_app_list_links_to_the_wizard(admin_client):
    response = admin_client.get("/admin/oncall/")
    assert b"Sync from PagerDuty" in response.content and WIZARD.encode() in response.content


def test_bad_input_is_a_form_error_not_a_500(admin_client, sandbox, sandbox_connection):
    response = step(admin_client, "connection", {"new_name": "x"})
    assert response.status_code == 200 and b"Choose a connection, or fill in" in response.content

    response = step(admin_client, "connection", {"connection": sandbox_connection.pk, "test": "on"})
    assert b"Choose what to import" in response.content
    response = step(admin_client, "scope", {"resources": [], "window_days": "500", "team_ids": "not-an-id"})
    assert response.status_code == 200
    assert b"This field is required" in response.content
    response = step(admin_client, "scope", {"resources": ["users"], "window_days": "14", "team_ids": "bad id"})
    assert b"Not PagerDuty team ids" in response.content
    assert SyncRun.objects.count() == 0

    # A tampered management form is refused with 400, not a crash.
    assert admin_client.post(WIZARD, {"foo": "bar"}).status_code == 400


def test_failed_connection_test_is_shown(admin_client, sandbox, db):
    response = step(
        admin_client,
        "connection",
        {
            "new_name": "wrong",
            "new_api_key": "bad-token",
            "new_from_email": "sre@example.com",
            "new_api_url": sandbox.url,
            "test": "on",
        },
    )
    assert response.status_code == 200
    assert b"Connection test failed" in response.content
    assert not PagerDutyConnection.objects.filter(name="wrong").exists()


def test_an_oncall_manager_cannot_create_a_connection_in_the_wizard(client, role_user, sandbox, sandbox_connection):
    client.force_login(role_user("On-call managers"))
    page = client.get(WIZARD).content.decode()
    assert 'name="connection-new_api_key"' not in page and "Only PagerDuty admins add connections" in page
    response = step(
        client,
        "connection",
        {"new_name": "mine", "new_api_key": "stolen", "new_from_email": "me@example.com", "new_api_url": sandbox.url},
    )
    assert response.status_code == 200 and b"This field is required" in response.content
    assert not PagerDutyConnection.objects.filter(name="mine").exists()
    # Choosing an existing connection is what they may do.
    response = step(client, "connection", {"connection": sandbox_connection.pk})
    assert b"Choose what to import" in response.content


def test_applying_needs_the_apply_permission(client, django_user_model, sandbox, sandbox_connection, plan_run):
    run = plan_run(sandbox_connection)
    planner = django_user_model.objects.create_user("planner", password="pw-123456789")
    group = Group.objects.create(name="planners")
    group.permissions.set(Permission.objects.filter(codename__in=["plan_syncrun", "view_syncrun"]))
    planner.groups.add(group)
    client.force_login(planner)
    response = step(client, "confirm", {"sync_run": run.pk, "confirm": "on"})
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == SyncRun.Status.PLANNED


def test_the_only_connection_is_preselected(client, role_user, sandbox_connection):
    client.force_login(role_user("On-call managers"))
    page = client.get(WIZARD).content.decode()
    assert f'<option value="{sandbox_connection.pk}" selected>' in page
    # With a second one, the person chooses.
    type(sandbox_connection).objects.create(name="other", from_email="sre@example.com")
    page = client.get(WIZARD).content.decode()
    assert "selected>" not in page.split('name="connection-connection"')[1].split("</select>")[0]
