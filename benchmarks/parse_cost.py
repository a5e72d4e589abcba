"""
Target 3, DAG-parse cost: what importing the operator, sensor and trigger modules adds to a DAG
file's import on top of ``airflow.sdk`` alone, measured in fresh interpreters (median of several
runs), plus ``python -X importtime`` to name the modules that cost the most.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from benchmarks._common import ROOT, BenchResult, Row, fmt_ms, median, prepare_airflow_env, ratio

MODULES = (
    "airflow_provider_bfl.operators.bfl",
    "airflow_provider_bfl.sensors.bfl",
    "airflow_provider_bfl.triggers.bfl",
)
#: Modules a DAG parse should not need: they belong to task execution.
HEAVY = (
    "airflow_provider_bfl.hooks.bfl",
    "airflow_provider_bfl.hooks._coalescer",
    "airflow_provider_bfl._flows",
    "airflow_provider_bfl.models.request",
    "airflow_provider_bfl.models.results",
    "airflow_provider_bfl.storage.landing",
    "airflow_provider_bfl.qa.operator",
    "PIL.Image",
)
BUDGET = 0.050

_PROBE = """
import json, sys, time
started = time.perf_counter()
import airflow.sdk
sdk_done = time.perf_counter()
errors = {}
for name in MODULES:
    try:
        __import__(name)
    except Exception as exc:
        errors[name] = f"{type(exc).__name__}: {exc}"
finished = time.perf_counter()
print(json.dumps({
    "sdk": sdk_done - started,
    "provider": finished - sdk_done,
    "errors": errors,
    "loaded": sorted(m for m in sys.modules if m.startswith("airflow_provider_bfl")),
    "heavy": [m for m in HEAVY if m in sys.modules],
}))
"""


def _probe(modules: tuple[str, ...]) -> tuple[float, dict[str, Any]]:
    """A fresh interpreter importing airflow.sdk then ``modules``: (process wall time, its report)."""
    code = f"MODULES = {modules!r}\nHEAVY = {HEAVY!r}\n{_PROBE}"
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=prepare_airflow_env(),
        check=True,
    )
    wall = time.perf_counter() - started
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return wall, report


def _importtime(limit: int = 8) -> list[tuple[str, float]]:
    """The provider-side modules with the largest cumulative import time (after airflow.sdk)."""
    code = "import airflow.sdk\n" + "".join(f"import {name}\n" for name in MODULES)
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=prepare_airflow_env(),
        check=False,
    )
    after_sdk = False
    costs: list[tuple[str, float]] = []
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line.split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue
        if fields[2] == " airflow.sdk":  # the top-level import line: what follows is the DAG file's own
            after_sdk = True
        elif after_sdk:
            costs.append((fields[2].strip(), int(fields[1]) / 1e6))
    top = sorted(costs, key=lambda item: -item[1])
    return top[:limit]


def run(quick: bool = False) -> BenchResult:
    runs = 2 if quick else 9
    result = BenchResult(
        name="parse_cost",
        title="3. DAG-parse cost",
        setup=(
            f"fresh interpreters, {runs} of each interleaved: 'import airflow.sdk' alone vs followed by the "
            "operator, sensor and trigger modules; median; in-process time of the provider imports"
        ),
    )
    _probe(())  # warm-up: bytecode caches, a first airflow.cfg in the throw-away AIRFLOW_HOME
    alone: list[float] = []
    together: list[float] = []
    deltas: list[float] = []
    sdk_times: list[float] = []
    report: dict[str, Any] = {}
    for _ in range(runs):
        wall, _unused = _probe(())
        alone.append(wall)
        wall, report = _probe(MODULES)
        together.append(wall)
        deltas.append(report["provider"])
        sdk_times.append(report["sdk"])
    delta = median(deltas)
    base, full = median(alone), median(together)
    top = _importtime()
    result.raw = {
        "alone": alone,
        "together": together,
        "provider_in_process": deltas,
        "sdk_in_process": sdk_times,
        "errors": report.get("errors", {}),
        "loaded": report.get("loaded", []),
        "heavy": report.get("heavy", []),
        "importtime_top": top,
    }
    result.rows = [
        Row(
            "operator + sensor + trigger import, after airflow.sdk (in-process)",
            fmt_ms(delta),
            fmt_ms(median(sdk_times)) + " airflow.sdk",
            ratio(delta, median(sdk_times)),
            f"<= {fmt_ms(BUDGET)}",
            delta <= BUDGET and not report.get("errors"),
        ),
        Row(
            "fresh interpreter: DAG-file imports vs airflow.sdk alone (wall)",
            fmt_ms(full),
            fmt_ms(base),
            ratio(full, base),
            f"+{fmt_ms(full - base)}",
        ),
        Row(
            "task-time modules loaded at parse time",
            ", ".join(report.get("heavy", [])) or "none",
        ),
    ]
    for name, error in report.get("errors", {}).items():
        result.notes.append(f"{name} failed to import: {error}")
    result.notes.append(
        "Largest cumulative import times after airflow.sdk (-X importtime): "
        + ", ".join(f"{name} {fmt_ms(seconds)}" for name, seconds in top)
    )
    return result
