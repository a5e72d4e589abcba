"""The deployment scenarios' reading of Airflow's blocked-loop warnings against recorded full-GC pauses."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.deployment.loop_blocks import blocks_in

OUTPUT = """\
2026-12-02T06:22:04.255529Z [info     ] Triggerer's async thread was blocked for 0.26 seconds, exceeding the configured warning threshold of 0.20 seconds. [airflow.jobs.triggerer_job_runner]
2026-12-02T06:22:05.000000Z [info     ] 500 triggers currently running [airflow.jobs.triggerer_job_runner]
2026-12-02T06:22:09.608512Z [info     ] Triggerer's async thread was blocked for 0.74 seconds, exceeding the configured warning threshold of 0.20 seconds. [airflow.jobs.triggerer_job_runner]
"""


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_a_collection_inside_the_blocked_span_is_counted_and_one_outside_is_not() -> None:
    first_end, second_end = _at("2026-12-02T06:22:04.255529Z"), _at("2026-12-02T06:22:09.608512Z")
    pauses = [
        (first_end - 0.20, 0.15),  # inside the first span
        (first_end + 1.0, 0.30),  # between the warnings: explains neither
        (second_end - 0.70, 0.10),  # inside the second
    ]
    first, second = blocks_in(OUTPUT, pauses)
    assert (first.seconds, second.seconds) == (0.26, 0.74)
    assert first.collecting == pytest.approx(0.15, abs=1e-5) and first.without_collections == pytest.approx(
        0.11, abs=1e-5
    )
    assert second.collecting == pytest.approx(0.10, abs=1e-5) and second.without_collections == pytest.approx(
        0.64, abs=1e-5
    )


def test_a_collection_overlapping_the_span_counts_only_its_overlap_and_never_more_than_the_block() -> None:
    end = _at("2026-12-02T06:22:04.255529Z")
    (partly,) = blocks_in(OUTPUT.splitlines()[0], [(end - 0.26 - 0.05 - 0.10, 0.15)])
    assert partly.collecting == pytest.approx(0.05, abs=1e-5)
    (capped,) = blocks_in(OUTPUT.splitlines()[0], [(end - 2.0, 5.0)])
    assert capped.collecting == 0.26 and capped.without_collections == 0


def test_no_pauses_leave_every_warning_unexplained() -> None:
    assert [b.without_collections for b in blocks_in(OUTPUT, [])] == [0.26, 0.74]
