"""The deployment scenarios' reading of Airflow's blocked-loop warnings against what the probes recorded."""

from __future__ import annotations

from datetime import datetime

import pytest

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
