"""Dry run and live preview: what each step would send to PagerDuty, with no side effect.

The same path as the engine (`services._perform_step`): the action's defaults, the same template
context, the action's own `plan()`, the same URL and header builder and the same redaction — only
the resolver differs (`DryRunResolver`: no writes, reads only when allowed), and nothing is sent
or stored. What cannot be known before the run (an earlier step's outputs, a user id not looked
up) is a visible placeholder such as `<steps.page.incident_id>`, listed on each step.
"""

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import OperationalError

from apps.core.errors import DomainError
from apps.core.redaction import redact_data, redact_headers
from apps.incidents.models import Incident
from apps.pagerduty.client import RetryPolicy
from apps.pagerduty.errors import PagerDutyError
from apps.pagerduty.models import ServiceMapping
from apps.pagerduty.selectors import channel_get, connection_get
from apps.pagerduty.services import channel_client, connection_client
from apps.runbooks import templating
from apps.runbooks.executors import TARGET_CHANNEL, StepContext, StepFailed, StepSkipped, get_action
from apps.runbooks.executors.control import is_control
from apps.runbooks.models import OnFailure, PagerDutyIncidentLink, Runbook
from apps.runbooks.resolvers import DryRunResolver, Placeholder, linked_incident_id
from apps.runbooks.selectors import activity_for, template_names_for_step
from apps.runbooks.validation import StepDraft, runbook_warnings, validate_steps

logger = logging.getLogger(__name__)

# A dry run waits for PagerDuty far less than a live step: a person is looking at the page.
DRY_RUN_READ_RETRY = RetryPolicy(max_attempts=2, backoff_base=0.5, backoff_cap=1.0, max_announced_wait=2.0)
_STEP_OUTPUT = re.compile(r"<steps\.([a-z][a-z0-9_]*)\.([A-Za-z0-9_]+)>")


@dataclass
class StepSource:
    """A step as the dry run needs it: a saved Step or a draft from the editor."""

    key: str
    action: str
    connection: str = "default"
    inputs: dict = field(default_factory=dict)
    on_failure: str = OnFailure.STOP
    name: str = ""

    @classmethod
    def from_step(cls, step) -> "StepSource":
        return cls(
            key=step.key,
            action=step.action,
            connection=step.connection or "default",
            inputs=dict(step.inputs or {}),
            on_failure=step.on_failure,
            name=step.name,
        )


def _parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def sample_incident() -> Incident:
    """An unsaved incident whose Activity variables are the examples the data picker shows."""
    example = {name: ex for name, (_, ex) in templating.ACTIVITY_FIELDS.items()}
    return Incident(
        id=uuid.UUID(example["id"]),
        number=int(example["short_id"].removeprefix("INC-")),
        title=example["title"],
        summary=example["summary"],
        severity=int(example["severity"]),
        status=example["status"],
        service=example["service"],
        environment=example["environment"],
        owner=example["owner"],
        created_at=_parse_iso(example["created_at"]),
        resolved_at=_parse_iso(example["resolved_at"]),
    )


SAMPLE_LINKED_INCIDENT = templating.PAGERDUTY_FIELDS["incident_id"][1]


def is_sample(incident: Incident) -> bool:
    return incident._state.adding


def _output_reason(step_key: str, output: str) -> str:
    return f"output {output!r} of step {step_key!r}: known only once that step has run"


def _placeholders_in(rendered: dict, request: dict | None, resolver_found: list[Placeholder]) -> list[dict]:
    found: dict[tuple[str, str], Placeholder] = {}
    for name, value in rendered.items():
        for match in _STEP_OUTPUT.finditer(str(value)):
            found.setdefault((match.group(0), name), Placeholder(match.group(0), name, _output_reason(*match.groups())))
    for item in resolver_found:
        found.setdefault((item.value, item.field), item)
    seen_values = {value for value, _ in found}
    if request is not None:
        for match in _STEP_OUTPUT.finditer(f"{request.get('url')} {request.get('body')}"):
            if match.group(0) not in seen_values:
                seen_values.add(match.group(0))
                found[(match.group(0), "")] = Placeholder(match.group(0), "", _output_reason(*match.groups()))
    return [item.as_dict() for item in found.values()]


def _derived(*, spec, rendered: dict, body: dict | None, incident: Incident, connection) -> dict:
    """What the step decided that the author did not write: urgency, service, incident key."""
    pd_incident = (body or {}).get("incident") or {}
    derived = {}
    if "urgency" in spec.field_names and "urgency" in pd_incident:
        explicit = (rendered.get("urgency") or "").strip()
        derived["urgency"] = pd_incident["urgency"]
        derived["urgency_source"] = (
            "set on the step" if explicit else f"{incident.severity_label} → {pd_incident['urgency']} (urgency mapping)"
        )
    if "service_id" in spec.field_names and "service" in pd_incident:
        explicit = (rendered.get("service_id") or "").strip()
        if explicit:
            source = "set on the step"
        elif ServiceMapping.objects.filter(connection=connection, service=incident.service).exists():
            source = f"service mapping for {incident.service!r}"
        else:
            source = f"default service mapping (no mapping for {incident.service!r})"
        derived["service_id"] = pd_incident["service"]["id"]
        derived["service_source"] = source
    if "incident_key" in pd_incident:
        derived["incident_key"] = pd_incident["incident_key"]
    if spec.target == TARGET_CHANNEL and body:
        derived["dedup_key"] = body.get("dedup_key", "")
        if not (rendered.get("dedup_key") or "").strip() and "payload" in body:
            derived["dedup_key_source"] = "derived from the channel and the summary (the same in every run)"
        severity = (body.get("payload") or {}).get("severity")
        if severity:
            explicit = (rendered.get("severity") or "").strip()
            derived["severity"] = severity
            derived["severity_source"] = "set on the step" if explicit else f"{incident.severity_label} → {severity}"
    return derived


def _render(spec, inputs: dict, context: dict) -> tuple[dict, dict]:
    """Every field rendered on its own, so one bad field does not hide the others' values."""
    rendered, errors = {}, {}
    for name, template in spec.with_defaults(inputs).items():
        try:
            rendered[name] = templating.render_field(template, context)
        except templating.TemplateError as exc:
            errors[name] = str(exc)
    return rendered, errors


class _Run:
    """State carried from step to step, as the engine's run carries it."""

    def __init__(self, *, incident: Incident, allow_reads: bool):
        self.incident = incident
        self.allow_reads = allow_reads
        self.activity = activity_for(incident=incident)
        self.linked = SAMPLE_LINKED_INCIDENT if is_sample(incident) else linked_incident_id(incident=incident)
        # None: ask the database, as a live run would; a string: what an earlier step would have linked.
        self.linked_override: str | None = SAMPLE_LINKED_INCIDENT if is_sample(incident) else None
        self.outputs: dict[str, dict] = {}
        self.cache: dict = {}
        self.clients: dict[str, tuple] = {}
        self.failed_stop: str = ""
        self.pagerduty_event = "incident.acknowledged"

    def connection(self, name: str):
        if name not in self.clients:
            connection = connection_get(name=name)
            reads: list = []
            client = connection_client(
                connection=connection,
                on_exchange=reads.append,
                retry=DRY_RUN_READ_RETRY,
                timeout=settings.PAGERDUTY_INTERACTIVE_TIMEOUT_SECONDS,
            )
            self.clients[name] = (connection, client, reads)
        return self.clients[name]

    def channel(self, name: str):
        if ("channel", name) not in self.clients:
            channel = channel_get(name=name)
            self.clients[("channel", name)] = (channel, channel_client(channel=channel))
        return self.clients[("channel", name)]

    def context(self) -> dict:
        return {
            "Activity": self.activity,
            "steps": self.outputs,
            "pagerduty": {"incident_id": self.linked},
            # A sample event: what a runbook on: pagerduty_event would see (the picker's examples).
            "PagerDuty": {name: example for name, (_, example) in templating.PAGERDUTY_EVENT_FIELDS.items()}
            | {"event_type": self.pagerduty_event, "incident_id": self.linked or SAMPLE_LINKED_INCIDENT},
        }


def _result(step: StepSource) -> dict:
    return {
        "key": step.key,
        "name": step.name,
        "action": step.action,
        "connection": "" if is_control(step.action) else step.connection or "default",
        "status": "planned",
        "rendered": {},
        "request": None,
        "sends_request": False,
        "placeholders": [],
        "reads": [],
        "derived": {},
        "notes": [],
        "error": "",
        "field": "",
        "field_errors": {},
    }


def _dry_run_step(run: _Run, step: StepSource) -> dict:
    result = _result(step)
    if run.failed_stop:
        result["notes"].append(f"Would not run: step {run.failed_stop!r} fails first and has on_failure: stop")
    try:
        spec = get_action(step.action)
    except DomainError as exc:
        return {**result, "status": "error", "error": str(exc), "field": "action"}
    rendered, field_errors = _render(spec, step.inputs or {}, run.context())
    result["rendered"] = redact_data(rendered)
    result["field_errors"] = field_errors
    if field_errors:
        name, message = next(iter(field_errors.items()))
        result.update(status="error", error=f"{name}: {message}", field=name)
        return _with_placeholder_outputs(run, step, spec, result)
    if is_control(step.action):
        return _dry_run_control(run, step, spec, rendered, result)
    resolver = None
    reads, reads_before = [], 0
    try:
        if spec.target == TARGET_CHANNEL:
            # An event reads nothing from PagerDuty: the channel gives everything the plan needs.
            connection = None
            channel, client = run.channel((rendered.get("channel") or "").strip())
            ctx = StepContext(incident=run.incident, rendered=rendered, resolver=None, channel=channel)
        else:
            connection, client, reads = run.connection(step.connection or "default")
            reads_before = len(reads)
            resolver = DryRunResolver(
                incident=run.incident,
                connection=connection,
                client=client,
                allow_reads=run.allow_reads,
                linked_incident=run.linked_override,
                cache=run.cache,
            )
            ctx = StepContext(
                incident=run.incident,
                rendered=rendered,
                resolver=resolver,
                default_from=connection.from_email,
                connection=connection,
                client=None,
            )
        planned = spec.implementation.plan(ctx)
        request = {
            "method": planned.method,
            "url": client.api_url.rstrip("/") + planned.path,
            "headers": redact_headers(client.request_headers(True, planned.from_email)),
            "body": redact_data(planned.body),
        }
        result["notes"] += planned.notes
    except StepSkipped as exc:
        result.update(status="skipped", error=str(exc))
        # Like the engine: a skipped step produces no outputs for later steps.
        return result
    except (StepFailed, DomainError, PagerDutyError) as exc:
        result.update(status="error", error=str(exc), field=getattr(exc, "field", "") or "")
        return _with_placeholder_outputs(run, step, spec, result)
    finally:
        result["reads"] = [
            {"method": e.method, "url": e.url, "status": e.status, "error": e.error} for e in reads[reads_before:]
        ]
        if resolver is not None:
            result["notes"] += resolver.notes
            result["placeholders"] = _placeholders_in(rendered, None, resolver.placeholders)
    result.update(request=request, sends_request=True)
    result["placeholders"] = _placeholders_in(rendered, request, resolver.placeholders if resolver else [])
    result["derived"] = _derived(
        spec=spec, rendered=rendered, body=planned.body, incident=run.incident, connection=connection
    )
    reused = _open_link_reused(run, step, planned, connection)
    if reused is not None:
        result["sends_request"] = False
        result["notes"].append(
            f"PagerDuty incident {reused.pagerduty_incident_id} is already open for this incident key and "
            "service: the step reuses it and sends nothing"
        )
        run.outputs[step.key] = {
            "incident_id": reused.pagerduty_incident_id,
            "incident_number": reused.incident_number,
            "html_url": reused.html_url,
            "incident_key": reused.incident_key,
            "service_id": reused.service_id,
            "status": reused.status,
            "deduplicated": True,
        }
        return result
    if step.action == "pagerduty.create_incident":
        # From here on a live run has a linked incident: the one this step creates.
        run.linked = run.linked_override = f"<steps.{step.key}.incident_id>"
    return _with_placeholder_outputs(run, step, spec, result)


def _dry_run_control(run: _Run, step: StepSource, spec, rendered: dict, result: dict) -> dict:
    """A control step sends nothing: the dry run says what it would wait for."""
    try:
        plan = spec.implementation.plan(StepContext(incident=run.incident, rendered=rendered, resolver=None))
    except StepFailed as exc:
        result.update(status="error", error=str(exc), field=exc.field or "")
        return _with_placeholder_outputs(run, step, spec, result)
    note = plan.describe()
    if plan.statuses and not is_sample(run.incident) and run.incident.status in plan.statuses:
        note += f"; the incident is {run.incident.status} already, so it would continue at once"
    result["notes"].append(note[:1].upper() + note[1:])
    result["derived"] = {"waits_for": note}
    return _with_placeholder_outputs(run, step, spec, result)


def _with_placeholder_outputs(run: _Run, step: StepSource, spec, result: dict) -> dict:
    # Later steps still render (and show their own problems) against clearly marked stand-ins.
    run.outputs[step.key] = {name: f"<steps.{step.key}.{name}>" for name in spec.outputs}
    return result


def _open_link_reused(run: _Run, step: StepSource, planned, connection) -> PagerDutyIncidentLink | None:
    """The create_incident dedup the engine applies before sending (CreateIncident.execute)."""
    if step.action != "pagerduty.create_incident" or is_sample(run.incident):
        return None
    incident = planned.body["incident"]
    return (
        PagerDutyIncidentLink.objects.filter(
            incident=run.incident,
            connection=connection,
            incident_key=incident["incident_key"],
            service_id=incident["service"]["id"],
            status__in=["triggered", "acknowledged"],
        )
        .order_by("-created_at")
        .first()
    )


def steps_dry_run(*, steps: list[StepSource], incident: Incident, allow_reads: bool = True) -> list[dict]:
    """Plan every step in order against `incident` (saved, or `sample_incident()`); send nothing."""
    run = _Run(incident=incident, allow_reads=allow_reads)
    results = []
    for step in steps:
        try:
            result = _dry_run_step(run, step)
        except OperationalError:
            raise  # the database is unwell: a real error, not a property of the runbook
        except Exception as exc:  # a bug shows on the step, never as a 500 in the editor
            logger.exception("dry run of step %s failed unexpectedly", step.key)
            result = {**_result(step), "status": "error", "error": f"Internal error: {type(exc).__name__}: {exc}"}
        if result["status"] == "error" and step.on_failure == OnFailure.STOP and not run.failed_stop:
            run.failed_stop = step.key
        results.append(result)
    for index, warning in event_wait_warnings(steps).items():
        results[index]["notes"].append(warning)
    _add_warnings(steps, results)
    return results


_EVENT_UPDATES = {"pagerduty.acknowledge_event": "acknowledges", "pagerduty.resolve_event": "resolves"}
_STEP_REFERENCE = re.compile(r"\{\{\s*steps\.([a-z][a-z0-9_]*)\.dedup_key\s*\}\}")


def event_wait_warnings(steps: list[StepSource]) -> dict[int, str]:
    """Step index → a warning, for an acknowledge/resolve_event of an alert an earlier step of the
    same run triggered with no control step (a wait or an approval) in between: the steps follow
    each other within a second, so PagerDuty would acknowledge or resolve it at once."""
    warnings = {}
    for index, step in enumerate(steps):
        verb = _EVENT_UPDATES.get(step.action)
        dedup_key = (step.inputs or {}).get("dedup_key")
        match = _STEP_REFERENCE.search(dedup_key) if verb and isinstance(dedup_key, str) else None
        if match is None:
            continue
        source = next(
            (
                n
                for n, s in enumerate(steps[:index])
                if s.key == match.group(1) and s.action == "pagerduty.trigger_event"
            ),
            None,
        )
        if source is None:
            continue
        if not any(s.action.startswith("runbook.") for s in steps[source + 1 : index]):
            warnings[index] = (
                f"This step {verb} the alert step {steps[source].key!r} triggers, with no wait in between: it "
                "runs right after, so the alert would be gone at once. Add a wait (runbook.wait_for_status) or an "
                "approval (runbook.approval) between them, or trigger on a later status."
            )
    return warnings


def _add_warnings(steps: list[StepSource], results: list[dict]) -> None:
    drafts = [StepDraft(s.key, s.action, s.inputs, s.on_failure) for s in steps]
    for result in results:
        result.setdefault("warnings", [])
    for warning in runbook_warnings(runbook="draft", steps=drafts):
        for step, result in zip(steps, results, strict=True):
            if step.key == warning.step:
                result["warnings"].append(warning.message)
                break


def runbook_dry_run(
    *, runbook: Runbook, incident: Incident | None = None, sample: bool = False, allow_reads: bool = True
) -> list[dict]:
    """Every step of a saved runbook as the engine would send it for `incident` (or the sample)."""
    if (incident is None) == (not sample):
        raise DomainError("Choose either an incident or the sample incident", field="incident")
    steps = [StepSource.from_step(step) for step in runbook.steps.order_by("position", "id")]
    return steps_dry_run(steps=steps, incident=sample_incident() if sample else incident, allow_reads=allow_reads)


# --- live preview ----------------------------------------------------------------------------------


def _problem_field(problem) -> str:
    if problem.field:
        return problem.field
    for name in ("key", "on_failure"):
        if problem.message.startswith(name):
            return name
    return ""


def draft_problems(steps: list[StepSource]) -> list[dict]:
    """Save-time validation of draft steps, per step index: {field: [messages]} and messages
    that belong to no field."""
    drafts = [StepDraft(s.key, s.action, s.inputs, s.on_failure) for s in steps]
    per_step = [{"fields": {}, "other": []} for _ in steps]
    index = 0
    # validate_steps reports in step order, so a cursor assigns each problem to its step even
    # when two drafts share a key.
    for problem in validate_steps(runbook="draft", steps=drafts):
        while index < len(steps) - 1 and steps[index].key != problem.step:
            index += 1
        target = per_step[index] if steps else None
        if target is None:
            continue
        name = _problem_field(problem)
        if name:
            target["fields"].setdefault(name, []).append(problem.message)
        else:
            target["other"].append(problem.message)
    return per_step


def steps_preview(*, steps: list[StepSource], incident: Incident) -> list[dict]:
    """The live preview: the dry run without network reads, plus save-time validation per field."""
    results = steps_dry_run(steps=steps, incident=incident, allow_reads=False)
    problems = draft_problems(steps)
    for index, (result, found) in enumerate(zip(results, problems, strict=True)):
        errors = {name: list(messages) for name, messages in found["fields"].items()}
        for name, message in (result.get("field_errors") or {}).items():
            errors.setdefault(name, [message])
        if result["status"] == "error" and result["field"] and result["field"] not in errors:
            errors[result["field"]] = [result["error"].removeprefix(f"{result['field']}: ")]
        other = list(found["other"])
        if result["status"] == "error" and not result["field"] and result["error"] not in other:
            other.append(result["error"])
        if not steps[index].action:
            # "Unknown action ''; available: …" is true but unhelpful for a step still being set up.
            errors["action"] = ["Choose an action"]
        result["errors"] = errors
        result["step_errors"] = other
        result["variables"] = template_names_for_step(earlier_steps=steps[:index])
    return results
