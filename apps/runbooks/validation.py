"""One validator for runbooks however they arrive: YAML, admin form or API.

Every problem is reported with where it is — runbook, step, field — and all of them at once, so
a `load_runbooks --check` in CI lists everything to fix in one go.
"""

from dataclasses import dataclass

from apps.core.errors import DomainError
from apps.core.limits import CONDITION_LIST_MAX
from apps.incidents.models import IncidentStatus
from apps.pagerduty.webhooks import INCIDENT_EVENT_TYPES
from apps.runbooks import templating
from apps.runbooks.executors import get_action
from apps.runbooks.models import OnFailure, TriggerOn, step_key_validator
from apps.runbooks.selectors import template_names_for_step


@dataclass(frozen=True)
class Problem:
    message: str
    runbook: str = ""
    step: str = ""
    field: str = ""

    def __str__(self) -> str:
        where = [f"runbook {self.runbook!r}"] if self.runbook else []
        if self.step:
            where.append(f"step {self.step!r}")
        if self.field:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclass
class StepDraft:
    key: str
    action: str
    inputs: dict
    on_failure: str = OnFailure.STOP


def validate_trigger(*, runbook: str, on: str, to: list, from_: list, events: list = ()) -> list[Problem]:
    problems = []
    if on not in TriggerOn.values:
        problems.append(Problem(f"trigger.on must be one of {', '.join(TriggerOn.values)}, not {on!r}", runbook))
    if events and on != TriggerOn.PAGERDUTY_EVENT:
        problems.append(Problem("trigger.events only applies to on: pagerduty_event", runbook))
    if len(events or []) > len(INCIDENT_EVENT_TYPES):
        problems.append(Problem(f"trigger.events lists more than the {len(INCIDENT_EVENT_TYPES)} event types", runbook))
    for value in list(events or [])[: len(INCIDENT_EVENT_TYPES) + 1]:
        if value not in INCIDENT_EVENT_TYPES:
            problems.append(
                Problem(
                    f"trigger.events: unknown PagerDuty event type {str(value)[:60]!r} "
                    f"(expected {', '.join(INCIDENT_EVENT_TYPES)})",
                    runbook,
                )
            )
    for name, values in (("to", to), ("from", from_)):
        if values and on != TriggerOn.STATUS_CHANGED:
            problems.append(Problem(f"trigger.{name} only applies to on: status_changed", runbook))
        for value in values or []:
            if value not in IncidentStatus.values:
                problems.append(
                    Problem(
                        f"trigger.{name}: unknown status {value!r} (expected {', '.join(IncidentStatus.values)})",
                        runbook,
                    )
                )
    return problems


def validate_pagerduty_variables(*, runbook: str, on: str, steps: list[StepDraft]) -> list[Problem]:
    """{{PagerDuty.*}} exists only when a PagerDuty event started the run."""
    if on == TriggerOn.PAGERDUTY_EVENT:
        return []
    problems = []
    for step in steps:
        for name, template in (step.inputs or {}).items() if isinstance(step.inputs, dict) else []:
            if isinstance(template, str) and "PagerDuty." in template:
                problems.append(
                    Problem(
                        "PagerDuty.* variables exist only in runbooks with trigger on: pagerduty_event",
                        runbook,
                        step.key,
                        name,
                    )
                )
    return problems


def validate_conditions(*, runbook: str, severity: list, services: list, environments: list) -> list[Problem]:
    problems = []
    for value in severity or []:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 4:
            problems.append(Problem(f"conditions.severity: {value!r} is not a severity 0–4", runbook))
    for name, values in (("services", services), ("environments", environments)):
        if not isinstance(values or [], list) or not all(isinstance(v, str) and v for v in values or []):
            problems.append(Problem(f"conditions.{name} must be a list of names", runbook))
        elif len(values) > CONDITION_LIST_MAX:
            problems.append(
                Problem(f"conditions.{name} has {len(values)} names; the limit is {CONDITION_LIST_MAX}", runbook)
            )
        elif any(len(v) > 100 or "\x00" in v for v in values):
            problems.append(Problem(f"conditions.{name}: each name is at most 100 characters, without NUL", runbook))
    return problems


def validate_steps(*, runbook: str, steps: list[StepDraft]) -> list[Problem]:
    problems = []
    seen: list[StepDraft] = []
    for step in steps:
        where = {"runbook": runbook, "step": step.key}
        try:
            step_key_validator(step.key)
        except Exception:
            problems.append(Problem("key must be lower-case letters, digits and underscores", **where))
        if any(earlier.key == step.key for earlier in seen):
            problems.append(Problem("key is used by an earlier step; keys must be unique in a runbook", **where))
        if step.on_failure not in OnFailure.values:
            problems.append(Problem(f"on_failure must be stop or continue, not {step.on_failure!r}", **where))
        try:
            spec = get_action(step.action)
        except DomainError as exc:
            problems.append(Problem(str(exc), **where, field="action"))
            seen.append(step)
            continue
        if not isinstance(step.inputs, dict):
            problems.append(Problem("`with` must be a mapping of field → template", **where))
            seen.append(step)
            continue
        for name in step.inputs:
            if name not in spec.field_names:
                problems.append(
                    Problem(
                        f"{spec.name} has no field {name!r}; fields: {', '.join(spec.field_names)}",
                        **where,
                        field=name,
                    )
                )
        allowed = template_names_for_step(earlier_steps=seen)
        for name, template in spec.with_defaults(step.inputs).items():
            kind = spec.field(name).kind
            if kind != "text":
                problems += [
                    Problem(message, **where, field=name)
                    for message in structured_field_problems(kind, template, allowed=allowed)
                ]
                continue
            if isinstance(template, (dict, list)):
                problems.append(Problem("must be a single template string", **where, field=name))
                continue
            if spec.field(name).required and template in (None, ""):
                problems.append(Problem("is required", **where, field=name))
                continue
            try:
                templating.validate(str(template or ""), allowed=allowed)
            except templating.TemplateError as exc:
                problems.append(Problem(str(exc), **where, field=name))
            ids = spec.field(name).ids
            problem = templating.single_value_problem(str(template or ""), many=ids == "many") if ids else None
            if problem:
                problems.append(Problem(problem, **where, field=name))
            choices = spec.field(name).choices
            if choices and template and "{{" not in str(template) and str(template) not in choices:
                problems.append(Problem(f"must be one of {', '.join(c for c in choices if c)}", **where, field=name))
        # An action may judge what it can before run time (a literal that can never work).
        literal_problems = getattr(spec.implementation, "literal_problems", None)
        if literal_problems is not None:
            for name, message in literal_problems(spec.with_defaults(step.inputs)):
                problems.append(Problem(message, **where, field=name))
        check_literals = getattr(spec.implementation, "check_literals", None)
        if check_literals is not None:
            reported = {p.field for p in problems if p.step == step.key}
            for name, message in check_literals(spec.with_defaults(step.inputs)):
                if name not in reported:
                    problems.append(
                        Problem(message.removeprefix(f"{name} ").removeprefix(f"{name}: "), **where, field=name)
                    )
        seen.append(step)
    return problems


# Bounds on the two structured fields (custom_details, links): each entry is a template.
MAPPING_MAX_ENTRIES = 50
LINKS_MAX_ENTRIES = 20
STRUCTURED_NAME_MAX = 100
LINK_KEYS = ("href", "text")


def _template_problem(template, allowed, where: str) -> str | None:
    if not isinstance(template, str):
        return f"{where} must be a template string, not {type(template).__name__}"
    try:
        templating.validate(template, allowed=allowed)
    except templating.TemplateError as exc:
        return f"{where}: {exc}"
    return None


def structured_field_problems(kind: str, value, *, allowed) -> list[str]:
    """What is wrong with a `mapping` (name → template) or `links` ([{href, text}]) field."""
    if value in (None, "", {}, []):
        return []
    problems: list[str] = []
    if kind == "mapping":
        if not isinstance(value, dict):
            return ["must be a mapping of name → template (YAML: one `name: template` per line)"]
        if len(value) > MAPPING_MAX_ENTRIES:
            return [f"has {len(value)} entries; the limit is {MAPPING_MAX_ENTRIES}"]
        for key, template in value.items():
            if not isinstance(key, str) or not key.strip() or len(key) > STRUCTURED_NAME_MAX or "\x00" in key:
                problems.append(f"name {key!r} must be text of 1–{STRUCTURED_NAME_MAX} characters")
            elif problem := _template_problem(template, allowed, f"[{key!r}]"):
                problems.append(problem)
        return problems
    if kind == "links":
        if not isinstance(value, list):
            return ["must be a list of {href, text} mappings"]
        if len(value) > LINKS_MAX_ENTRIES:
            return [f"has {len(value)} links; the limit is {LINKS_MAX_ENTRIES}"]
        for index, link in enumerate(value, start=1):
            if not isinstance(link, dict):
                problems.append(f"[{index}] must be a mapping with href and text")
                continue
            unknown = sorted(str(k) for k in link if k not in LINK_KEYS)
            if unknown:
                problems.append(f"[{index}] has unknown keys {', '.join(unknown)}; a link has href and text")
            if not link.get("href"):
                problems.append(f"[{index}].href is required")
            for key in LINK_KEYS:
                if key in link and (problem := _template_problem(link[key], allowed, f"[{index}].{key}")):
                    problems.append(problem)
        return problems
    return [f"unknown field kind {kind!r}"]


# (creator, the closers' field naming what they act on, closers, values of it meaning "the created one").
_CREATES_AND_CLOSES = (
    (
        "pagerduty.create_incident",
        "incident_id",
        ("pagerduty.resolve_incident", "pagerduty.acknowledge_incident"),
        ("", "{{pagerduty.incident_id}}"),
    ),
    (
        "pagerduty.trigger_event",
        "dedup_key",
        ("pagerduty.resolve_event", "pagerduty.acknowledge_event"),
        ("",),
    ),
)
WAIT_ACTIONS = ("runbook.wait_for_status", "runbook.approval")


def runbook_warnings(*, runbook: str, steps: list[StepDraft]) -> list[Problem]:
    """Allowed, but almost certainly not meant: a step that resolves or acknowledges what an
    earlier step of the same run created, with no wait in between, does so a moment later."""
    warnings = []
    open_by: dict[str, StepDraft] = {}  # creators not yet followed by a wait, by key
    for step in steps:
        inputs = step.inputs if isinstance(step.inputs, dict) else {}
        if step.action in WAIT_ACTIONS:
            open_by.clear()
            continue
        for creator_action, target_field, closers, defaults in _CREATES_AND_CLOSES:
            if step.action == creator_action:
                open_by[step.key] = step
            if step.action not in closers:
                continue
            target = str(inputs.get(target_field) or "").strip()
            for key, creator in open_by.items():
                if creator.action != creator_action:
                    continue
                same_event = (
                    creator_action == "pagerduty.trigger_event"
                    and target
                    and target == str((creator.inputs or {}).get("dedup_key") or "").strip()
                )
                if target in defaults or f"steps.{key}." in target or same_event:
                    verb = "resolves" if "resolve" in step.action else "acknowledges"
                    warnings.append(
                        Problem(
                            f"{verb} what step {key!r} created, with no wait step in between: it would happen "
                            "right after it. Add a runbook.wait_for_status (e.g. statuses: Monitoring, Resolved) "
                            "or a runbook.approval step before this one",
                            runbook=runbook,
                            step=step.key,
                        )
                    )
                    break
    return warnings
