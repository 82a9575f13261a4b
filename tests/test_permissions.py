"""The permission matrix of docs/permissions.md, walked door by door for every role.

The document is the matrix: one row per door (a method and a path, or an admin action), one column
per role, each cell ✓ (let in) or 403 (refused). This test reads it, finds the doors in the URLconf
itself (API router, schema, every admin URL and admin action) and fails when one is missing from
the document or the document lists one that does not exist: a door added later cannot slip
through unlisted. Then, as each role and as a user with no group, it knocks on every door.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import responses
from auditlog.models import LogEntry
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.incidents.models import Incident, IncidentEvent
from apps.oncall.models import (
    OncallEscalationPolicy,
    OncallSchedule,
    OncallService,
    OncallTeam,
    OncallUser,
    SyncRun,
)
from apps.pagerduty.models import Channel, PagerDutyConnection, ServiceMapping, UrgencyMapping, WebhookDelivery
from apps.pagerduty.services import channel_upsert
from apps.runbooks.models import RunbookRun, StepRunExchange
from apps.runbooks.services import run_create
from apps.runbooks.versions import runbook_version_ensure
from tests.conftest import PD_URL
from tests.factories import IncidentFactory, RunbookFactory, StepFactory

MATRIX_DOC = Path(settings.BASE_DIR) / "docs" / "permissions.md"
ROLES = ["Viewers", "Responders", "Runbook authors", "On-call managers", "PagerDuty admins"]
NO_GROUP, SUPERUSER = "no group", "superuser"
COLUMNS = [*ROLES, NO_GROUP, SUPERUSER]
ALLOWED, REFUSED = "✓", "403"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Door:
    method: str
    path: str  # with {placeholders}, e.g. /api/v1/runs/{pk}/rerun/
    action: str = ""  # an admin action posted to a changelist

    def __str__(self) -> str:
        return f"{self.method} {self.path}" + (f" action={self.action}" if self.action else "")


# --- the document -----------------------------------------------------------------------------

_ROW = re.compile(
    r"^\|\s*`(?P<methods>[A-Z]+(?: [A-Z]+)*) (?P<path>/\S*?)(?: action=(?P<action>\w+))?`\s*\|(?P<cells>.*)\|\s*$"
)


_SIGNED_ROW = re.compile(r"^\|\s*`POST (?P<path>/\S*?)`\s*\|\s*signature\s*\|")


def read_signed_doors() -> list[str]:
    """Paths of the doors a request authenticates by its signature ("Doors without login")."""
    return [m["path"] for line in MATRIX_DOC.read_text().splitlines() if (m := _SIGNED_ROW.match(line))]


def read_matrix() -> dict[Door, dict[str, str]]:
    matrix: dict[Door, dict[str, str]] = {}
    for number, line in enumerate(MATRIX_DOC.read_text().splitlines(), start=1):
        match = _ROW.match(line)
        if not match or _SIGNED_ROW.match(line):
            continue
        cells = [cell.strip() for cell in match["cells"].split("|")]
        # Columns after the roles (notes) are for people.
        values = dict(zip(COLUMNS, cells[: len(COLUMNS)], strict=True))
        bad = {column: value for column, value in values.items() if value not in (ALLOWED, REFUSED)}
        assert not bad, f"docs/permissions.md line {number}: cells must be {ALLOWED} or {REFUSED}, got {bad}"
        for method in match["methods"].split():
            door = Door(method, match["path"], match["action"] or "")
            assert door not in matrix, f"docs/permissions.md line {number}: {door} is listed twice"
            matrix[door] = values
    return matrix


# --- the URLconf ------------------------------------------------------------------------------


@dataclass
class Route:
    path: str
    pattern: URLPattern
    model: type | None  # whose objects fill {pk}, {slug}, {object_id}


def _normalize(raw: str) -> str:
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", raw)
    path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)
    return "/" + path.replace("^", "").replace("$", "").replace("\\", "")


def _walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern


def _model_of(path: str, pattern: URLPattern):
    view_class = getattr(pattern.callback, "cls", None)
    serializer = getattr(view_class, "serializer_class", None)
    if serializer is not None:
        return serializer.Meta.model
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "admin":
        try:
            return apps.get_model(parts[1], parts[2])
        except (LookupError, ValueError):
            return None
    return None


def url_routes() -> dict[str, Route]:
    routes = {}
    for raw, pattern in _walk(get_resolver().url_patterns):
        path = _normalize(raw)
        if "{format}" in path or "{url}" in path:
            continue  # format-suffix twins of API routes, and the admin's catch-all 404
        if "{app_label}" in path:
            for label in re.search(r"\(\?P<app_label>([^)]*)\)", raw)[1].split("|"):
                expanded = path.replace("{app_label}", label)
                routes[expanded] = Route(expanded, pattern, None)
            continue
        routes[path] = Route(path, pattern, _model_of(path, pattern))
    return routes


def required_doors(routes: dict[str, Route], superuser) -> set[Door]:
    """Doors the URLconf says exist and that the matrix must name exactly: every API method and
    every admin action. (Which methods an admin page takes is the document's to say.)"""
    doors = set()
    request = RequestFactory().get("/admin/")
    request.user = superuser
    for route in routes.values():
        callback = route.pattern.callback
        actions = getattr(callback, "actions", None)
        if actions:
            # HEAD is GET's action (DRF adds it to the map on the first GET), OPTIONS is checked as a read.
            allowed = set(callback.cls.http_method_names) - {"head", "options"}
            doors |= {Door(method.upper(), route.path) for method in actions if method in allowed}
        model_admin = admin.site._registry.get(route.model)
        if (
            model_admin is not None
            and route.pattern.name == f"{model_admin.opts.app_label}_{model_admin.opts.model_name}_changelist"
        ):
            doors |= {Door("POST", route.path, name) for name in model_admin.get_actions(request)}
    return doors


# --- one object of each kind, so every {placeholder} has something to point at ------------------


@pytest.fixture
def world(pd_connection, django_user_model):
    incident = IncidentFactory()
    runbook = RunbookFactory(slug="page")
    StepFactory(runbook=runbook, key="page", inputs={"title": "{{Activity.title}}"})
    runbook_version_ensure(runbook=runbook, comment="v1")
    run = run_create(runbook=runbook, event=incident.events.get())
    step_run = run.step_runs.get()
    exchange = StepRunExchange.objects.create(step_run=step_run, method="POST", url=f"{PD_URL}/incidents", status=201)
    common = {"connection": pd_connection, "name": "Checkout"}
    team = OncallTeam.objects.create(pagerduty_id="PTEAM01", **common)
    user = OncallUser.objects.create(pagerduty_id="PUSER01", email="sre@example.com", **common)
    schedule = OncallSchedule.objects.create(pagerduty_id="PSCHED1", **common)
    policy = OncallEscalationPolicy.objects.create(pagerduty_id="PEP0001", **common)
    service = OncallService.objects.create(pagerduty_id="PSVC001", escalation_policy=policy, **common)
    sync_run = SyncRun.objects.create(connection=pd_connection, status=SyncRun.Status.APPLIED)
    urgency = UrgencyMapping.objects.create(severity=2, urgency="high")
    channel = channel_upsert(name="monitoring", routing_key="R0UTINGkeyR0UTINGkeyR0UTINGkey12")
    someone = django_user_model.objects.create_user("someone", "someone@example.com", "pw-0123456789")
    Token.objects.create(user=someone)
    objects = {
        Incident: incident,
        type(runbook): runbook,
        RunbookRun: run,
        StepRunExchange: exchange,
        type(pd_connection): pd_connection,
        ServiceMapping: pd_connection.service_mappings.get(),
        UrgencyMapping: urgency,
        Channel: channel,
        OncallTeam: team,
        OncallUser: user,
        OncallSchedule: schedule,
        OncallEscalationPolicy: policy,
        OncallService: service,
        SyncRun: sync_run,
        apps.get_model("oncall", "Sync"): sync_run,
        LogEntry: LogEntry.objects.order_by("pk").first(),
        django_user_model: someone,
        Group: Group.objects.get(name="Viewers"),
        apps.get_model("authtoken", "TokenProxy"): apps.get_model("authtoken", "TokenProxy").objects.get(),
    }
    return objects


# The paged lists behind big memberships: <object_id>/related/<name>/.
RELATED_LIST = {OncallTeam: "members", OncallEscalationPolicy: "services"}


def _url(door: Door, route: Route, objects: dict) -> str:
    obj = objects.get(route.model)
    values = {"number": "1", "app_label": ""}
    if route.pattern.name == "view_on_site":
        incident = objects[Incident]
        values |= {"content_type_id": ContentType.objects.get_for_model(Incident).pk, "object_id": incident.pk}
    elif "{" in door.path:
        assert obj is not None, f"{door}: add an object of {route.model} to the `world` fixture"
        values |= {"pk": obj.pk, "object_id": obj.pk, "slug": getattr(obj, "slug", ""), "id": obj.pk}
        values["name"] = RELATED_LIST.get(route.model, "")
    return door.path.format(**values)


class Visitor:
    """One person knocking: an API client with their token and a browser session for the admin."""

    def __init__(self, user):
        self.user = user
        self.api = APIClient()
        self.browser = Client()
        if user is not None:
            self.api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
            self.browser.force_login(user)

    def knock(self, door: Door, route: Route, objects: dict) -> "tuple[int, str]":
        url = _url(door, route, objects)
        if door.path.startswith("/api/"):
            body = "{}" if door.method in UNSAFE else ""
            response = self.api.generic(door.method, url, body, content_type="application/json")
        elif door.method == "POST":
            data = {}
            if door.action:
                data = {"action": door.action, "index": "0", "_selected_action": [str(objects[route.model].pk)]}
            response = self.browser.post(url, data)
            if door.path == "/admin/logout/" and self.user is not None:
                self.browser.force_login(self.user)
        else:
            response = self.browser.get(url)
        location = response.get("Location", "")
        if response.status_code == 403:
            return response.status_code, REFUSED
        if response.status_code == 401 or (response.status_code == 302 and "/admin/login/" in location):
            return response.status_code, "login"
        return response.status_code, ALLOWED


def _order(door: Door):
    # Deleting through the API is last: everything before it still has its objects.
    return (door.method == "DELETE", door.path, door.method, door.action)


@pytest.fixture
def abilities(pd):
    pd.add(responses.GET, f"{PD_URL}/abilities", json={"abilities": ["teams"]})
    pd.add(
        responses.POST,
        "https://events.pagerduty.com/v2/enqueue",
        status=202,
        json={"status": "success", "message": "Event processed", "dedup_key": "k"},
    )
    return pd


# --- the tests --------------------------------------------------------------------------------


def test_the_matrix_names_every_door_and_only_real_ones(django_user_model):
    matrix = read_matrix()
    routes = url_routes()
    superuser = django_user_model.objects.create_superuser("root", "root@example.com", "pw-0123456789")
    missing = sorted(map(str, required_doors(routes, superuser) - set(matrix)))
    listed = {door.path for door in matrix} | set(read_signed_doors())
    unlisted_routes = sorted(path for path in routes if path not in listed)
    assert set(read_signed_doors()) <= set(routes), "docs/permissions.md lists signed doors that do not exist"
    unknown = sorted(str(door) for door in matrix if door.path not in routes)
    assert not missing, "doors missing from docs/permissions.md:\n" + "\n".join(missing)
    assert not unlisted_routes, "URLs missing from docs/permissions.md:\n" + "\n".join(unlisted_routes)
    assert not unknown, "docs/permissions.md lists doors that do not exist:\n" + "\n".join(unknown)


@pytest.mark.parametrize("column", COLUMNS)
def test_every_door_answers_as_the_matrix_says(column, world, abilities, role_user, django_user_model):
    """One role at a time, every door: allowed (anything but 401/403/login) or 403. A refused
    request changes nothing: no audit entry, no timeline event, no request to PagerDuty."""
    if column == SUPERUSER:
        user = django_user_model.objects.create_superuser("root", "root@example.com", "pw-0123456789")
    elif column == NO_GROUP:
        # Staff, but in no group: is_staff no longer admits anyone.
        user = django_user_model.objects.create_user("nobody", "nobody@example.com", "pw-0123456789", is_staff=True)
    else:
        user = role_user(column)
    routes = url_routes()
    visitor = Visitor(user)
    mismatches = []
    for door, expected in sorted(((d, v[column]) for d, v in read_matrix().items()), key=lambda item: _order(item[0])):
        before = (LogEntry.objects.count(), IncidentEvent.objects.count(), len(abilities.calls))
        status, got = visitor.knock(door, routes[door.path], world)
        if got != expected:
            mismatches.append(f"{door}: expected {expected}, got {got} (HTTP {status})")
        elif got == REFUSED and door.method in UNSAFE:
            after = (LogEntry.objects.count(), IncidentEvent.objects.count(), len(abilities.calls))
            if after != before:
                mismatches.append(
                    f"{door}: refused, yet changed something (audit, events, PagerDuty calls) {before} → {after}"
                )
    assert not mismatches, f"{column}:\n" + "\n".join(mismatches)


def test_anonymous_is_sent_to_log_in_everywhere(world, abilities):
    routes = url_routes()
    anonymous = Visitor(None)
    let_in = []
    for door in sorted(read_matrix(), key=_order):
        status, got = anonymous.knock(door, routes[door.path], world)
        # /healthz is public by design (docs/permissions.md, Operations).
        if got != "login" and door.path not in ("/admin/login/", "/admin/logout/", "/healthz"):
            let_in.append(f"{door}: HTTP {status}")
    assert not let_in, "anonymous requests that were not refused:\n" + "\n".join(let_in)


@pytest.mark.parametrize("column", [*COLUMNS, "anonymous"])
def test_signed_doors_refuse_everyone_without_a_valid_signature(column, world, role_user, django_user_model):
    """No role opens a signed door: without a signature it is 400, with a wrong one 403, and
    nothing is stored or put on a timeline."""
    user = None
    if column == SUPERUSER:
        user = django_user_model.objects.create_superuser("root", "root@example.com", "pw-0123456789")
    elif column == NO_GROUP:
        user = django_user_model.objects.create_user("nobody", "nobody@example.com", "pw-0123456789", is_staff=True)
    elif column != "anonymous":
        user = role_user(column)
    visitor = Visitor(user)
    connection = world[PagerDutyConnection]
    connection.webhook_secret = "whsec-0123456789"
    connection.save()
    before = IncidentEvent.objects.count()
    for path in read_signed_doors():
        url = path.format(connection_name=connection.name)
        unsigned = visitor.browser.post(url, "{}", content_type="application/json")
        forged = visitor.browser.post(
            url, "{}", content_type="application/json", HTTP_X_PAGERDUTY_SIGNATURE="v1=" + "0" * 64
        )
        assert (unsigned.status_code, forged.status_code) == (400, 403), path
    assert not WebhookDelivery.objects.exists()
    assert IncidentEvent.objects.count() == before
