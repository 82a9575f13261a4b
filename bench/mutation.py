"""Mutation testing of the modules that decide who gets paged and what leaks: mutmut 3.8.1 over the
fast unit tests, one module at a time, then a table of scores. Prints figures; see docs/testing.md.

    make mutation                                            # = .venv/bin/python bench/mutation.py
    .venv/bin/python bench/mutation.py --module matcher      # one module (a suffix of its dotted name)
    .venv/bin/python bench/mutation.py --keep --module client --show   # reuse mutants/ after editing tests only
    .venv/bin/python bench/mutation.py --keep --retest-survivors         # after adding tests: survivors again
    .venv/bin/python bench/mutation.py --keep --retest "*url_problem__mutmut_4"   # named ones again

Verdicts are recorded in bench/mutation-results.json (committed) and restored into a fresh mutants/,
so a new checkout resumes where the last run stopped; `--fresh` tests everything again.

The modules and the tests are configured in pyproject.toml ([tool.mutmut]); mutmut copies the project
to mutants/ and runs there with SQLite and eager Celery, so no PostgreSQL, Redis or worker is needed.
The official PagerDuty spec check of the `pd` fixture stays on: mutmut's copy cannot find the spec
beside the repository, so its path is passed in the environment.

Score = (killed + timed out) / (mutants − skipped). A mutant "with no tests" counts against the score.
Exits 1 when a module scores under --fail-under (90 by default).
"""

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
# Every verdict so far, by mutant, with the hash of the function it mutated: committed, so a new
# checkout (every session's machine is new) resumes instead of paying hours again. mutmut keeps a
# verdict only while its function's hash is unchanged, so an edited function is tested afresh.
RESULTS = ROOT / "bench" / "mutation-results.json"
# Where apps.sandbox.contract looks when the variables are unset: shared/ beside the checkout (or,
# for a git worktree, beside one of its parents).
REFERENCE = next(
    (d / "shared" / "pagerduty" / "reference" for d in ROOT.parents if (d / "shared" / "pagerduty").is_dir()),
    ROOT.parent / "shared" / "pagerduty" / "reference",
)
SPECS = {
    "PAGERDUTY_OPENAPI_SPEC": REFERENCE / "REST" / "openapiv3.json",
    "PAGERDUTY_EVENTS_OPENAPI_SPEC": REFERENCE / "events-v2" / "openapiv3.json",
}
# Unit tests must not reach the developer's PostgreSQL or Redis from mutants/.
SERVER_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PAGERDUTY_RATE_LIMIT_REDIS_URL")


def configured_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def dotted(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES}
    # mutmut's own timeout counts CPU seconds, and a mutant that makes a step back off for real
    # (an approval let through to a page nobody answered) sleeps: 300 s of pytest-timeout each,
    # in wall time. No selected test needs 30 s (the slowest takes about 5).
    env.setdefault("PYTEST_TIMEOUT", "30")
    for name, default in SPECS.items():
        spec = Path(env.get(name) or default).resolve()
        if spec.is_file():
            env[name] = str(spec)
        else:
            print(f"warning: {spec} not found: requests are not checked against PagerDuty's spec", file=sys.stderr)
    return env


def meta_path(path: str) -> Path:
    """mutmut's record of one module's mutants: their verdicts and the hashes of their functions."""
    return MUTANTS / f"{path}.meta"


def read_meta(path: str) -> dict | None:
    file = meta_path(path)
    return json.loads(file.read_text()) if file.exists() else None


def status_counts(path: str) -> tuple[Counter, list[tuple[str, str]]]:
    """Statuses of the module's mutants as mutmut recorded them, and the survivors (name, status)."""
    from mutmut.stats import status_by_exit_code

    meta = read_meta(path)
    counts: Counter = Counter()
    survivors = []
    for name, exit_code in meta["exit_code_by_key"].items():
        status = status_by_exit_code[exit_code]
        counts[status] += 1
        if status not in ("killed", "timeout", "skipped", "caught by type check"):
            survivors.append((name, status))
    return counts, sorted(survivors, key=lambda s: (s[0].rpartition("__mutmut_")[0], int(s[0].rpartition("_")[2])))


def forget(modules: list[str], chosen) -> int:
    """mutmut keeps a verdict until the mutated function changes; new tests alone do not reopen it.
    Clear the verdicts of the mutants `chosen(name, status)` picks, so the next run tests them."""
    from mutmut.stats import status_by_exit_code

    forgotten = 0
    for path in modules:
        meta = read_meta(path)
        if meta is None:
            continue
        for name, exit_code in meta["exit_code_by_key"].items():
            if exit_code is not None and chosen(name, status_by_exit_code[exit_code]):
                meta["exit_code_by_key"][name] = None
                forgotten += 1
        meta_path(path).write_text(json.dumps(meta, indent=4))
    return forgotten


def survivors_again(name: str, status: str) -> bool:
    return status in ("survived", "no tests")


def save_results(modules: list[str]) -> None:
    """Record the verdicts of `modules` in RESULTS, next to those of the modules not run now."""
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for path in modules:
        meta = read_meta(path)
        if meta is None:
            continue
        saved[path] = {
            "hash_by_function_name": meta["hash_by_function_name"],
            "exit_code_by_key": {k: v for k, v in sorted(meta["exit_code_by_key"].items()) if v is not None},
        }
    RESULTS.write_text(json.dumps(dict(sorted(saved.items())), indent=1, sort_keys=True) + "\n")


def restore_results() -> int:
    """Seed a fresh mutants/ with the recorded verdicts. mutmut then generates each module's mutants
    and keeps a verdict only where the function's hash is the recorded one."""
    if not RESULTS.exists():
        return 0
    restored = 0
    for path, recorded in json.loads(RESULTS.read_text()).items():
        if not (ROOT / path).exists():
            continue
        file = meta_path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(
            json.dumps(
                {
                    "exit_code_by_key": recorded["exit_code_by_key"],
                    "hash_by_function_name": recorded["hash_by_function_name"],
                    "type_check_error_by_key": {},
                    "durations_by_key": {},
                    "estimated_durations_by_key": {},
                }
            )
        )
        restored += len(recorded["exit_code_by_key"])
    return restored


def undecided(modules: list[str]) -> list[str]:
    names = []
    for path in modules:
        names += [name for name, exit_code in read_meta(path)["exit_code_by_key"].items() if exit_code is None]
    return names


def score(counts: Counter) -> float:
    tested = sum(counts.values()) - counts["skipped"]
    return 100.0 * (counts["killed"] + counts["timeout"] + counts["caught by type check"]) / tested if tested else 0.0


def build_template_db(env: dict) -> Path:
    """Migrate one SQLite file for bench/mutmut_db.py to copy into every mutant's test session."""
    MUTANTS.mkdir(exist_ok=True)
    template = MUTANTS / "template-db.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{template}{suffix}").unlink(missing_ok=True)
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=ROOT,
        env={**env, "DATABASE_URL": f"sqlite:///{template}", "DJANGO_SETTINGS_MODULE": "config.settings_test"},
        check=True,
    )
    # The settings open SQLite in WAL mode: fold the log into the file before it is copied.
    import sqlite3

    with sqlite3.connect(template) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")
    print(f"template database migrated in {time.monotonic() - started:.1f} s: {template.relative_to(ROOT)}", flush=True)
    return template


def generate_mutants(env: dict, processes: int) -> None:
    """Write every module's mutants as `mutmut run` does before testing anything (its own steps, in
    its order), keeping the restored verdicts of the functions whose hash is unchanged."""
    steps = (
        "import mutmut.__main__ as m",
        "m.set_mutant_under_test('mutant_generation')",
        "m.makedirs(m.Path('mutants'), exist_ok=True)",
        "m.copy_src_dir()",
        "m.copy_also_copy_files()",
        "m.setup_source_paths()",
        "m.store_lines_covered_by_tests()",
        f"m.create_mutants({processes})",
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "; ".join(steps)], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    print(f"mutants written in {time.monotonic() - started:.1f} s", flush=True)


def mutant_diff(mutmut: Path, name: str, env: dict) -> list[str]:
    shown = subprocess.run([str(mutmut), "show", name], cwd=ROOT, env=env, capture_output=True, text=True)
    return [line for line in shown.stdout.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", action="append", default=[], help="only modules whose dotted name ends so")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (CPU cores)")
    parser.add_argument("--keep", action="store_true", help="reuse mutants/ (fine when only tests changed)")
    parser.add_argument(
        "--fresh", action="store_true", help=f"ignore the verdicts recorded in {RESULTS.relative_to(ROOT)}"
    )
    parser.add_argument(
        "--retest-survivors",
        action="store_true",
        help="test the recorded survivors (and mutants without tests) again, after adding tests",
    )
    parser.add_argument(
        "--retest",
        action="append",
        default=[],
        metavar="PATTERN",
        help="test these mutants again (fnmatch patterns of their names), e.g. after a test pinned them",
    )
    parser.add_argument("--show", action="store_true", help="print each survivor's diff")
    parser.add_argument("--fail-under", type=float, default=90.0)
    args = parser.parse_args()

    mutmut = Path(sys.executable).parent / "mutmut"
    if not mutmut.exists():
        print("mutmut is not installed: .venv/bin/pip install 'mutmut==3.8.1'", file=sys.stderr)
        return 2
    modules = [m for m in configured_modules() if not args.module or any(dotted(m).endswith(s) for s in args.module)]
    if not modules:
        print(f"no configured module matches {args.module}", file=sys.stderr)
        return 2
    env = environment()
    if not args.keep and MUTANTS.exists():
        # mutmut never refreshes an unmutated source file it copied before: start clean.
        shutil.rmtree(MUTANTS)
    if not args.keep and not args.fresh:
        print(f"verdicts restored from {RESULTS.relative_to(ROOT)}: {restore_results()}", flush=True)
    for path in configured_modules():
        # A run stopped while writing a module's mutants leaves it empty and newer than its source,
        # which mutmut then takes as done: make it generate that module again.
        copy = MUTANTS / path
        if copy.exists() and copy.stat().st_size == 0 and (ROOT / path).stat().st_size:
            for leftover in (copy, Path(f"{copy}.meta"), Path(f"{copy}.spans")):
                leftover.unlink(missing_ok=True)

    if args.retest_survivors:
        if args.fresh:
            print("--retest-survivors with --fresh: every mutant is tested anyway", file=sys.stderr)
            return 2
        print(f"survivors to test again: {forget(modules, survivors_again)}", flush=True)

    if args.retest:
        if not all((MUTANTS / path).exists() and meta_path(path).exists() for path in modules):
            generate_mutants(env, args.max_children)

        def named(name: str, status: str) -> bool:
            return any(fnmatch.fnmatchcase(name, pattern) for pattern in args.retest)

        print(f"mutants to test again: {forget(modules, named)}", flush=True)

    template = build_template_db(env)
    env["MUTATION_TEMPLATE_DB"] = str(template)

    # One mutmut invocation for every module: each invocation first runs the tests of the chosen
    # mutants once, clean (minutes for the client's), so per-module invocations paid it again and again.
    started = time.monotonic()
    log = MUTANTS / "mutmut-run.log"
    print(f"{', '.join(modules)}: running (log: {log.relative_to(ROOT)})", flush=True)
    # mutmut tests again every mutant it is *named*, decided or not (a pattern names them all);
    # named by nothing, it tests the undecided mutants of every module. So all the modules are run
    # unnamed, and some of them by the names of their undecided mutants, which only exist once
    # mutmut has written the mutants: a fresh mutants/ has them written first.
    command = [str(mutmut), "run", "--max-children", str(args.max_children)]
    if set(modules) != set(configured_modules()):
        if not all((MUTANTS / path).exists() and meta_path(path).exists() for path in modules):
            generate_mutants(env, args.max_children)
        names = undecided(modules)
        # Nothing left to decide: `true` stands in, so the table below is still printed.
        command = command + names if names else ["true"]
    with log.open("w") as out:
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        finally:
            # Interrupted or not, what was decided is kept for the next run and the next checkout.
            save_results(modules)
    minutes = (time.monotonic() - started) / 60
    if done.returncode != 0:
        print(f"mutmut failed (exit {done.returncode}); see {log}", file=sys.stderr)
        return 2
    print(f"all modules in {minutes:.1f} min", flush=True)

    rows = []
    for path in modules:
        counts, survivors = status_counts(path)
        rows.append((path, counts, survivors))
        print(f"{path}: {score(counts):.0f} %", flush=True)
        for name, status in survivors:
            print(f"  {status}: {name}")
            if args.show:
                for line in mutant_diff(mutmut, name, env):
                    print(f"      {line.strip()}")

    print()
    print("| module | mutants | killed | timeout | survived | no tests | score |")
    print("|---|---|---|---|---|---|---|")
    failing = []
    for path, counts, _ in rows:
        total = sum(counts.values()) - counts["skipped"]
        print(
            f"| {path} | {total} | {counts['killed']} | {counts['timeout']} | {counts['survived']} "
            f"| {counts['no tests']} | {score(counts):.0f} % |"
        )
        if score(counts) < args.fail_under:
            failing.append(path)
    if failing:
        print(f"\nunder {args.fail_under:.0f} %: {', '.join(failing)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
