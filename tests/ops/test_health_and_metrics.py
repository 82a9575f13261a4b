"""/healthz and /metrics: what they answer, to whom, and that metrics add up across processes."""

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import responses
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.incidents.services import incident_update
from apps.ops import tasks
from apps.ops.models import Heartbeat
from apps.pagerduty.client import PagerDutyClient, RetryPolicy
from apps.pagerduty.ratelimit import LocalRateLimiter
from config.celery import app as celery_app
from tests.factories import IncidentFactory
from tests.runbooks.helpers import add_create_ok, make_runbook

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


# --- /healthz ----------------------------------------------------------------------------------------


def test_healthz_is_public_and_says_only_ok_or_failing_per_check(client):
    response = client.get("/healthz")
    assert response.status_code == 503  # no worker has beaten yet
    assert response.json() == {"status": "failing", "checks": {"database": "ok", "broker": "ok", "worker": "failing"}}

    tasks.heartbeat.delay()  # what a worker does when beat sends it (eager here)
    response = client.get("/healthz")
    assert response.status_code == 200
    answer = response.json()
    assert answer["checks"] == {"database": "ok", "broker": "ok", "worker": "ok"}
    assert answer["status"] == "ok" and 0 <= answer["worker_heartbeat_age_seconds"] < 5
    assert response["Cache-Control"].startswith("max-age=0")


def test_a_stale_heartbeat_or_an_unreachable_broker_is_503(client, settings, monkeypatch):
    Heartbeat.objects.create(
        name="worker", at=timezone.now() - timedelta(seconds=settings.HEARTBEAT_STALE_AFTER_SECONDS + 1)
    )
    assert client.get("/healthz").json()["checks"]["worker"] == "failing"

    Heartbeat.objects.filter(name="worker").update(at=timezone.now())
    # broker_url only: broker_write_url is a property falling back to it, and patching the property
    # would "restore" it as an explicit :9 that every later publish of this process would use.
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:9/0")
    # The settings name a transport class for either broker (config/broker.py); the URL's must win here.
    monkeypatch.setitem(celery_app.conf, "broker_transport", "config.broker:Transport")
    assert celery_app.conf.broker_write_url == "redis://127.0.0.1:9/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    # The reason (host, error) is logged, never shown to an anonymous caller.
    assert response.json() == {
        "status": "failing",
        "checks": {"database": "ok", "broker": "failing", "worker": "ok"},
        "worker_heartbeat_age_seconds": response.json()["worker_heartbeat_age_seconds"],
    }
    assert "9" not in str(response.json()["checks"])


# --- /metrics: who -------------------------------------------------------------------------------------


def test_metrics_need_the_scrape_token_or_the_permission(client, settings, role_user):
    settings.METRICS_TOKEN = "scrape-0123456789abcdef"
    response = client.get("/metrics")
    assert response.status_code == 401 and response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-0123456789abcdef").status_code == 200

    client.force_login(role_user("Viewers"))
    assert client.get("/metrics").status_code == 403
    client.force_login(role_user("PagerDuty admins"))
    assert client.get("/metrics").status_code == 200


def test_without_a_token_setting_no_bearer_is_accepted(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


# --- /metrics: what ------------------------------------------------------------------------------------


def test_runs_by_status_step_latency_and_pagerduty_answers(
    client, settings, pd, pd_connection, django_capture_on_commit_callbacks
):
    settings.METRICS_TOKEN = "t" * 24
    auth = {"HTTP_AUTHORIZATION": "Bearer " + "t" * 24}
    before = scrape(client, **auth)
    make_runbook(conditions={"severity": [0, 1]})
    incident = IncidentFactory(severity=1)
    # PagerDuty throttles once, then creates: two requests, one 429.
    pd.add(
        responses.POST,
        "https://pd.test/incidents",
        status=429,
        json={"error": {"message": "Rate Limit Exceeded", "code": 2020}},
        headers={"ratelimit-reset": "0"},
    )
    add_create_ok(pd, key=f"ai-sre-{incident.id}")
    settings.PAGERDUTY_BACKOFF_BASE_SECONDS = 0.01
    with django_capture_on_commit_callbacks(execute=True):
        incident_update(incident_id=incident.pk, status="Investigating", actor="test")
    after = scrape(client, **auth)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert after[("runbook_runs", (("status", "succeeded"),))] == 1
    assert after[("runbook_runs", (("status", "failed"),))] == 0
    assert delta("pagerduty_requests_total", method="POST", status="429") == 1
    assert delta("pagerduty_requests_total", method="POST", status="201") == 1
    assert delta("pagerduty_throttled_total") == 1
    assert delta("runbook_step_duration_seconds_count", action="pagerduty.create_incident", status="succeeded") == 1
    assert after[("broker_up", ())] == 1
    assert ("celery_queue_depth", (("queue", settings.CELERY_TASK_DEFAULT_QUEUE),)) in after
    assert ("worker_heartbeat_age_seconds", ()) not in after  # no worker has beaten in this test


def test_waits_for_the_rate_budget_are_counted(client, settings):
    settings.METRICS_TOKEN = "t" * 24
    auth = {"HTTP_AUTHORIZATION": "Bearer " + "t" * 24}
    before = scrape(client, **auth)
    slept = []
    client_pd = PagerDutyClient(
        api_key="k" * 20,
        api_url="https://pd.test",
        throttle=LocalRateLimiter(per_minute=60, burst=1),
        sleep=slept.append,
        retry=RetryPolicy.from_settings(),
    )
    with responses.RequestsMock() as mock:
        mock.get("https://pd.test/abilities", json={"abilities": []})
        client_pd.test_connection()
        client_pd.test_connection()  # the second waits about a second for its slot
    after = scrape(client, **auth)
    assert (
        after[("pagerduty_rate_budget_waits_total", ())] - before.get(("pagerduty_rate_budget_waits_total", ()), 0) == 1
    )
    waited = after[("pagerduty_rate_budget_wait_seconds_total", ())] - before.get(
        ("pagerduty_rate_budget_wait_seconds_total", ()), 0
    )
    assert waited == pytest.approx(sum(slept)) and waited > 0.5


def test_counters_add_up_across_processes(tmp_path):
    """Multiprocess mode: what two worker processes counted shows in a third process's /metrics."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings_test"}
    count = (
        "from apps.ops import metrics; metrics.pagerduty_request('POST', 201); metrics.pagerduty_request('GET', 429)"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], cwd=ROOT, env=_env(env), check=True, timeout=60)
    read = "import sys; from apps.ops.metrics import events_text; sys.stdout.write(events_text().decode())"
    text = subprocess.run(
        [sys.executable, "-c", read], cwd=ROOT, env=_env(env), check=True, timeout=60, capture_output=True, text=True
    ).stdout
    found = samples(text)
    assert found[("pagerduty_requests_total", (("method", "POST"), ("status", "201")))] == 2
    assert found[("pagerduty_throttled_total", ())] == 2


def _env(extra: dict) -> dict:
    import os

    return {**os.environ, **extra}
