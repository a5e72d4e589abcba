"""
The incremental-run benchmark counts what really happened, at a tiny size.

Two real runs (12 requests, then 2 of them changed) in child processes against the emulator in
its own process; no timing is asserted (the machine is shared): what is checked is that the
figures the rows are made of agree with the emulator's counters and with what the runs were
asked to do.
"""

from __future__ import annotations

import pytest

from benchmarks import reuse_incremental


def test_positions_spread_the_changed_and_the_refreshed_apart() -> None:
    changed, refreshed = reuse_incremental.positions(10_000, 200, 100)
    assert len(changed) == 200 and len(refreshed) == 100
    assert not set(changed) & set(refreshed)
    assert all(0 <= i < 10_000 for i in (*changed, *refreshed))
    assert reuse_incremental.positions(150, 3, 0) == ([25, 75, 125], [])


@pytest.mark.slow  # `make test-slow`: children import Airflow and run dag.test()
@pytest.mark.timeout(300)
def test_the_second_run_bills_only_the_changed_requests_and_lists_every_record() -> None:
    result = reuse_incremental.run(count=12, changed=2, refreshed=0, latency=0.2, threshold=5)

    runs = result.raw["runs"]
    assert set(runs) == {"A", "B"}  # refreshed=0: no run C
    a, b = runs["A"], runs["B"]
    assert a["home"] == b["home"]  # one metadata DB: run B is a new run of the same DAG
    assert a["emulator"]["images_billed"] == a["emulator"]["image_inference_tasks"] == 12
    assert b["emulator"]["images_billed"] == b["emulator"]["image_inference_tasks"] == 2
    for measured in (a, b):  # what the child counted sending is what the emulator saw
        sent = measured["requests"]
        assert sent["imageInference"] + sent["getResponse"] == measured["emulator"]["requests"]
        assert sent["download"] == measured["emulator"]["image_downloads"]
        assert measured["total_cost"] == pytest.approx(measured["emulator"]["cost_billed"])
        assert measured["records"] == measured["present"] == 12
        assert measured["manifest"]["images"] == 12  # the big-batch path: a manifest names them
    assert all(seconds >= 0 for seconds in b["phases"].values())  # marks in order; no timing asserted
    assert b["requests"]["download"] == 2  # the re-used images are not fetched again
    assert (a["reused"], b["reused"], b["changed_regenerated"]) == (0, 10, 2)
    assert a["reused_cost"] is None
    assert b["reused_cost"] == pytest.approx(a["total_cost"] * 10 / 12)
    goal = next(row for row in result.rows if row.metric.strip().startswith("goal: billed == changed"))
    assert (goal.value, goal.met) == ("2", True)
    assert all(row.met is not False for row in result.rows)
