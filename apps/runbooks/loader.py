"""Runbooks as code: YAML ⇄ Runbook rows. Parsing and checking here; writing in services."""

import re
from pathlib import Path

import yaml

from apps.runbooks.models import Runbook, TriggerOn
from apps.runbooks.validation import Problem, StepDraft, validate_conditions, validate_steps, validate_trigger

TOP_KEYS = {"slug", "name", "description", "enabled", "trigger", "conditions", "steps"}
TRIGGER_KEYS = {"on", "to", "from"}
CONDITION_KEYS = {"severity", "services", "environments"}
STEP_KEYS = {"key", "name", "action", "connection", "with", "on_failure"}


class _Yaml12BoolLoader(yaml.SafeLoader):
    """YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans, which would turn `trigger: {on: ...}`
    into `{True: ...}`. Only true/false are booleans here, as in YAML 1.2."""


_Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> list:
    return [doc for doc in yaml.load_all(text, Loader=_Yaml12BoolLoader) if doc is not None]


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def spec_problems(spec, *, source: str = "") -> list[Problem]:
    """Every problem with one runbook document, each naming runbook, step and field."""
    if not isinstance(spec, dict):
        return [Problem(f"{source}: a runbook file must hold a mapping")]
    slug = str(spec.get("slug") or source)
    problems = [Problem(f"unknown key {key!r}", slug) for key in sorted(set(spec) - TOP_KEYS)]
    if not spec.get("slug"):
        problems.append(Problem("slug is required", slug))
    if not spec.get("name"):
        problems.append(Problem("name is required", slug))
    if "enabled" in spec and not isinstance(spec["enabled"], bool):
        problems.append(Problem("enabled must be true or false", slug))
    trigger = spec.get("trigger") or {}
    if not isinstance(trigger, dict) or "on" not in trigger:
        problems.append(Problem("trigger: {on: ...} is required", slug))
        trigger = {}
    problems += [Problem(f"trigger: unknown key {key!r}", slug) for key in sorted(set(trigger) - TRIGGER_KEYS)]
    if trigger:
        problems += validate_trigger(
            runbook=slug, on=trigger.get("on"), to=_as_list(trigger.get("to")), from_=_as_list(trigger.get("from"))
        )
    conditions = spec.get("conditions") or {}
    if not isinstance(conditions, dict):
        problems.append(Problem("conditions must be a mapping", slug))
        conditions = {}
    problems += [Problem(f"conditions: unknown key {key!r}", slug) for key in sorted(set(conditions) - CONDITION_KEYS)]
    problems += validate_conditions(
        runbook=slug,
        severity=_as_list(conditions.get("severity")),
        services=_as_list(conditions.get("services")),
        environments=_as_list(conditions.get("environments")),
    )
    steps = spec.get("steps") or []
    if not isinstance(steps, list):
        return [*problems, Problem("steps must be a list", slug)]
    drafts = []
    for index, step in enumerate(steps, start=1):
        if not isinstance(step, dict):
            problems.append(Problem(f"step {index} must be a mapping", slug))
            continue
        key = str(step.get("key") or f"#{index}")
        problems += [Problem(f"unknown key {k!r}", slug, key) for k in sorted(set(step) - STEP_KEYS)]
        if not step.get("key"):
            problems.append(Problem("key is required", slug, key))
        if not step.get("action"):
            problems.append(Problem("action is required", slug, key))
            continue
        drafts.append(
            StepDraft(
                key=key,
                action=str(step["action"]),
                inputs=step.get("with") or {},
                on_failure=str(step.get("on_failure", "stop")),
            )
        )
    return problems + validate_steps(runbook=slug, steps=drafts)


def read_documents(path: Path) -> list[tuple[str, object]]:
    """(source, document) for every YAML document in a file or directory (sorted, recursive)."""
    files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
    documents = []
    for file in files:
        try:
            for index, doc in enumerate(load_yaml(file.read_text())):
                documents.append((f"{file}" + (f"#{index + 1}" if index else ""), doc))
        except yaml.YAMLError as exc:
            documents.append((str(file), YamlError(str(exc))))
    return documents


class YamlError(str):
    """A file that did not parse: carried as a document so every file's problems are listed together."""


def trigger_spec(runbook: Runbook) -> dict:
    trigger = {"on": runbook.trigger_on}
    if runbook.trigger_on == TriggerOn.STATUS_CHANGED:
        if runbook.trigger_to:
            trigger["to"] = list(runbook.trigger_to)
        if runbook.trigger_from:
            trigger["from"] = list(runbook.trigger_from)
    return trigger


def conditions_spec(runbook: Runbook) -> dict:
    return {
        name: list(value)
        for name, value in (
            ("severity", runbook.condition_severity),
            ("services", runbook.condition_services),
            ("environments", runbook.condition_environments),
        )
        if value
    }


def runbook_to_spec(runbook: Runbook) -> dict:
    trigger, conditions = trigger_spec(runbook), conditions_spec(runbook)
    spec = {"slug": runbook.slug, "name": runbook.name}
    if runbook.description:
        spec["description"] = runbook.description
    spec.update({"enabled": runbook.enabled, "trigger": trigger})
    if conditions:
        spec["conditions"] = conditions
    spec["steps"] = []
    for step in runbook.steps.order_by("position", "id"):
        item = {"key": step.key}
        if step.name:
            item["name"] = step.name
        item.update({"action": step.action, "connection": step.connection or "default", "with": dict(step.inputs)})
        if step.on_failure != "stop":
            item["on_failure"] = step.on_failure
        spec["steps"].append(item)
    return spec


def dump_yaml(spec: dict) -> str:
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=120)
