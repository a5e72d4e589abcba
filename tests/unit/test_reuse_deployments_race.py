"""
Two deployments racing on one destination with reuse: each request is paid once, whoever submits.

Two fresh processes, each its own Airflow (own metadata DB, so its own deployment namespace and
derived taskUUIDs), run the same catalogue DAG at the same moment against one emulator and one
``file://`` destination. The reuse index in the destination is all they share: the first claim of
a fingerprint fixes its taskUUID, the other run submits that same taskUUID, which the API bills
once (a resubmission is a conflict the hook re-attaches to). Billing is read from the emulator.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from benchmarks._common import EmulatorProcess, run_child
from benchmarks.catalogue_scale import _copy_db, bytecode_cache

COUNT = 12
#: Long enough that both runs claim before either has landed anything (each starts Airflow first).
LATENCY = 8.0


@pytest.mark.slow  # `make test-slow`: two fresh interpreters import Airflow and run dag.test()
@pytest.mark.timeout(600)
def test_two_deployments_racing_on_one_destination_pay_once_for_each_request(
    airflow_db: Path, tmp_path: Path
) -> None:
    template = tmp_path / "migrated.db"
    _copy_db(airflow_db / "airflow.db", template)  # each child copies it into its own AIRFLOW_HOME
    destination = (tmp_path / "catalogue").as_uri()
    with bytecode_cache(), EmulatorProcess(latency=LATENCY) as emu:
        args = ["--child", "--count", str(COUNT), "--changed", "0", "--refreshed", "0", "--threshold", "5"]
        args += ["--base-url", emu.base_url, "--destination", destination, "--db-template", str(template)]

        def one_run(_: int) -> dict[str, Any]:
            return run_child("benchmarks.reuse_incremental", args, timeout=500)

        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(one_run, range(2)))
        counters = emu.counters()

    assert [run["state"] for run in runs] == ["success", "success"]
    assert runs[0]["home"] != runs[1]["home"]  # two Airflows, two namespaces
    # They raced: neither found an image landed by the other (each claimed or shared a generation).
    assert [run["reused"] for run in runs] == [0, 0]
    assert counters["images_billed"] == COUNT  # paid once for each request, not twice
    for run in runs:
        assert run["records"] == run["present"] == COUNT  # every image landed for both runs
    submitted = counters["requests_by_task_type"].get("imageInference", 0)
    assert COUNT <= submitted <= 2 * COUNT  # the loser resubmitted the winner's taskUUIDs, or waited
