from apps.runbooks.executors import (
    pagerduty,  # noqa: F401  (registers the PagerDuty actions)
    pagerduty_changes,  # noqa: F401  (incident changes, notes, overrides)
)
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
