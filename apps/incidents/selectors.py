"""Finding incidents by what people and programs call them: the UUID or the short id (INC-12)."""

import re
import uuid

from apps.core.errors import DomainError, NotFound
from apps.core.limits import INCIDENT_NUMBER_MAX
from apps.incidents.models import Incident

# The one spelling of an incident reference, shared with the OpenAPI schema (ECMAScript-safe).
INCIDENT_REF_PATTERN = (
    r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[Ii][Nn][Cc]-[0-9]{1,10})$"
)
INCIDENT_REF_DESCRIPTION = "The incident's UUID or its short id (INC-12)."
_REF = re.compile(INCIDENT_REF_PATTERN.removesuffix("$") + r"\Z")


def parse_incident_ref(ref, *, field: str = "incident") -> uuid.UUID | int:
    """The UUID, or the short id's number. Only ASCII digits: "INC-²" is not a short id."""
    text = ref if isinstance(ref, str) else None
    if text is None or not _REF.match(text):
        shown = repr(ref) if len(repr(ref)) <= 60 else repr(ref)[:60] + "…"
        raise DomainError(f"Not an incident id: {shown}; expected a UUID or a short id like INC-12", field=field)
    if text[:4].upper() == "INC-":
        return int(text[4:])
    return uuid.UUID(text)


def incident_get(*, ref, field: str = "incident", queryset=None) -> Incident:
    """The incident `ref` names, or NotFound (404) naming the field; a malformed ref is a DomainError."""
    key = parse_incident_ref(ref, field=field)
    queryset = Incident.objects.all() if queryset is None else queryset
    incident = None
    if isinstance(key, uuid.UUID):
        incident = queryset.filter(pk=key).first()
    elif key <= INCIDENT_NUMBER_MAX:
        incident = queryset.filter(number=key).first()
    if incident is None:
        raise NotFound(f"No incident {ref}", field=field)
    return incident


_SEARCH_SHORT_ID = re.compile(r"\s*(?:[Ii][Nn][Cc]-?)?([0-9]{1,10})\s*\Z")


def incident_number_from_search(term: str) -> int | None:
    """The incident number in an admin search for a short id ("INC-12", "inc-12", "12"), or None."""
    match = _SEARCH_SHORT_ID.match(term or "")
    if match is None or int(match.group(1)) > INCIDENT_NUMBER_MAX:
        return None
    return int(match.group(1))
