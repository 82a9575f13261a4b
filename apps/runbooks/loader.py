"""Runbooks as code: YAML ⇄ Runbook rows. Parsing and checking here; writing in services.

Files come from people and repositories, so reading one is bounded and never raises: a file over
YAML_FILE_MAX_BYTES, not UTF-8 (or UTF-16/32, or binary), with a duplicate key, or whose aliases
expand past YAML_MAX_NODES (a "billion laughs" of nine nested aliases took 2.3 GB) becomes a
problem naming the file and line, reported with every other problem.
"""

import codecs
import re
from pathlib import Path

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, SequenceNode

from apps.core import limits
from apps.runbooks.executors import uses_channel
from apps.runbooks.executors.control import is_control
from apps.runbooks.models import Runbook, TriggerOn, slug_problem
from apps.runbooks.validation import (
    Problem,
    StepDraft,
    runbook_warnings,
    validate_conditions,
    validate_pagerduty_variables,
    validate_steps,
    validate_trigger,
)

TOP_KEYS = {"slug", "name", "description", "enabled", "trigger", "conditions", "steps"}
TRIGGER_KEYS = {"on", "to", "from", "events"}
CONDITION_KEYS = {"severity", "services", "environments"}
STEP_KEYS = {"key", "name", "action", "connection", "with", "on_failure"}


class RunbookYamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, duplicate keys refused and aliases bounded.

    YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans, which would turn `trigger: {on: ...}`
    into `{True: ...}`; only true/false are booleans here, as in YAML 1.2."""

    def compose_document(self):
        node = super().compose_document()
        _check_expanded_size(node)
        return node

    def construct_mapping(self, node, deep=False):
        # PyYAML keeps the last of two equal keys silently; the first one's value would be lost.
        if isinstance(node, MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults`, which explicit keys may override
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key; the constructor reports it
                if first is not key_node:
                    raise ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"found the key {key!r} twice (first on line {first.start_mark.line + 1}); keep one",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def _check_expanded_size(root) -> None:
    """Refuse a document whose nodes, with every alias expanded, exceed YAML_MAX_NODES.

    PyYAML shares an aliased node rather than copying it, so loading a bomb is cheap; walking the
    result (validating, saving, printing) is what explodes. Sizes are computed per node once
    (memoised), so counting costs what the file's size costs, not what its expansion would."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > limits.YAML_MAX_NODES:
                raise yaml.YAMLError(
                    f"line {node.start_mark.line + 1}: the document expands to more than "
                    f"{limits.YAML_MAX_NODES:,} values once its aliases (*name) are expanded"
                )
            continue
        if id(node) in on_path:
            raise yaml.YAMLError(f"line {node.start_mark.line + 1}: an alias refers to a node that contains it")
        on_path.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise yaml.YAMLError(f"line {child.start_mark.line + 1}: an alias refers to a node that contains it")
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node) -> list:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


RunbookYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RunbookYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> list:
    return [doc for doc in yaml.load_all(text, Loader=RunbookYamlLoader) if doc is not None]


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _text_problem(value, what: str, *, max_chars: int, required: bool = False) -> str | None:
    if value is None or value == "":
        return f"{what} is required" if required else None
    if not isinstance(value, str):
        return f"{what} must be text, not {type(value).__name__}"
    if len(value) > max_chars:
        return f"{what} is {len(value):,} characters long; the limit is {max_chars:,}"
    if "\x00" in value:
        return f"{what} contains a NUL character"
    return None


def spec_problems(spec, *, source: str = "") -> list[Problem]:
    """Every problem with one runbook document, each naming runbook, step and field."""
    if not isinstance(spec, dict):
        return [Problem(f"{source}: a runbook file must hold a mapping")]
    raw_slug = spec.get("slug")
    slug = raw_slug if isinstance(raw_slug, str) and raw_slug else source
    problems = [Problem(f"unknown key {key!r}", slug) for key in sorted(set(spec) - TOP_KEYS, key=str)]
    if not raw_slug:
        problems.append(Problem("slug is required", slug))
    elif (problem := slug_problem(raw_slug)) is not None:
        problems.append(Problem(problem, slug, field="slug"))
    for key, max_chars, required in (
        ("name", limits.RUNBOOK_NAME_MAX, True),
        ("description", limits.RUNBOOK_DESCRIPTION_MAX, False),
    ):
        if (problem := _text_problem(spec.get(key), key, max_chars=max_chars, required=required)) is not None:
            problems.append(Problem(problem, slug, field=key))
    if "enabled" in spec and not isinstance(spec["enabled"], bool):
        problems.append(Problem("enabled must be true or false", slug))
    trigger = spec.get("trigger") or {}
    if not isinstance(trigger, dict) or "on" not in trigger:
        problems.append(Problem("trigger: {on: ...} is required", slug))
        trigger = {}
    problems += [Problem(f"trigger: unknown key {key!r}", slug) for key in sorted(set(trigger) - TRIGGER_KEYS, key=str)]
    if trigger:
        lists = {name: _as_list(trigger.get(name)) for name in ("to", "from", "events")}
        for name, values in lists.items():
            if not all(isinstance(value, str) for value in values):
                what = "PagerDuty event types" if name == "events" else "statuses"
                problems.append(Problem(f"trigger.{name} must be a list of {what}", slug))
                lists[name] = []
        on = trigger.get("on")
        problems += validate_trigger(
            runbook=slug,
            on=on if isinstance(on, str) else f"<a {type(on).__name__}>",
            to=lists["to"],
            from_=lists["from"],
            events=lists["events"],
        )
    conditions = spec.get("conditions") or {}
    if not isinstance(conditions, dict):
        problems.append(Problem("conditions must be a mapping", slug))
        conditions = {}
    problems += [
        Problem(f"conditions: unknown key {key!r}", slug) for key in sorted(set(conditions) - CONDITION_KEYS, key=str)
    ]
    problems += validate_conditions(
        runbook=slug,
        severity=_as_list(conditions.get("severity")),
        services=_as_list(conditions.get("services")),
        environments=_as_list(conditions.get("environments")),
    )
    steps = spec.get("steps") or []
    if not isinstance(steps, list):
        return [*problems, Problem("steps must be a list", slug)]
    if len(steps) > limits.RUNBOOK_MAX_STEPS:
        return [*problems, Problem(f"{len(steps)} steps; a runbook has at most {limits.RUNBOOK_MAX_STEPS}", slug)]
    drafts = []
    for index, step in enumerate(steps, start=1):
        if not isinstance(step, dict):
            problems.append(Problem(f"step {index} must be a mapping", slug))
            continue
        key = step.get("key") if isinstance(step.get("key"), str) and step.get("key") else f"#{index}"
        problems += [Problem(f"unknown key {k!r}", slug, key) for k in sorted(set(step) - STEP_KEYS, key=str)]
        if not step.get("key"):
            problems.append(Problem("key is required", slug, key))
        elif not isinstance(step["key"], str):
            problems.append(Problem(f"key must be text, not {type(step['key']).__name__}", slug, key))
        for name, max_chars in (("name", 200), ("connection", 100)):
            if (problem := _text_problem(step.get(name), name, max_chars=max_chars)) is not None:
                problems.append(Problem(problem, slug, key, field=name))
        action = step.get("action")
        if not action:
            problems.append(Problem("action is required", slug, key))
            continue
        if not isinstance(action, str):
            problems.append(Problem(f"action must be text, not {type(action).__name__}", slug, key, field="action"))
            continue
        if is_control(action) and step.get("connection"):
            problems.append(Problem(f"{action} is a control step and names no connection", slug, key, "connection"))
        inputs = step.get("with") or {}
        if isinstance(inputs, dict) and not all(isinstance(name, str) for name in inputs):
            problems.append(Problem("every field name under `with` must be text", slug, key))
            continue
        drafts.append(
            StepDraft(
                key=key,
                action=action,
                inputs=inputs,
                on_failure=on_failure
                if isinstance(on_failure := step.get("on_failure", "stop"), str)
                else f"<a {type(on_failure).__name__}>",
            )
        )
    on = trigger.get("on") if isinstance(trigger, dict) else None
    problems += validate_pagerduty_variables(runbook=slug, on=on if isinstance(on, str) else "", steps=drafts)
    return problems + validate_steps(runbook=slug, steps=drafts)


def spec_warnings(spec) -> list[Problem]:
    """Allowed but likely unintended (validation.runbook_warnings) in a spec without problems."""
    if not isinstance(spec, dict) or not isinstance(spec.get("steps"), list):
        return []
    steps = [
        StepDraft(str(s.get("key")), str(s.get("action")), s.get("with") or {}, str(s.get("on_failure", "stop")))
        for s in spec["steps"]
        if isinstance(s, dict)
    ]
    return runbook_warnings(runbook=str(spec.get("slug", "")), steps=steps)


_OTHER_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}


def _file_text(file: Path) -> str:
    """The file as text, or YamlError saying why it cannot be read as a runbook file."""
    try:
        size = file.stat().st_size
        if size > limits.YAML_FILE_MAX_BYTES:
            raise YamlError(f"the file is {size:,} bytes; the limit is {limits.YAML_FILE_MAX_BYTES:,}")
        with file.open("rb") as handle:
            raw = handle.read(limits.YAML_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise YamlError(f"cannot be read: {exc.strerror or exc}") from None
    if len(raw) > limits.YAML_FILE_MAX_BYTES:
        raise YamlError(f"the file is larger than {limits.YAML_FILE_MAX_BYTES:,} bytes")
    for bom, encoding in _OTHER_BOMS.items():  # UTF-32 first: its LE mark starts like UTF-16's
        if raw.startswith(bom):
            raise YamlError(f"the file is {encoding} (it starts with a byte-order mark); save it as UTF-8")
    raw = raw.removeprefix(codecs.BOM_UTF8)  # allowed by YAML, harmless
    if (nul := raw.find(b"\x00")) >= 0:
        raise YamlError(f"the file is binary (NUL byte at offset {nul}), not YAML text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlError(
            f"the file is not UTF-8 (byte 0x{raw[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None


_SYNTAX_ERRORS = (
    yaml.reader.ReaderError,
    yaml.scanner.ScannerError,
    yaml.parser.ParserError,
    yaml.composer.ComposerError,
)


def read_documents(path: Path) -> list[tuple[str, object]]:
    """(source, document) for every YAML document in a file or directory (sorted, recursive). A file
    that cannot be read or parsed is one (source, YamlError) entry, so every file's problems are
    listed together."""
    files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
    documents = []
    for file in files:
        try:
            for index, doc in enumerate(load_yaml(_file_text(file))):
                documents.append((f"{file}" + (f"#{index + 1}" if index else ""), doc))
        except YamlError as exc:
            documents.append((str(file), exc))
        except _SYNTAX_ERRORS as exc:
            documents.append((str(file), YamlError(f"YAML syntax error: {exc}")))
        except yaml.YAMLError as exc:  # a duplicate key, aliases expanding too far
            documents.append((str(file), YamlError(f"YAML error: {exc}")))
    return documents


class YamlError(Exception):
    """A file that could not be read as YAML, carried as a document so every file's problems are
    listed together."""


def trigger_spec(runbook: Runbook) -> dict:
    trigger = {"on": runbook.trigger_on}
    if runbook.trigger_on == TriggerOn.STATUS_CHANGED:
        if runbook.trigger_to:
            trigger["to"] = list(runbook.trigger_to)
        if runbook.trigger_from:
            trigger["from"] = list(runbook.trigger_from)
    if runbook.trigger_on == TriggerOn.PAGERDUTY_EVENT and runbook.trigger_events:
        trigger["events"] = list(runbook.trigger_events)
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


def runbook_to_spec(runbook: Runbook, *, steps=None) -> dict:
    """The runbook as runbooks-as-code; `steps` in order when the caller already holds them (else read)."""
    trigger, conditions = trigger_spec(runbook), conditions_spec(runbook)
    spec = {"slug": runbook.slug, "name": runbook.name}
    if runbook.description:
        spec["description"] = runbook.description
    spec.update({"enabled": runbook.enabled, "trigger": trigger})
    if conditions:
        spec["conditions"] = conditions
    spec["steps"] = []
    for step in runbook.steps.order_by("position", "id") if steps is None else steps:
        item = {"key": step.key}
        if step.name:
            item["name"] = step.name
        item["action"] = step.action
        # Events name a channel (in `with:`) and control steps name nothing: neither has a connection.
        if not uses_channel(step.action) and not is_control(step.action):
            item["connection"] = step.connection or "default"
        item["with"] = dict(step.inputs)
        if step.on_failure != "stop":
            item["on_failure"] = step.on_failure
        spec["steps"].append(item)
    return spec


def dump_yaml(spec: dict) -> str:
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=120)
