"""The deployment scenarios' reading of Airflow's blocked-loop warnings against what the probes recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from tests.deployment.deployment import LOOP_PROBES, _number_pairs
from tests.deployment.loop_blocks import blocks_in, slow_callbacks

OUTPUT = """\
2026-12-02T06:22:04.255529Z [info     ] Triggerer's async thread was blocked for 0.26 seconds, exceeding the configured warning threshold of 0.20 seconds. [airflow.jobs.triggerer_job_runner]
2026-12-02T06:22:05.000000Z [info     ] 500 triggers currently running [airflow.jobs.triggerer_job_runner]
2026-12-02T06:22:09.608512Z [info     ] Triggerer's async thread was blocked for 0.74 seconds, exceeding the configured warning threshold of 0.20 seconds. [airflow.jobs.triggerer_job_runner]
"""
FIRST_END = datetime.fromisoformat("2026-12-02T06:22:04.255529Z").timestamp()
SECOND_END = datetime.fromisoformat("2026-12-02T06:22:09.608512Z").timestamp()
AIRFLOW_STACK = """\
  File "/venv/site-packages/airflow/jobs/triggerer_job_runner.py", line 1591, in run_trigger
  File "/venv/site-packages/structlog/_output.py", line 347, in msg
"""
PROVIDER_STACK = """\
  File "/venv/site-packages/airflow/jobs/triggerer_job_runner.py", line 1628, in run_trigger
  File "/work/airflow_provider_bfl/triggers/bfl.py", line 110, in run
"""


def test_a_collection_inside_the_blocked_span_is_counted_and_one_outside_is_not() -> None:
    pauses = [
        (FIRST_END - 0.20, 0.15),  # inside the first span
        (FIRST_END + 1.0, 0.30),  # between the warnings: explains neither
        (SECOND_END - 0.70, 0.10),  # inside the second
    ]
    first, second = blocks_in(OUTPUT, pauses)
    assert (first.seconds, second.seconds) == (0.26, 0.74)
    assert first.collecting == pytest.approx(0.15, abs=1e-5)
    assert first.triggers_share == pytest.approx(0.11, abs=1e-5)
    assert second.collecting == pytest.approx(0.10, abs=1e-5)
    assert second.triggers_share == pytest.approx(0.64, abs=1e-5)


def test_a_collection_overlapping_the_span_counts_only_its_overlap_and_never_more_than_the_block() -> None:
    (partly,) = blocks_in(OUTPUT.splitlines()[0], [(FIRST_END - 0.26 - 0.05 - 0.10, 0.15)])
    assert partly.collecting == pytest.approx(0.05, abs=1e-5)
    (capped,) = blocks_in(OUTPUT.splitlines()[0], [(FIRST_END - 2.0, 5.0)])
    assert capped.collecting == 0.26 and capped.triggers_share == 0


def test_only_slow_callbacks_in_airflows_own_code_are_taken_off_the_triggers_share() -> None:
    probes = (
        f"{AIRFLOW_STACK}== {SECOND_END:.6f} 0.600 s <Task pending name='dag/run/generate/1/1 (ID 7)'>\n"
        f"{PROVIDER_STACK}== {FIRST_END:.6f} 0.250 s <Task pending name='dag/run/generate/2/1 (ID 8)'>\n"
        f"== {FIRST_END - 3:.6f} 0.170 s <Handle ended before its stack was dumped>\n"
    )
    callbacks = slow_callbacks(probes)
    assert [(c.seconds, c.airflows_own) for c in callbacks] == [(0.6, True), (0.25, False), (0.17, False)]
    first, second = blocks_in(OUTPUT, [], callbacks)
    assert first.in_airflow == 0 and first.triggers_share == 0.26  # the provider's own stall counts
    assert second.in_airflow == pytest.approx(0.6, abs=1e-5)
    assert second.triggers_share == pytest.approx(0.14, abs=1e-5)


def test_no_probes_leave_every_warning_to_the_triggers() -> None:
    assert [b.triggers_share for b in blocks_in(OUTPUT, [], [])] == [0.26, 0.74]


def _run_queue(start: float, *waits: float, every: float = 0.05) -> list[list[tuple[float, float]]]:
    """One runner's run-queue samples from ``start``, ``every`` seconds apart, waiting ``waits`` in turn."""
    samples, total = [(start, 10.0)], 10.0
    for index, waited in enumerate(waits, 1):
        total += waited
        samples.append((start + index * every, total))
    return [samples]


def test_time_the_loops_thread_waited_for_a_cpu_is_taken_off_the_triggers_share() -> None:
    first_line = OUTPUT.splitlines()[0]
    start = FIRST_END - 0.26 - 0.05  # the span: the 0.26 s said, and 50 ms of stamping delay
    # Six 50 ms intervals cover the span (0.31 s) but its last 10 ms: 0.03 s waited in each, 0.18 s.
    (starved,) = blocks_in(first_line, [], [], _run_queue(start, *[0.03] * 6))
    assert starved.waiting_for_cpu == pytest.approx(0.18, abs=1e-5)
    assert starved.triggers_share == pytest.approx(0.08, abs=1e-5)
    # A loop held while the machine had cores to spare (no run-queue time) stays the triggers' share.
    (held,) = blocks_in(first_line, [], [], _run_queue(start, *[0.0] * 6))
    assert held.waiting_for_cpu == 0 and held.triggers_share == 0.26


def test_waiting_for_a_cpu_counts_only_inside_the_span_and_only_outside_what_is_already_explained() -> None:
    first_line = OUTPUT.splitlines()[0]
    start = FIRST_END - 0.26 - 0.05
    # Samples 0.1 s apart straddling the span's start: only the half inside counts.
    (straddling,) = blocks_in(first_line, [], [], _run_queue(start - 0.05, 0.08, every=0.1))
    assert straddling.waiting_for_cpu == pytest.approx(0.04, abs=1e-5)
    # A full collection over the span's first 0.15 s: the wait during it is in `collecting` already.
    (collected,) = blocks_in(first_line, [(start, 0.15)], [], _run_queue(start, *[0.03] * 6))
    assert collected.collecting == pytest.approx(0.15, abs=1e-5)
    # The samples cover the span's first 0.30 s; 0.15 s of that is outside the collection.
    assert collected.waiting_for_cpu == pytest.approx(0.09, abs=1e-5)
    assert collected.triggers_share == pytest.approx(0.26 - 0.15 - 0.09, abs=1e-5)


FORKED_LOOPS = """
import asyncio, os

async def idle():
    for _ in range(6):
        await asyncio.sleep(0.1)

child = os.fork()
if child == 0:  # Airflow's trigger runner is a forked child of the triggerer
    asyncio.run(idle())
    os._exit(0)
asyncio.run(idle())
os.waitpid(child, 0)
"""


def test_the_probes_sample_the_run_queue_of_the_loops_thread_in_a_process_and_its_forked_child(
    tmp_path: Path,
) -> None:
    site, probes = tmp_path / "site", tmp_path / "probes"
    site.mkdir()
    probes.mkdir()
    (site / "sitecustomize.py").write_text(LOOP_PROBES)
    env = {**os.environ, "PYTHONPATH": str(site), "BFL_LOOP_PROBES": str(probes)}
    subprocess.run([sys.executable, "-c", FORKED_LOOPS], env=env, check=True, timeout=60)
    series = [_number_pairs(samples.read_text()) for samples in sorted(probes.glob("*.cpu"))]
    assert len(series) == 2  # the parent's loop and the child's, each under its own pid
    for samples in series:
        assert len(samples) >= 3
        assert all(later[0] > earlier[0] and later[1] >= earlier[1] for earlier, later in pairwise(samples))


def test_a_probe_line_cut_short_by_a_killed_process_is_skipped_not_fatal() -> None:
    text = "1796219480.607185 0.404660\n1796219480.657185 0.41\n1796219480.7\n17962194"
    assert _number_pairs(text) == [(1796219480.607185, 0.40466), (1796219480.657185, 0.41)]
