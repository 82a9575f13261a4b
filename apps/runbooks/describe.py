"""A runbook's trigger and conditions in words, for lists: "Status → Investigating · SEV0–SEV1"."""

SEPARATOR = " · "


def severities_text(severities) -> str:
    """[0, 1, 3] → "SEV0–SEV1, SEV3": consecutive severities as a range."""
    values = sorted({int(s) for s in severities})
    ranges: list[list[int]] = []
    for value in values:
        if ranges and value == ranges[-1][-1] + 1:
            ranges[-1].append(value)
        else:
            ranges.append([value])
    return ", ".join(f"SEV{r[0]}" if len(r) == 1 else f"SEV{r[0]}–SEV{r[-1]}" for r in ranges)


def trigger_text(runbook) -> str:
    on = runbook.trigger_on
    if on == "status_changed":
        to = " / ".join(runbook.trigger_to or [])
        before = " / ".join(runbook.trigger_from or [])
        if not to and not before:
            return "Any status change"
        return f"Status {before} → {to or 'any'}" if before else f"Status → {to}"
    return {"created": "Incident created", "severity_changed": "Severity changes", "manual": "Manual only"}.get(
        on, str(on)
    )


def conditions_text(runbook) -> str:
    parts = []
    if runbook.condition_severity:
        parts.append(severities_text(runbook.condition_severity))
    if runbook.condition_services:
        parts.append("service " + ", ".join(runbook.condition_services))
    if runbook.condition_environments:
        parts.append(", ".join(runbook.condition_environments))
    return SEPARATOR.join(parts)


def when_text(runbook) -> str:
    """Trigger and conditions together: "Status → Investigating · SEV0–SEV1 · production"."""
    return SEPARATOR.join(part for part in (trigger_text(runbook), conditions_text(runbook)) if part)
