"""A local PagerDuty stand-in over real HTTP, for end-to-end tests, the demo and benchmarks.

Pure Python (no Django): build a SandboxState, fill it with seed_account(), serve it with
SandboxServer. `python manage.py pagerduty_sandbox` wraps the same pieces.
"""

from .contract import ContractChecker, events_spec_path, rest_spec_path
from .seed import seed_account
from .server import WELL_KNOWN, SandboxServer
from .state import (
    ADMIN_EMAIL,
    ADMIN_USER_ID,
    CHECKOUT_ESCALATION_POLICY_ID,
    CHECKOUT_INTEGRATION_KEY,
    CHECKOUT_SCHEDULE_ID,
    CHECKOUT_SERVICE_ID,
    DEDUP_ERROR,
    DEFAULT_TOKEN,
    PRIORITY_IDS,
    RESPONDER_EMAIL,
    RESPONDER_USER_ID,
    SRE_TEAM_ID,
    ApiError,
    Faults,
    SandboxState,
)

__all__ = [
    "ADMIN_EMAIL",
    "ADMIN_USER_ID",
    "CHECKOUT_ESCALATION_POLICY_ID",
    "CHECKOUT_INTEGRATION_KEY",
    "CHECKOUT_SCHEDULE_ID",
    "CHECKOUT_SERVICE_ID",
    "DEDUP_ERROR",
    "DEFAULT_TOKEN",
    "PRIORITY_IDS",
    "RESPONDER_EMAIL",
    "RESPONDER_USER_ID",
    "SRE_TEAM_ID",
    "WELL_KNOWN",
    "ApiError",
    "ContractChecker",
    "Faults",
    "SandboxServer",
    "SandboxState",
    "events_spec_path",
    "rest_spec_path",
    "seed_account",
]
