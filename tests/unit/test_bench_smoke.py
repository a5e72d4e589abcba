"""
The benchmarks still run: each one at ``--quick`` sizes, in a subprocess, as ``make bench`` runs it.

No timing is asserted here (the machine is shared and noisy); the figures are ``make bench``'s job.
Only that every benchmark completes and reports its rows with a baseline to compare against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._common import BenchResult, Row
from benchmarks.run import BENCHMARKS, markdown

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # `make test-slow`: each benchmark is a few fresh processes


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_at_quick_sizes(name: str, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW_CONN_")}
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", name, "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=580,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (result,) = json.loads(out.read_text())
    assert result["name"] == name
    if result["skipped"]:
        # Only the landing benchmark may skip, and only for want of the landing module.
        assert name == "landing_memory" and "landing module not present" in result["skipped"]
        return
    assert result["rows"], "a benchmark that reports nothing"
    assert any(row["ratio"] is not None for row in result["rows"]), "no ratio against a baseline"
    assert "| Target | Metric |" in completed.stdout  # the table is printed


def test_results_table_renders_every_row_and_skips() -> None:
    results = [
        BenchResult("a", "1. A", "set-up A", rows=[Row("metric", "1 s", "2 s", 0.5, "<= 1x", True)]),
        BenchResult("b", "2. B", "set-up B", skipped="landing module not present"),
    ]
    table = markdown(results, "python -m benchmarks", quick=False)
    assert "| 1. A | metric | 1 s | 2 s | 0.5x | <= 1x | yes |" in table
    assert "| 2. B | skipped: landing module not present |" in table
    assert "set-up A" in table
