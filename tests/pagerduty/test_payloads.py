"""The request bodies PagerDuty receives, byte for byte, each checked against the official spec
(when the spec file is present; under CI=true the `pd` fixture tests require it)."""

from apps.pagerduty import payloads


def assert_valid(contract, method: str, path: str, body: dict) -> None:
    assert contract.check_rest(method, path, {}, body, has_body=True) == []


def test_the_smallest_create_carries_no_optional_member(pagerduty_contract):
    body = payloads.create_incident_payload(title="t", service_id="PS", urgency="low", incident_key="k")
    assert body == {
        "incident": {
            "type": "incident",
            "title": "t",
            "service": {"id": "PS", "type": "service_reference"},
            "urgency": "low",
            "incident_key": "k",
        }
    }
    assert_valid(pagerduty_contract, "POST", "/incidents", body)


def test_a_responder_request_wraps_each_target():
    # The live API wants each target wrapped, although the spec shows it flat: not checked against it.
    body = payloads.responder_request_payload(
        requester_id="PU1",
        message="Join",
        targets=[("PEP1", payloads.ESCALATION_POLICY), ("PU2", payloads.USER)],
    )
    assert body == {
        "requester_id": "PU1",
        "message": "Join",
        "responder_request_targets": [
            {"responder_request_target": {"id": "PEP1", "type": "escalation_policy_reference"}},
            {"responder_request_target": {"id": "PU2", "type": "user_reference"}},
        ],
    }


def test_a_resolve_says_why_only_when_there_is_a_reason(pagerduty_contract):
    plain = payloads.resolve_incident_payload()
    explained = payloads.resolve_incident_payload(resolution="Rolled back")
    assert plain == {"incident": {"type": "incident_reference", "status": "resolved"}}
    assert explained == {"incident": {"type": "incident_reference", "status": "resolved", "resolution": "Rolled back"}}
    for body in (plain, explained):
        assert_valid(pagerduty_contract, "PUT", "/incidents/Q1", body)


def test_urgency_defaults_overrides_and_unknown_severities():
    assert [payloads.urgency_for_severity(s) for s in range(5)] == ["high", "high", "low", "low", "low"]
    assert payloads.urgency_for_severity(3, {3: "high"}) == "high"
    assert payloads.urgency_for_severity(0, {3: "high"}) == "high"
    assert payloads.urgency_for_severity(7) == "low"
    assert type(payloads.urgency_for_severity(0)) is str


def test_details_leave_out_what_is_empty():
    assert payloads.incident_details(summary="s", url="") == "s"
    assert payloads.incident_details(summary="", url="") == ""
