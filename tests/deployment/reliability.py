"""
``make reliability``: run the deployment scenarios (``pytest -m deployment``) and tabulate the figures.

Every scenario runs ``--runs`` times against one real deployment; each run appends its figures
(see :mod:`tests.deployment.scenario`) to a JSON-lines file, and this script turns them into a table:
scenario, runs, passed, generations submitted vs billed, time. The table is printed and written to
``tests/deployment/RESULTS.md``.

    python -m tests.deployment.reliability --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from tests.deployment.conftest import RUNS_ENV
from tests.deployment.scenario import REPORT_ENV

HERE = Path(__file__).parent
RESULTS = HERE / "RESULTS.md"
COLUMNS = (
    "scenario",
    "runs",
    "passed",
    "generations expected",
    "generations run (accepted)",
    "submissions sent",
    "images expected",
    "images billed",
    "time per run (median / max)",
)


def table(records: list[dict[str, Any]]) -> str:
    by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_scenario[record["scenario"]].append(record)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name in sorted(by_scenario):
        runs = by_scenario[name]
        seconds = [run["seconds"] for run in runs]
        cells = [
            name,
            str(len(runs)),
            str(sum(run["passed"] for run in runs)),
            str(sum(run["generations_expected"] for run in runs)),
            str(sum(run["generations_run"] for run in runs)),
            str(sum(run["submissions_sent"] for run in runs)),
            str(sum(run["images_expected"] for run in runs)),
            str(sum(run["images_billed"] for run in runs)),
            f"{statistics.median(seconds):.1f} s / {max(seconds):.1f} s",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def document(records: list[dict[str, Any]], runs: int, wall: float, exit_code: int) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return f"""# Reliability figures

Produced by `make reliability` ({when}; {machine}; Airflow {version("apache-airflow")}).
A real deployment on loopback (api-server, scheduler with the LocalExecutor, dag-processor and
triggerer as separate processes, SQLite) against the Runware emulator in its own process; every
scenario ran {runs} time(s); pytest exit code {exit_code}; wall time {wall:.0f} s including start-up.

- *generations expected*: the distinct generations (taskUUIDs) the DAGs needed;
  *generations run*: how many the API accepted and ran. More would mean a generation paid twice.
- *submissions sent*: imageInference task objects that reached the API, re-sends included (HTTP
  retries, task retries and re-attaching tries send the same taskUUID again, by design).
- *images billed* vs *images expected*: what the emulator charged against what the DAGs asked for.
  Moderated or failed generations are not billed; the retry-budget scenario is refused every time.

{table(records)}

Scenarios: 1 deferrable generation through the real triggerer (operator, fire-and-forget +
deferrable sensor); 2 the triggerer is SIGKILLed while its triggers poll and restarted; 3 the task
process of a non-deferrable generation is SIGKILLed after submitting; 3b the whole LocalExecutor
worker (supervisor and task) is SIGKILLed; 4a a fault storm (429 with and without Retry-After,
HTML 502, 503, 504, dropped connections, stalls) during a deferrable batch; 4b the retry budget runs
out (429s, dropped connections); 5 moderation and task errors inside a batch; 6 a user marks a
deferred task failed / clears it.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of every scenario (default 3)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"markdown file (default {RESULTS})")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bfl-reliability-") as scratch:
        report = Path(scratch) / "figures.jsonl"
        env = {**os.environ, REPORT_ENV: str(report), RUNS_ENV: str(args.runs)}
        started = time.monotonic()
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "deployment",
            "-q",
            "-p",
            "no:cacheprovider",
            str(HERE),
        ]
        exit_code = subprocess.call(command, env=env)
        wall = time.monotonic() - started
        records = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    if not records:
        print("no figures were recorded (did the deployment start?)", file=sys.stderr)
        return exit_code or 1
    text = document(records, args.runs, wall, exit_code)
    args.output.write_text(text)
    print(f"\n{table(records)}\n\nwritten to {args.output}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
