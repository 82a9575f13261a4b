"""The runbook list says when a runbook runs in words: "Status → Investigating · SEV0–SEV1"."""

from types import SimpleNamespace

import pytest
from django.core.management import call_command

from apps.runbooks.describe import severities_text, when_text

REPO_RUNBOOKS = "runbooks"


def runbook(on="status_changed", to=(), before=(), severity=(), services=(), environments=()):
    return SimpleNamespace(
        trigger_on=on,
        trigger_to=list(to),
        trigger_from=list(before),
        condition_severity=list(severity),
        condition_services=list(services),
        condition_environments=list(environments),
    )


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (runbook(to=["Investigating"], severity=[0, 1]), "Status → Investigating · SEV0–SEV1"),
        (runbook(to=["Resolved"]), "Status → Resolved"),
        (runbook(before=["Investigating"], to=["Resolved", "Closed"]), "Status Investigating → Resolved / Closed"),
        (runbook(), "Any status change"),
        (runbook(on="severity_changed", severity=[0, 1]), "Severity changes · SEV0–SEV1"),
        (runbook(on="created", services=["checkout", "search"]), "Incident created · service checkout, search"),
        (runbook(on="manual", environments=["production"]), "Manual only · production"),
    ],
)
def test_when_text(spec, text):
    assert when_text(spec) == text


def test_severities_make_ranges():
    assert severities_text([3, 0, 1]) == "SEV0–SEV1, SEV3"
    assert severities_text([2]) == "SEV2"
    assert severities_text([0, 1, 2, 3, 4]) == "SEV0–SEV4"


@pytest.mark.django_db
def test_the_admin_list_shows_it(root_admin):
    call_command("load_runbooks", REPO_RUNBOOKS, stdout=None)
    page = root_admin.get("/admin/runbooks/runbook/").content.decode()
    assert "Runs when" in page
    assert "Status → Investigating · SEV0–SEV1 · production" in page
    assert "Severity changes · SEV0–SEV1" in page
