"""What an action is: its fields (with help and defaults), its outputs, and how it runs.

An action is split so the dry run and the live run share one code path, and so a write whose
outcome is unknown is settled by asking PagerDuty rather than by guessing:
`plan()` turns rendered fields into the exact request (pure apart from read-only look-ups made
through the resolver), `execute()` sends it and interprets the answer, `reconcile()` finds out
whether an interrupted earlier execution already made the write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from apps.core.errors import DomainError

if TYPE_CHECKING:
    from apps.incidents.models import Incident


class StepFailed(Exception):
    """The step cannot succeed as configured; the message says what to fix."""

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(message)


class StepSkipped(Exception):
    """Nothing to do for this incident (e.g. resolving when nothing was ever paged)."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    help: str = ""
    required: bool = False
    default: str = ""
    choices: tuple[str, ...] = ()
    # Where a template must render to an email or a PagerDuty id, the picker says so.
    example: str = ""
    # "text": one template. Two fields take YAML structure (DESIGN.md): "mapping" (name → template,
    # e.g. custom_details) and "links" (a list of {href, text} mappings of templates).
    kind: str = "text"
    # "one": the field takes a single id (or email), so a save refuses `{{a}}{{b}}`; "many": ids
    # separated by commas or spaces. The editor's "Insert variable" replaces a one-id field's value.
    ids: str = ""


@dataclass(frozen=True)
class ActionSpec:
    name: str
    label: str
    category: str
    description: str
    fields: tuple[FieldSpec, ...]
    outputs: dict[str, str]
    implementation: Any = None
    # What the step sends through: a PagerDuty connection (REST API, `connection:`), or an Events
    # API channel named by the step's `channel` field (no connection).
    target: str = "connection"

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)

    def with_defaults(self, inputs: dict) -> dict:
        """The step's templates with each missing or empty field replaced by the action's default."""
        merged = {}
        for spec in self.fields:
            value = inputs.get(spec.name)
            merged[spec.name] = spec.default if value in (None, "", {}, []) else value
        return merged


TARGET_CONNECTION = "connection"
TARGET_CHANNEL = "channel"


def stored_inputs(inputs: dict) -> dict:
    """A step's `with:` as stored: every value a template string, except the structured fields'
    mappings and lists, kept as they are (leaves as strings)."""

    def leaf(value):
        if isinstance(value, dict):
            return {str(k): leaf(v) for k, v in value.items()}
        if isinstance(value, list):
            return [leaf(v) for v in value]
        return "" if value is None else str(value)

    return {str(name): leaf(value) for name, value in (inputs or {}).items()}


@dataclass
class PlannedRequest:
    method: str
    path: str
    body: dict | None
    from_email: str
    # Filled in by the live run only when the plan could be resolved without the network.
    notes: list[str] = field(default_factory=list)


class Resolver(Protocol):
    def user_id(self, value: str, *, field: str) -> str: ...

    def responder(self, value: str, *, field: str, explicit_type: str = "") -> tuple[str, str]: ...

    def linked_incident_id(self) -> str: ...

    def service_id(self, explicit: str) -> str: ...

    def urgency(self, explicit: str) -> str: ...


@dataclass
class StepContext:
    incident: Incident
    rendered: dict
    resolver: Resolver
    default_from: str = ""
    connection: Any = None
    client: Any = None
    # A previous execution of this step started and never recorded its end (worker died).
    recovering: bool = False
    step_run: Any = None
    # HTTP exchanges already recorded for this step (from a crashed earlier execution).
    previous_exchanges: list = field(default_factory=list)
    # The Events API channel of an event step (ActionSpec.target == "channel").
    channel: Any = None
    # The incident had no PagerDuty incident link when the dispatch task read it, a moment ago, and
    # no step of this execution has run since: an action may skip looking for one. (A link made by
    # another run meanwhile is PagerDuty's to deduplicate, by incident key.)
    unlinked: bool = False


class Action:
    """The three things the engine asks of an action. Subclass it for every new action.

    The engine calls `plan()` first (its look-ups are safe to repeat: the step is not yet marked
    running), marks the step `running` durably, then calls `execute()`. A step found `running`
    was interrupted during its write (the worker died): before sending again the engine calls
    `reconcile()`.
    """

    def plan(self, ctx: StepContext) -> PlannedRequest:
        raise NotImplementedError

    def execute(self, ctx: StepContext, planned: PlannedRequest) -> dict:
        raise NotImplementedError

    def reconcile(self, ctx: StepContext, planned: PlannedRequest) -> dict | None:
        """Did an interrupted earlier execution of this step already make its write?

        Return the step's outputs when PagerDuty holds the write (the step adopts it and sends
        nothing), None when it does not (the step sends it), or raise StepFailed when it cannot
        tell. An idempotent write (setting a status) returns None. The default refuses to guess,
        so an action that forgets to say can never page twice.
        """
        raise StepFailed(outcome_unknown_message(planned))


def outcome_unknown_message(planned: PlannedRequest, detail: str = "") -> str:
    text = (
        f"Outcome unknown: {planned.method} {planned.path} may have reached PagerDuty (an earlier attempt was "
        "interrupted or its answer lost) and this action cannot look it up. Not re-sent, to avoid paging twice; "
        "check the PagerDuty incident, then re-run from this step if it did not happen"
    )
    return f"{text} ({detail})" if detail else text


_REGISTRY: dict[str, ActionSpec] = {}


def register(spec: ActionSpec) -> ActionSpec:
    _REGISTRY[spec.name] = spec
    return spec


def get_action(name: str) -> ActionSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DomainError(
            f"Unknown action {name!r}; available: {', '.join(sorted(_REGISTRY))}", field="action"
        ) from None


def all_actions() -> list[ActionSpec]:
    return list(_REGISTRY.values())


def uses_channel(action: str) -> bool:
    """Whether steps of this action go through an Events API channel (and so name no connection)."""
    spec = _REGISTRY.get(action)
    return spec is not None and spec.target == TARGET_CHANNEL
