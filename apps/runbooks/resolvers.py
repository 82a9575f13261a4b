"""Turn what authors write (emails, empty fields) into what PagerDuty wants (ids, references)."""

import re
from dataclasses import dataclass

from apps.incidents.models import Incident
from apps.oncall.selectors import oncall_responder_type, oncall_schedules_named, oncall_user_id_for_email
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
        mapped = selectors.service_for(self._mappings()[0], self.incident.service)
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
        return payloads.urgency_for_severity(self.incident.severity, self._mappings()[1])

    def _mappings(self) -> tuple[dict[str, str], dict[int, str]]:
        # Service and urgency mappings in one statement, once per connection for the run's
        # execution (as its connection row is): a create step needs both before its request.
        key = ("mappings", self.connection.pk)
        if key not in self.cache:
            # Read with the connection where the database could (connection_get(with_mappings=True)).
            known = getattr(self.connection, "mappings", None)
            self.cache[key] = known if known is not None else selectors.mappings_for(connection=self.connection)
        return self.cache[key]

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
        # Imported on-call users answer without a request; PagerDuty is asked only for the rest.
        imported = oncall_user_id_for_email(connection=self.connection, email=email)
        return imported or self._lookup_user_id(email, field=field)

    def _lookup_user_id(self, email: str, *, field: str) -> str:
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
            self.cache[key] = self._responder_type(value, field=field)
        return value, self.cache[key]

    def priority_id(self, value: str, *, field: str) -> str:
        """A priority's id from its name (P1) or id, through GET /priorities once per run."""
        value = value.strip()
        key = ("priorities", self.connection.pk)
        if key not in self.cache:
            self.cache[key] = self._priorities()
        priorities = self.cache[key]
        for priority in priorities:
            if priority.get("id") == value:
                return value
        named = [p for p in priorities if (p.get("name") or "").lower() == value.lower() and p.get("id")]
        if named:
            return named[0]["id"]
        if not priorities:
            raise StepFailed(
                f"{field}: the PagerDuty account of connection {self.connection.name!r} has no priorities "
                "(GET /priorities lists none); turn on incident priorities in PagerDuty or remove this step",
                field=field,
            )
        names = ", ".join(p.get("name") or p.get("id") or "?" for p in priorities)
        raise StepFailed(
            f"{field}: no PagerDuty priority is named {value!r} or has that id; the account has {names}", field=field
        )

    def _priorities(self) -> list:
        try:
            return self.client.list_priorities()
        except PagerDutyNotFound:
            # PagerDuty answers 404 when priorities are turned off on the account.
            return []

    def schedule_id(self, value: str, *, field: str) -> str:
        """A schedule id as given, or the id of the imported schedule with that name (or local alias)."""
        value = value.strip()
        found = oncall_schedules_named(connection=self.connection, name=value)
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise StepFailed(
                f"{field}: {len(found)} imported schedules are named {value!r} ({', '.join(found)}); use the id",
                field=field,
            )
        if PAGERDUTY_ID.match(value):
            return value
        raise StepFailed(
            f"{field}: no imported schedule is named {value!r} (connection {self.connection.name!r}) and it is "
            "not a PagerDuty id; import schedules with the sync wizard or give the schedule's id",
            field=field,
        )

    def _responder_type(self, value: str, *, field: str) -> str:
        imported = oncall_responder_type(connection=self.connection, pagerduty_id=value)
        if imported in _TYPES:
            return _TYPES[imported]
        # PagerDuty ids do not say what they point at; a user lookup settles it in one request.
        try:
            self.client.get_user(value)
            return payloads.USER
        except PagerDutyNotFound:
            return payloads.ESCALATION_POLICY


# --- dry run -------------------------------------------------------------------------------------


def email_placeholder(email: str) -> str:
    return f"<user id for {email}>"


@dataclass(frozen=True)
class Placeholder:
    value: str
    field: str
    reason: str

    def as_dict(self) -> dict:
        return {"value": self.value, "field": self.field, "reason": self.reason}


class ReadOnlyClient:
    """The only PagerDuty calls a dry run may make: user look-ups. Anything else (a write, or a
    read a later change adds to the resolver) fails here instead of reaching the network."""

    def __init__(self, client):
        self._client = client

    def find_users(self, *, query: str) -> list:
        return self._client.find_users(query=query)

    def get_user(self, user_id: str) -> dict:
        return self._client.get_user(user_id)

    def list_priorities(self) -> list:
        return self._client.list_priorities()

    def __getattr__(self, name):
        raise AttributeError(f"a dry run makes no {name!r} call to PagerDuty")


class DryRunResolver(LiveResolver):
    """Resolves what LiveResolver resolves, without side effects.

    Mappings, urgency and links come from the database exactly as in a live run. Emails become
    ids through imported on-call users; failing that, through PagerDuty's read-only user look-up
    when the caller allows network reads (dry run); otherwise (preview as you type) into a marked
    placeholder. `linked_incident` overrides the database link when an earlier step of the same
    dry run would have created one (its id is then a placeholder too).
    """

    def __init__(
        self,
        *,
        incident: Incident,
        connection: PagerDutyConnection,
        client=None,
        allow_reads: bool = False,
        linked_incident: str | None = None,
        cache: dict | None = None,
    ):
        self.allow_reads = bool(allow_reads and client is not None)
        super().__init__(
            incident=incident,
            connection=connection,
            client=ReadOnlyClient(client) if self.allow_reads else None,
            cache=cache,
        )
        self.linked_incident = linked_incident
        # What the current step could not know for real; the dry run reads and resets it per step.
        self.placeholders: list[Placeholder] = []
        self.notes: list[str] = []

    def linked_incident_id(self) -> str:
        if self.linked_incident is not None:
            if self.linked_incident.startswith("<"):
                self.placeholders.append(
                    Placeholder(
                        self.linked_incident,
                        "incident_id",
                        "the PagerDuty incident an earlier step of this run creates: known only once it has run",
                    )
                )
            return self.linked_incident
        return super().linked_incident_id()

    def user_id(self, value: str, *, field: str) -> str:
        resolved = super().user_id(value, field=field)
        if resolved == email_placeholder(value.strip()):
            self.placeholders.append(
                Placeholder(
                    resolved,
                    field,
                    f"PagerDuty user id of {value.strip()}: looked up when the step runs "
                    "(the preview sends no request to PagerDuty; the dry run does this read-only look-up)",
                )
            )
        return resolved

    def _lookup_user_id(self, email: str, *, field: str) -> str:
        if self.allow_reads:
            return super()._lookup_user_id(email, field=field)
        return email_placeholder(email)

    def priority_id(self, value: str, *, field: str) -> str:
        if self.allow_reads:
            return super().priority_id(value, field=field)
        value = value.strip()
        if PAGERDUTY_ID.match(value):
            return value
        placeholder = f"<priority id for {value}>"
        self.placeholders.append(
            Placeholder(
                placeholder,
                field,
                f"PagerDuty priority {value}: looked up with GET /priorities when the step runs "
                "(the preview sends no request to PagerDuty; the dry run does this read-only look-up)",
            )
        )
        return placeholder

    def responder(self, value: str, *, field: str, explicit_type: str = "") -> tuple[str, str]:
        value, explicit_type = value.strip(), (explicit_type or "").strip()
        if explicit_type or "@" in value or not PAGERDUTY_ID.match(value):
            return super().responder(value, field=field, explicit_type=explicit_type)
        imported = oncall_responder_type(connection=self.connection, pagerduty_id=value)
        if imported in _TYPES:
            return value, _TYPES[imported]
        if self.allow_reads:
            return super().responder(value, field=field, explicit_type=explicit_type)
        # Not cached: every step that relies on the guess must say so.
        self.notes.append(
            f"{field}: whether {value} is a user or an escalation policy is looked up when the step runs; "
            "this preview assumes a user. Set “Responder type” to be sure, or use Dry run, which looks it up."
        )
        return value, payloads.USER
