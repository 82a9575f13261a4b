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


def test_an_event_severity_follows_the_incident_and_an_unknown_one_is_info():
    assert [payloads.event_severity_for(s) for s in range(5)] == ["critical", "error", "warning", "info", "info"]
    # A severity outside SEV0–4 (an imported or hand-edited incident) still sends a valid one.
    assert payloads.event_severity_for(9) == "info"
    assert payloads.event_severity_for(None) == "info"


def test_a_summary_of_exactly_1024_characters_is_sent_whole_and_one_more_is_cut_and_marked():
    exact = "s" * 1024
    assert payloads.capped_summary(exact) == (exact, False)
    cut, was_cut = payloads.capped_summary(exact + "t")
    assert was_cut and len(cut) == 1024 and cut == "s" * 1023 + "…"


def test_the_smallest_trigger_carries_no_optional_member_and_a_bare_link_shows_its_address(pagerduty_contract):
    event = payloads.event_payload(
        action="trigger",
        dedup_key="k",
        summary="Checkout errors",
        source="ai-sre",
        severity="error",
        links=[{"href": "https://status.example.com/1"}, {"href": "https://x.example.com", "text": "Dashboard"}],
    )
    assert event == {
        "event_action": "trigger",
        "dedup_key": "k",
        "payload": {"summary": "Checkout errors", "source": "ai-sre", "severity": "error"},
        "links": [
            {"href": "https://status.example.com/1", "text": "https://status.example.com/1"},
            {"href": "https://x.example.com", "text": "Dashboard"},
        ],
    }
    assert pagerduty_contract.check_events("/v2/enqueue", {"routing_key": "R" * 32, **event}) == []


def test_an_account_wide_subscription_has_a_filter_without_an_id(pagerduty_contract):
    body = payloads.webhook_subscription_payload(
        url="https://sre.example.com/webhooks/pagerduty/default/",
        events=["incident.resolved"],
        filter_type="account_reference",
    )
    assert body == {
        "webhook_subscription": {
            "type": "webhook_subscription",
            "delivery_method": {
                "type": "http_delivery_method",
                "url": "https://sre.example.com/webhooks/pagerduty/default/",
            },
            "description": "",
            "events": ["incident.resolved"],
            "filter": {"type": "account_reference"},
        }
    }
    assert_valid(pagerduty_contract, "POST", "/webhook_subscriptions", body)
