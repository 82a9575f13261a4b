from datetime import UTC, datetime

from django.db import router
from django.db.models import Exists, OuterRef

from apps.core.sql import CompiledQuery, hold_prefetched
from apps.incidents.models import Incident, IncidentEvent, IncidentEventKind
from apps.runbooks import matcher, templating
from apps.runbooks.executors import get_action
from apps.runbooks.models import PagerDutyIncidentLink, Runbook, RunbookRun, RunStatus, Step, StepRun
from apps.runbooks.resolvers import linked_incident_id

# The event being dispatched with its incident, and whether the incident has any PagerDuty link (a
# run executed right away on an incident that has none need not look for one before paging).
_EVENT_FIELDS = [field.attname for field in IncidentEvent._meta.concrete_fields]
_INCIDENT_FIELDS = [field.attname for field in Incident._meta.concrete_fields]
_EVENT_PLACEHOLDER = -(2**62) + 22  # never a key: stands for the event's in the compiled statement


def _event_query(_shape, event_id):
    linked = Exists(PagerDutyIncidentLink.objects.filter(incident_id=OuterRef("incident_id")))
    incident = [f"incident__{field.name}" for field in Incident._meta.concrete_fields]
    return (
        IncidentEvent.objects.filter(pk=event_id)
        .annotate(linked=linked)
        .values_list(*_EVENT_FIELDS, *incident, "linked")
    )


_EVENT = CompiledQuery(_event_query, _EVENT_PLACEHOLDER)


def event_for_dispatch(*, event_id: int) -> IncidentEvent | None:
    """The event with its incident (as select_related would hold it) and `incident_linked`, in one
    statement Django compiles once per connection; None when there is no such event."""
    found = _EVENT.rows(None, int(event_id))
    if not found:
        return None
    [row] = found
    db = router.db_for_read(IncidentEvent)
    event = IncidentEvent.from_db(db, _EVENT_FIELDS, row[: len(_EVENT_FIELDS)])
    event.incident = Incident.from_db(db, _INCIDENT_FIELDS, row[len(_EVENT_FIELDS) : -1])
    event.incident_linked = row[-1]
    return event


def runbooks_matching_event(*, event: IncidentEvent) -> list[Runbook]:
    # Manual runs too: a runbook disabled after someone asked for it does not run.
    # Narrowed in SQL to the runbooks that can match at all (the event kind's trigger, or the one
    # asked for by name), and the steps read for the matching ones only: an event no runbook fires
    # on (most `created` ones) costs one small query, and no runbook or step of another trigger is
    # built. The matcher still decides.
    if event.kind == IncidentEventKind.MANUAL:
        rows = _RUNBOOK_NAMED.rows(None, event.runbook_slug)
    else:
        rows = _RUNBOOKS_TRIGGERED.rows(tuple(matcher.triggers_for(event.kind)))
    return [rb for rb in _with_steps(rows) if matcher.runbook_matches(rb, event, event.incident)]


# A runbook with its steps: one row per step (a LEFT JOIN; a runbook without steps is one row
# with none). The step's columns through the join, its runbook's key taken from the runbook's own.
_RUNBOOK_FIELDS = [field.attname for field in Runbook._meta.concrete_fields]
_STEP_FIELDS = Step._meta.concrete_fields
_STEP_NAMES = [field.attname for field in _STEP_FIELDS]
_SLUG_PLACEHOLDER = "\x00runbook slug\x00"  # never a slug: stands for the one asked for


def _with_steps_query(runbooks):
    joined = [f"steps__{field.name}" for field in _STEP_FIELDS if field.name != "runbook"]
    return runbooks.order_by("slug", "steps__position", "steps__id").values_list(*_RUNBOOK_FIELDS, *joined)


_RUNBOOKS_TRIGGERED = CompiledQuery(
    lambda triggers: _with_steps_query(Runbook.objects.filter(enabled=True, trigger_on__in=triggers))
)
_RUNBOOK_NAMED = CompiledQuery(
    lambda _shape, slug: _with_steps_query(Runbook.objects.filter(enabled=True, slug=slug)), _SLUG_PLACEHOLDER
)


def _with_steps(rows) -> list[Runbook]:
    """The runbooks of `rows` (_with_steps_query's), each holding its steps as
    prefetch_related("steps") would: one statement instead of two. Every row of a runbook repeats
    its columns; a matching runbook has a handful of steps."""
    own = _RUNBOOK_FIELDS
    db = router.db_for_read(Runbook)
    by_pk: dict = {}
    held: dict = {}
    for row in rows:
        runbook = by_pk.get(row[0])
        if runbook is None:
            runbook = by_pk[row[0]] = Runbook.from_db(db, own, row[: len(own)])
            held[runbook.pk] = []
        values = iter(row[len(own) :])
        step_values = [runbook.pk if field.name == "runbook" else next(values) for field in _STEP_FIELDS]
        if step_values[0] is not None:
            step = Step.from_db(db, _STEP_NAMES, step_values)
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
