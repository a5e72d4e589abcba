"""
Target 3, DAG-parse cost: what importing the operator, sensor and trigger modules adds to a DAG
file's import on top of ``airflow.sdk``, as a ratio of ``airflow.sdk``'s own import (goal <= 1 %),
with every registered model. Each ratio is the median over fresh interpreters, measured three
ways in-process: ``python -X importtime`` (the provider's top-level imports against
``airflow.sdk``'s cumulative time), a wall clock and the process's CPU time around the imports (in
interpreters without ``-X importtime``). Reported next to them, not part of the goal: one operator
constructed with literal arguments, which validates its request while the DAG file is parsed (a
feature) and so builds that request's pydantic model; and whole-interpreter wall times.

Every interpreter reads compiled bytecode for Airflow and the provider alike, as a deployed DAG
processor does: the benchmark's children may write ``__pycache__`` (a warm-up run compiles the
provider) even where the caller's environment says ``PYTHONDONTWRITEBYTECODE``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchmarks._common import ROOT, BenchResult, Row, fmt_ms, median, prepare_airflow_env

MODULES = (
    "airflow_provider_bfl.operators.bfl",
    "airflow_provider_bfl.sensors.bfl",
    "airflow_provider_bfl.triggers.bfl",
)
#: What a DAG file itself imports: the trigger module is loaded by the triggerer (and by a task deferring).
DAG_FILE_MODULES = MODULES[:2]
#: Modules a DAG file's imports must not load: they build the pydantic request and result models
#: or belong to task execution (HTTP, landing, image decoding, QA).
HEAVY = (
    "airflow_provider_bfl.models.request",
    "airflow_provider_bfl.models.results",
    "airflow_provider_bfl.models.classes",
    "airflow_provider_bfl.models._base",
    "airflow_provider_bfl.hooks.bfl",
    "airflow_provider_bfl.hooks._coalescer",
    "airflow_provider_bfl.hooks._transport",
    "airflow_provider_bfl._flows",
    "airflow_provider_bfl._status",
    "airflow_provider_bfl.storage.landing",
    "airflow_provider_bfl.qa.operator",
    "airflow_provider_bfl.qa.checks",
    "httpx",
    "PIL.Image",
)
#: Provider import cost as a fraction of ``airflow.sdk``'s import.
GOAL = 0.010
#: The operator a typical DAG file writes: every argument literal, so it is validated at parse time.
CONSTRUCT = (
    "from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator\n"
    "BflImageInferenceOperator(task_id='parse_cost', positive_prompt='a red bicycle', width=1024, height=768)\n"
)

_PROBE = """
import json, sys, time
started, started_cpu = time.perf_counter(), time.process_time()
import airflow.sdk
sdk_done, sdk_cpu = time.perf_counter(), time.process_time()
before = set(sys.modules)
errors, cpu = {}, {}
for name in MODULES:
    try:
        __import__(name)
    except Exception as exc:
        errors[name] = f"{type(exc).__name__}: {exc}"
    cpu[name] = time.process_time() - sdk_cpu
imported, imported_cpu = time.perf_counter(), time.process_time()
after_import = set(sys.modules)
registry = sys.modules.get("airflow_provider_bfl.models.registry")
models = list(registry.models()) if registry else []
constructing = time.perf_counter()
try:
    exec(CONSTRUCT)
except Exception as exc:
    errors["construct"] = f"{type(exc).__name__}: {exc}"
constructed = time.perf_counter()
print(json.dumps({
    "sdk": sdk_done - started,
    "provider": imported - sdk_done,
    "sdk_cpu": sdk_cpu - started_cpu,
    "provider_cpu": imported_cpu - sdk_cpu,
    "dag_file_cpu": cpu[DAG_FILE_MODULES[-1]],
    "construct": constructed - constructing,
    "errors": errors,
    "models": models,
    "loaded": sorted(after_import - before),
    "construct_loaded": sorted(set(sys.modules) - after_import),
}))
"""


def _env() -> dict[str, str]:
    env = prepare_airflow_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # else the provider is compiled afresh in every run
    return env


def _probe(env: dict[str, str]) -> dict[str, Any]:
    """A fresh interpreter: airflow.sdk, then the provider modules, then one operator; its report."""
    code = (
        f"MODULES = {MODULES!r}\nDAG_FILE_MODULES = {DAG_FILE_MODULES!r}\nCONSTRUCT = {CONSTRUCT!r}\n{_PROBE}"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return report


def _process_wall(env: dict[str, str], modules: tuple[str, ...]) -> float:
    """Wall time of a whole fresh interpreter importing airflow.sdk and ``modules``."""
    code = "import airflow.sdk\n" + "".join(f"import {name}\n" for name in modules)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, env=env, check=True)
    return time.perf_counter() - started


@dataclass
class _ImportTimes:
    """One ``-X importtime`` run, in seconds."""

    sdk: float  # airflow.sdk's cumulative time
    provider: float  # the provider modules' top-level imports, cumulative
    airflow: float  # of which modules not the provider's (self times; chiefly airflow.triggers.base)
    top: list[tuple[str, float]]


def _importtime(env: dict[str, str]) -> _ImportTimes:
    code = "import airflow.sdk\n" + "".join(f"import {name}\n" for name in MODULES)
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    )
    times = _ImportTimes(0.0, 0.0, 0.0, [])
    after_sdk = False
    for line in completed.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue
        own, cumulative, name = int(fields[0]) / 1e6, int(fields[1]) / 1e6, fields[2]
        if name == " airflow.sdk":  # the DAG file's first import line: what follows is the provider's
            times.sdk, after_sdk = cumulative, True
        elif after_sdk:
            if not name.startswith("  "):  # top level: its cumulative time covers everything it imports
                times.top.append((name.strip(), cumulative))
                times.provider += cumulative
            if not name.strip().startswith("airflow_provider_bfl"):
                times.airflow += own
    return times


def _percent(value: float, baseline: float) -> float:
    return value / baseline if baseline > 0 else float("inf")


def run(quick: bool = False) -> BenchResult:
    runs = 1 if quick else 9
    result = BenchResult(
        name="parse_cost",
        title="3. DAG-parse cost",
        setup=(
            f"fresh interpreters, {runs} of each kind interleaved, medians of per-run ratios: 'import airflow.sdk' "
            "then the operator, sensor and trigger modules (the registry lists every model), then one operator "
            "with literal arguments; compiled bytecode for Airflow and the provider alike (after a warm-up run)"
        ),
    )
    env = _env()
    _probe(env)  # warm-up: compiles the provider's bytecode, writes a first airflow.cfg
    probes: list[dict[str, Any]] = []
    timed: list[_ImportTimes] = []
    alone: list[float] = []
    together: list[float] = []
    for _ in range(runs):
        probes.append(_probe(env))
        timed.append(_importtime(env))
        alone.append(_process_wall(env, ()))
        together.append(_process_wall(env, MODULES))

    report = probes[-1]
    clean = not report["errors"]
    ours = [name for name in report["loaded"] if name.startswith("airflow_provider_bfl")]
    heavy = [name for name in HEAVY if name in report["loaded"]]
    heavy_construct = [name for name in HEAVY if name in report["construct_loaded"]]
    goal = f"<= {GOAL:.1%} of airflow.sdk"

    def share(metric: str, value: float, baseline: float, ratio: float, *, target: bool) -> Row:
        return Row(
            metric,
            f"{fmt_ms(value)} ({ratio:.2%})",
            f"{fmt_ms(baseline)} airflow.sdk",
            ratio,
            goal if target else "",
            (ratio <= GOAL and clean) if target else None,
        )

    sdk_importtime = median(t.sdk for t in timed)
    sdk_wall, sdk_cpu = median(p["sdk"] for p in probes), median(p["sdk_cpu"] for p in probes)
    process_ratio = median(_percent(t - a, a) for t, a in zip(together, alone, strict=True))
    result.rows = [
        share(
            "operator + sensor + trigger import / airflow.sdk import (in-process, -X importtime)",
            median(t.provider for t in timed),
            sdk_importtime,
            median(_percent(t.provider, t.sdk) for t in timed),
            target=True,
        ),
        share(
            "  of which modules not the provider's (chiefly Airflow's airflow.triggers.base, any trigger's base)",
            median(t.airflow for t in timed),
            sdk_importtime,
            median(_percent(t.airflow, t.sdk) for t in timed),
            target=False,
        ),
        share(
            "operator + sensor + trigger import / airflow.sdk import (in-process wall clock)",
            median(p["provider"] for p in probes),
            sdk_wall,
            median(_percent(p["provider"], p["sdk"]) for p in probes),
            target=True,
        ),
        share(
            "operator + sensor + trigger import / airflow.sdk import (in-process CPU time)",
            median(p["provider_cpu"] for p in probes),
            sdk_cpu,
            median(_percent(p["provider_cpu"], p["sdk_cpu"]) for p in probes),
            target=True,
        ),
        share(
            "  operator + sensor only (a DAG file's imports; the triggerer loads the trigger) (CPU time)",
            median(p["dag_file_cpu"] for p in probes),
            sdk_cpu,
            median(_percent(p["dag_file_cpu"], p["sdk_cpu"]) for p in probes),
            target=False,
        ),
        share(
            "import + one operator with literal arguments (validated at parse time) / airflow.sdk (wall)",
            median(p["provider"] + p["construct"] for p in probes),
            sdk_wall,
            median(_percent(p["provider"] + p["construct"], p["sdk"]) for p in probes),
            target=False,
        ),
        Row(
            "whole fresh interpreter: DAG-file imports vs airflow.sdk alone (wall)",
            f"{fmt_ms(median(together))} ({process_ratio:+.2%})",
            fmt_ms(median(alone)),
            1 + process_ratio,
        ),
        Row(
            "task-time modules loaded by the imports",
            ", ".join(heavy) or "none",
            target="none",
            met=not heavy,
        ),
        Row("task-time modules loaded by one literal operator", ", ".join(heavy_construct) or "none"),
    ]
    result.raw = {
        "importtime": [{"sdk": t.sdk, "provider": t.provider, "airflow": t.airflow} for t in timed],
        "probes": [
            {
                key: p[key]
                for key in ("sdk", "provider", "sdk_cpu", "provider_cpu", "dag_file_cpu", "construct")
            }
            for p in probes
        ],
        "process_alone": alone,
        "process_together": together,
        "errors": report["errors"],
        "models": report["models"],
        "provider_modules": ours,
        "loaded": report["loaded"],
        "construct_loaded": report["construct_loaded"],
        "heavy": heavy,
        "heavy_after_construct": heavy_construct,
        "importtime_top": timed[-1].top,
    }
    for name, error in report["errors"].items():
        result.notes.append(f"{name} failed: {error}")
    result.notes.append(
        f"Registered models listed at import: {len(report['models'])} ({', '.join(report['models'])})"
    )
    result.notes.append(f"Provider modules the imports load ({len(ours)}): " + ", ".join(ours))
    result.notes.append(
        "Provider modules one literal operator adds: "
        + (", ".join(n for n in report["construct_loaded"] if n.startswith("airflow_provider_bfl")) or "none")
    )
    result.notes.append(
        "Top-level imports after airflow.sdk (-X importtime, cumulative): "
        + ", ".join(f"{name} {fmt_ms(seconds)}" for name, seconds in timed[-1].top)
    )
    result.notes.append(
        "The whole-interpreter row includes start-up and exit, whose jitter on a shared machine is "
        "larger than the provider's share; the in-process rows are the figures to read (CPU time "
        "is the least disturbed by other processes)."
    )
    return result
