"""Runbook versions: a snapshot in the runbooks-as-code shape each time a runbook changes.

A version holds the same dict `loader.runbook_to_spec` exports, so a version can be read, diffed
and dumped as the YAML a person would commit. A new one is written only when the spec differs
from the latest, so saving without a change, or re-loading the same files, adds nothing.
"""

import difflib
import json

from django.db import transaction
from django.db.models import Max

from apps.core.errors import DomainError
from apps.runbooks.loader import dump_yaml, runbook_to_spec
from apps.runbooks.models import Runbook, RunbookVersion


def _canonical(spec: dict) -> str:
    # Compared as JSON text so tuples/lists and int/str subtleties from the DB round-trip equal.
    return json.dumps(spec, sort_keys=True, ensure_ascii=False)


def runbook_version_latest(*, runbook: Runbook) -> RunbookVersion | None:
    return runbook.versions.order_by("-number").first()


# The version each runbook, as last saved, was found to hold, in this process: a run of a runbook
# unchanged since reads no version. Keyed on the runbook's updated_at (a save moves it, even one
# back to an earlier spec, whose new version is then found), and the spec is still compared, so a
# step changed without saving the runbook (a shell) is noticed. Bounded: the oldest entry goes.
_RUN_VERSIONS: dict[tuple, tuple[str, int]] = {}
RUN_VERSIONS_KEPT = 128


def runbook_version_for_run(*, runbook: Runbook, steps) -> int:
    """The pk of the version holding the runbook as `steps` (in order) describe it, for a run to
    name exactly what it executes. Normally the latest saved version, read without locking: one
    that matches is the right one whoever else is saving. Written here only if the runbook changed
    by a path that records none (shell, data migration)."""
    canonical = _canonical(runbook_to_spec(runbook, steps=steps))
    key = (runbook.pk, runbook.updated_at)
    known = _RUN_VERSIONS.get(key)
    if known is not None and known[0] == canonical:
        return known[1]
    version = runbook_version_latest(runbook=runbook)
    if version is None or _canonical(version.spec) != canonical:
        version, _ = runbook_version_ensure(runbook=runbook, comment="Recorded when a run started")
        if _canonical(version.spec) != canonical:
            return version.pk  # saved again since the steps were read: not this runbook's version
    while len(_RUN_VERSIONS) >= RUN_VERSIONS_KEPT:
        del _RUN_VERSIONS[next(iter(_RUN_VERSIONS))]
    _RUN_VERSIONS[key] = (canonical, version.pk)
    return version.pk


def runbook_versions_forget() -> None:
    """Forget what runbook_version_for_run remembered (a version it named may be gone: a restored
    database, a test's rolled-back transaction)."""
    _RUN_VERSIONS.clear()


@transaction.atomic
def runbook_version_ensure(*, runbook: Runbook, user=None, comment: str = "") -> tuple[RunbookVersion, bool]:
    """The version matching the runbook as it is now, written if the latest one differs.

    Returns (version, created). The runbook row is locked first so two saves (or two workers
    starting runs) never compute the same next number.
    """
    Runbook.objects.select_for_update().filter(pk=runbook.pk).first()
    spec = runbook_to_spec(runbook)
    latest = runbook_version_latest(runbook=runbook)
    if latest is not None and _canonical(latest.spec) == _canonical(spec):
        return latest, False
    number = (runbook.versions.aggregate(last=Max("number"))["last"] or 0) + 1
    version = RunbookVersion.objects.create(
        runbook=runbook,
        number=number,
        spec=spec,
        created_by=user if getattr(user, "is_authenticated", False) else None,
        comment=(comment or "")[:300],
    )
    return version, True


# The comment of a version written by `load_runbooks`: how a version that came from a file is told
# apart from an edit made in the admin or the API.
LOADED_FROM_YAML = "Loaded from YAML"


def runbook_edit_since_load(*, runbook: Runbook) -> RunbookVersion | None:
    """The version showing the runbook was changed since it was last loaded from YAML, or None when
    what is stored is still what a file loaded (or no version says otherwise)."""
    latest = runbook_version_latest(runbook=runbook)
    if latest is None:
        return None
    if latest.comment != LOADED_FROM_YAML or latest.created_by_id is not None:
        return latest
    if _canonical(latest.spec) != _canonical(runbook_to_spec(runbook)):
        # Changed without a version being written (the ORM, a shell): as much an edit.
        return latest
    return None


def runbook_version_get(*, runbook: Runbook, number) -> RunbookVersion:
    try:
        return runbook.versions.get(number=int(number))
    except (TypeError, ValueError, RunbookVersion.DoesNotExist):
        raise DomainError(f"Runbook {runbook.slug!r} has no version {number!r}", field="version") from None


def version_yaml(version: RunbookVersion) -> str:
    return dump_yaml(version.spec)


def versions_diff(*, older: RunbookVersion, newer: RunbookVersion, context: int = 3) -> list[tuple[str, str]]:
    """Unified diff of the two versions' YAML as (kind, line) pairs; kind is one of
    `header`, `hunk`, `added`, `removed`, `context` — ready for a template to colour."""
    lines = difflib.unified_diff(
        version_yaml(older).splitlines(),
        version_yaml(newer).splitlines(),
        fromfile=f"{older.runbook.slug} v{older.number}",
        tofile=f"{newer.runbook.slug} v{newer.number}",
        n=context,
        lineterm="",
    )
    diff = []
    for line in lines:
        if line.startswith(("---", "+++")):
            kind = "header"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "added"
        elif line.startswith("-"):
            kind = "removed"
        else:
            kind = "context"
        diff.append((kind, line))
    return diff
