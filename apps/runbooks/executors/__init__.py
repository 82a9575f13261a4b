from apps.runbooks.executors import (
    control,  # noqa: F401  (registers the control steps)
    pagerduty,  # noqa: F401  (registers the PagerDuty actions)
    pagerduty_changes,  # noqa: F401  (incident changes, notes, overrides)
    pagerduty_events,  # noqa: F401  (registers the Events API v2 actions)
)
from apps.runbooks.executors.base import (
    TARGET_CHANNEL,
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
    stored_inputs,
    uses_channel,
)

__all__ = [
    "TARGET_CHANNEL",
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
    "stored_inputs",
    "uses_channel",
]
