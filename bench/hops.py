"""Where the latency of `make bench`'s phase 1 goes: each hop from the dispatch message being
published to the stand-in receiving POST /incidents, as medians over one-at-a-time status changes.
Prints figures; asserts nothing.

    .venv/bin/python bench/hops.py --latency 200

Runs bench/run.py's latency phase (the same workers, database and stand-in) with
bench/hops/sitecustomize.py on PYTHONPATH: in every process it notes, on the machine's monotonic
clock, when the message is published, the task starts, each SQL statement and commit is sent and
answered, the run is created, the step marked running, the rate budget asked and the request sent,
and when the stand-in parses the request. The notes cost a few microseconds each, so the total is
a little above the plain bench's.
"""

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_marks(directory: Path) -> list[tuple[float, str, str]]:
    marks = []
    for log in directory.glob("*.log"):
        for line in log.read_text().splitlines():
            at, what, detail, _pid = line.split(" ")
            marks.append((float(at), what, detail))
    return sorted(marks)


def latency_runs(marks) -> list[list[tuple[float, str]]]:
    """Each status change's marks, from its message's publication to the stand-in's parse."""
    runs, current = [], None
    for at, what, detail in marks:
        if what == "publish:in":
            current = [(at, what)]
        elif current is not None:
            current.append((at, f"{what} {detail}" if what == "sql:in" else what))
            if what == "arrive:in":
                if any(w == "send:in" for _, w in current):
                    runs.append(current)
                current = None
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hops-") as directory:
        env = {
            **os.environ,
            "HOPS_DIR": directory,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench" / "hops"), os.environ.get("PYTHONPATH")])),
        }
        command = [sys.executable, str(ROOT / "bench" / "run.py"), "--latency", str(args.latency)]
        command += ["--storm", "0", "--limited", "0", "--unbudgeted", "0", "--accounts", "0", "--embedded", "0"]
        command += ["--no-queries"]
        bench = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
        print("\n".join(line for line in bench.stdout.splitlines() if line.startswith(("1.", "    medians", "load"))))
        runs = latency_runs(read_marks(Path(directory)))
    shapes = collections.Counter(tuple(what for _, what in run) for run in runs)
    if not shapes:
        raise SystemExit("no latency run was traced")
    shape, count = shapes.most_common(1)[0]
    chosen = [run for run in runs if tuple(what for _, what in run) == shape]
    print(f"hops of {count} of {len(runs)} status changes (those of the most common shape), medians in ms:")
    total = 0.0
    for i in range(1, len(shape)):
        median = statistics.median((run[i][0] - run[i - 1][0]) * 1000 for run in chosen)
        total += median
        print(f"  {median:6.2f}  {shape[i - 1]} → {shape[i]}")
    whole = statistics.median((run[-1][0] - run[0][0]) * 1000 for run in chosen)
    print(f"  median published → arrived {whole:.2f} ms (sum of the medians {total:.2f})")


if __name__ == "__main__":
    main()
