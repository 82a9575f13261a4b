"""Every size limit the service enforces, in one place (the README's "Limits" table lists them).

A limit exists so that no single request, runbook file or template can use unbounded memory or
CPU in the web process or a worker. Each is checked where the input enters — request middleware
and parser, serializers and model validators, the YAML loader, the templating module — and a
refusal always says which field broke which limit.
"""

KIB = 1024
MIB = 1024 * KIB

# --- HTTP requests ------------------------------------------------------------------------------
MAX_REQUEST_BODY_BYTES = 1 * MIB  # larger bodies answer 413, with or without a Content-Length
MAX_JSON_DEPTH = 32  # nesting of arrays/objects in a JSON request body
MAX_PAGE_SIZE = 500  # ?limit= is clamped to this
MAX_OFFSET = 100_000  # ?offset= beyond this answers 400: filter instead of paging that deep

# --- incidents ----------------------------------------------------------------------------------
INCIDENT_TITLE_MAX = 255
INCIDENT_SUMMARY_MAX = 10_000
INCIDENT_SERVICE_MAX = 100
INCIDENT_ENVIRONMENT_MAX = 100
INCIDENT_OWNER_MAX = 254  # an email address
# Short ids are INC-<number>; the number is a PostgreSQL integer.
INCIDENT_NUMBER_MAX = 2**31 - 1

# --- runbooks -----------------------------------------------------------------------------------
RUNBOOK_SLUG_MAX = 100
RUNBOOK_NAME_MAX = 200
RUNBOOK_DESCRIPTION_MAX = 10_000
RUNBOOK_MAX_STEPS = 50
CONDITION_LIST_MAX = 100  # entries in conditions.services / conditions.environments

# --- templates (each `with` value of a step) ----------------------------------------------------
TEMPLATE_MAX_CHARS = 10_000
TEMPLATE_MAX_SECTION_DEPTH = 8  # {{#a}}{{#b}}…{{/b}}{{/a}}
TEMPLATE_MAX_TAGS = 500
RENDERED_FIELD_MAX_CHARS = 100_000  # one field's rendered value, at run time

# --- on-call data imported from PagerDuty: what people add locally ---------------------------------
ONCALL_NOTES_MAX = 10_000

# --- PagerDuty connections ----------------------------------------------------------------------
PAGERDUTY_API_KEY_MAX = 200  # PagerDuty's keys are 20–40 characters

# --- runbooks as code (YAML) --------------------------------------------------------------------
YAML_FILE_MAX_BYTES = 1 * MIB
YAML_MAX_NODES = 20_000  # per document, counted after expanding aliases (a "billion laughs" stops here)

# --- run records --------------------------------------------------------------------------------
STORED_BODY_MAX_CHARS = 64 * KIB  # request/response bodies kept on a run, as JSON text
