"""Shared fixtures. Unit tests run Celery eagerly and mock HTTP with `responses`; tests marked
`integration`/`e2e` use real processes instead and opt out of both."""

import json
from urllib.parse import parse_qs, urlsplit

import pytest
import responses as responses_lib
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from apps.pagerduty.models import ServiceMapping
from apps.pagerduty.services import connection_upsert
from apps.sandbox.contract import ContractChecker
from config.celery import app as celery_app

PD_URL = "https://pd.test"
API_KEY = "u+UNITtestKEY-4f2a9c81d7e6"
FROM_EMAIL = "sre@example.com"
SERVICE_ID = "PSVC001"


@pytest.fixture(autouse=True)
def celery_eager(request):
    if request.node.get_closest_marker("integration") or request.node.get_closest_marker("e2e"):
        yield
        return
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager = False
    celery_app.conf.task_eager_propagates = False


@pytest.fixture(autouse=True)
def own_secret_registry():
    # Every secret a process decrypts or sends is registered and redacted by value from then on
    # (apps.core.redaction); across tests that would let one test's key — a six-letter word some
    # test stored, say "status" — redact another test's expected text. Each test starts from the
    # registry as it found it.
    from apps.core import redaction

    saved = set(redaction._secrets)
    yield
    with redaction._lock:
        redaction._secrets.clear()
        redaction._secrets.update(saved)


@pytest.fixture(autouse=True)
def no_remembered_versions():
    # Runbook versions a run found are remembered per process (apps.runbooks.versions); a test's
    # database is rolled back or flushed after it, so what one test remembered names rows the next
    # one does not have.
    from apps.runbooks.versions import runbook_versions_forget

    runbook_versions_forget()
    yield


@pytest.fixture(autouse=True)
def no_shared_rate_limit(settings):
    # The shared limiter has its own tests; elsewhere it would only make the suite wait.
    settings.PAGERDUTY_RATE_LIMIT_PER_MINUTE = 0


@pytest.fixture(scope="session")
def pagerduty_contract():
    return ContractChecker()


@pytest.fixture
def pd(pagerduty_contract):
    """Every HTTP request must match a registered PagerDuty response; nothing leaves the process.

    Afterwards every request our client sent is checked against PagerDuty's official OpenAPI spec
    (when the spec file is present), so a mock cannot hide a malformed request."""
    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
        problems = []
        for call in mock.calls:
            request = call.request
            url = urlsplit(request.url)
            body = json.loads(request.body) if request.body else None
            if url.path == "/v2/enqueue":  # the Events API v2, checked against its own spec
                found = pagerduty_contract.check_events(url.path, body)
            else:
                found = pagerduty_contract.check_rest(
                    request.method, url.path, parse_qs(url.query), body, has_body=request.body is not None
                )
            for problem in found:
                problems.append(f"{request.method} {url.path}: {problem}")
        assert not problems, "requests that PagerDuty's spec refuses:\n" + "\n".join(problems)


@pytest.fixture
def pd_connection(db):
    connection = connection_upsert(
        name="default",
        api_key=API_KEY,
        from_email=FROM_EMAIL,
        api_url=PD_URL,
        events_url="https://events.pagerduty.com",
    )
    ServiceMapping.objects.create(connection=connection, service="", pagerduty_service_id=SERVICE_ID)
    return connection


@pytest.fixture
def fast_retries(settings):
    settings.PAGERDUTY_BACKOFF_BASE_SECONDS = 0.01
    settings.PAGERDUTY_BACKOFF_CAP_SECONDS = 0.05
    return settings


@pytest.fixture
def root_user(db):
    """A superuser: it may do everything, so a refusal it meets is the rule's, not a permission's."""
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def root_api(root_user):
    client = APIClient()
    client.force_authenticate(root_user)
    return client


@pytest.fixture
def root_admin(client, root_user):
    client.force_login(root_user)
    return client


@pytest.fixture
def role_user(db, django_user_model):
    """role_user("Responders") → an active user holding that role. Not staff: a role is what admits."""

    def make(*roles: str, username: str = ""):
        groups = list(Group.objects.filter(name__in=roles))
        assert len(groups) == len(roles), f"unknown roles in {roles}: the roles migration makes the groups"
        name = username or "-".join(r.lower().replace(" ", "-") for r in roles) or "nobody"
        user = django_user_model.objects.create_user(name, f"{name}@example.com", "pw-0123456789")
        user.groups.add(*groups)
        return user

    return make
