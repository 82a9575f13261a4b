from apps.runbooks.executors import control, pagerduty  # noqa: F401  (registers the actions and control steps)
from apps.runbooks.executors.base import (
    Action,
    ActionSpec,
    FieldSpec,
    PlannedRequest,
    StepContext,
    StepFailed,
    StepSkipped,
    all_actions,
    get_action,
    outcome_unknown_message,
)

__all__ = [
    "Action",
    "ActionSpec",
    "FieldSpec",
    "PlannedRequest",
    "StepContext",
    "StepFailed",
    "StepSkipped",
    "all_actions",
    "get_action",
    "outcome_unknown_message",
]
