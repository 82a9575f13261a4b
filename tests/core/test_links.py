"""Links from PagerDuty are not trusted: only http(s) URLs become links, on every page that shows one."""

import re

import pytest
from django.template import Context, Template

from apps.core.links import external_link, safe_link_url
from apps.oncall.models import OncallEscalationPolicy, OncallSchedule, OncallService, OncallTeam, OncallUser
from apps.runbooks.models import PagerDutyIncidentLink
from tests.factories import IncidentFactory

EVIL = "javascript:alert(1)"
GOOD = "https://acme.pagerduty.com/schedules/PSCHED1"


@pytest.mark.parametrize(
    "url",
    [
        EVIL,
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "java\tscript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "//evil.example/x",
        "https://acme.pagerduty.com/x\njavascript:alert(1)",
        "https:alert(1)",
        "",
        None,
        42,
    ],
)
def test_only_plain_http_urls_are_link_targets(url):
    assert safe_link_url(url) is None
    assert "href" not in external_link(url)


def test_http_urls_are_links_and_everything_is_escaped():
    assert safe_link_url(GOOD) == GOOD and safe_link_url("HTTP://x.example/a?b=1&c=2") is not None
    link = external_link("https://x.example/?a=1&b=<2>", 'say "hi"')
    assert link == (
        '<a href="https://x.example/?a=1&amp;b=&lt;2&gt;" rel="noopener noreferrer" target="_blank">'
        "say &quot;hi&quot;</a>"
    )
    inert = external_link('javascript:alert("<x>")')
    assert inert == '<span class="unsafe-link" title="not a web link">javascript:alert(&quot;&lt;x&gt;&quot;)</span>'


def test_template_filter_uses_the_same_rule():
    template = Template("{% load links %}{{ good|external_link }} {{ evil|external_link:'PagerDuty' }}")
    html = template.render(Context({"good": GOOD, "evil": EVIL}))
    assert f'<a href="{GOOD}"' in html
    assert "href" not in html.split("</a>", 1)[1] and "PagerDuty" in html


@pytest.mark.django_db
def test_a_stored_javascript_html_url_is_inert_on_every_admin_page(root_admin, pd_connection):
    client = root_admin
    common = {"connection": pd_connection, "html_url": EVIL}
    pages = []
    for model, path in (
        (OncallUser, "oncalluser"),
        (OncallTeam, "oncallteam"),
        (OncallSchedule, "oncallschedule"),
        (OncallEscalationPolicy, "oncallescalationpolicy"),
        (OncallService, "oncallservice"),
    ):
        obj = model.objects.create(pagerduty_id=f"P{path[6:11].upper()}", name=path, **common)
        pages += [f"/admin/oncall/{path}/{obj.pk}/change/", f"/admin/oncall/{path}/"]
    pages.append("/admin/oncall/oncallschedule/now/")
    incident = IncidentFactory()
    PagerDutyIncidentLink.objects.create(
        incident=incident, connection=pd_connection, pagerduty_incident_id="Q1EVIL", html_url=EVIL
    )
    pages.append(f"/admin/incidents/incident/{incident.pk}/change/")
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        assert not re.search(r"""href\s*=\s*["']?\s*javascript:""", html, re.IGNORECASE), page
        if "/change/" in page:
            assert EVIL in html, page  # still shown, as text
        if page.endswith("/now/"):
            assert 'title="not a web link">PagerDuty</span>' in html


@pytest.mark.django_db
def test_an_https_html_url_stays_a_link(root_admin, pd_connection):
    client = root_admin
    schedule = OncallSchedule.objects.create(connection=pd_connection, pagerduty_id="PSCHED1", name="s", html_url=GOOD)
    incident = IncidentFactory()
    link = "https://acme.pagerduty.com/incidents/Q1GOOD"
    PagerDutyIncidentLink.objects.create(
        incident=incident, connection=pd_connection, pagerduty_incident_id="Q1GOOD", html_url=link
    )
    assert f'<a href="{GOOD}"' in client.get(f"/admin/oncall/oncallschedule/{schedule.pk}/change/").content.decode()
    assert f'<a href="{GOOD}"' in client.get("/admin/oncall/oncallschedule/now/").content.decode()
    assert f'<a href="{link}"' in client.get(f"/admin/incidents/incident/{incident.pk}/change/").content.decode()
