"""Who is on call, and email → id, from imported data; the read-only API over it."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from apps.core.errors import DomainError
from apps.oncall.models import OncallEscalationPolicy, OncallSchedule, ScheduleEntry
from apps.oncall.selectors import oncall_now, oncall_responder_type, oncall_user_id_for_email
from apps.sandbox import (
    ADMIN_USER_ID,
    CHECKOUT_ESCALATION_POLICY_ID,
    CHECKOUT_SCHEDULE_ID,
    RESPONDER_USER_ID,
)
from tests.oncall.conftest import NOW


@pytest.fixture
def imported(sandbox_connection, plan_run, apply_run):
    apply_run(plan_run(sandbox_connection))
    return sandbox_connection


def test_user_id_for_email_ignores_case(imported):
    assert oncall_user_id_for_email(connection=imported, email="SRE@Example.com") == ADMIN_USER_ID
    assert oncall_user_id_for_email(connection=imported, email=" responder@example.com ") == RESPONDER_USER_ID
    assert oncall_user_id_for_email(connection=imported, email="nobody@example.com") is None
    assert oncall_user_id_for_email(connection=imported, email="") is None


def test_responder_type(imported):
    assert oncall_responder_type(connection=imported, pagerduty_id=ADMIN_USER_ID) == "user"
    assert oncall_responder_type(connection=imported, pagerduty_id=CHECKOUT_ESCALATION_POLICY_ID) == "escalation_policy"
    assert oncall_responder_type(connection=imported, pagerduty_id="PNOPE00") is None


def test_who_is_on_call_follows_the_imported_final_schedule(imported):
    schedule = OncallSchedule.objects.get(pagerduty_id=CHECKOUT_SCHEDULE_ID)
    shift = ScheduleEntry.objects.get(schedule=schedule, kind="final", start__lte=NOW, end__gt=NOW)
    [now] = oncall_now(schedule=schedule, at=NOW)
    assert now.user_pagerduty_id == shift.user_pagerduty_id and now.end == shift.end
    # Weekly rotation of two: the next shift is the other person.
    [next_week] = oncall_now(schedule=schedule, at=shift.end + timedelta(minutes=1))
    assert next_week.user_pagerduty_id != now.user_pagerduty_id

    policy = OncallEscalationPolicy.objects.get(pagerduty_id=CHECKOUT_ESCALATION_POLICY_ID)
    levels = [(e.escalation_level, e.user_pagerduty_id) for e in oncall_now(escalation_policy=policy, at=NOW)]
    assert levels == [(1, now.user_pagerduty_id), (2, RESPONDER_USER_ID)]

    with pytest.raises(DomainError):
        oncall_now()
    with pytest.raises(DomainError):
        oncall_now(schedule=schedule, at=NOW.replace(tzinfo=None))


@pytest.fixture
def api(role_user):
    client = APIClient()
    client.force_authenticate(role_user("Viewers", username="api"))
    return client


def test_api_on_call_now(api, imported):
    at = NOW.isoformat().replace("+00:00", "Z")
    body = api.get("/api/v1/oncall/schedules/", {"at": at, "connection": "default"}).json()
    checkout = next(s for s in body["results"] if s["pagerduty_id"] == CHECKOUT_SCHEDULE_ID)
    assert checkout["on_call_now"][0]["user"]["id"] in (ADMIN_USER_ID, RESPONDER_USER_ID)

    body = api.get("/api/v1/oncall/escalation-policies/", {"at": at, "q": "Checkout"}).json()
    [policy] = body["results"]
    assert [e["escalation_level"] for e in policy["on_call_now"]] == [1, 2]
    assert policy["rules"][1]["targets"] == [{"type": "user_reference", "id": RESPONDER_USER_ID}]
    detail = api.get(f"/api/v1/oncall/escalation-policies/{policy['id']}/", {"at": at}).json()
    assert detail["on_call_now"] == policy["on_call_now"]

    users = api.get("/api/v1/oncall/users/", {"email": "SRE@example.com"}).json()["results"]
    assert [u["pagerduty_id"] for u in users] == [ADMIN_USER_ID]
    assert users[0]["teams"]


def test_api_refuses_bad_input_and_anonymous(api, imported):
    response = api.get("/api/v1/oncall/schedules/", {"at": "tomorrow"})
    assert response.status_code == 400 and "ISO 8601" in response.json()["message"]
    response = api.get("/api/v1/oncall/schedules/", {"at": "2026-11-23T09:00:00"})
    assert response.status_code == 400
    assert APIClient().get("/api/v1/oncall/users/").status_code in (401, 403)


def test_admin_pages_render(client, imported):
    client.force_login(User.objects.create_superuser("boss", "b@example.com", "pw-123456789"))
    assert b"Who is on call now" in client.get("/admin/oncall/oncallschedule/now/").content
    schedule = OncallSchedule.objects.get(pagerduty_id=CHECKOUT_SCHEDULE_ID)
    policy = OncallEscalationPolicy.objects.get(pagerduty_id=CHECKOUT_ESCALATION_POLICY_ID)
    for url in (
        f"/admin/oncall/oncallschedule/{schedule.pk}/change/",
        f"/admin/oncall/oncallescalationpolicy/{policy.pk}/change/",
        "/admin/oncall/oncalluser/",
        "/admin/oncall/oncallteam/",
        "/admin/oncall/oncallservice/",
        "/admin/oncall/syncrun/",
    ):
        assert client.get(url).status_code == 200, url
