"""Turn what authors write (emails, empty fields) into what PagerDuty wants (ids, references)."""

import re

from apps.incidents.models import Incident
from apps.pagerduty import payloads, selectors
from apps.pagerduty.errors import PagerDutyNotFound
from apps.pagerduty.models import PagerDutyConnection, Urgency
from apps.runbooks.executors.base import StepFailed
from apps.runbooks.models import PagerDutyIncidentLink

PAGERDUTY_ID = re.compile(r"^P[A-Z0-9]{5,}$")
_TYPES = {"user": payloads.USER, "escalation_policy": payloads.ESCALATION_POLICY}


def linked_incident_id(*, incident: Incident, connection: PagerDutyConnection | None = None) -> str:
    links = PagerDutyIncidentLink.objects.filter(incident=incident)
    preferred = links.filter(connection=connection) if connection is not None else links
    link = preferred.order_by("-created_at").first() or links.order_by("-created_at").first()
    return link.pagerduty_incident_id if link else ""


class LiveResolver:
    """Resolves through local data first (mappings, links, imported users), then PagerDuty."""

    def __init__(self, *, incident: Incident, connection: PagerDutyConnection, client, cache: dict | None = None):
        self.incident = incident
        self.connection = connection
        self.client = client
        # Shared across the steps of one run so one email costs at most one lookup.
        self.cache = cache if cache is not None else {}

    def linked_incident_id(self) -> str:
        return linked_incident_id(incident=self.incident, connection=self.connection)

    def service_id(self, explicit: str) -> str:
        if explicit:
            return explicit
        mapped = selectors.service_mapping_lookup(connection=self.connection, service=self.incident.service)
        if not mapped:
            raise StepFailed(
                f"No PagerDuty service for service {self.incident.service!r}: set service_id on the step or add a "
                f"service mapping (or a default one) to connection {self.connection.name!r}",
                field="service_id",
            )
        return mapped

    def urgency(self, explicit: str) -> str:
        if explicit:
            if explicit not in Urgency.values:
                raise StepFailed(f"urgency must be high or low, not {explicit!r}", field="urgency")
            return explicit
        return selectors.urgency_for(severity=self.incident.severity)

    def user_id(self, value: str, *, field: str) -> str:
        value = value.strip()
        if PAGERDUTY_ID.match(value):
            return value
        if "@" not in value:
            raise StepFailed(f"{field} must be a PagerDuty user id or an email, not {value!r}", field=field)
        key = ("user", value.lower())
        if key not in self.cache:
            self.cache[key] = self._user_id_for_email(value, field=field)
        return self.cache[key]

    def _user_id_for_email(self, email: str, *, field: str) -> str:
        for user in self.client.find_users(query=email):
            if (user.get("email") or "").lower() == email.lower():
                return user["id"]
        raise StepFailed(f"{field}: no PagerDuty user has the email {email!r}", field=field)

    def responder(self, value: str, *, field: str, explicit_type: str = "") -> tuple[str, str]:
        value = value.strip()
        explicit_type = (explicit_type or "").strip()
        if explicit_type and explicit_type not in _TYPES:
            raise StepFailed(f"responder_type must be user or escalation_policy, not {explicit_type!r}", field=field)
        if "@" in value:
            return self.user_id(value, field=field), payloads.USER
        if not PAGERDUTY_ID.match(value):
            raise StepFailed(f"{field} must be a PagerDuty id or a user's email, not {value!r}", field=field)
        if explicit_type:
            return value, _TYPES[explicit_type]
        key = ("responder_type", value)
        if key not in self.cache:
            # PagerDuty ids do not say what they point at; a user lookup settles it in one request.
            try:
                self.client.get_user(value)
                self.cache[key] = payloads.USER
            except PagerDutyNotFound:
                self.cache[key] = payloads.ESCALATION_POLICY
        return value, self.cache[key]
