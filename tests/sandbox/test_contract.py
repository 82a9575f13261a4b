"""The stand-in refuses what does not match PagerDuty's official OpenAPI spec."""

import pytest
import requests

from apps.sandbox import CHECKOUT_SERVICE_ID, RESPONDER_USER_ID, ContractChecker, SandboxServer, SandboxState

from .conftest import require_spec

CONTRACT_MESSAGE = "Request does not match the PagerDuty OpenAPI spec"


@pytest.fixture
def spec():
    require_spec()


def contract_errors(response) -> list[str]:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"] == CONTRACT_MESSAGE
    assert error["code"] == 2001
    return error["errors"]


def test_contract_is_enabled(spec, sandbox_state):
    assert sandbox_state.contract_enabled


def test_bad_urgency_is_refused(spec, api):
    errors = contract_errors(api.create_incident(urgency="urgent"))
    assert errors == ["body.incident.urgency: 'urgent' is not one of ['high', 'low']"]


def test_service_as_bare_string_is_refused(spec, api):
    body = {"incident": {"type": "incident", "title": "x", "service": CHECKOUT_SERVICE_ID}}
    errors = contract_errors(api.post("/incidents", body))
    assert errors == ["body.incident.service: 'PSVC001' is not of type 'object'"]


def test_missing_required_fields_are_named(spec, api):
    errors = contract_errors(api.post("/incidents", {"incident": {"type": "incident"}}))
    assert "body.incident: 'title' is a required property" in errors
    assert "body.incident: 'service' is a required property" in errors


def test_query_parameters_are_known_and_typed(spec, api):
    errors = contract_errors(api.get("/incidents", {"statuses": "triggered"}))
    assert "did you mean statuses[]?" in errors[0]
    assert contract_errors(api.get("/incidents", {"limit": "ten"})) == ["query.limit: 'ten' is not an integer"]
    errors = contract_errors(api.get("/incidents", {"statuses[]": ["triggered", "open"]}))
    assert errors == ["query.statuses[]: 'open' is not one of ['triggered', 'acknowledged', 'resolved']"]
    assert contract_errors(api.get("/oncalls", {"earliest": "yes"}))


def test_unknown_paths_and_methods_are_refused(spec, api):
    assert "matches no path" in contract_errors(api.get("/incident"))[0]
    assert "DELETE is not an operation on /abilities" in contract_errors(api.session.delete(api.url + "/abilities"))[0]


def test_known_but_unimplemented_operation_is_501(spec, api):
    response = api.get("/log_entries")
    assert response.status_code == 501
    assert "does not implement" in response.json()["error"]["errors"][0]


def test_string_details_and_wrapped_responders_pass(spec, api):
    """Both are spec inconsistencies resolved in favour of the live API."""
    created = api.create_incident(body={"type": "incident_body", "details": "free text"})
    assert created.status_code == 201, created.text
    incident_id = created.json()["incident"]["id"]
    body = {
        "requester_id": RESPONDER_USER_ID,
        "message": "help",
        "responder_request_targets": [
            {"responder_request_target": {"id": RESPONDER_USER_ID, "type": "user_reference"}}
        ],
    }
    assert api.post(f"/incidents/{incident_id}/responder_requests", body).status_code == 200


def test_valid_calls_the_client_makes_pass(spec, api):
    checks = [
        ("/incidents", {"incident_key": "k", "service_ids[]": CHECKOUT_SERVICE_ID, "statuses[]": ["triggered"]}),
        ("/incidents", {"date_range": "all", "sort_by": "created_at:desc,incident_number", "total": "true"}),
        ("/users", {"query": "demo", "include[]": ["teams", "contact_methods"], "limit": 100}),
        ("/escalation_policies", {"include[]": ["targets", "teams", "services"], "team_ids[]": "PTEAM01"}),
        ("/oncalls", {"schedule_ids[]": "PSCHED1", "earliest": "true", "time_zone": "UTC"}),
        ("/schedules/PSCHED1", {"since": "2026-01-01T00:00:00Z", "until": "2026-01-15T00:00:00Z", "time_zone": "UTC"}),
        ("/services", {"team_ids[]": "PTEAM01", "include[]": "integrations"}),
    ]
    for path, params in checks:
        response = api.get(path, params)
        assert response.status_code == 200, (path, response.text)


def test_events_body_is_checked_against_the_events_spec(spec, sandbox):
    require_spec(events=True)
    body = {
        "routing_key": "5a4db0c0ffee4e0b9c1d2e3f4a5b6c7d",
        "event_action": "trigger",
        "payload": {"summary": "x", "source": "h", "severity": "info", "custom_details": "not an object"},
    }
    response = requests.post(f"{sandbox.url}/v2/enqueue", json=body, timeout=5)
    assert response.status_code == 400
    assert response.json()["errors"] == ["body.payload.custom_details: 'not an object' is not of type 'object'"]


def test_missing_spec_skips_the_check(tmp_path, capsys):
    checker = ContractChecker(rest_spec=tmp_path / "absent.json", events_spec=tmp_path / "absent-events.json")
    assert not checker.enabled
    assert "absent.json not found" in checker.reason
    # The skip says where the spec comes from and how to point the project at it.
    assert "reference/REST/openapiv3.json from https://github.com/PagerDuty/api-schema" in checker.reason
    assert "set PAGERDUTY_OPENAPI_SPEC" in checker.reason
    state = SandboxState(contract=checker)
    assert not state.contract_enabled
    with SandboxServer(state).start() as server:
        response = requests.get(f"{server.url}/incident", headers={"Authorization": "Token token=sandbox-token"})
    assert response.status_code == 404
    assert "contract check skipped" in capsys.readouterr().err


def test_spec_path_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PAGERDUTY_OPENAPI_SPEC", str(tmp_path / "elsewhere.json"))
    assert ContractChecker().rest_path == tmp_path / "elsewhere.json"
    assert not ContractChecker().enabled
