"""The OpenAPI schema tells the truth: Schemathesis, a client nobody here wrote, generates requests
from /api/schema/ and runs every check it has (server errors, undocumented status codes, responses
that break the schema, valid requests refused, invalid ones accepted, auth ignored...).

It talks to the real WSGI application in-process, authenticated as a superuser, over a database
seeded with one of everything, so detail endpoints answer 200 as well as 404. Deterministic
(fixed seed, derandomized Hypothesis) and bounded (max examples per operation), so a failure here
is reproducible and the run stays within a minute or two.
"""

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.config import SchemathesisConfig

from config.wsgi import application
from tests.seed import pagerduty_says_401, seed_one_of_everything

pytestmark = pytest.mark.django_db

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20261123,
        "generation": {"max-examples": 30, "deterministic": True, "database": "none"},
    }
)
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, config=CONFIG)


@pytest.fixture(autouse=True)
def keep_the_test_connection():
    """The WSGI handler closes database connections when a request ends; inside a test transaction
    that would close the test's own connection (Django's test client disconnects it the same way)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def token():
    user = get_user_model().objects.create_superuser("conformance", "conformance@example.com", "pw-conf-123456")
    return Token.objects.create(user=user).key


@pytest.fixture
def seeded():
    """One of everything the API lists, so detail endpoints and their responses get checked too."""
    with pagerduty_says_401():
        yield seed_one_of_everything()


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_schema(case, seeded, token):
    case.call_and_validate(headers={"Authorization": f"Token {token}"})
