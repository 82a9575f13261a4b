"""Secrets at rest: what the database, dumpdata, loaddata, rotation and the logs hold."""

import io
import json
import logging

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection as db

from apps.core import encryption
from apps.core.encryption import PREFIX, Ciphertext, EncryptedTextField, encrypted_fields
from apps.core.redaction import REDACTED, RedactSecretsFilter, register_secret
from apps.pagerduty.models import PagerDutyConnection, ServiceMapping
from apps.pagerduty.services import connection_upsert
from tests.conftest import API_KEY, FROM_EMAIL, PD_URL

pytestmark = pytest.mark.django_db
KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def raw_api_key(pk) -> str:
    with db.cursor() as cursor:
        cursor.execute("SELECT api_key FROM pagerduty_pagerdutyconnection WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_a_submitted_value_that_looks_like_ciphertext_is_still_encrypted(root_api, root_admin):
    lookalike = encryption.encrypt("some-other-secret")  # real ciphertext, pasted as a key
    for name, key in (("shaped", "fernet:abcdefABCDEF0123456789"), ("real", str(lookalike))):
        response = root_api.post(
            "/api/v1/pagerduty/connections/",
            {"name": name, "api_key": key, "from_email": FROM_EMAIL, "api_url": PD_URL},
            format="json",
        )
        assert response.status_code == 201, response.json()
        pk = response.json()["id"]
        stored = raw_api_key(pk)
        assert stored.startswith(PREFIX) and stored != key and key not in stored
        # Encrypted once more, so it decrypts to exactly what was submitted.
        assert encryption.decrypt(stored) == key
        assert PagerDutyConnection.objects.get(pk=pk).api_key == key
    assert root_api.get("/api/v1/pagerduty/connections/").status_code == 200
    assert root_admin.get("/admin/pagerduty/pagerdutyconnection/").status_code == 200
    assert root_admin.get(f"/admin/pagerduty/pagerdutyconnection/{pk}/change/").status_code == 200


@pytest.mark.parametrize("fmt", ["json", "yaml", "xml"])
def test_dumpdata_holds_no_key_in_clear_and_loaddata_reads_it_back(pd_connection, tmp_path, fmt):
    out = io.StringIO()
    call_command("dumpdata", "pagerduty", format=fmt, stdout=out)
    dump = out.getvalue()
    assert API_KEY not in dump
    assert dump.count(PREFIX) == 1
    fixture = tmp_path / f"pagerduty.{fmt}"
    fixture.write_text(dump)

    PagerDutyConnection.objects.all().delete()
    call_command("loaddata", str(fixture), verbosity=0)
    restored = PagerDutyConnection.objects.get(pk=pd_connection.pk)
    assert restored.api_key == API_KEY
    assert restored.service_mappings.get().pagerduty_service_id == "PSVC001"
    # Stored as dumped: not encrypted a second time.
    assert encryption.decrypt(raw_api_key(restored.pk)) == API_KEY


def test_loaddata_with_another_key_says_so(pd_connection, tmp_path, settings):
    out = io.StringIO()
    call_command("dumpdata", "pagerduty.pagerdutyconnection", stdout=out)
    fixture = tmp_path / "c.json"
    fixture.write_text(out.getvalue())
    PagerDutyConnection.objects.all().delete()
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B]
    with pytest.raises(Exception, match="cannot be decrypted with FIELD_ENCRYPTION_KEY"):
        call_command("loaddata", str(fixture), verbosity=0)
    assert not PagerDutyConnection.objects.exists()


def test_a_hand_written_fixture_may_give_plaintext(tmp_path):
    fixture = tmp_path / "c.json"
    fields = {
        "name": "hand",
        "api_key": "hand-written-key",
        "from_email": FROM_EMAIL,
        "api_url": PD_URL,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }
    fixture.write_text(json.dumps([{"model": "pagerduty.pagerdutyconnection", "pk": 9, "fields": fields}]))
    call_command("loaddata", str(fixture), verbosity=0)
    assert raw_api_key(9).startswith(PREFIX)
    assert PagerDutyConnection.objects.get(pk=9).api_key == "hand-written-key"


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("abc def1234567890", "whitespace (character 4)"),
        ("abcdef\n1234567890", "whitespace"),
        ("abcdef\x071234567890", "control or non-ASCII"),
        ("abcdéf1234567890", "control or non-ASCII"),
    ],
)
def test_a_key_that_cannot_be_a_header_is_refused_everywhere(
    root_api, root_admin, pd_connection, monkeypatch, key, says
):
    response = root_api.patch(f"/api/v1/pagerduty/connections/{pd_connection.pk}/", {"api_key": key}, format="json")
    assert response.status_code == 400
    assert says in response.json()["errors"]["api_key"][0]
    assert key not in response.content.decode()

    page = root_admin.post(
        f"/admin/pagerduty/pagerdutyconnection/{pd_connection.pk}/change/",
        {
            "new_api_key": key,
            "from_email": FROM_EMAIL,
            "api_url": PD_URL,
            "events_url": "https://events.pagerduty.com",
            "subdomain": "",
            "service_mappings-TOTAL_FORMS": "0",
            "service_mappings-INITIAL_FORMS": "0",
        },
    )
    assert page.status_code == 200 and says in page.content.decode()

    monkeypatch.setenv("PAGERDUTY_API_KEY", key)
    with pytest.raises(CommandError, match="api_key: This API key contains"):
        call_command("pagerduty_connect", "default", "--from-email", FROM_EMAIL, "--api-url", PD_URL)
    assert PagerDutyConnection.objects.get(pk=pd_connection.pk).api_key == API_KEY


def test_surrounding_whitespace_is_trimmed(root_api, pd_connection):
    response = root_api.patch(
        f"/api/v1/pagerduty/connections/{pd_connection.pk}/", {"api_key": "  trimmed-key-123\n"}, format="json"
    )
    assert response.status_code == 200
    assert PagerDutyConnection.objects.get(pk=pd_connection.pk).api_key == "trimmed-key-123"
    connection_upsert(name="default", api_key="\tupsert-key-456 ", from_email=FROM_EMAIL, api_url=PD_URL)
    assert PagerDutyConnection.objects.get(pk=pd_connection.pk).api_key == "upsert-key-456"


def test_rotation_from_a_to_b(settings, pd_connection):
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    second = connection_upsert(name="second", api_key="second-key-123", from_email=FROM_EMAIL, api_url=PD_URL)
    PagerDutyConnection.objects.filter(pk=pd_connection.pk).update(api_key="first-key-123")  # both under A
    before = {pk: raw_api_key(pk) for pk in (pd_connection.pk, second.pk)}

    settings.FIELD_ENCRYPTION_KEYS = [KEY_B, KEY_A]
    out = io.StringIO()
    call_command("rotate_secrets", "--dry-run", stdout=out)
    assert "pagerduty.PagerDutyConnection.api_key: would re-encrypt 2, already under the newest key 0" in out.getvalue()
    assert {pk: raw_api_key(pk) for pk in before} == before

    call_command("rotate_secrets", stdout=(out := io.StringIO()))
    assert "pagerduty.PagerDutyConnection.api_key: re-encrypted 2, already under the newest key 0" in out.getvalue()
    after = {pk: raw_api_key(pk) for pk in before}
    assert all(after[pk] != before[pk] for pk in before)
    call_command("rotate_secrets", stdout=(out := io.StringIO()))  # idempotent
    assert "re-encrypted 0, already under the newest key 2" in out.getvalue()

    settings.FIELD_ENCRYPTION_KEYS = [KEY_B]  # A retired
    assert PagerDutyConnection.objects.get(pk=pd_connection.pk).api_key == "first-key-123"
    assert PagerDutyConnection.objects.get(pk=second.pk).api_key == "second-key-123"


def test_rotation_lists_what_no_key_decrypts_and_leaves_it(settings, pd_connection):
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    PagerDutyConnection.objects.filter(pk=pd_connection.pk).update(api_key="lost-key-123")
    stored = raw_api_key(pd_connection.pk)
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B]
    with pytest.raises(CommandError, match=rf"pagerduty.PagerDutyConnection.api_key of pk={pd_connection.pk}"):
        call_command("rotate_secrets", stdout=io.StringIO())
    assert raw_api_key(pd_connection.pk) == stored


def test_rotation_finds_every_encrypted_field_through_the_app_registry():
    found = {f"{model._meta.label}.{field.name}" for model, field in encrypted_fields()}
    assert "pagerduty.PagerDutyConnection.api_key" in found
    assert all(isinstance(field, EncryptedTextField) for _, field in encrypted_fields())


def test_an_unreadable_key_does_not_take_pages_down(settings, root_api, root_admin, pd_connection):
    """FIELD_ENCRYPTION_KEY changed without keeping the old key: pages still answer and say what to do;
    nothing is sent; saving other fields keeps the stored value for when the old key comes back."""
    stored = raw_api_key(pd_connection.pk)
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B]
    assert root_api.get("/api/v1/pagerduty/connections/").status_code == 200
    page = root_admin.get(f"/admin/pagerduty/pagerdutyconnection/{pd_connection.pk}/change/")
    assert page.status_code == 200 and "cannot be decrypted" in page.content.decode()
    test = root_api.post(f"/api/v1/pagerduty/connections/{pd_connection.pk}/test/")
    assert (
        test.status_code == 200 and test.json()["ok"] is False and "enter the API key again" in test.json()["message"]
    )
    assert (
        root_api.patch(
            f"/api/v1/pagerduty/connections/{pd_connection.pk}/", {"from_email": "x@example.com"}, format="json"
        ).status_code
        == 200
    )
    assert raw_api_key(pd_connection.pk) == stored


def test_an_assigned_ciphertext_object_is_stored_as_is():
    ciphertext = encryption.encrypt("loaded-key-123")
    assert isinstance(ciphertext, Ciphertext)
    connection = PagerDutyConnection.objects.create(name="c", api_key=ciphertext, from_email=FROM_EMAIL)
    assert raw_api_key(connection.pk) == ciphertext
    assert PagerDutyConnection.objects.get(pk=connection.pk).api_key == "loaded-key-123"


def test_deleting_a_connection_deletes_its_stored_key(pd_connection):
    stored = raw_api_key(pd_connection.pk)
    pd_connection.delete()
    with db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pagerduty_pagerdutyconnection WHERE api_key = %s", [stored])
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM pagerduty_pagerdutyconnection")
        assert cursor.fetchone()[0] == 0
    assert not ServiceMapping.objects.exists()


def test_tracebacks_in_logs_are_redacted():
    secret = "tb-secret-KEY-0123456789"
    register_secret(secret)
    logger = logging.getLogger("tests.redaction")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecretsFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"PagerDuty refused Token token={secret}")
        except RuntimeError:
            logger.exception("step failed for %s", secret)
        logger.error("no traceback object", exc_info=(ValueError, ValueError(secret), None))
        logger.handle(
            logger.makeRecord(
                logger.name, logging.WARNING, __file__, 1, "with a stack", None, None, sinfo=f"Stack: {secret}"
            )
        )
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert secret not in text
    assert text.count(REDACTED) == 4, text
    assert "Traceback (most recent call last)" in text and "RuntimeError: PagerDuty refused Token token=" in text
