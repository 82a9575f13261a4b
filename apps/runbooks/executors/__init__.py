from apps.runbooks.executors import pagerduty  # noqa: F401  (registers the PagerDuty actions)
from apps.runbooks.executors.base import (
    ActionSpec,
    FieldSpec,
    PlannedRequest,
    StepContext,
    StepFailed,
    StepSkipped,
    all_actions,
    get_action,
)

__all__ = [
    "ActionSpec",
    "FieldSpec",
    "PlannedRequest",
    "StepContext",
    "StepFailed",
    "StepSkipped",
    "all_actions",
    "get_action",
]
