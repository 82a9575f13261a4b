"""The stand-in keeps its account across restarts (`make run` restarts it with the demo): an incident
opened before a restart can be resolved after it, and nothing restored is handed out again."""

import json

from apps.sandbox import SandboxServer, SandboxState, seed_account
from apps.sandbox.persistence import StateFile

from .conftest import Api


def _serve(tmp_path, seed=1):
    state = SandboxState(contract=False)
    seed_account(state, seed=seed)
    state_file = StateFile(state, tmp_path / "sandbox-state.json")
    message = state_file.load()
    return state, state_file, SandboxServer(state).start(), message


def test_incidents_survive_a_restart_and_can_be_resolved_after_it(tmp_path):
    state, state_file, server, message = _serve(tmp_path)
    assert message.startswith("state: new")
    api = Api(server.url)
    first = api.create_incident(key="ai-sre-1").json()["incident"]
    api.post(f"/incidents/{first['id']}/notes", {"note": {"content": "looking"}})
    server.stop()
    state_file.stop()

    state, state_file, server, message = _serve(tmp_path)
    assert message == f"state: 1 incidents restored from {tmp_path / 'sandbox-state.json'}"
    api = Api(server.url)
    # Still open under its key: PagerDuty's dedup refuses a second one...
    assert api.create_incident(key="ai-sre-1").status_code == 400
    # ...and the incident itself answers, and resolves.
    assert api.get(f"/incidents/{first['id']}").json()["incident"]["title"] == first["title"]
    assert api.get(f"/incidents/{first['id']}/notes").json()["notes"][0]["content"] == "looking"
    assert api.resolve(first["id"]).json()["incident"]["status"] == "resolved"
    second = api.create_incident(key="ai-sre-2").json()["incident"]
    assert second["incident_number"] == 2
    assert second["id"] != first["id"]
    server.stop()
    state_file.stop()
    saved = json.loads((tmp_path / "sandbox-state.json").read_text())
    assert saved["incidents"][first["id"]]["status"] == "resolved"


def test_a_file_written_for_another_seed_is_set_aside(tmp_path):
    state, state_file, server, _ = _serve(tmp_path, seed=1)
    Api(server.url).create_incident(key="k")
    server.stop()
    state_file.stop()

    state, state_file, server, message = _serve(tmp_path, seed=2)
    server.stop()
    assert "written for another seed or size" in message
    assert state.incidents == {}
    assert (tmp_path / "sandbox-state.json.old").exists()


def test_an_unreadable_file_is_set_aside_not_fatal(tmp_path):
    (tmp_path / "sandbox-state.json").write_text("{not json")
    state, state_file, server, message = _serve(tmp_path)
    server.stop()
    assert "unreadable" in message and state.incidents == {}
