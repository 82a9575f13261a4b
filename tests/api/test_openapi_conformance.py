"""The OpenAPI schema tells the truth: Schemathesis, a client nobody here wrote, generates requests
from /api/schema/ and runs every check it has (server errors, undocumented status codes, responses
that break the schema, valid requests refused, invalid ones accepted, auth ignored...).

It talks to the real WSGI application in-process, authenticated as a superuser, over a database
seeded with one of everything, so detail endpoints answer 200 as well as 404. Deterministic
(fixed seed, derandomized Hypothesis) and bounded (max examples per operation), so a failure here
is reproducible and the run stays within a minute or two.
"""

import json

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.config import SchemathesisConfig

from config.wsgi import application
from tests.seed import pagerduty_says_401, seed_one_of_everything

pytestmark = pytest.mark.django_db

# A fixed key, so Schemathesis knows which header is the credential (its auth checks replay
# requests without it, or with a broken one, and expect 401).
TOKEN = "conformance0123456789abcdef0123456789abc"
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20261123,
        "headers": {"Authorization": f"Token {TOKEN}"},
        "generation": {"max-examples": 20, "deterministic": True, "database": "none"},
    }
)
# The schema as /api/schema/ serves it (that door needs a role, and collection runs before any
# database exists, so it is generated in-process by the same generator); requests go to the app.
schema = schemathesis.openapi.from_dict(
    json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True))), config=CONFIG
)
schema.app = application
schema.location = "/api/schema/?format=json"


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
def superuser_token():
    user = get_user_model().objects.create_superuser("conformance", "conformance@example.com", "pw-conf-123456")
    return Token.objects.create(user=user, key=TOKEN).key


@pytest.fixture
def seeded():
    """One of everything the API lists, so detail endpoints and their responses get checked too."""
    with pagerduty_says_401():
        yield seed_one_of_everything()


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_schema(case, seeded, superuser_token):
    case.call_and_validate()


class APIWorkflow(schema.as_state_machine()):
    """Sequences of calls linked through the schema: create, then read, change, test or delete it.

    Every scenario starts from the same seeded database (a savepoint rolled back after it), so
    Hypothesis can replay and shrink a failing sequence deterministically."""

    def setup(self):
        self._scenario = transaction.atomic()
        self._scenario.__enter__()

    def teardown(self):
        transaction.set_rollback(True)
        self._scenario.__exit__(None, None, None)


@pytest.mark.usefixtures("seeded", "superuser_token")
def test_stateful_sequences_conform_to_the_schema():
    APIWorkflow.run(
        settings=settings(
            max_examples=15,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )
