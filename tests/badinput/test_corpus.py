"""Every API operation and admin form, put through the hostile input of corpus.yaml.

Operations are read from the OpenAPI schema and admin forms from the admin site, so whatever is
added later is covered without being listed. Expectations: never a 5xx; under /api/ every error
is JSON with a message, and a refusal of a field names that field.

Each test walks all cases of one kind for one operation and reports every case that failed at
once (one seeded database per operation rather than per case keeps the run short).
"""

import json
import re
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import yaml
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import NoReverseMatch, reverse
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token
from rest_framework.request import Request
from rest_framework.test import APIClient

from apps.core.pagination import BoundedLimitOffsetPagination
from tests.seed import pagerduty_says_401, seed_one_of_everything

pytestmark = pytest.mark.django_db

CORPUS = yaml.safe_load((Path(__file__).parent / "corpus.yaml").read_text(encoding="utf-8"))
SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
OPERATIONS = [
    (method.upper(), path, operation)
    for path, item in SCHEMA["paths"].items()
    for method, operation in item.items()
    if method in ("get", "post", "put", "patch", "delete")
]


def built(value):
    """{repeat: s, times: n, prefix, suffix} → the string; anything else as written."""
    if isinstance(value, dict) and "repeat" in value:
        return value.get("prefix", "") + value["repeat"] * value["times"] + value.get("suffix", "")
    if isinstance(value, dict):
        return {key: built(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [built(inner) for inner in value]
    return value


def _ref(schema: dict) -> dict:
    while "$ref" in schema:
        schema = SCHEMA["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def body_fields(operation: dict) -> list[str]:
    content = (operation.get("requestBody") or {}).get("content", {}).get("application/json")
    return list(_ref(content["schema"]).get("properties", {})) if content else []


def label(method: str, path: str) -> str:
    return f"{method} {path}"


class LazyBody:
    """A request body of `size` bytes that exists only as far as someone reads it."""

    def __init__(self, size: int):
        self.left = size

    def read(self, size: int = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        self.left -= size
        return b"x" * size

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


@pytest.fixture
def world():
    with pagerduty_says_401():
        yield seed_one_of_everything()


@pytest.fixture
def api(world):
    user = get_user_model().objects.create_superuser("corpus", "corpus@example.com", "pw-corpus-123456")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.user = user
    return client


def real_path(api, path: str) -> str:
    """The path template with each parameter filled from the first object its list shows."""

    def fill(match):
        name = match.group(1)
        collection = path[: match.start()]
        results = api.get(collection).json()
        results = results.get("results", results) if isinstance(results, dict) else results
        return quote(str(results[0][name]), safe="") if results else "1"

    return re.sub(r"\{(\w+)\}", fill, path)


def send(api, method: str, path: str, *, case: dict, params=None):
    """One request as the corpus case describes its body."""
    extra = {}
    content_type = case.get("content_type", "application/json")
    if "size" in case:
        extra = {"CONTENT_TYPE": content_type, "wsgi.input": LazyBody(case["size"])}
        if case.get("streamed"):
            extra.update({"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True})
        else:
            extra["CONTENT_LENGTH"] = str(case["size"])
        return api.generic(method, path, "", content_type, query_params=params, **extra)
    if "bytes" in case:
        data = bytes.fromhex(case["bytes"])
    elif "raw" in case:
        data = built(case["raw"]).encode()
    elif "body" in case:
        data = json.dumps(built(case["body"]))
    else:
        data = ""
    return api.generic(method, path, data, content_type, query_params=params)


def problems_with(response, *, status=None, field=None, message=None) -> list[str]:
    found = []
    if response.status_code >= 500:
        found.append(f"answered {response.status_code}")
    if status is not None and response.status_code != status:
        found.append(f"answered {response.status_code}, expected {status}")
    try:
        body = response.json()
    except ValueError:
        return [*found, f"answered non-JSON {response.get('Content-Type')}: {response.content[:120]!r}"]
    if response.status_code >= 400:
        if not isinstance(body, dict) or not body.get("message"):
            found.append(f"error without a message: {body!r:.200}")
        elif field is not None and field not in (body.get("errors") or {}) and not body["message"].startswith(field):
            found.append(f"refusal does not name {field!r}: {body['message'][:200]!r}")
    if message is not None and message not in json.dumps(body, ensure_ascii=False):
        found.append(f"message lacks {message!r}: {json.dumps(body, ensure_ascii=False)[:200]}")
    return found


def report(failures: list[str]) -> None:
    assert not failures, f"{len(failures)} case(s) failed:\n" + "\n".join(failures)


# --- the API ------------------------------------------------------------------------------------

WITH_BODY = [(m, p, o) for m, p, o in OPERATIONS if o.get("requestBody")]
# Writes that take no body (a test, a re-run) never read one, so only the size limit concerns them.
WITHOUT_BODY = [(m, p, o) for m, p, o in OPERATIONS if m in ("POST", "PUT", "PATCH") and not o.get("requestBody")]
LISTS = [(m, p, o) for m, p, o in OPERATIONS if any(x["name"] == "limit" for x in o.get("parameters", []))]
WITH_PATH_PARAMS = [(m, p, o) for m, p, o in OPERATIONS if "{" in p]


def _ids(operations):
    return [label(m, p) for m, p, _ in operations]


@pytest.mark.parametrize(("method", "path", "operation"), WITH_BODY, ids=_ids(WITH_BODY))
def test_hostile_bodies(api, method, path, operation):
    url, failures = real_path(api, path), []
    for case in CORPUS["bodies"]:
        response = send(api, method, url, case=case)
        for problem in problems_with(
            response, status=case["status"], field=case.get("field"), message=case.get("message")
        ):
            failures.append(f"{case['id']}: {problem}")
    report(failures)


@pytest.mark.parametrize(("method", "path", "operation"), WITHOUT_BODY, ids=_ids(WITHOUT_BODY))
def test_bodies_too_large_for_operations_without_one(api, method, path, operation):
    url, failures = real_path(api, path), []
    for case in [case for case in CORPUS["bodies"] if case.get("status") == 413]:
        response = send(api, method, url, case=case)
        failures += [f"{case['id']}: {p}" for p in problems_with(response, status=413, message=case.get("message"))]
    report(failures)


@pytest.mark.parametrize(("method", "path", "operation"), WITH_BODY, ids=_ids(WITH_BODY))
def test_hostile_values_in_every_field(api, method, path, operation):
    url, failures = real_path(api, path), []
    for field in body_fields(operation):
        for case in CORPUS["values"]:
            if "raw_json" in case:
                data = f'{{"{field}": {case["raw_json"]}}}'
            else:
                data = json.dumps({field: built(case["value"])})
            response = api.generic(method, url, data, "application/json")
            where = f"{field} = {case['id']}"
            if case.get("refused") == "always" and response.status_code < 400:
                failures.append(f"{where}: accepted ({response.status_code})")
            named = field if response.status_code == 400 and case.get("refused") == "always" else None
            failures += [f"{where}: {problem}" for problem in problems_with(response, field=named)]
    report(failures)


@pytest.mark.parametrize(("method", "path", "operation"), LISTS, ids=_ids(LISTS))
def test_hostile_query_strings(api, method, path, operation):
    url, failures = real_path(api, path), []
    for case in CORPUS["queries"]:
        response = api.generic(method, url, query_params={k: built(v) for k, v in case["params"].items()})
        found = problems_with(response, status=case["status"], field=case.get("field"))
        failures += [f"{case['id']}: {problem}" for problem in found]
    report(failures)


@pytest.mark.parametrize("limit", ["501", "36893488147419103232", "9" * 5000])
def test_limit_is_clamped_to_500(rf, limit):
    assert BoundedLimitOffsetPagination().get_limit(Request(rf.get("/", {"limit": limit}))) == 500


@pytest.mark.parametrize(("method", "path", "operation"), WITH_PATH_PARAMS, ids=_ids(WITH_PATH_PARAMS))
def test_hostile_ids_in_the_path(api, method, path, operation):
    failures = []
    for case in CORPUS["path_ids"]:
        url = re.sub(r"\{\w+\}", built(case["value"]), path)
        response = api.generic(method, url, json.dumps({}) if method != "GET" else "", "application/json")
        failures += [f"{case['id']}: {problem}" for problem in problems_with(response)]
        if response.status_code not in (400, 404, 405):
            failures.append(f"{case['id']}: answered {response.status_code}, expected 404 (or 400)")
    report(failures)


def _request_cases():
    for case in CORPUS["requests"]:
        marks = [pytest.mark.xfail(strict=False, reason=case["xfail"])] if "xfail" in case else []
        yield pytest.param(case, id=case["id"], marks=marks)


def _placeholders(world) -> dict:
    incident = world["incident"]
    return {
        "incident": str(incident.pk),
        "incident_short_id": incident.short_id,
        "incident_short_id_lower": incident.short_id.lower(),
        "runbook": world["runbook"].slug,
        "runbook_pk": str(world["runbook"].pk),
        "run": str(world["run"].pk),
        "connection": str(world["connection"].pk),
    }


def _fill(value, placeholders):
    value = built(value)
    if isinstance(value, str):
        return value.format(**placeholders) if re.search(r"\{[a-z_]+\}", value) else value
    if isinstance(value, dict):
        return {key: _fill(inner, placeholders) for key, inner in value.items()}
    if isinstance(value, list):
        return [_fill(inner, placeholders) for inner in value]
    return value


@pytest.mark.parametrize("case", list(_request_cases()))
def test_requests_with_a_known_answer(api, world, case, monkeypatch, pagerduty_raises):
    placeholders = _placeholders(world)
    case = {**case, **({"body": _fill(case["body"], placeholders)} if "body" in case else {})}
    if case.get("raise_in_requests"):
        pagerduty_raises()
    response = send(
        api,
        case["method"],
        _fill(case["path"], placeholders),
        case=case,
        params=_fill(case.get("params"), placeholders),
    )
    assert not problems_with(response, status=case["status"], field=case.get("field"), message=case.get("message"))


@pytest.fixture
def pagerduty_raises(monkeypatch):
    """Make the HTTP library itself raise, as it does for a header value it cannot encode."""

    def arm():
        def explode(*args, **kwargs):
            raise requests.exceptions.InvalidHeader("Invalid leading whitespace, reserved character(s), or return")

        monkeypatch.setattr(requests.Session, "send", explode)

    return arm


# --- the admin ----------------------------------------------------------------------------------


class _FormFields(HTMLParser):
    """Names and default values of the controls of the admin's change form."""

    def __init__(self):
        super().__init__()
        self.fields: dict[str, str] = {}
        self.editable: list[str] = []
        self._select = None
        self._textarea = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name")
        if "disabled" in attrs:
            return  # not submitted, and ignored if it were
        if tag == "input" and name and attrs.get("type") not in ("submit", "checkbox", "file", "button"):
            self.fields[name] = attrs.get("value") or ""
            if attrs.get("type", "text") in ("text", "email", "url", "number", "password") or "vTextField" in attrs.get(
                "class", ""
            ):
                self.editable.append(name)
        elif tag == "select" and name:
            self._select = name
            self.fields.setdefault(name, "")
        elif tag == "option" and self._select and attrs.get("value") and not self.fields[self._select]:
            self.fields[self._select] = attrs["value"]
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields[name] = ""
            self.editable.append(name)

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.fields[self._textarea] += data


def _with_one_inline_form(fields: dict) -> dict:
    """Instantiate each inline's empty `__prefix__` form once, so inline fields are tried too."""
    filled = dict(fields)
    for name in [n for n in fields if n.endswith("-TOTAL_FORMS")]:
        prefix = name.removesuffix("-TOTAL_FORMS")
        template = {n: v for n, v in fields.items() if n.startswith(f"{prefix}-__prefix__-")}
        if template:
            filled[name] = str(int(fields[name] or 0) + 1)
            index = fields[name] or "0"
            filled.update({n.replace("__prefix__", index): v for n, v in template.items()})
    return {n: v for n, v in filled.items() if "__prefix__" not in n}


def _admin_forms():
    for model in admin.site._registry:
        if not model.__module__.startswith("apps."):
            continue
        info = (model._meta.app_label, model._meta.model_name)
        yield pytest.param(f"admin:{info[0]}_{info[1]}_add", None, id=f"add {info[0]}.{info[1]}")
        yield pytest.param(f"admin:{info[0]}_{info[1]}_change", model, id=f"change {info[0]}.{info[1]}")


@pytest.mark.parametrize(("url_name", "model"), list(_admin_forms()))
def test_admin_forms_survive_hostile_values(client, api, url_name, model):
    client.force_login(api.user)
    if model is not None:
        obj = model.objects.order_by("pk").first()
        if obj is None:
            pytest.skip(f"no {model._meta.verbose_name} to change")
        args = [obj.pk]
    else:
        args = []
    try:
        url = reverse(url_name, args=args)
    except NoReverseMatch:
        pytest.skip("no such admin page")
    page = client.get(url)
    assert page.status_code < 500
    if page.status_code != 200:
        pytest.skip(f"{url} answers {page.status_code} to a superuser (read-only)")
    parser = _FormFields()
    parser.feed(page.content.decode())
    baseline = _with_one_inline_form(parser.fields)
    editable = [n for n in baseline if n in parser.editable or re.sub(r"-\d+-", "-__prefix__-", n) in parser.editable]
    failures = []
    for field in editable:
        for case in CORPUS["admin_values"]:
            response = client.post(url, {**baseline, field: built(case["value"])})
            if response.status_code >= 500:
                failures.append(f"{field} = {case['id']}: answered {response.status_code}")
            elif case["id"] in ("nul-character", "string-200000-chars") and response.status_code == 302:
                failures.append(f"{field} = {case['id']}: accepted")
    report(failures)


def _admin_request_cases():
    for case in CORPUS["admin_requests"]:
        yield pytest.param(case, id=case["id"])


@pytest.mark.parametrize("case", list(_admin_request_cases()))
def test_admin_requests_never_fail(client, api, world, case):
    client.force_login(api.user)
    placeholders = _placeholders(world)
    method = case.get("method", "GET")
    path = _fill(case["path"], placeholders)
    params = _fill(case.get("params"), placeholders)
    if method == "GET" and "size" not in case:
        response = client.get(path, params)
    else:
        response = send(client, method, path, case=case, params=params)
    assert response.status_code < 500, response.content[:300]
    if "status" in case:
        assert response.status_code == case["status"], response.content[:300]
    if "contains" in case:
        assert case["contains"] in response.content.decode()


def test_streamed_body_is_read_when_it_fits(api):
    """Without a Content-Length (chunked), a body within the limit still reaches the view."""
    body = json.dumps({"title": "Streamed"}).encode()
    response = api.generic(
        "POST",
        "/api/v1/incidents/",
        "",
        "application/json",
        CONTENT_TYPE="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": BytesIO(body), "wsgi.input_terminated": True},
    )
    assert response.status_code == 201, response.content
    assert response.json()["title"] == "Streamed"
