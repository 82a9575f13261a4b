from datetime import UTC, datetime

from apps.incidents.models import Incident, IncidentEvent
from apps.runbooks import matcher, templating
from apps.runbooks.executors import get_action
from apps.runbooks.models import Runbook, RunbookRun, RunStatus, StepRun
from apps.runbooks.resolvers import linked_incident_id


def runbooks_matching_event(*, event: IncidentEvent) -> list[Runbook]:
    # Manual runs too: a runbook disabled after someone asked for it does not run.
    candidates = Runbook.objects.filter(enabled=True).prefetch_related("steps")
    return [rb for rb in candidates if matcher.runbook_matches(rb, event, event.incident)]


def _iso(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def activity_for(*, incident: Incident) -> dict:
    """The `Activity` variables exactly as templates see them."""
    return {
        "id": str(incident.id),
        "short_id": incident.short_id,
        "title": incident.title,
        "summary": incident.summary,
        "severity": incident.severity,
        "severity_label": incident.severity_label,
        "status": incident.status,
        "service": incident.service,
        "environment": incident.environment,
        "owner": incident.owner,
        "created_at": _iso(incident.created_at),
        "resolved_at": _iso(incident.resolved_at),
        "url": incident.url,
    }


def template_context_for_run(*, run: RunbookRun, step_runs=None, templates=None) -> dict:
    """What a step's templates see. `step_runs`: the run's steps as the caller holds them (else read).
    `templates`: the ones about to be rendered; the linked PagerDuty incident is looked up only when
    one of them can name it (no template mentions `pagerduty`: the value is never read)."""
    if step_runs is None:
        step_runs = run.step_runs.all()
    mentioned = templates is None or any("pagerduty" in str(template) for template in templates)
    return {
        "Activity": activity_for(incident=run.incident),
        "steps": {step_run.key: step_run.outputs for step_run in step_runs if step_run.status == RunStatus.SUCCEEDED},
        "pagerduty": {"incident_id": linked_incident_id(incident=run.incident) if mentioned else ""},
    }


def template_names_for_step(*, earlier_steps) -> list[str]:
    """Every variable a step's templates may use: Activity, pagerduty, and earlier steps' outputs."""
    names = templating.activity_names() + templating.pagerduty_names()
    for step in earlier_steps:
        try:
            outputs = get_action(step.action).outputs
        except Exception:
            continue
        names += [f"steps.{step.key}.{output}" for output in outputs]
    return names


def step_runs_for(*, run: RunbookRun) -> list[StepRun]:
    return list(run.step_runs.order_by("position"))
