"""PostgreSQL: parameters bound on the server and the engine's repeated statements prepared, so
PostgreSQL stops parsing and planning them again (config.settings, DATABASE_PREPARED_STATEMENTS)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection as db

from apps.incidents.models import IncidentEvent
from tests.factories import IncidentFactory

ROOT = Path(__file__).resolve().parents[2]


def _database_options(**env) -> dict:
    """The default database's OPTIONS as config.settings builds them from this environment."""
    code = "import json, config.settings as s; print(json.dumps(s.DATABASES['default'].get('OPTIONS', {})))"
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_PREPARED_STATEMENTS")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_postgresql_binds_on_the_server_and_prepares_by_default():
    options = _database_options(DATABASE_URL="postgres://u@db.example:5432/runbooks")
    assert options["server_side_binding"] is True
    assert options["prepare_threshold"] == 5


def test_prepared_statements_can_be_turned_off_for_a_pooler():
    options = _database_options(
        DATABASE_URL="postgres://u@db.example:5432/runbooks", DATABASE_PREPARED_STATEMENTS="false"
    )
    assert "server_side_binding" not in options and "prepare_threshold" not in options


def test_sqlite_gets_neither():
    options = _database_options(DATABASE_URL="sqlite:////tmp/x.sqlite3")
    assert "server_side_binding" not in options and "prepare_threshold" not in options


@pytest.mark.django_db
def test_a_statement_run_five_times_is_prepared_on_the_connection():
    if db.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's; this run uses " + db.vendor)
    if not db.settings_dict["OPTIONS"].get("prepare_threshold"):
        pytest.skip("DATABASE_PREPARED_STATEMENTS is off in this environment")
    incident = IncidentFactory()
    # Six INSERTs of the same shape: prepared too, as the statement read back below shows.
    events = [IncidentEvent.objects.create(incident=incident, kind="status_changed") for _ in range(6)]

    def prepared() -> list[str]:
        with db.cursor() as cursor:
            cursor.execute(
                "SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s",
                ['SELECT "incidents_incidentevent"%'],
            )
            return [row[0] for row in cursor.fetchall()]

    assert prepared() == []
    for event in events[:4]:
        assert IncidentEvent.objects.filter(pk=event.pk).first() == event
    assert prepared() == []  # four times: parsed and planned each time
    for event in events[4:]:
        # the same statement with other parameters: the fifth run prepares it, the sixth uses it
        assert IncidentEvent.objects.filter(pk=event.pk).first() == event
    [statement] = prepared()
    assert 'WHERE "incidents_incidentevent"."id" = $1' in statement
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ['INSERT INTO "incidents_incidentevent"%'],
        )
        assert cursor.fetchone()[0] == 1
