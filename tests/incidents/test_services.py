import pytest

from apps.core.errors import DomainError
from apps.incidents.models import IncidentEvent
from apps.incidents.services import incident_create, incident_update
from apps.runbooks.selectors import activity_for

pytestmark = pytest.mark.django_db


def test_numbers_and_timeline():
    first = incident_create(title="a", severity="SEV2")
    second = incident_create(title="b", severity=1, status="investigating")
    assert (second.number, second.short_id) == (first.number + 1, f"INC-{first.number + 1}")
    assert second.status == "Investigating"
    updated = incident_update(incident_id=first.pk, status="Resolved", severity=0, actor="me")
    assert updated.resolved_at is not None
    events = list(
        IncidentEvent.objects.filter(incident=first).values_list("kind", "from_status", "to_status", "to_severity")
    )
    assert events == [
        ("created", "", "Detected", 2),
        ("status_changed", "Detected", "Resolved", 0),
        ("severity_changed", "", "Resolved", 0),
    ]
    reopened = incident_update(incident_id=first.pk, status="Monitoring")
    assert reopened.resolved_at is None


def test_unchanged_values_record_nothing():
    incident = incident_create(title="a", severity=3)
    incident_update(incident_id=incident.pk, status="Detected", severity="SEV3", title="renamed")
    assert incident.events.count() == 1
    assert incident.__class__.objects.get(pk=incident.pk).title == "renamed"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"status": "Done"}, "status"),
        ({"severity": 5}, "severity"),
        ({"severity": "high"}, "severity"),
        ({"number": 3}, "number"),
    ],
)
def test_bad_changes_are_refused_by_name(kwargs, field):
    incident = incident_create(title="a")
    with pytest.raises(DomainError) as err:
        incident_update(incident_id=incident.pk, **kwargs)
    assert err.value.field == field


def test_empty_title_refused():
    with pytest.raises(DomainError, match="title"):
        incident_create(title="  ")


def test_activity_variables_are_iso_utc_with_z(settings):
    settings.SITE_URL = "https://runbooks.example.com"
    incident = incident_create(title="R&D", severity=1, owner="a@b.co")
    incident = incident_update(incident_id=incident.pk, status="Resolved")
    activity = activity_for(incident=incident)
    assert activity["created_at"].endswith("Z") and len(activity["created_at"]) == 20
    assert activity["resolved_at"].endswith("Z")
    assert activity["url"] == f"https://runbooks.example.com/admin/incidents/incident/{incident.pk}/change/"
    assert (activity["severity"], activity["severity_label"], activity["short_id"]) == (1, "SEV1", incident.short_id)


def test_a_status_change_locks_writes_and_records_in_three_statements():
    """What every status change through the API costs: the locked read, the row, the event. The
    number (the one unique field) is not checked again: a change never touches it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    incident = incident_create(title="a", severity=2)
    with CaptureQueriesContext(connection) as queries:
        incident_update(incident_id=incident.pk, status="Identified", owner="b@c.co")
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert [sql.split()[0] for sql in statements] == ["SELECT", "UPDATE", "INSERT"]
    assert statements[0].startswith('SELECT "incidents_incident"')
    assert "FOR UPDATE" in statements[0] or connection.vendor == "sqlite"


def test_a_change_still_validates_the_fields():
    from django.core.exceptions import ValidationError

    incident = incident_create(title="a")
    for change, field in (({"owner": "not an address"}, "owner"), ({"title": "x" * 10_000}, "title")):
        with pytest.raises(ValidationError) as err:
            incident_update(incident_id=incident.pk, **change)
        assert list(err.value.message_dict) == [field]
