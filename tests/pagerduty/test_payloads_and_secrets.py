import os

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection as db

from apps.core import encryption
from apps.core.errors import DomainError
from apps.pagerduty import payloads
from apps.pagerduty.models import PagerDutyConnection, UrgencyMapping
from apps.pagerduty.selectors import urgency_for


def test_create_payload_with_escalation_policy():
    body = payloads.create_incident_payload(
        title="t",
        service_id="PS",
        urgency="high",
        incident_key="k",
        details="d",
        responder=("PEP1", payloads.ESCALATION_POLICY),
        priority_id="PP",
    )
    assert body == {
        "incident": {
            "type": "incident",
            "title": "t",
            "service": {"id": "PS", "type": "service_reference"},
            "urgency": "high",
            "incident_key": "k",
            "body": {"type": "incident_body", "details": "d"},
            "escalation_policy": {"id": "PEP1", "type": "escalation_policy_reference"},
            "priority": {"id": "PP", "type": "priority_reference"},
        }
    }


def test_create_payload_with_user_uses_assignments_not_policy():
    incident = payloads.create_incident_payload(
        title="t", service_id="PS", urgency="low", incident_key="k", responder=("PU1", payloads.USER)
    )["incident"]
    assert incident["assignments"] == [{"assignee": {"id": "PU1", "type": "user_reference"}}]
    assert "escalation_policy" not in incident and "body" not in incident


def test_details_join_summary_and_url():
    assert payloads.incident_details(summary="s", url="u") == "s\n\nu"
    assert payloads.incident_details(summary="", url="u") == "u"


@pytest.mark.django_db
def test_urgency_mapping_overrides():
    assert [urgency_for(severity=s) for s in range(5)] == ["high", "high", "low", "low", "low"]
    UrgencyMapping.objects.create(severity=2, urgency="high")
    assert urgency_for(severity=2) == "high"


def two_connections_with_mappings() -> PagerDutyConnection:
    """Connection ours with a default and a payments mapping, other with search; SEV3 overridden to high."""
    ours = PagerDutyConnection.objects.create(name="ours", api_key="k" * 20, from_email="a@example.com")
    other = PagerDutyConnection.objects.create(name="other", api_key="k" * 20, from_email="a@example.com")
    ours.service_mappings.create(service="", pagerduty_service_id="PDEFAULT")
    ours.service_mappings.create(service="payments", pagerduty_service_id="PPAY")
    other.service_mappings.create(service="search", pagerduty_service_id="PSEARCH")
    UrgencyMapping.objects.create(severity=3, urgency="high")
    return ours


@pytest.mark.django_db
def test_mappings_for_reads_the_connections_services_and_the_urgency_overrides_in_one_statement():
    from django.test.utils import CaptureQueriesContext

    from apps.pagerduty.selectors import mappings_for, service_for

    ours = two_connections_with_mappings()
    with CaptureQueriesContext(db) as queries:
        services, urgencies = mappings_for(connection=ours)
    assert len(queries) == 1
    assert services == {"": "PDEFAULT", "payments": "PPAY"} and urgencies == {3: "high"}
    assert [service_for(services, s) for s in ("payments", "search")] == ["PPAY", "PDEFAULT"]
    assert payloads.urgency_for_severity(3, urgencies) == "high"


@pytest.mark.django_db
def test_connection_get_with_mappings_reads_them_with_the_connection_on_postgresql():
    """The engine's connection read (one per run) carries the mappings on PostgreSQL: the same
    services and overrides mappings_for() reads, no statement more than the connection's own."""
    from django.test.utils import CaptureQueriesContext

    from apps.pagerduty.selectors import connection_get, mappings_for

    ours = two_connections_with_mappings()
    UrgencyMapping.objects.create(severity=0, urgency="low")
    with CaptureQueriesContext(db) as queries:
        connection = connection_get(name="ours", with_mappings=True)
    assert len(queries) == 1 and connection.pk == ours.pk
    if db.vendor == "postgresql":
        assert connection.mappings == ({"": "PDEFAULT", "payments": "PPAY"}, {3: "high", 0: "low"})
        assert connection.mappings == mappings_for(connection=ours)
    else:
        assert connection.mappings is None
    # A connection without mappings of its own: empty, not the other connection's.
    lonely = connection_get(name="other", with_mappings=True)
    if db.vendor == "postgresql":
        assert lonely.mappings == ({"search": "PSEARCH"}, {3: "high", 0: "low"})
    UrgencyMapping.objects.all().delete()
    bare = PagerDutyConnection.objects.create(name="bare", api_key="k" * 20, from_email="a@example.com")
    if db.vendor == "postgresql":
        assert connection_get(name="bare", with_mappings=True).mappings == ({}, {}) == mappings_for(connection=bare)
    assert connection_get(name="ours").mappings is None
    with pytest.raises(DomainError, match="No PagerDuty connection named 'nope'"):
        connection_get(name="nope", with_mappings=True)


@pytest.mark.django_db
def test_api_key_encrypted_at_rest_and_rotatable(settings):
    conn = PagerDutyConnection.objects.create(name="x", api_key="plain-secret-123", from_email="a@b.co")
    with db.cursor() as cursor:
        cursor.execute("SELECT api_key FROM pagerduty_pagerdutyconnection WHERE id = %s", [conn.pk])
        stored = cursor.fetchone()[0]
    assert stored.startswith("fernet:") and "plain-secret-123" not in stored
    assert PagerDutyConnection.objects.get(pk=conn.pk).api_key == "plain-secret-123"
    assert "plain-secret-123" not in repr(PagerDutyConnection.objects.get(pk=conn.pk).api_key)

    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    settings.FIELD_ENCRYPTION_KEYS = ["Z2V0LWEtbmV3LWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc=", old_key]
    assert PagerDutyConnection.objects.get(pk=conn.pk).api_key == "plain-secret-123"
    settings.FIELD_ENCRYPTION_KEYS = ["Z2V0LWEtbmV3LWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc="]
    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEY changed"):
        encryption.decrypt(stored)


def test_contract_check_refuses_a_malformed_request(pagerduty_contract):
    if not pagerduty_contract.enabled:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the OpenAPI spec is required under CI=true: {pagerduty_contract.reason}")
        pytest.skip(pagerduty_contract.reason)
    good = payloads.create_incident_payload(title="t", service_id="PS", urgency="high", incident_key="k")
    assert pagerduty_contract.check_rest("POST", "/incidents", {}, good, has_body=True) == []
    bad = {"incident": {**good["incident"], "service": "PS", "urgency": "urgent"}}
    problems = pagerduty_contract.check_rest("POST", "/incidents", {}, bad, has_body=True)
    assert problems and any("urgent" in p or "service" in p for p in problems)
