"""The on-call admin as a person uses it: big teams save, long lists page and search, the live view and
gaps render, and nothing is shown to someone without the right to read on-call data."""

from html.parser import HTMLParser

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User

from apps.oncall.models import (
    OncallEscalationPolicy,
    OncallSchedule,
    OncallService,
    OncallTeam,
    OncallUser,
    TeamMembership,
)
from apps.pagerduty.services import connection_upsert
from apps.sandbox import CHECKOUT_ESCALATION_POLICY_ID, CHECKOUT_SCHEDULE_ID, RESPONDER_USER_ID


class FormFields(HTMLParser):
    """Every field a browser would submit from the change form, with its current value."""

    def __init__(self):
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self._textarea = None
        self._in_form = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id", "").endswith("_form"):
            self._in_form = True
        if not self._in_form or "name" not in attrs or "disabled" in attrs:
            return
        if tag == "input" and attrs.get("type") not in ("submit", "button", "checkbox", "radio", "file"):
            self.fields.append((attrs["name"], attrs.get("value", "")))
        elif tag == "input" and attrs.get("type") in ("checkbox", "radio") and "checked" in attrs:
            self.fields.append((attrs["name"], attrs.get("value", "on")))
        elif tag == "textarea":
            self._textarea = attrs["name"]
            self.fields.append((attrs["name"], ""))
        elif tag == "select":
            self.fields.append((attrs["name"], ""))

    def handle_data(self, data):
        if self._textarea:
            name, value = self.fields[-1]
            self.fields[-1] = (name, value + data)

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None
        if tag == "form":
            self._in_form = False


@pytest.fixture
def boss(client, db):
    client.force_login(User.objects.create_superuser("boss", "b@example.com", "pw-123456789"))
    return client


@pytest.fixture
def big_team(db):
    connection = connection_upsert(
        name="big", api_key="k-big-123", from_email="sre@example.com", api_url="https://pd.test"
    )
    team = OncallTeam.objects.create(connection=connection, pagerduty_id="PBIGTM1", name="Everyone")
    users = OncallUser.objects.bulk_create(
        OncallUser(connection=connection, pagerduty_id=f"PU{i:05d}", name=f"Person {i:04d}", email=f"p{i}@example.com")
        for i in range(2000)
    )
    TeamMembership.objects.bulk_create(
        TeamMembership(user=u, team=team, team_pagerduty_id=team.pagerduty_id, role="responder") for u in users
    )
    return team


def test_notes_of_a_2000_member_team_save_from_the_change_form(boss, big_team):
    url = f"/admin/oncall/oncallteam/{big_team.pk}/change/"
    page = boss.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "2,000 members" in html and "Person 0000" in html
    parser = FormFields()
    parser.feed(html)
    data = dict(parser.fields)
    # The memberships are shown, not posted: a handful of fields whatever the team's size.
    assert len(parser.fields) < 20 < settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    data.update({"notes": "Escalate to #everyone on Slack", "local_alias": "All hands"})
    response = boss.post(url, data)
    assert response.status_code == 302, response.content[:2000]
    big_team.refresh_from_db()
    assert (big_team.notes, big_team.local_alias) == ("Escalate to #everyone on Slack", "All hands")
    assert TeamMembership.objects.filter(team=big_team).count() == 2000


def test_members_are_paged_and_searchable(boss, big_team):
    url = f"/admin/oncall/oncallteam/{big_team.pk}/related/members/"
    first = boss.get(url).content.decode()
    assert "page 1 of 40" in first and "Person 0049" in first and "Person 0050" not in first
    last = boss.get(url, {"page": 40}).content.decode()
    assert "Person 1999" in last
    found = boss.get(url, {"q": "p1234@"}).content.decode()
    assert "Person 1234" in found and "Person 1233" not in found and "1 shown" in found
    assert boss.get(f"/admin/oncall/oncallteam/{big_team.pk}/related/nope/").status_code == 404


def test_lists_need_the_view_permission(client, big_team):
    user = User.objects.create_user("someone", password="pw-123456789", is_staff=True)
    client.force_login(user)
    url = f"/admin/oncall/oncallteam/{big_team.pk}/related/members/"
    assert client.get(url).status_code == 403
    user.groups.add(Group.objects.get(name="Viewers"))
    assert client.get(url).status_code == 200


def test_a_policy_with_many_services_lists_them_without_form_fields(boss, big_team):
    policy = OncallEscalationPolicy.objects.create(connection=big_team.connection, pagerduty_id="PEPBIG1", name="Big")
    OncallService.objects.bulk_create(
        OncallService(
            connection=big_team.connection, pagerduty_id=f"PS{i:05d}", name=f"Service {i:04d}", escalation_policy=policy
        )
        for i in range(600)
    )
    parser = FormFields()
    parser.feed(boss.get(f"/admin/oncall/oncallescalationpolicy/{policy.pk}/change/").content.decode())
    assert len(parser.fields) < 50
    assert (
        "Service 0599"
        in boss.get(
            f"/admin/oncall/oncallescalationpolicy/{policy.pk}/related/services/", {"page": 12}
        ).content.decode()
    )


# --- who is on call: imported gaps and the live section --------------------------------------------------


@pytest.fixture
def imported(sandbox_connection, plan_run, apply_run):
    apply_run(plan_run(sandbox_connection))
    return sandbox_connection


def test_now_page_asks_pagerduty_live_and_flags_gaps(boss, imported, sandbox, fast_retries):
    with sandbox.state.lock:
        sandbox.state.schedules[CHECKOUT_SCHEDULE_ID]["schedule_layers"][0]["users"] = []
    sandbox.state.reset_requests()
    page = boss.get("/admin/oncall/oncallschedule/now/", {"q": "Checkout", "live": "1"})
    html = page.content.decode()
    assert page.status_code == 200 and "Live from PagerDuty" in html
    assert "schedule Checkout primary: nobody on call" in html and "Checkout on-call level 1: nobody on call" in html
    asked = {(r["path"], tuple(r["query"].get("escalation_policy_ids[]", []))) for r in sandbox.state.requests}
    assert ("/oncalls", (CHECKOUT_ESCALATION_POLICY_ID,)) in asked
    # The responder is named directly on level 2, with the contact methods imported with them.
    responder = OncallUser.objects.get(pagerduty_id=RESPONDER_USER_ID)
    assert responder.name in html and responder.contact_methods[0]["address"] in html


def test_now_page_refuses_a_long_window_with_a_message(boss, imported):
    page = boss.get(
        "/admin/oncall/oncallschedule/now/", {"live": "1", "since": "2026-01-01T00:00", "until": "2026-06-01T00:00"}
    )
    assert page.status_code == 200 and "90 days" in page.content.decode()


def test_imported_gaps_show_on_the_now_page(boss, imported):
    schedule = OncallSchedule.objects.get(pagerduty_id=CHECKOUT_SCHEDULE_ID)
    schedule.entries.all().delete()
    html = boss.get("/admin/oncall/oncallschedule/now/", {"q": "Checkout"}).content.decode()
    assert "gap: nobody on call" in html and "gap: nobody at level 1" in html


def test_now_page_needs_the_permission_to_read_oncall_data(client, imported, sandbox):
    client.force_login(User.objects.create_user("staff", password="pw-123456789", is_staff=True))
    sandbox.state.reset_requests()
    assert client.get("/admin/oncall/oncallschedule/now/", {"live": "1"}).status_code == 403
    assert sandbox.state.requests == []


def test_who_is_on_call_is_linked_from_the_admin_index_for_whoever_may_read_it(client, role_user):
    client.force_login(role_user("Viewers"))
    for page in ("/admin/", "/admin/oncall/"):
        html = client.get(page).content.decode()
        assert '<a href="/admin/oncall/oncallschedule/now/">Who is on call now</a>' in html, page


def test_a_schedule_or_policy_with_nobody_on_call_is_flagged_as_a_gap(boss, imported):
    schedule = OncallSchedule.objects.get(pagerduty_id=CHECKOUT_SCHEDULE_ID)
    schedule.entries.all().delete()
    html = boss.get(f"/admin/oncall/oncallschedule/{schedule.pk}/change/").content.decode()
    assert "gap: nobody on call" in html
