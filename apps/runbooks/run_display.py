"""How a run reads in the admin: status badges, times to the second, durations, collapsed JSON,
a step's own request apart from its look-ups, and the state the live refresh compares."""

import hashlib
import json

from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join

from apps.runbooks.models import FINISHED
from apps.runbooks.selectors import step_run_exchanges

# Icons are text, so they need no asset and read the same in a screen reader's "status" label.
_ICONS = {
    "succeeded": "✓",
    "failed": "✗",
    "running": "⟳",
    "pending": "◷",
    "waiting": "⏸",
    "skipped": "↷",
    "cancelled": "⊘",
}


def status_badge(status: str):
    return format_html(
        '<span class="rb-run-badge rb-run-{}" title="{}"><span class="rb-icon" aria-hidden="true">{}</span>{}</span>',
        status,
        status,
        _ICONS.get(status, "•"),
        status,
    )


def when(value) -> str:
    """A time to the second, in the site's time zone: runs last seconds, minutes say too little."""
    return date_format(timezone.localtime(value), "Y-m-d H:i:s") if value else "—"


def duration(started, finished, *, status: str = "") -> str:
    if not started:
        return "—"
    end = finished or (timezone.now() if status not in FINISHED else None)
    if end is None:
        return "—"
    seconds = max((end - started).total_seconds(), 0)
    text = f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return text if finished else f"{text} so far"


def json_details(value, *, summary: str, key: str, open_: bool = False):
    """JSON folded under a one-line summary: a run page is read at a glance, bodies on demand.
    `key` lets the live refresh keep a section open across updates."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return format_html(
        '<details class="rb-json" data-key="{}"{}><summary>{}</summary><pre>{}</pre></details>',
        key,
        " open" if open_ else "",
        summary,
        text,
    )


def request_summary(request: dict, *, sent: bool) -> str:
    if not request:
        return "No request planned"
    size = len(json.dumps(request.get("body"), ensure_ascii=False)) if request.get("body") is not None else 0
    line = f"{request.get('method', '')} {request.get('url', '')}" + (f" · {size} bytes" if size else "")
    return line if sent else f"{line} · not sent"


def response_summary(response: dict, *, outputs: dict) -> str:
    if not response:
        if outputs.get("deduplicated"):
            return "No request sent: an open PagerDuty incident was reused"
        return "No answer: the step sent no request"
    if response.get("error") and not response.get("status"):
        return f"No HTTP answer: {response['error'][:120]}"
    body = response.get("body")
    detail = ""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            detail = f" · {error['message']}"
        else:
            for name, item in body.items():
                if isinstance(item, dict) and item.get("id"):
                    detail = f" · {name} {item['id']}"
                    break
    return f"{response.get('status')}{detail}"


def _answer(exchange) -> str:
    if exchange.error and not exchange.status:
        return exchange.error
    text = json.dumps(exchange.response_body, ensure_ascii=False) if exchange.response_body is not None else ""
    return text if len(text) < 200 else text[:200] + "…"


def exchanges_tables(step_run):
    """The attempts at the step's own request, numbered 1..n, then the look-ups, labelled."""
    groups = step_run_exchanges(step_run=step_run)
    parts = []
    for caption, rows, role in (
        ("Attempts at this step's request", groups["requests"], ""),
        ("Look-ups (read-only, made to plan the request or to check whether it landed)", groups["lookups"], "look-up"),
    ):
        if not rows:
            continue
        body = format_html_join(
            "",
            "<tr><td>{}</td><td><span class='rb-role-lookup'>{}</span> {} {}</td><td>{}</td><td>{} ms</td>"
            "<td>{}</td><td>{}</td></tr>",
            (
                (e.number, role, e.method, e.url, e.status or "—", e.duration_ms, when(e.created_at), _answer(e))
                for e in rows
            ),
        )
        parts.append(
            format_html(
                "<table class='rb-exchanges'><caption>{}</caption><tr><th>#</th><th>Request</th><th>Status</th>"
                "<th>Time</th><th>At</th><th>Answer</th></tr>{}</table>",
                caption,
                body,
            )
        )
    if not parts:
        return "No HTTP request made"
    return format_html_join("", "{}", ((p,) for p in parts))


def live_signature(runs) -> str:
    """What the live refresh compares: every run's status and version, every step's status and
    attempts. Runs come with their step runs prefetched."""
    state = [
        (
            run.pk,
            run.status,
            run.runbook_version_id,
            [(s.key, s.status, s.attempts) for s in sorted(run.step_runs.all(), key=lambda s: s.position)],
        )
        for run in runs
    ]
    return hashlib.sha256(json.dumps(state, default=str).encode()).hexdigest()[:20]


def any_active(runs) -> bool:
    return any(run.status not in FINISHED for run in runs)
