"""pytest plugin for `make mutation` only: every mutant's test session starts from a copy of one
migrated SQLite file instead of migrating an in-memory database again.

mutmut forks a process per mutant and each runs `pytest.main`, so pytest-django creates the test
database once per mutant; the migrations were most of a mutant's time. bench/mutation.py migrates
a template file once (MUTATION_TEMPLATE_DB) and loads this plugin with `-p bench.mutmut_db`; a
session copies the template to a file of its own (two mutants may run at once, and transactional
tests flush what they use) and pytest-django reuses it (`--reuse-db`), running only the no-op
`migrate` check. Without MUTATION_TEMPLATE_DB the plugin does nothing.

It also leaves out the tests marked `scale` (the large-account imports: 113 s of the selection's
205 s). mutmut runs every test that reaches a mutated function, so each surviving client mutant
paid those minutes; the small-account importer tests reach the same code.
"""

import contextlib
import os
import shutil
import tempfile

import pytest

_copy: str | None = None


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    global _copy
    template = os.environ.get("MUTATION_TEMPLATE_DB")
    if not template:
        return
    from django.conf import settings

    fd, _copy = tempfile.mkstemp(prefix="mutmut-db-", suffix=".sqlite3")
    os.close(fd)
    shutil.copyfile(template, _copy)
    # The same dict the connection handler holds: a connection made before the fork sees it too.
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = _copy
    config.option.reuse_db = True
    config.option.create_db = False


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("MUTATION_TEMPLATE_DB"):
        return
    kept = [item for item in items if item.get_closest_marker("scale") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("scale")])
        items[:] = kept


def pytest_unconfigure(config):
    global _copy
    if _copy:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_copy + suffix)
        _copy = None
