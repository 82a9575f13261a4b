"""An on-call manager creates a schedule override from the admin: the permission, the request
PagerDuty receives (checked against the spec by `pd`), PagerDuty's per-override answer, the audit."""

from datetime import timedelta

import pytest
import responses
from auditlog.models import LogEntry
from django.urls import reverse
from django.utils import timezone

from apps.oncall.models import OncallSchedule, OncallUser, ScheduleEntry
from tests.conftest import FROM_EMAIL, PD_URL
from tests.runbooks.helpers import body

pytestmark = pytest.mark.django_db
OVERRIDES_URL = f"{PD_URL}/schedules/PSCHED1/overrides"


@pytest.fixture
def schedule(pd_connection):
    OncallUser.objects.create(connection=pd_connection, pagerduty_id="PALICE1", name="Alice", email="alice@example.com")
    return OncallSchedule.objects.create(connection=pd_connection, pagerduty_id="PSCHED1", name="Primary")


def page(schedule):
    return reverse("admin:oncall_oncallschedule_override", args=[schedule.pk])


def login(client, role_user, role):
    client.force_login(role_user(role))
    return client


def test_only_oncall_managers_may_open_it(client, role_user, schedule, pd):
    login(client, role_user, "Viewers")
    assert client.get(page(schedule)).status_code == 403
    assert client.post(page(schedule), {"user": "alice@example.com"}).status_code == 403
    change = client.get(reverse("admin:oncall_oncallschedule_change", args=[schedule.pk]))
    assert page(schedule) not in change.content.decode()
    assert len(pd.calls) == 0


def test_manager_creates_an_override_for_twelve_hours(client, role_user, schedule, pd):
    login(client, role_user, "On-call managers")
    change = client.get(reverse("admin:oncall_oncallschedule_change", args=[schedule.pk]))
    assert page(schedule) in change.content.decode()
    form = client.get(page(schedule))
    assert form.status_code == 200 and "alice@example.com" in form.content.decode()

    def answer(request):
        import json

        sent = json.loads(request.body)["overrides"][0]
        return 201, {}, json.dumps([{"status": 201, "override": {**sent, "id": "QOVR001"}}])

    pd.add_callback(responses.POST, OVERRIDES_URL, callback=answer)
    response = client.post(page(schedule), {"user": "alice@example.com", "start": "now", "end": "+12h"}, follow=True)
    assert response.status_code == 200
    assert "Override QOVR001 created" in response.content.decode()
    [call] = pd.calls
    assert call.request.headers["From"] == FROM_EMAIL
    sent = body(call)["overrides"][0]
    assert sent["user"] == {"id": "PALICE1", "type": "user_reference"}
    assert sent["time_zone"] == "UTC"
    start = timezone.datetime.fromisoformat(sent["start"].replace("Z", "+00:00"))
    end = timezone.datetime.fromisoformat(sent["end"].replace("Z", "+00:00"))
    assert end - start == timedelta(hours=12)
    assert abs(start - timezone.now()) < timedelta(minutes=2)
    entry = LogEntry.objects.filter(additional_data__event="oncall.override").get()
    assert entry.additional_data["override_id"] == "QOVR001"
    assert entry.actor.groups.filter(name="On-call managers").exists()


def test_pagerduty_refusing_the_override_is_shown(client, role_user, schedule, pd):
    login(client, role_user, "On-call managers")
    refused = [{"status": 400, "errors": ["User is not valid"], "override": {"start": "x", "end": "y"}}]
    pd.add(responses.POST, OVERRIDES_URL, status=201, json=refused)
    response = client.post(page(schedule), {"user": "PBOB001", "start": "2030-01-01T00:00:00Z", "end": "+1h"})
    assert response.status_code == 400
    assert "User is not valid" in response.content.decode()
    assert not LogEntry.objects.filter(additional_data__event="oncall.override").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"user": "", "start": "now", "end": "+1h"}, "user is required"),
        ({"user": "PALICE1", "start": "now", "end": "yesterday"}, "is not a time"),
        ({"user": "PALICE1", "start": "now+2h", "end": "now+1h"}, "must be after start"),
    ],
)
def test_bad_input_answers_400_and_sends_nothing(client, role_user, schedule, pd, data, message):
    login(client, role_user, "On-call managers")
    response = client.post(page(schedule), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert len(pd.calls) == 0


def test_schedule_page_lists_imported_overrides(client, role_user, schedule):
    now = timezone.now()
    alice = OncallUser.objects.get(pagerduty_id="PALICE1")
    ScheduleEntry.objects.create(
        schedule=schedule, kind="override", start=now + timedelta(hours=1), end=now + timedelta(hours=9), user=alice
    )
    ScheduleEntry.objects.create(
        schedule=schedule, kind="override", start=now - timedelta(days=2), end=now - timedelta(days=1), user=alice
    )
    login(client, role_user, "Viewers")
    html = client.get(reverse("admin:oncall_oncallschedule_change", args=[schedule.pk])).content.decode()
    assert (now + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M") in html
    assert (now - timedelta(days=2)).strftime("%Y-%m-%d %H:%M") not in html


def test_imported_who_is_on_call_marks_an_override(client, role_user, schedule):
    now = timezone.now()
    alice = OncallUser.objects.get(pagerduty_id="PALICE1")
    schedule.rendered_since, schedule.rendered_until = now - timedelta(days=1), now + timedelta(days=1)
    schedule.save()
    for kind in ("final", "override"):
        ScheduleEntry.objects.create(
            schedule=schedule,
            kind=kind,
            start=now - timedelta(hours=1),
            end=now + timedelta(hours=3),
            user=alice,
            user_pagerduty_id="PALICE1",
        )
    login(client, role_user, "Viewers")
    html = client.get(reverse("admin:oncall_now")).content.decode()
    assert 'Alice <span class="oncall-override">override</span>' in html
    change = client.get(reverse("admin:oncall_oncallschedule_change", args=[schedule.pk])).content.decode()
    assert "Alice (override)" in change


def test_api_on_call_now_says_which_shift_is_an_override(root_api, schedule):
    now = timezone.now()
    schedule.rendered_since, schedule.rendered_until = now - timedelta(days=1), now + timedelta(days=1)
    schedule.save()
    for kind in ("final", "override"):
        ScheduleEntry.objects.create(
            schedule=schedule,
            kind=kind,
            start=now - timedelta(hours=1),
            end=now + timedelta(hours=3),
            user_pagerduty_id="PALICE1",
        )
    detail = root_api.get(f"/api/v1/oncall/schedules/{schedule.pk}/").json()
    assert [(e["user"]["id"], e["override"]) for e in detail["on_call_now"]] == [("PALICE1", True)]
