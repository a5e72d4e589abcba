"""
``make reliability``: run the deployment scenarios (``pytest -m deployment``) and tabulate the figures.

Every scenario runs ``--runs`` times (the heavy production-shaped ones once) against one real
deployment per topology; each run appends its figures (see :mod:`tests.deployment.scenario`) to a
JSON-lines file, and this script turns them into one table per topology: scenario, runs, passed,
generations submitted vs billed, time, plus a table of the scenario-specific measurements. The
tables are printed and written to ``tests/deployment/RESULTS.md``.

    python -m tests.deployment.reliability --runs 3 [--topologies local,celery]
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

from tests.deployment.conftest import FULL_ENV, RUNS_ENV, TOPOLOGIES_ENV
from tests.deployment.dags import BIG_RUN_IMAGES as IMAGES
from tests.deployment.dags import PROBE_COUNT as PROBE
from tests.deployment.dags import TRIGGER_COUNT as TRIGGERS
from tests.deployment.deployment import TOPOLOGIES
from tests.deployment.scenario import REPORT_ENV

HERE = Path(__file__).parent
RESULTS = HERE / "RESULTS.md"
#: Every run's raw figures, so a run of one topology can keep the other's in RESULTS.md.
RECORDS = HERE / "RESULTS.jsonl"
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


def _scenario_key(name: str) -> tuple[int, str]:
    number = name.split(" ", 1)[0].rstrip("abcdefgh")
    return (int(number) if number.isdigit() else 999, name)


def table(records: list[dict[str, Any]]) -> str:
    by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_scenario[record["scenario"]].append(record)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name in sorted(by_scenario, key=_scenario_key):
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


def details_table(records: list[dict[str, Any]]) -> str:
    """The scenario-specific measurements (last run of each scenario that recorded any)."""
    rows = {record["scenario"]: record["details"] for record in records if record.get("details")}
    if not rows:
        return ""
    lines = ["| scenario | measurement | value |", "|---|---|---|"]
    for name in sorted(rows, key=_scenario_key):
        for measurement, value in rows[name].items():
            lines.append(f"| {name} | {measurement} | {value} |")
    return "\n".join(lines)


def topology_section(name: str, records: list[dict[str, Any]]) -> str:
    mine = [record for record in records if record.get("topology", "local") == name]
    if not mine:
        return ""
    details = details_table(mine)
    return f"""## Topology `{name}`: {TOPOLOGIES[name].description}

{table(mine)}
{f"{chr(10)}{details}{chr(10)}" if details else ""}"""


def document(records: list[dict[str, Any]], runs: int, wall: float, exit_code: int) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = "\n".join(filter(None, (topology_section(name, records) for name in TOPOLOGIES)))
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return f"""# Reliability figures

Produced by `make reliability` ({when}; {machine}; Airflow {version("apache-airflow")}).
Real deployments on loopback against the Runware emulator in its own process, one per topology
(see `tests/deployment/deployment.py`); every scenario ran {runs} time(s), the production-shaped
ones (7-10) once; pytest exit code {exit_code}; wall time {wall:.0f} s including start-ups.

- *generations expected*: the distinct generations (taskUUIDs) the DAGs needed;
  *generations run*: how many the API accepted and ran. More would mean a generation paid twice.
- *submissions sent*: imageInference task objects that reached the API, re-sends included (HTTP
  retries, task retries and re-attaching tries send the same taskUUID again, by design).
- *images billed* vs *images expected*: what the emulator charged against what the DAGs asked for.
  Moderated or failed generations are not billed; the retry-budget scenario is refused every time.

{sections}
Scenarios: 1 deferrable generation through the real triggerer (operator, fire-and-forget +
deferrable sensor); 2 the triggerer is SIGKILLed while its triggers poll and restarted; 3 the task
process of a non-deferrable generation is SIGKILLed after submitting; 3b the whole LocalExecutor
worker (supervisor and task) is SIGKILLed; 4a a fault storm (429 with and without Retry-After,
HTML 502, 503, 504, dropped connections, stalls) during a deferrable batch; 4b the retry budget runs
out (429s, dropped connections); 5 moderation and task errors inside a batch; 6 a user marks a
deferred task failed / clears it. On `celery` only: 7 one of two triggerers is SIGKILLed while
{TRIGGERS} triggers are deferred and the other adopts them (a probe run of {PROBE} tasks first
measures the deployment's deferral rate, which sizes the waits; its generations are counted too); 8 the Celery worker landing a batch into
S3 is SIGKILLed and the retry runs on the other worker; 9 PostgreSQL is restarted while tasks run
and defer; 10 a run of {IMAGES:,} images over mapped tasks whose submissions a pool limits.
"""


def merged(records: list[dict[str, Any]], previous: Path, ran: set[str]) -> list[dict[str, Any]]:
    """This run's figures, plus the last recorded figures of every topology this run did not run."""
    kept = []
    if previous.exists():
        kept = [json.loads(line) for line in previous.read_text().splitlines() if line.strip()]
    return [record for record in kept if record.get("topology", "local") not in ran] + records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of every scenario (default 3)")
    parser.add_argument(
        "--topologies",
        default=",".join(TOPOLOGIES),
        help=f"comma-separated (default: {','.join(TOPOLOGIES)})",
    )
    parser.add_argument(
        "--records", type=Path, default=RECORDS, help=f"raw figures, kept per topology (default {RECORDS})"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"markdown file (default {RESULTS})")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bfl-reliability-") as scratch:
        report = Path(scratch) / "figures.jsonl"
        env = {
            **os.environ,
            REPORT_ENV: str(report),
            RUNS_ENV: str(args.runs),
            TOPOLOGIES_ENV: args.topologies,
            FULL_ENV: "1",
        }
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
    records = merged(records, args.records, ran=set(args.topologies.split(",")))
    args.records.write_text("".join(json.dumps(record) + "\n" for record in records))
    text = document(records, args.runs, wall, exit_code)
    args.output.write_text(text)
    for name in TOPOLOGIES:
        section = topology_section(name, records)
        if section:
            print(f"\n{section}")
    print(f"written to {args.output}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
