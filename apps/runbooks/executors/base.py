"""What an action is: its fields (with help and defaults), its outputs, and how it runs.

An action is split in two so the dry run and the live run share one code path:
`plan()` turns rendered fields into the exact request (pure apart from lookups made through the
resolver), `execute()` sends it and interprets the answer.
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


@dataclass(frozen=True)
class ActionSpec:
    name: str
    label: str
    category: str
    description: str
    fields: tuple[FieldSpec, ...]
    outputs: dict[str, str]
    implementation: Any = None

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
            merged[spec.name] = spec.default if value in (None, "") else value
        return merged


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
