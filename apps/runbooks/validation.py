"""One validator for runbooks however they arrive: YAML, admin form or API.

Every problem is reported with where it is — runbook, step, field — and all of them at once, so
a `load_runbooks --check` in CI lists everything to fix in one go.
"""

from dataclasses import dataclass

from apps.core.errors import DomainError
from apps.core.limits import CONDITION_LIST_MAX
from apps.incidents.models import IncidentStatus
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


def validate_trigger(*, runbook: str, on: str, to: list, from_: list) -> list[Problem]:
    problems = []
    if on not in TriggerOn.values:
        problems.append(Problem(f"trigger.on must be one of {', '.join(TriggerOn.values)}, not {on!r}", runbook))
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
        seen.append(step)
    return problems
