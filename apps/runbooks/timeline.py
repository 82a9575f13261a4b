"""An incident's timeline: what we recorded (events, runs and steps, PagerDuty's webhooks as the
mirror wrote them) merged with PagerDuty's own log of each linked incident, read live.

Lives in runbooks because it needs runs and links; the incidents app cannot know either. The read
of PagerDuty is interactive (a person or a script waits for it): a short timeout, two attempts,
and on failure the timeline answers with what we have and a note saying what is missing.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from apps.core.errors import DomainError
from apps.incidents.models import Incident, IncidentEventKind
from apps.pagerduty.client import PagerDutyClient, RetryPolicy
from apps.pagerduty.errors import PagerDutyError
from apps.pagerduty.services import connection_client
from apps.runbooks.mirror import CLOCK_MARGIN, link_refresh
from apps.runbooks.models import FINISHED, PagerDutyIncidentLink, RunbookRun

MAX_ENTRIES = 1000
MAX_WINDOW = timedelta(days=31)
# PagerDuty incidents read per timeline; an incident linked to more is rare and says so in a note.
MAX_LINKS_READ = 10
LOG_PAGES_PER_INCIDENT = 5
TIMELINE_READ_RETRY = RetryPolicy(max_attempts=2, backoff_base=0.5, backoff_cap=1.0, max_announced_wait=2.0)
# Before the incident's creation: the page that created it may be logged a moment earlier.
WINDOW_LEAD = timedelta(minutes=5)

# A log entry and a webhook saying the same thing: the event type the log entry corresponds to.
LOG_ENTRY_KINDS = {
    "trigger_log_entry": "incident.triggered",
    "acknowledge_log_entry": "incident.acknowledged",
    "acknowledgement_log_entry": "incident.acknowledged",
    "unacknowledge_log_entry": "incident.unacknowledged",
    "resolve_log_entry": "incident.resolved",
    "annotate_log_entry": "incident.annotated",
    "escalate_log_entry": "incident.escalated",
    "delegate_log_entry": "incident.delegated",
    "assign_log_entry": "incident.reassigned",
    "urgency_change_log_entry": "incident.priority_updated",
}
# Event types a log entry of that kind may also have been delivered as.
SAME_AS = {
    "incident.triggered": {"incident.triggered", "incident.reopened"},
    "incident.reassigned": {"incident.reassigned", "incident.responder.added"},
}


def iso_z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Entry:
    at: datetime
    source: str
    kind: str
    actor: str
    summary: str
    details: dict = field(default_factory=dict)
    # Where it goes in the order, when that differs from `at` (PagerDuty's second-precision stamps).
    sort_at: datetime | None = None

    def as_dict(self) -> dict:
        return {
            "at": iso_z(self.at),
            "source": self.source,
            "kind": self.kind,
            "actor": self.actor,
            "summary": self.summary,
            "details": self.details,
        }


def timeline_window_clean(
    *, incident: Incident, since: datetime | None, until: datetime | None, now: datetime, notes: list[str]
) -> tuple[datetime, datetime]:
    """Defaults: from just before the incident was created until now. An explicit window longer than
    MAX_WINDOW, or one that ends before it starts, is refused naming the field; a default one is
    narrowed to its last MAX_WINDOW with a note."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and timezone.is_naive(value):
            raise DomainError("Give a time with a zone, e.g. 2026-11-23T09:00:00Z.", field=name)
    start = since or incident.created_at - WINDOW_LEAD
    end = until or now
    if end < start:
        raise DomainError(f"until ({iso_z(end)}) is before since ({iso_z(start)}).", field="until")
    if end - start > MAX_WINDOW:
        if since is not None and until is not None:
            raise DomainError(f"The window may be at most {MAX_WINDOW.days} days long.", field="until")
        if since is not None:
            end = start + MAX_WINDOW
        else:
            start = end - MAX_WINDOW
        notes.append(
            f"The timeline covers at most {MAX_WINDOW.days} days: shown from {iso_z(start)} to {iso_z(end)}; "
            "ask for another window with since and until."
        )
    return start, end


def _incident_entries(incident: Incident, start: datetime, end: datetime) -> list[_Entry]:
    entries = []
    events = incident.events.filter(created_at__gte=start, created_at__lte=end).order_by("created_at", "id")
    for event in events[: MAX_ENTRIES + 1]:
        actor = event.actor or ""
        if event.kind == IncidentEventKind.PAGERDUTY_EVENT:
            details = dict(event.details or {})
            pd_id = details.get("incident_id", "")
            said = details.get("status") or ""
            note = details.get("note") or ""
            summary = f"PagerDuty {pd_id}: {event.pagerduty_event_type.removeprefix('incident.')}"
            summary += f" by {actor}" if actor else ""
            summary += f" ({said})" if said else ""
            summary += f": {note[:200]}" if note else ""
            if details.get("echo_of_step"):
                summary += " — the echo of our own step"
            details["via"] = "webhook"
            entries.append(_Entry(event.created_at, "pagerduty", event.pagerduty_event_type, actor, summary, details))
            continue
        if event.kind == IncidentEventKind.CREATED:
            summary = f"Incident created: {incident.title} (SEV{event.to_severity}, {event.to_status})"
        elif event.kind == IncidentEventKind.STATUS_CHANGED:
            summary = f"Status {event.from_status} → {event.to_status}"
        elif event.kind == IncidentEventKind.SEVERITY_CHANGED:
            summary = f"Severity SEV{event.from_severity} → SEV{event.to_severity}"
        elif event.kind == IncidentEventKind.MANUAL:
            summary = f"Asked to run runbook {event.runbook_slug}"
        else:
            summary = str(event)
        details = {
            key: value
            for key, value in (
                ("from_status", event.from_status),
                ("to_status", event.to_status),
                ("from_severity", event.from_severity),
                ("to_severity", event.to_severity),
                ("runbook", event.runbook_slug),
            )
            if value not in ("", None)
        }
        entries.append(_Entry(event.created_at, "incident", event.kind, actor, summary, details))
    return entries


def _run_entries(incident: Incident, start: datetime, end: datetime) -> list[_Entry]:
    entries = []
    runs = (
        RunbookRun.objects.filter(incident=incident, started_at__isnull=False, started_at__lte=end)
        .select_related("runbook", "event")
        .prefetch_related("step_runs")
        .order_by("started_at", "id")
    )
    for run in runs[: MAX_ENTRIES + 1]:
        actor = f"runbook {run.runbook.slug}"
        if run.event.kind == IncidentEventKind.MANUAL and run.event.actor:
            actor += f" (run by {run.event.actor})"
        base = {"run": run.pk, "runbook": run.runbook.slug}
        if run.started_at >= start:
            entries.append(
                _Entry(run.started_at, "runbook", "run_started", actor, f"Runbook {run.runbook} started", base)
            )
        if run.finished_at and start <= run.finished_at <= end:
            summary = f"Runbook {run.runbook} {run.status}" + (f": {run.error[:200]}" if run.error else "")
            entries.append(_Entry(run.finished_at, "runbook", f"run_{run.status}", actor, summary, dict(base)))
        steps = sorted((s for s in run.step_runs.all() if s.started_at is not None), key=lambda s: s.position)
        for step in steps[:200]:
            label = step.name or step.key
            details = {**base, "step": step.key, "action": step.action, "status": step.status}
            if step.finished_at is None or step.status not in FINISHED:
                if start <= step.started_at <= end:
                    summary = f"Step {label} ({step.action}) started"
                    entries.append(_Entry(step.started_at, "runbook", "step_started", actor, summary, details))
                continue
            if not start <= step.finished_at <= end:
                continue
            summary = f"Step {label} ({step.action}) {step.status}"
            if step.error:
                summary += f": {step.error[:200]}"
            elif step.outputs.get("incident_id"):
                summary += f" — PagerDuty {step.outputs['incident_id']}"
            entries.append(_Entry(step.finished_at, "runbook", f"step_{step.status}", actor, summary, details))
    return entries


def _agent(entry: dict) -> str:
    agent = entry.get("agent") if isinstance(entry.get("agent"), dict) else {}
    return str(agent.get("summary") or agent.get("name") or agent.get("id") or "")[:255]


def _log_entry(link: PagerDutyIncidentLink, raw: dict) -> _Entry | None:
    try:
        at = datetime.fromisoformat(str(raw.get("created_at") or "").replace("Z", "+00:00"))
    except ValueError:
        return None
    if timezone.is_naive(at):
        return None
    raw_type = str(raw.get("type") or "")[:100]
    kind = LOG_ENTRY_KINDS.get(raw_type, raw_type)
    channel = raw.get("channel") if isinstance(raw.get("channel"), dict) else {}
    agent = raw.get("agent") if isinstance(raw.get("agent"), dict) else {}
    details = {
        "incident_id": link.pagerduty_incident_id,
        "log_entry_id": str(raw.get("id") or "")[:32],
        "log_entry_type": raw_type,
        "agent_id": str(agent.get("id") or "")[:32],
        "channel": str(channel.get("type") or "")[:50],
        "via": "log_entry",
    }
    if raw.get("note"):
        details["note"] = str(raw["note"])[:2000]
    summary = f"PagerDuty {link.pagerduty_incident_id}: {str(raw.get('summary') or raw_type)[:300]}"
    if details.get("note"):
        summary += f": {details['note'][:200]}"
    # PagerDuty stamps log entries to the second: one at 10:00:05 happened before 10:00:06, maybe after
    # our records of 10:00:05.3, so it goes at the end of its second — except the trigger of an
    # incident our step created, which happened while that step ran.
    sort_at = at + timedelta(microseconds=999_999)
    step = link.created_by
    started = step.started_at if step is not None else None
    if kind == "incident.triggered" and started is not None and abs(started - at) <= timedelta(seconds=2):
        sort_at = started + timedelta(microseconds=1)
    return _Entry(at, "pagerduty", kind, _agent(raw), summary, details, sort_at)


def _same(webhook: _Entry, log: _Entry) -> bool:
    if webhook.details.get("incident_id") != log.details["incident_id"]:
        return False
    if webhook.kind not in SAME_AS.get(log.kind, {log.kind}):
        return False
    # Two notes in the same minutes are the same only if they say the same (PagerDuty may trim).
    said, logged = webhook.details.get("note"), log.details.get("note")
    if said and logged and not (said.startswith(logged) or logged.startswith(said)):
        return False
    return abs(webhook.at - log.at) <= CLOCK_MARGIN


def _merge_log_entries(entries: list[_Entry], logged: list[_Entry]) -> list[_Entry]:
    """A webhook and a log entry describing the same change make one entry: the webhook (ours, with
    its echo and ordering marks), enriched with the log entry's id and channel."""
    webhooks = [e for e in entries if e.source == "pagerduty" and e.details.get("via") == "webhook"]
    kept = []
    for log in logged:
        match = next((w for w in webhooks if _same(w, log)), None)
        if match is None:
            kept.append(log)
            continue
        webhooks.remove(match)  # one log entry per webhook
        match.details["log_entry_id"] = log.details["log_entry_id"]
        match.details["channel"] = log.details["channel"]
        match.details["via"] = "webhook+log_entry"
    return kept


def _pagerduty_entries(
    incident: Incident, start: datetime, end: datetime, notes: list[str], client_for
) -> list[_Entry]:
    links = list(
        PagerDutyIncidentLink.objects.filter(incident=incident)
        .select_related("connection", "created_by")
        .order_by("created_at")
    )
    if len(links) > MAX_LINKS_READ:
        notes.append(f"{len(links)} PagerDuty incidents are linked: only the first {MAX_LINKS_READ} were read.")
    entries = []
    for link in links[:MAX_LINKS_READ]:
        pd_id = link.pagerduty_incident_id
        if link.connection is None:
            notes.append(f"PagerDuty {pd_id}: its connection is gone; its log was not read.")
            continue
        try:
            client = client_for(link.connection)
            raw, complete = client.list_log_entries(
                pd_id,
                since=iso_z(start),
                until=iso_z(end),
                max_pages=LOG_PAGES_PER_INCIDENT,
            )
        except PagerDutyError as exc:
            notes.append(
                f"PagerDuty {pd_id}: its log could not be read ({str(exc)[:200]}); "
                "shown without it — what our webhooks recorded is here."
            )
            continue
        if not complete:
            notes.append(f"PagerDuty {pd_id}: more than {len(raw)} log entries; only the first {len(raw)} are shown.")
        for item in raw:
            entry = _log_entry(link, item) if isinstance(item, dict) else None
            if entry is not None and start <= entry.at <= end:
                entries.append(entry)
    return entries


def _interactive_client(connection) -> PagerDutyClient:
    return connection_client(
        connection=connection, retry=TIMELINE_READ_RETRY, timeout=settings.PAGERDUTY_INTERACTIVE_TIMEOUT_SECONDS
    )


def incident_timeline(
    *,
    incident: Incident,
    since: datetime | None = None,
    until: datetime | None = None,
    with_pagerduty: bool = True,
    client_for=_interactive_client,
    now: datetime | None = None,
) -> dict:
    """{"incident", "entries", "notes"}: everything that happened to the incident, in time order."""
    now = now or timezone.now()
    notes: list[str] = []
    start, end = timeline_window_clean(incident=incident, since=since, until=until, now=now, notes=notes)
    entries = _incident_entries(incident, start, end) + _run_entries(incident, start, end)
    if with_pagerduty:
        entries += _merge_log_entries(entries, _pagerduty_entries(incident, start, end, notes, client_for))
    order = {"incident": 0, "runbook": 1, "pagerduty": 2}
    entries.sort(key=lambda e: (e.sort_at or e.at, order.get(e.source, 3)))
    if len(entries) > MAX_ENTRIES:
        notes.append(
            f"{len(entries)} entries in this window: the first {MAX_ENTRIES} are shown; "
            f"ask again with since={iso_z(entries[MAX_ENTRIES].at)}."
        )
        entries = entries[:MAX_ENTRIES]
    return {
        "incident": {
            "id": str(incident.pk),
            "short_id": incident.short_id,
            "title": incident.title,
            "severity": incident.severity,
            "status": incident.status,
            "created_at": iso_z(incident.created_at),
            "resolved_at": iso_z(incident.resolved_at) if incident.resolved_at else None,
            "url": incident.url,
        },
        "entries": [e.as_dict() for e in entries],
        "notes": notes,
    }


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _md_time(value: str | None) -> str:
    return value.replace("T", " ").replace("Z", " UTC") if value else "—"


def timeline_markdown(timeline: dict) -> str:
    """A post-mortem draft: what happened, when (UTC) and who did it, ready to edit."""
    incident = timeline["incident"]
    lines = [
        f"# Post-mortem: {incident['short_id']} {_cell(incident['title'])}",
        "",
        "## Summary",
        "",
        f"- Severity: SEV{incident['severity']}",
        f"- Status: {incident['status']}",
        f"- Opened: {_md_time(incident['created_at'])}",
        f"- Resolved: {_md_time(incident['resolved_at'])}",
        f"- Incident: {incident['url']}",
        "",
        "_What happened, the impact, the cause: to be written._",
        "",
        "## Timeline (UTC)",
        "",
        "| # | Time (UTC) | Source | What | Who |",
        "|---|---|---|---|---|",
    ]
    for number, entry in enumerate(timeline["entries"], start=1):
        lines.append(
            f"| {number} | {_md_time(entry['at'])} | {entry['source']} | {_cell(entry['summary'])} "
            f"| {_cell(entry['actor']) or '—'} |"
        )
    if not timeline["entries"]:
        lines.append("| | | | Nothing recorded in this window. | |")
    if timeline["notes"]:
        lines += ["", "## Notes", ""] + [f"- {_cell(note)}" for note in timeline["notes"]]
    lines += ["", "## Follow-ups", "", "- [ ] "]
    return "\n".join(lines) + "\n"


def _refresh_client(connection) -> PagerDutyClient:
    # link_refresh makes a look-up's attempts (twice the policy's): one here, so two in all.
    return connection_client(
        connection=connection,
        retry=RetryPolicy(max_attempts=1, backoff_base=0.5, backoff_cap=1.0, max_announced_wait=2.0),
        timeout=settings.PAGERDUTY_INTERACTIVE_TIMEOUT_SECONDS,
    )


def incident_pagerduty_refresh(*, incident: Incident, client_for=_refresh_client) -> list[str]:
    """Re-read each linked PagerDuty incident (GET /incidents/{id}) into its link; one line per link
    saying what PagerDuty said or why it could not be asked."""
    links = list(
        PagerDutyIncidentLink.objects.filter(incident=incident).select_related("connection").order_by("created_at")
    )
    said = []
    for link in links[:MAX_LINKS_READ]:
        pd_id = link.pagerduty_incident_id
        if link.connection is None:
            said.append(f"PagerDuty {pd_id}: its connection is gone; not read.")
            continue
        try:
            link_refresh(link=link, client=client_for(link.connection))
        except PagerDutyError as exc:
            said.append(f"PagerDuty {pd_id}: could not be read ({str(exc)[:200]}).")
            continue
        said.append(f"PagerDuty {pd_id}: {link.status}" + (f", {link.urgency} urgency" if link.urgency else "") + ".")
    if len(links) > MAX_LINKS_READ:
        said.append(f"{len(links) - MAX_LINKS_READ} more linked PagerDuty incidents were not read.")
    return said
