from datetime import UTC, datetime

from apps.core.sql import hold_prefetched
from apps.incidents.models import Incident, IncidentEvent, IncidentEventKind
from apps.runbooks import matcher, templating
from apps.runbooks.executors import get_action
from apps.runbooks.models import Runbook, RunbookRun, RunStatus, Step, StepRun
from apps.runbooks.resolvers import linked_incident_id


def runbooks_matching_event(*, event: IncidentEvent) -> list[Runbook]:
    # Manual runs too: a runbook disabled after someone asked for it does not run.
    candidates = Runbook.objects.filter(enabled=True)
    # Narrowed in SQL to the runbooks that can match at all (the event kind's trigger, or the one
    # asked for by name), and the steps read for the matching ones only: an event no runbook fires
    # on (most `created` ones) costs one small query, and no runbook or step of another trigger is
    # built. The matcher still decides.
    if event.kind == IncidentEventKind.MANUAL:
        candidates = candidates.filter(slug=event.runbook_slug)
    else:
        candidates = candidates.filter(trigger_on__in=matcher.triggers_for(event.kind))
    return [rb for rb in _with_steps(candidates) if matcher.runbook_matches(rb, event, event.incident)]


def _with_steps(runbooks) -> list[Runbook]:
    """The runbooks of the queryset, each holding its steps as prefetch_related("steps") would,
    read in one statement instead of two: a LEFT JOIN, a runbook without steps comes with none.
    Every row of a runbook repeats its columns; a matching runbook has a handful of steps."""
    own = [field.attname for field in Runbook._meta.concrete_fields]
    step_fields = Step._meta.concrete_fields
    # The step's columns through the join, its runbook's key taken from the runbook's own.
    joined = [f"steps__{field.name}" for field in step_fields if field.name != "runbook"]
    step_names = [field.attname for field in step_fields]
    rows = runbooks.order_by("slug", "steps__position", "steps__id").values_list(*own, *joined)
    by_pk: dict = {}
    held: dict = {}
    for row in rows:
        runbook = by_pk.get(row[0])
        if runbook is None:
            runbook = by_pk[row[0]] = Runbook.from_db(rows.db, own, row[: len(own)])
            held[runbook.pk] = []
        values = iter(row[len(own) :])
        step_values = [runbook.pk if field.name == "runbook" else next(values) for field in step_fields]
        if step_values[0] is not None:
            step = Step.from_db(rows.db, step_names, step_values)
            step.runbook = runbook
            held[runbook.pk].append(step)
    for runbook in by_pk.values():
        hold_prefetched(runbook, "steps", held[runbook.pk])
    return list(by_pk.values())


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
        # Only for runbooks started by a PagerDuty event: elsewhere {{PagerDuty.*}} is an unknown variable.
        **(
            {"PagerDuty": templating.pagerduty_event_context(run.event.details or {})}
            if run.event.kind == IncidentEventKind.PAGERDUTY_EVENT
            else {}
        ),
    }


def template_names_for_step(*, earlier_steps) -> list[str]:
    """Every variable a step's templates may use: Activity, pagerduty, and earlier steps' outputs."""
    # PagerDuty.* is checked against the trigger by validate_pagerduty_variables (runbook level).
    names = templating.activity_names() + templating.pagerduty_names() + templating.pagerduty_event_names()
    for step in earlier_steps:
        try:
            outputs = get_action(step.action).outputs
        except Exception:
            continue
        names += [f"steps.{step.key}.{output}" for output in outputs]
    return names


def step_runs_for(*, run: RunbookRun) -> list[StepRun]:
    return list(run.step_runs.order_by("position"))


# --- waiting runs ----------------------------------------------------------------------------------

PENDING_APPROVALS_LIMIT = 200


def approvals_pending(*, incident: Incident | None = None) -> list[StepRun]:
    """Approval steps waiting for a decision, soonest deadline first."""
    waiting = StepRun.objects.filter(status=RunStatus.WAITING, action="runbook.approval")
    if incident is not None:
        waiting = waiting.filter(run__incident=incident)
    return list(
        waiting.select_related("run__runbook", "run__incident").order_by("wait_until")[:PENDING_APPROVALS_LIMIT]
    )


def approval_pending_for_run(*, run: RunbookRun) -> StepRun | None:
    return (
        run.step_runs.filter(status=RunStatus.WAITING, action="runbook.approval")
        .select_related("run__runbook", "run__incident")
        .first()
    )


# --- a step's HTTP exchanges: its own request apart from the look-ups around it ------------------

LOOKUP = "lookup"
REQUEST = "request"
READ_METHODS = ("GET", "HEAD")


def _without_query(url: str) -> str:
    return (url or "").split("?", 1)[0].rstrip("/")


def exchange_is_own(*, exchange, request: dict) -> bool:
    """Whether `exchange` is an attempt at the step's own request, rather than a look-up made to
    plan it (GET /users/…) or to settle an ambiguous write (GET /incidents?incident_key=…).

    Actions write nothing but their own request, so any write is the step's; a read is the step's
    only when the step's request is that read (same method and path)."""
    method = exchange.method.upper()
    if method not in READ_METHODS:
        return True
    if not request or not request.get("method"):
        return False
    return method == str(request["method"]).upper() and _without_query(exchange.url) == _without_query(
        request.get("url", "")
    )


def step_run_exchanges(*, step_run: StepRun, exchanges=None) -> dict:
    """The step's exchanges in order, each labelled `role` (request or lookup) and numbered
    `number` 1..n within its role: {"requests": [...], "lookups": [...], "all": [...]}.

    Uses the prefetched `step_run.exchanges` when there is one, so a run page costs no query per step.
    """
    rows = sorted(step_run.exchanges.all() if exchanges is None else exchanges, key=lambda e: e.pk or 0)
    requests, lookups = [], []
    for exchange in rows:
        own = exchange_is_own(exchange=exchange, request=step_run.request)
        group = requests if own else lookups
        exchange.role = REQUEST if own else LOOKUP
        exchange.number = len(group) + 1
        group.append(exchange)
    return {"requests": requests, "lookups": lookups, "all": rows}


def step_run_response(*, requests: list) -> dict:
    """The answer to the step's own request (its last attempt), or {} when the step sent none."""
    if not requests:
        return {}
    last = requests[-1]
    return {"status": last.status, "body": last.response_body, "error": last.error}
