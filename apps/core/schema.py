"""The OpenAPI schema tells the truth about errors, in one place for every endpoint.

`ApiAutoSchema` (DEFAULT_SCHEMA_CLASS) adds to each operation the error answers it can really
give, all with the one JSON error shape, without overwriting codes an endpoint documents itself
(a manual run's 202, a re-run's 202). New endpoints get them without doing anything.

A view whose lookup accepts more than its model field says so with `lookup_schema` (and
`lookup_description`): incidents are addressed by UUID or by short id (`INC-12`). A request
serializer whose rule spans fields says so with `openapi_extra` (merged into its component, e.g.
a oneOf) and `openapi_body_required`.
"""

import re

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent

from apps.core.limits import MAX_REQUEST_BODY_BYTES

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error the API answers has this shape.",
    "required": ["message"],
    "properties": {
        "message": {"type": "string", "description": "What went wrong, in one sentence a person can act on."},
        "errors": {
            "type": "object",
            "additionalProperties": {},
            "description": "Field → list of messages (nested objects for nested fields).",
        },
        "correlation_id": {"type": "string", "description": "500 only: quote it when reporting the error."},
    },
}

_WRITE_METHODS = {"POST", "PUT", "PATCH"}
# Text the schema leaves free is still refused with a NUL in it (PostgreSQL cannot store one).
NO_NUL_PATTERN = r"^[^\u0000]*$"


def _forbid_nul(schema) -> None:
    """Give every free-text string in a request schema the NUL-free pattern, nested ones included."""
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and not {"pattern", "format", "enum"} & set(schema):
        schema["pattern"] = NO_NUL_PATTERN
    for key in ("properties",):
        for inner in (schema.get(key) or {}).values():
            _forbid_nul(inner)
    for key in ("items", "additionalProperties", "not"):
        _forbid_nul(schema.get(key))
    for key in ("oneOf", "anyOf", "allOf"):
        for inner in schema.get(key) or []:
            _forbid_nul(inner)


class ApiAutoSchema(AutoSchema):
    def _error_statuses(self, operation: dict) -> dict[int, str]:
        requires_auth = {} not in self.get_auth()
        statuses = {}
        has_query = any(p.get("in") == "query" for p in operation.get("parameters", []))
        if operation.get("requestBody") or has_query or self.method in _WRITE_METHODS:
            statuses[400] = "The request is malformed or a value is invalid; `errors` names each field."
        if requires_auth:
            statuses[401] = "No valid credentials (Authorization: Token …, or a session)."
            statuses[403] = "Authenticated, but not allowed to do this."
        if "{" in self.path:
            statuses[404] = "Nothing with that id, or something the request refers to does not exist."
        statuses[406] = "The Accept header names no type this endpoint answers with (application/json)."
        if self.method in _WRITE_METHODS:
            statuses[409] = "The request conflicts with what is stored (a name already taken, a state that forbids it)."
        if self.method in _WRITE_METHODS:
            statuses[413] = f"The request body is larger than {MAX_REQUEST_BODY_BYTES:,} bytes."
            statuses[415] = "The request body is not application/json."
        statuses[500] = "An internal error; `correlation_id` identifies it in the service's log."
        # A view that can answer more (e.g. 404 for a name given in the query) says so itself.
        statuses.update(getattr(self.view, "extra_error_statuses", None) or {})
        return dict(sorted(statuses.items()))

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        error = ResolvedComponent(name="Error", type=ResolvedComponent.SCHEMA, object="Error", schema=ERROR_SCHEMA)
        self.registry.register_on_missing(error)
        responses = operation["responses"]
        for status_code, description in self._error_statuses(operation).items():
            responses.setdefault(
                str(status_code),
                {"description": description, "content": {"application/json": {"schema": error.ref}}},
            )
        operation["responses"] = dict(sorted(responses.items()))
        for parameter in operation.get("parameters", []):
            _forbid_nul(parameter.get("schema", {}))
        return operation

    def _postprocess_serializer_schema(self, schema, serializer, direction):
        schema = super()._postprocess_serializer_schema(schema, serializer, direction)
        if direction == "request":
            schema.update(getattr(serializer, "openapi_extra", None) or {})
            _forbid_nul(schema)
        else:
            # Patterns are rules for input; what was stored before a rule existed is still answered.
            for prop in (schema.get("properties") or {}).values():
                prop.pop("pattern", None)
        return schema

    def _get_request_body(self, direction="request"):
        request_body = super()._get_request_body(direction)
        if request_body and getattr(self.get_request_serializer(), "openapi_body_required", False):
            request_body["required"] = True
        return request_body

    def _insert_field_validators(self, field, schema):
        super()._insert_field_validators(field, schema)
        # drf-spectacular offers blank as a second oneOf branch for patterned fields; when the
        # pattern already accepts "", "" would match both branches and be invalid under oneOf.
        branches = schema.get("oneOf")
        if (
            isinstance(branches, list)
            and len(branches) == 2
            and branches[1] == {"type": "string", "maxLength": 0}
            and "format" not in branches[0]
            and branches[0].get("minLength", 0) == 0
            and re.search(branches[0].get("pattern", ""), "") is not None
        ):
            schema.update(schema.pop("oneOf")[0])

    def _resolve_path_parameters(self, variables):
        parameters = super()._resolve_path_parameters(variables)
        lookup_schema = getattr(self.view, "lookup_schema", None)
        lookup_name = getattr(self.view, "lookup_url_kwarg", None) or getattr(self.view, "lookup_field", None)
        # drf-spectacular shows a `pk` lookup as `id` (SCHEMA_COERCE_PATH_PK).
        names = {lookup_name, "id"} if lookup_name == "pk" else {lookup_name}
        for parameter in parameters:
            if lookup_schema is not None and parameter["name"] in names:
                parameter["schema"] = dict(lookup_schema)
                parameter["description"] = getattr(self.view, "lookup_description", parameter.get("description", ""))
        return parameters
