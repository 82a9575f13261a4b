"""The only module that touches chevron.

Templates end up in JSON bodies and PagerDuty text, not HTML, so nothing is escaped: `R&D <db>`
arrives as written. Partials are refused (they would read files). Variables are checked twice:
against the Activity schema when a runbook is saved or loaded, and against the real context when
a step renders, so a missing value is an error with a name, never a silent empty string.

Bounded so no template can stall the web process or a worker: a template's length, tag count and
section nesting are capped before chevron sees it (8,000 nested sections used to save fine and
then burn 16 s of CPU per render), list sections iterate within a budget (nested sections over a
list repeat their body n^depth times), and a rendered value has a maximum size.
"""

import difflib
import re
from collections.abc import Iterable
from itertools import pairwise

import chevron
from chevron.tokenizer import ChevronError, tokenize

from apps.core.limits import (
    RENDERED_FIELD_MAX_CHARS,
    TEMPLATE_MAX_CHARS,
    TEMPLATE_MAX_SECTION_DEPTH,
    TEMPLATE_MAX_TAGS,
)

# Items a render may iterate over in list sections, all sections together.
_ITERATION_BUDGET = 10_000

ACTIVITY_FIELDS: dict[str, tuple[str, str]] = {
    # name: (description, example)
    "id": ("Incident UUID", "6f1c2d3e-0000-4000-8000-123456789abc"),
    "short_id": ("Short id", "INC-123"),
    "title": ("Title", "Checkout API returns 500s"),
    "summary": ("Summary", "Error rate above 5% since 10:02 UTC"),
    "severity": ("Severity 0–4 (0 is the worst)", "1"),
    "severity_label": ("Severity as SEV0–SEV4", "SEV1"),
    "status": ("Detected, Investigating, Identified, Monitoring or Resolved", "Investigating"),
    "service": ("Affected service", "checkout"),
    "environment": ("Environment", "production"),
    "owner": ("Owner's email", "alice@example.com"),
    "created_at": ("Created, ISO 8601 UTC", "2026-11-23T10:02:00Z"),
    "resolved_at": ("Resolved, ISO 8601 UTC (empty until resolved)", "2026-11-23T11:30:00Z"),
    "url": ("Link to the incident in this service", "https://runbooks.example.com/admin/incidents/incident/…"),
}
PAGERDUTY_FIELDS: dict[str, tuple[str, str]] = {
    "incident_id": ("PagerDuty incident linked to this incident (empty if none)", "Q1ABCDEF2GHIJK"),
}
# The PagerDuty event that started a runbook `on: pagerduty_event` (IncidentEvent.details).
PAGERDUTY_EVENT_FIELDS: dict[str, tuple[str, str]] = {
    "event_type": ("PagerDuty event type", "incident.acknowledged"),
    "occurred_at": ("When it happened in PagerDuty, ISO 8601 UTC", "2026-11-23T10:05:00+00:00"),
    "agent": ("Who did it: a user's or a service's name", "Alice Ng"),
    "agent_id": ("PagerDuty id of who did it", "PUSER01"),
    "incident_id": ("PagerDuty incident id", "Q1ABCDEF2GHIJK"),
    "incident_number": ("PagerDuty incident number", "1234"),
    "status": ("PagerDuty status after the event", "acknowledged"),
    "urgency": ("PagerDuty urgency", "high"),
    "priority": ("PagerDuty priority name (empty if none)", "P1"),
    "note": ("The note or message (incident.annotated, responder events)", "Rolled back deploy 42"),
}


class TemplateError(Exception):
    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(message)


def _tokens(template: str) -> list[tuple[str, str]]:
    """The template's tokens, refused before any expensive work if it is too long, has too many
    tags or nests sections too deeply (checked while tokenizing, so a huge one stops early)."""
    if len(template) > TEMPLATE_MAX_CHARS:
        raise TemplateError(f"The template is {len(template):,} characters long; the limit is {TEMPLATE_MAX_CHARS:,}")
    if "\x00" in template:
        raise TemplateError("The template contains a NUL character")
    tokens, depth, tags, opening, closing = [], 0, 0, "{{", "}}"
    try:
        for kind, name in tokenize(template):
            if kind != "literal":
                tags += 1
                if tags > TEMPLATE_MAX_TAGS:
                    raise TemplateError(f"The template has more than {TEMPLATE_MAX_TAGS} tags")
            if kind in ("section", "inverted section"):
                depth += 1
                if depth > TEMPLATE_MAX_SECTION_DEPTH:
                    raise TemplateError(
                        f"Sections are nested more than {TEMPLATE_MAX_SECTION_DEPTH} deep (at {{{{#{name.strip()}}}}})"
                    )
            elif kind == "end":
                depth -= 1
            elif kind == "set delimiter" and len(name.split()) == 2:
                opening, closing = name.split()
            tokens.append((kind, name))
    except ChevronError as exc:
        raise TemplateError(f"Mustache syntax error: {exc}".replace("\n", "; ")) from None
    except IndexError:
        # chevron's tokenizer indexes the tag's first character: an empty tag breaks it.
        raise TemplateError(f"Mustache syntax error: an empty tag {opening}{closing}") from None
    if template.endswith(opening):
        # chevron drops an opening delimiter at the very end without a word: "Hi {{Activity.title}} {{"
        # would render as if the author had not typed the "{{" (its only empty token comes from this).
        raise TemplateError(f"The template ends with an opening {opening} that is never closed")
    return tokens


def validate(template: str, *, allowed: Iterable[str]) -> None:
    """Syntax and every variable against the names that exist where the template is used."""
    allowed = set(allowed)
    prefixes = {".".join(name.split(".")[:i]) for name in allowed for i in range(1, name.count(".") + 1)}
    depth = 0
    for kind, name in _tokens(template):
        name = name.strip()
        if kind == "partial":
            raise TemplateError(f"Partials ({{{{> {name}}}}}) are not supported")
        if kind == "end":
            depth -= 1
            continue
        if kind not in ("variable", "no escape", "section", "inverted section"):
            continue
        is_section = kind in ("section", "inverted section")
        if name == "." and depth > 0:
            pass
        elif not (name in allowed or (is_section and name in prefixes)):
            suggestion = _closest(name, allowed)
            hint = f"; did you mean {{{{{suggestion}}}}}?" if suggestion else ""
            raise TemplateError(f"Unknown variable {{{{{name}}}}}{hint}")
        if is_section:
            depth += 1


_SEPARATORS = re.compile(r"[,\s]")


def single_value_problem(template: str, *, many: bool = False) -> str | None:
    """Why `template`, in a field that takes one id (`many`: ids separated by commas or spaces),
    cannot render to one — two variables joined (`{{a}}{{b}}` renders to two ids glued together),
    or text glued to a variable — or None. Sections are left to the author."""
    try:
        every = list(_tokens(template))
    except TemplateError:
        return None  # reported by validate()
    # Spaces around a single id are trimmed; between ids in a list they are the separator.
    tokens = [(kind, name) for kind, name in every if not (kind == "literal" and not name.strip())]
    if any(kind in ("section", "inverted section") for kind, _ in tokens):
        return None
    shown = template if len(template) <= 120 else template[:120] + "…"
    variables = [name.strip() for kind, name in tokens if kind in ("variable", "no escape")]
    if not variables:
        return None
    if not many:
        if len(variables) > 1:
            return f"must render to a single id, but {shown!r} joins {len(variables)} variables; keep one of them"
        if len(tokens) > 1:
            return f"must render to a single id, but {shown!r} puts text next to {{{{{variables[0]}}}}}"
        return None
    glues = f"must render to ids separated by commas or spaces, but {shown!r} glues them together"
    for (kind, text), (next_kind, next_text) in pairwise(every):
        if kind == "literal" and next_kind == "literal":
            continue  # text on both sides of a comment: one piece of text
        if kind != "literal" and next_kind != "literal":
            return glues  # {{a}}{{b}}
        # Text meets a variable: only at a separator ("P1, {{a}}", "{{a}} P2") are they two ids.
        if not _SEPARATORS.search(text[-1:] if kind == "literal" else next_text[:1]):
            return glues
    return None


def _closest(name: str, allowed: set[str]) -> str | None:
    matches = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _lookup(context: dict, name: str):
    value = context
    for part in name.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


_MISSING = object()


def render(template, context: dict) -> str:
    """Render one field. Every variable must exist in `context`; its value may be empty."""
    if template is None:
        return ""
    if not isinstance(template, str):
        return str(template)
    tokens = _tokens(template)
    in_section = 0
    for kind, name in tokens:
        name = name.strip()
        if kind in ("section", "inverted section"):
            in_section += 1
        elif kind == "end":
            in_section -= 1
        elif kind == "partial":
            raise TemplateError(f"Partials ({{{{> {name}}}}}) are not supported")
        if (
            kind in ("variable", "no escape", "section", "inverted section")
            and name != "."
            and _lookup(context, name) is _MISSING
            # Inside a section a name may be relative to the section's value; chevron resolves it.
            and not (in_section and kind in ("variable", "no escape"))
        ):
            raise TemplateError(_missing_message(context, name))
    # chevron escapes `{{x}}` for HTML; turning every variable into a no-escape tag keeps the
    # bytes as written without asking authors to type triple braces.
    unescaped = [("no escape", key) if kind == "variable" else (kind, key) for kind, key in tokens]
    budget = _IterationBudget(_ITERATION_BUDGET)
    rendered = chevron.render(unescaped, _stringify(context, budget), partials_path=None, partials_dict={})
    if len(rendered) > RENDERED_FIELD_MAX_CHARS:
        raise TemplateError(
            f"The rendered value is {len(rendered):,} characters long; the limit is {RENDERED_FIELD_MAX_CHARS:,}"
        )
    return rendered


class _IterationBudget:
    def __init__(self, items: int):
        self.left = items

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise TemplateError(f"List sections repeat more than {_ITERATION_BUDGET:,} times in one render")


class _BudgetedList(list):
    """A list in the render context: every item a section iterates over is paid for."""

    def __init__(self, items, budget: _IterationBudget):
        super().__init__(items)
        self.budget = budget

    def __iter__(self):
        for item in super().__iter__():
            self.budget.spend()
            yield item


def _missing_message(context: dict, name: str) -> str:
    parts = name.split(".")
    if parts[0] == "steps" and len(parts) >= 2 and parts[1] not in context.get("steps", {}):
        return f"{{{{{name}}}}} has no value: step {parts[1]!r} has not produced outputs in this run"
    suggestion = _closest(name, set(_dotted_names(context)))
    hint = f"; did you mean {{{{{suggestion}}}}}?" if suggestion else ""
    return f"Unknown variable {{{{{name}}}}}{hint}"


def _dotted_names(value, prefix: str = ""):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _dotted_names(inner, f"{prefix}{key}.")
    elif prefix:
        yield prefix[:-1]


def _stringify(value, budget: _IterationBudget):
    # None must render as "", never "None"; everything else as str() at the leaves.
    if isinstance(value, dict):
        return {k: _stringify(v, budget) for k, v in value.items()}
    if isinstance(value, list):
        return _BudgetedList((_stringify(v, budget) for v in value), budget)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else ""
    return value if isinstance(value, str) else str(value)


def render_field(template, context: dict):
    """One field: a template string, or a structured field's mapping or list whose every string is
    a template (custom_details, links); the structure is kept, the strings rendered."""
    if isinstance(template, dict):
        return {key: render_field(value, context) for key, value in template.items()}
    if isinstance(template, list):
        return [render_field(value, context) for value in template]
    return render(template, context)


def render_fields(fields: dict, context: dict) -> dict:
    """Render every field; raises TemplateError naming the first field that failed."""
    rendered = {}
    for name, template in fields.items():
        try:
            rendered[name] = render_field(template, context)
        except TemplateError as exc:
            raise TemplateError(f"{name}: {exc}", field=name) from None
    return rendered


def activity_names() -> list[str]:
    return [f"Activity.{name}" for name in ACTIVITY_FIELDS]


def pagerduty_names() -> list[str]:
    return [f"pagerduty.{name}" for name in PAGERDUTY_FIELDS]


def pagerduty_event_names() -> list[str]:
    return [f"PagerDuty.{name}" for name in PAGERDUTY_EVENT_FIELDS]


def pagerduty_event_context(details: dict) -> dict:
    """`PagerDuty.*` from what the timeline kept of the event: every name present, as text."""
    return {name: "" if details.get(name) is None else str(details.get(name))[:2000] for name in PAGERDUTY_EVENT_FIELDS}
