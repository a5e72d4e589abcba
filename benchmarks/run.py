"""
Run the benchmarks and print (and write) the results table.

    python -m benchmarks                  # everything, full sizes; writes benchmarks/RESULTS.md
    python -m benchmarks --quick          # tiny sizes (the test suite's smoke run); writes nothing
    python -m benchmarks --only batch_latency client_overhead

Every row compares a measurement with a baseline measured in the same run; the "Met" column says
whether the issue's target holds on this run (targets are checked here, never in the test suite).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from benchmarks._common import BenchResult, Row, prepare_airflow_env

#: In the order they run: landing last, as it leaves gigabytes of page cache to write back, which
#: would disturb whatever ran next on a small machine. The table is sorted by target number.
BENCHMARKS = (
    "batch_latency",
    "triggerer_scale",
    "triggerer_10k",
    "parse_cost",
    "client_overhead",
    "response_scale",
    "gallery",
    "catalogue_scale",
    "reuse_incremental",
    "landing_throughput",
    "landing_memory",
)
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _ratio(row: Row) -> str:
    if row.ratio is None:
        return ""
    return f"{row.ratio:.3g}x"


def _met(row: Row) -> str:
    return {None: "", True: "yes", False: "NO"}[row.met]


def markdown(results: Sequence[BenchResult], command: str, quick: bool) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Command: `{command}`{' (quick sizes: a smoke run, not the figures)' if quick else ''}  ",
        f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} on {platform.platform()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; the machine is shared, so ratios "
        "against a baseline measured in the same run are the figures to read.",
        "",
        "| Target | Metric | Measured | Baseline | Ratio | Goal | Met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        if result.skipped:
            lines.append(f"| {result.title} | skipped: {result.skipped} | | | | | |")
            continue
        for index, row in enumerate(result.rows):
            title = result.title if index == 0 else ""
            cells = (title, row.metric.strip(), row.value, row.baseline, _ratio(row), row.target, _met(row))
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    lines += ["", "## Set-ups and notes", ""]
    for result in results:
        lines.append(f"- **{result.title}**: {result.setup}.")
        lines.extend(f"  - {note}" for note in result.notes)
    return "\n".join(lines) + "\n"


def text(result: BenchResult) -> str:
    if result.skipped:
        return f"{result.title}: skipped: {result.skipped}"
    width = max(len(row.metric) for row in result.rows)
    out = [f"{result.title} ({result.setup})"]
    for row in result.rows:
        parts = [f"  {row.metric:<{width}}  {row.value}"]
        if row.baseline:
            parts.append(f"baseline {row.baseline}")
        if row.ratio is not None:
            parts.append(f"ratio {_ratio(row)}")
        if row.target:
            parts.append(f"goal {row.target}: {_met(row) or '-'}")
        out.append("  |  ".join(parts))
    out.extend(f"  note: {note}" for note in result.notes)
    return "\n".join(out)


def run_one(name: str, quick: bool) -> BenchResult:
    module = importlib.import_module(f"benchmarks.{name}")
    started = time.perf_counter()
    try:
        result: BenchResult = module.run(quick=quick)
    except Exception as exc:
        traceback.print_exc()
        result = BenchResult(name=name, title=name, setup="", skipped=f"failed: {type(exc).__name__}: {exc}")
    result.raw["seconds"] = time.perf_counter() - started
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmarks run")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    parser.add_argument(
        "--results",
        type=Path,
        help="write the markdown table here (default: benchmarks/RESULTS.md for a full run of everything)",
    )
    parser.add_argument("--json", type=Path, help="also write every raw figure as JSON here")
    args = parser.parse_args(argv)
    prepare_airflow_env()
    selected = args.only or list(BENCHMARKS)
    command = (
        "python -m benchmarks"
        + (" --quick" if args.quick else "")
        + (f" --only {' '.join(selected)}" if args.only else "")
    )
    results = []
    for name in selected:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = run_one(name, args.quick)
        results.append(result)
        print(text(result), flush=True)
        print(flush=True)
    table = markdown(sorted(results, key=lambda result: result.title), command, args.quick)
    print(table)
    target = args.results or (RESULTS if not args.quick and not args.only else None)
    if target is not None:
        target.write_text(table)
        print(f"wrote {target}", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps([result.to_dict() for result in results], indent=2, default=str))
    crashed = [result.name for result in results if result.skipped and result.skipped.startswith("failed")]
    return 1 if crashed else 0
