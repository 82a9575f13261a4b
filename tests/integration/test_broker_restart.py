"""The broker goes away: Redis restarted under a running worker, and a status change saved while
Redis is down. A private `redis-server` per test, restarted with SIGKILL and no persistence (its
queues are lost, as a crashed broker without AOF loses them); workers started with the Procfile's
command, remote control, gossip and mingle on."""

import os
import signal
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from kombu import Connection, Consumer, Exchange, Queue
from kombu.common import ignore_errors
from rest_framework.test import APIClient

from apps.incidents.models import IncidentEvent
from apps.pagerduty.services import connection_upsert
from apps.runbooks.models import RunbookRun
from bench._stack import RedisServer
from tests.integration.conftest import QUEUE, RUNBOOKS, all_runs_finished, create_incident, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


# --- the race that killed the worker, reproduced at the kombu level ------------------------------


def _half_close_after_broker_death(server: RedisServer, transport: str | None) -> Exception | None:
    """What Celery's consumer does when the broker dies under it, with the state it is usually in:
    the task channel holds an unacknowledged message and has a BRPOP in flight, and a channel made
    after it (remote control) consumes a fanout queue. Returns what `close()` raised, if anything."""
    with Connection(server.url) as producer:
        producer.SimpleQueue("race").put({"n": 1})
    connection = Connection(server.url, transport=transport)
    channel = connection.default_channel
    delivered = []
    Consumer(channel, [Queue("race")], callbacks=[lambda body, message: delivered.append(message)]).consume()
    while not delivered:
        connection.drain_events(timeout=5)
    pidbox = connection.channel()
    fanout = Queue("race.pidbox", Exchange("race.pidbox", type="fanout"), auto_delete=True)
    Consumer(pidbox, [fanout], callbacks=[lambda body, message: None]).consume()
    channel._brpop_start()  # the event loop always has one BRPOP waiting for the next message
    server.stop()  # SIGKILL: every socket dies at once
    # celery.worker.consumer.Consumer.on_connection_error_after_connected, in this order:
    connection.collect(socket_timeout=1)
    try:
        ignore_errors(connection, connection.close)
    except Exception as exc:
        return exc
    return None


def test_stock_kombu_still_loses_the_worker_to_a_half_closed_channel(private_broker):
    """Documents the upstream bug config/broker.py works around. If this fails after an upgrade,
    kombu fixed it: drop config/broker.py and CELERY_BROKER_TRANSPORT."""
    error = _half_close_after_broker_death(private_broker, transport=None)
    assert isinstance(error, AttributeError)
    assert "'NoneType' object has no attribute 'hostname'" in str(error)


def test_our_transport_closes_cleanly_when_the_broker_dies(private_broker):
    assert _half_close_after_broker_death(private_broker, transport="config.broker:Transport") is None


# --- the real thing: a worker, runs in flight, Redis restarted -----------------------------------


@pytest.fixture
def wired_to_private_broker(private_broker, procfile, sandbox, django_user_model):
    server, state = sandbox
    connection = connection_upsert(
        name="default", api_key="sandbox-token", from_email="sre@example.com", api_url=server.url
    )
    connection.service_mappings.create(service="", pagerduty_service_id="PSVC001")
    call_command("load_runbooks", str(RUNBOOKS))
    api = APIClient()
    api.force_authenticate(django_user_model.objects.create_superuser("broker-drill"))
    procfile.worker("worker", queue=QUEUE, concurrency=2, CELERY_BROKER_URL=private_broker.url)
    return api, state, procfile, private_broker


def _worker_log(procfile) -> str:
    return Path(procfile.logs["worker"]).read_text(errors="replace")


def test_worker_survives_redis_restarts_with_tasks_in_flight_and_every_run_finishes(wired_to_private_broker):
    api, state, procfile, broker = wired_to_private_broker
    state.faults.latency_ms = 1500  # every PagerDuty request takes a while: runs are in flight
    ids = [create_incident(api, f"restart {n}") for n in range(12)]
    worker = procfile.running["worker"]
    statuses = []
    for round_ in range(3):
        for incident_id in ids[round_ * 4 : (round_ + 1) * 4]:
            statuses.append(
                api.patch(f"/api/v1/incidents/{incident_id}/", {"status": "Investigating"}, format="json").status_code
            )
        time.sleep(1)  # dispatched, runs started, their requests on the wire
        broker.restart(down_for=1)
        time.sleep(2)
    assert statuses == [200] * len(ids)

    wait_for(lambda: all_runs_finished(ids), timeout=150, message=f"runs after restarts\n{_worker_log(procfile)}")
    log = _worker_log(procfile)
    assert worker.poll() is None, f"the worker exited\n{log}"
    assert "Unrecoverable error" not in log
    assert log.count("Connection to broker lost") >= 1  # the restarts were noticed
    for incident_id in ids:
        run = RunbookRun.objects.get(incident_id=incident_id)
        assert run.status == "succeeded", [s.error for s in run.step_runs.all()]
        with state.lock:
            upstream = [i for i in state.incidents.values() if i["incident_key"] == f"ai-sre-{incident_id}"]
        assert len(upstream) == 1
    assert len(state.incidents) == len(ids)


def test_status_change_saved_while_redis_is_down_answers_200_and_is_dispatched_when_it_is_back(
    wired_to_private_broker,
):
    api, state, procfile, broker = wired_to_private_broker
    incident_id = create_incident(api, "saved during the outage")
    wait_for(lambda: not IncidentEvent.objects.filter(dispatched_at__isnull=True).exists(), message="created event")
    broker.stop()

    response = api.patch(f"/api/v1/incidents/{incident_id}/", {"status": "Investigating"}, format="json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["status"] == "Investigating"
    event = IncidentEvent.objects.get(incident_id=incident_id, kind="status_changed")
    assert event.dispatched_at is None

    broker.start()  # same port, empty: the message was never published
    # The worker reconnects and queues a sweep at once, without waiting RUN_RECOVERY_INTERVAL.
    wait_for(lambda: all_runs_finished([incident_id]), timeout=90, message=f"dispatch\n{_worker_log(procfile)}")
    assert RunbookRun.objects.get(incident_id=incident_id).status == "succeeded"
    assert "recovery sweep queued" in _worker_log(procfile)
    assert len(state.find_requests("POST", "/incidents")) == 1
    assert procfile.running["worker"].poll() is None


def test_worker_killed_outright_is_restarted_by_respawn(private_broker, procfile, tmp_path):
    """`make run` puts the worker under bin/respawn: a worker that exits is started again."""
    procfile.respawn = True
    procfile.worker("worker", queue=QUEUE, concurrency=1, CELERY_BROKER_URL=private_broker.url, RESPAWN_DELAY=0.2)
    [celery_pid] = procfile.celery_pids("worker")
    os.kill(celery_pid, signal.SIGKILL)
    wait_for(lambda: procfile.respawns("worker") == 1, message="respawn noticed the exit")
    wait_for(
        lambda: _worker_log(procfile).count(" ready.") == 2,
        timeout=60,
        message=f"worker started again\n{_worker_log(procfile)}",
    )
    assert procfile.celery_pids("worker") and procfile.celery_pids("worker") != [celery_pid]
