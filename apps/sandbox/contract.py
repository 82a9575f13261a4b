"""Validate requests against PagerDuty's official OpenAPI specs before the stand-in handles them.

The stand-in must refuse what the real API would refuse, so a client that passes end-to-end tests
here does not fail against PagerDuty on a malformed body, an unknown query parameter or a typo in
a path. The specs are reference data outside the repository (see /work/shared/pagerduty); when
they are absent the check is skipped, loudly, and the stand-in still enforces its own rules.

Known spec inconsistencies, resolved in favour of the live API (and the spec's own examples):
- `POST /incidents/{id}/responder_requests`: targets are wrapped
  (`{"responder_request_target": {"id", "type"}}`) while the schema shows them flat; targets are
  unwrapped before validation (the handler refuses flat ones).
- `IncidentBody.details` is typed `object`, but the API and the spec's example send a string.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REST_SPEC_ENV = "PAGERDUTY_OPENAPI_SPEC"
EVENTS_SPEC_ENV = "PAGERDUTY_EVENTS_OPENAPI_SPEC"
REPO_DIR = Path(__file__).resolve().parents[2]
DEFAULT_REST_SPEC = REPO_DIR.parent / "shared" / "pagerduty" / "reference" / "REST" / "openapiv3.json"
DEFAULT_EVENTS_SPEC = REPO_DIR.parent / "shared" / "pagerduty" / "reference" / "events-v2" / "openapiv3.json"
# Where the specs come from: PagerDuty publishes them in this repository, at the paths above.
SPEC_SOURCE = "https://github.com/PagerDuty/api-schema"
MAX_ERRORS = 10
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def spec_hint(events: bool = False) -> str:
    """How to get the spec and point the project at it, for skip messages."""
    env, path = (
        (EVENTS_SPEC_ENV, "reference/events-v2/openapiv3.json")
        if events
        else (REST_SPEC_ENV, "reference/REST/openapiv3.json")
    )
    return f"download {path} from {SPEC_SOURCE} and set {env} to its path"


def rest_spec_path() -> Path:
    return Path(os.environ.get(REST_SPEC_ENV) or DEFAULT_REST_SPEC)


def events_spec_path() -> Path:
    return Path(os.environ.get(EVENTS_SPEC_ENV) or DEFAULT_EVENTS_SPEC)


class SpecUnavailable(Exception):
    pass


def _patched_components(components: dict) -> dict:
    """Shallow copies with the known schema bugs fixed; the big spec itself is never mutated."""
    schemas = components.get("schemas", {})
    body = schemas.get("IncidentBody")
    if body and body.get("properties", {}).get("details", {}).get("type") == "object":
        fixed = dict(body)
        fixed["properties"] = dict(body["properties"])
        fixed["properties"]["details"] = {"anyOf": [{"type": "string"}, {"type": "object"}], "nullable": True}
        schemas = dict(schemas)
        schemas["IncidentBody"] = fixed
        components = dict(components)
        components["schemas"] = schemas
    return components


def _where(prefix: str, path) -> str:
    out = prefix
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


class _Operation:
    """One (path template, method): its query parameters and a compiled body validator."""

    def __init__(self, spec: OpenApiSpec, template: str, method: str, op: dict, path_item: dict):
        from jsonschema.exceptions import best_match

        OAS30Validator = spec.validator_class  # noqa: N806 - the library's class name
        self._best_match = best_match
        self.template = template
        self.method = method.upper()
        params: dict[tuple[str, str], dict] = {}
        for raw in list(path_item.get("parameters", [])) + list(op.get("parameters", [])):
            param = spec.resolve(raw)
            params[(param["name"], param["in"])] = param
        self.query: dict[str, dict] = {}
        for (name, location), param in params.items():
            if location != "query":
                continue
            schema = spec.resolve(param.get("schema") or {})
            self.query[name] = {
                "schema": schema,
                "required": bool(param.get("required")),
                "comma_separated": param.get("explode") is False or (param.get("style") not in (None, "form")),
                "validator": OAS30Validator(
                    {**schema, "components": spec.components}, format_checker=OAS30Validator.FORMAT_CHECKER
                ),
            }
        self.body_validator = None
        self.body_required = False
        body = op.get("requestBody")
        if body:
            body = spec.resolve(body)
            media = body.get("content", {}).get("application/json")
            if media and media.get("schema"):
                self.body_required = True
                self.body_validator = OAS30Validator(
                    {**spec.resolve(media["schema"]), "components": spec.components},
                    format_checker=OAS30Validator.FORMAT_CHECKER,
                )

    def check(self, query: dict[str, list[str]], body: Any, has_body: bool) -> list[str]:
        errors: list[str] = []
        for name, values in query.items():
            info = self.query.get(name)
            if info is None:
                hint = ""
                if f"{name}[]" in self.query:
                    hint = f" (did you mean {name}[]? array parameters use the name[]= form)"
                errors.append(f"query.{name}: unknown query parameter for {self.method} {self.template}{hint}")
                continue
            errors.extend(self._check_param(name, values, info))
        for name, info in self.query.items():
            if info["required"] and name not in query:
                errors.append(f"query.{name}: required query parameter is missing")
        if self.body_validator is not None:
            if not has_body:
                errors.append("body: a JSON request body is required")
            else:
                if self.template.endswith("/responder_requests"):
                    body = _unwrap_responder_targets(body)
                for error in sorted(self.body_validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
                    deepest = self._best_match([error]) or error
                    errors.append(f"{_where('body', deepest.absolute_path)}: {_short(deepest.message)}")
                    if len(errors) >= MAX_ERRORS:
                        break
        return list(dict.fromkeys(errors))[:MAX_ERRORS]

    def _check_param(self, name: str, values: list[str], info: dict) -> list[str]:
        schema = info["schema"]
        kind = schema.get("type")
        if kind == "array":
            raw = [v for value in values for v in value.split(",")] if info["comma_separated"] else values
            item_type = (schema.get("items") or {}).get("type")
            try:
                value = [_coerce(v, item_type) for v in raw]
            except ValueError as exc:
                return [f"query.{name}: {exc}"]
            candidates = [value]
        elif name.endswith("[]"):
            # The spec types some exploded `x[]` parameters as a single string; each value must match.
            try:
                candidates = [_coerce(v, kind) for v in values]
            except ValueError as exc:
                return [f"query.{name}: {exc}"]
        else:
            if len(values) > 1:
                return [f"query.{name}: given {len(values)} times; it takes a single value"]
            try:
                candidates = [_coerce(values[0], kind)]
            except ValueError as exc:
                return [f"query.{name}: {exc}"]
        out = []
        for candidate in candidates:
            for error in info["validator"].iter_errors(candidate):
                out.append(f"query.{name}: {_short(error.message)}")
        return out


def _coerce(value: str, kind: str | None) -> Any:
    if kind == "integer":
        if not re.fullmatch(r"-?\d+", value.strip()):
            raise ValueError(f"{value!r} is not an integer")
        return int(value)
    if kind == "number":
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    if kind == "boolean":
        if value not in ("true", "false"):
            raise ValueError(f"{value!r} is not a boolean (true or false)")
        return value == "true"
    return value


def _unwrap_responder_targets(body: Any) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get("responder_request_targets"), list):
        return body
    targets = [
        t["responder_request_target"]
        if isinstance(t, dict) and isinstance(t.get("responder_request_target"), dict)
        else t
        for t in body["responder_request_targets"]
    ]
    return {**body, "responder_request_targets": targets}


class OpenApiSpec:
    """A loaded spec: path templates matched to operations, validators compiled on first use."""

    def __init__(self, path: Path, base_path: str = ""):
        # Imported here, at load time (server start), not on the first request: it takes ~150 ms.
        from openapi_schema_validator import OAS30Validator

        self.validator_class = OAS30Validator
        self.path = path
        self.base_path = base_path
        try:
            with open(path, encoding="utf-8") as fh:
                self.document = json.load(fh)
        except FileNotFoundError as exc:
            raise SpecUnavailable(f"spec file {path} not found") from exc
        except (OSError, ValueError) as exc:
            raise SpecUnavailable(f"spec file {path} unreadable: {exc}") from exc
        if not str(self.document.get("openapi", "")).startswith("3.0"):
            raise SpecUnavailable(f"{path} is not an OpenAPI 3.0 document")
        self.components = _patched_components(self.document.get("components", {}))
        self._templates: dict[tuple[int, str], list[tuple[int, re.Pattern, str]]] = {}
        for template in self.document.get("paths", {}):
            segments = template.strip("/").split("/")
            literal = sum(1 for s in segments if not s.startswith("{"))
            regex = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
            first = segments[0] if not segments[0].startswith("{") else "*"
            self._templates.setdefault((len(segments), first), []).append((literal, re.compile(regex), template))
        for candidates in self._templates.values():
            # Literal segments win over templated ones: /users/me is not /users/{id}.
            candidates.sort(key=lambda c: -c[0])
        self._operations: dict[tuple[str, str], _Operation] = {}
        self._lock = threading.Lock()

    def resolve(self, node: Any) -> Any:
        seen = 0
        while isinstance(node, dict) and "$ref" in node and seen < 20:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise SpecUnavailable(f"external $ref {ref} is not supported")
            target: Any = self.document
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
            seen += 1
        return node

    def match(self, path: str) -> str | None:
        if self.base_path:
            if not path.startswith(self.base_path + "/"):
                return None
            path = path[len(self.base_path) :]
        segments = path.strip("/").split("/")
        for key in ((len(segments), segments[0]), (len(segments), "*")):
            for _, regex, template in self._templates.get(key, []):
                if regex.match(path):
                    return template
        return None

    def operation(self, template: str, method: str) -> _Operation | None:
        key = (template, method.lower())
        op = self._operations.get(key)
        if op is not None:
            return op
        path_item = self.document["paths"][template]
        raw = path_item.get(method.lower())
        if not isinstance(raw, dict):
            return None
        with self._lock:
            op = self._operations.get(key)
            if op is None:
                op = _Operation(self, template, method, raw, path_item)
                self._operations[key] = op
        return op

    def check(self, method: str, path: str, query: dict[str, list[str]], body: Any, has_body: bool) -> list[str]:
        template = self.match(path)
        if template is None:
            return [f"path: {path} matches no path in the PagerDuty OpenAPI spec"]
        op = self.operation(template, method)
        if op is None:
            allowed = sorted(m.upper() for m in self.document["paths"][template] if m in _METHODS)
            return [f"method: {method} is not an operation on {template} (spec allows {', '.join(allowed)})"]
        return op.check(query, body, has_body)


_SPECS: dict[tuple[str, str], OpenApiSpec] = {}
_SPECS_LOCK = threading.Lock()
_ANNOUNCED: set[str] = set()


def load_spec(path: Path, base_path: str = "") -> OpenApiSpec:
    """Load once per process: the REST spec is 2.7 MB and many tests build many stand-ins."""
    key = (str(Path(path).resolve()), base_path)
    with _SPECS_LOCK:
        spec = _SPECS.get(key)
        if spec is None:
            spec = OpenApiSpec(Path(path), base_path)
            _SPECS[key] = spec
        return spec


def announce_skip(reason: str) -> None:
    """Say once per process and reason that requests go unchecked."""
    with _SPECS_LOCK:
        if reason in _ANNOUNCED:
            return
        _ANNOUNCED.add(reason)
    message = f"contract check skipped: {reason}"
    logger.warning(message)
    print(message, file=sys.stderr)


class ContractChecker:
    """Checks REST requests (and Events API v2 bodies) against the official specs, when present."""

    def __init__(self, rest_spec: str | Path | None = None, events_spec: str | Path | None = None):
        self.rest_path = Path(rest_spec) if rest_spec else rest_spec_path()
        self.events_path = Path(events_spec) if events_spec else events_spec_path()
        self._rest: OpenApiSpec | None = None
        self._events: OpenApiSpec | None = None
        self._rest_error: str | None = None if self.rest_path.is_file() else f"spec file {self.rest_path} not found"
        self._events_error: str | None = (
            None if self.events_path.is_file() else f"spec file {self.events_path} not found"
        )

    @property
    def enabled(self) -> bool:
        return self._rest_error is None

    @property
    def reason(self) -> str | None:
        """Why the REST check is skipped, or None when it runs."""
        if self._rest_error is None:
            return None
        return f"{self._rest_error} ({spec_hint()})"

    @property
    def events_enabled(self) -> bool:
        return self._events_error is None

    def load(self) -> None:
        """Load both specs now rather than on the first request."""
        self._rest_spec()
        self._events_spec()

    def _rest_spec(self) -> OpenApiSpec | None:
        if self._rest is None and self._rest_error is None:
            try:
                self._rest = load_spec(self.rest_path)
            except SpecUnavailable as exc:
                self._rest_error = str(exc)
                announce_skip(self.reason or str(exc))
        return self._rest

    def _events_spec(self) -> OpenApiSpec | None:
        if self._events is None and self._events_error is None:
            try:
                self._events = load_spec(self.events_path, base_path="/v2")
            except SpecUnavailable as exc:
                self._events_error = str(exc)
                announce_skip(f"Events API: {exc} ({spec_hint(events=True)})")
        return self._events

    def check_rest(
        self, method: str, path: str, query: dict[str, list[str]], body: Any = None, has_body: bool = False
    ) -> list[str]:
        """Problems found (`"<where>: <error>"`), empty when the request matches or the spec is absent."""
        spec = self._rest_spec()
        if spec is None:
            return []
        return spec.check(method, path, query, body, has_body)

    def check_events(self, path: str, body: Any) -> list[str]:
        spec = self._events_spec()
        if spec is None:
            return []
        return spec.check("POST", path, {}, body, True)
