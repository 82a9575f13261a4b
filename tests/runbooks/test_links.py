"""The link reads and writes the steps make on every run (apps.runbooks.mirror), compiled once per
connection: each call answers for its own incident and PagerDuty incident."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.pagerduty.services import connection_upsert
from apps.runbooks import mirror
from apps.runbooks.models import PagerDutyIncidentLink
from tests.conftest import PD_URL
from tests.factories import IncidentFactory

pytestmark = pytest.mark.django_db


def _link(incident, pd_id, *, connection=None, age_minutes=0, **fields):
    link = PagerDutyIncidentLink.objects.create(
        incident=incident, connection=connection, pagerduty_incident_id=pd_id, **fields
    )
    created = timezone.now() - timedelta(minutes=age_minutes)
    PagerDutyIncidentLink.objects.filter(pk=link.pk).update(created_at=created)
    return link


def test_link_of_answers_the_newest_link_of_that_incident_to_that_pagerduty_incident(pd_connection):
    ours, theirs = IncidentFactory(), IncidentFactory()
    other = connection_upsert(name="eu", api_key="u+other-key-0123456789", from_email="sre@example.com", api_url=PD_URL)
    older = _link(ours, "PSAME01", connection=pd_connection, age_minutes=5)
    newer = _link(ours, "PSAME01", connection=other, age_minutes=1, status="acknowledged")
    _link(theirs, "PSAME01", connection=pd_connection)
    _link(ours, "POTHER1", connection=pd_connection)

    found = mirror.link_of(incident_id=ours.pk, pagerduty_incident_id="PSAME01")
    assert found.pk == newer.pk and found.status == "acknowledged" and found.connection_id == other.pk
    assert mirror.link_of(incident_id=theirs.pk, pagerduty_incident_id="PSAME01").incident_id == theirs.pk
    assert mirror.link_of(incident_id=theirs.pk, pagerduty_incident_id="POTHER1") is None
    assert older.pk != found.pk


def test_links_set_status_writes_only_that_incidents_links_to_that_pagerduty_incident(pd_connection):
    ours, theirs = IncidentFactory(), IncidentFactory()
    mine = _link(ours, "PSAME01", connection=pd_connection)
    not_mine = _link(theirs, "PSAME01", connection=pd_connection)
    other_pd = _link(ours, "POTHER1", connection=pd_connection)
    assert mirror.links_set_status(incident_id=ours.pk, pagerduty_incident_id="PSAME01", status="resolved") == 1
    statuses = dict(PagerDutyIncidentLink.objects.values_list("pk", "status"))
    assert statuses == {mine.pk: "resolved", not_mine.pk: "triggered", other_pd.pk: "triggered"}


def test_resolved_by_pagerduty_needs_pagerduty_to_have_said_so(pd_connection):
    incident = IncidentFactory()
    link = _link(incident, "PRES001", connection=pd_connection, status="resolved")  # our own write
    assert mirror.resolved_by_pagerduty(pagerduty_incident_id="PRES001") is False
    PagerDutyIncidentLink.objects.filter(pk=link.pk).update(mirrored_at=timezone.now())
    assert mirror.resolved_by_pagerduty(pagerduty_incident_id="PRES001") is True
    assert mirror.resolved_by_pagerduty(pagerduty_incident_id="POTHER1") is False
