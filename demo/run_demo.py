"""
Run the example catalogue pipeline end to end with a real Airflow run (``dag.test()``).

Offline by default: the bundled emulator plays Runware and the images are synthetic. With
``RUNWARE_API_KEY`` set (or ``AIRFLOW_CONN_BFL_DEFAULT`` configured) it calls the real API and
spends real credits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "example_dags" / "example_bfl_catalogue_pipeline.py"
DAG_ID = "example_bfl_catalogue_pipeline"


def _prepare_airflow_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="bfl-demo-airflow-home-"))
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAG_FILE.parent)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    return home


@contextlib.contextmanager
def _api_connection() -> Iterator[str]:
    """Point ``bfl_default`` at the real API when a key is given, else at the bundled emulator."""
    if os.environ.get("AIRFLOW_CONN_BFL_DEFAULT"):
        yield "the configured bfl_default connection (real API: real images, real cost)"
        return
    key = os.environ.get("RUNWARE_API_KEY")
    if key:
        os.environ["AIRFLOW_CONN_BFL_DEFAULT"] = json.dumps({"conn_type": "bfl", "password": key})
        yield "the Runware API with RUNWARE_API_KEY (real images, real cost)"
        return
    from airflow_provider_bfl.testing.emulator import RunwareEmulator

    with RunwareEmulator(api_key="demo-key-offline", latency=1.5) as emulator:
        os.environ["AIRFLOW_CONN_BFL_DEFAULT"] = json.dumps(
            {
                "conn_type": "bfl",
                "password": emulator.api_key,
                "host": emulator.base_url,
                "extra": {"poll_interval": 0.5, "poll_max_interval": 2},
            }
        )
        yield f"the bundled emulator at {emulator.base_url} (OFFLINE: the images are SYNTHETIC)"


def _print_table(manifest: list[dict[str, object]]) -> None:
    rows = [
        (
            str(m["prompt"])[:44],
            str(m["size"]),
            str(m["seed"]),
            f"{m['cost']:.2f}" if m.get("cost") is not None else "-",
            str(m["file"]),
        )
        for m in manifest
    ]
    headers = ("prompt", "size", "seed", "cost $", "image file")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default=str(REPO / "demo-output"), help="where the images go")
    args = parser.parse_args()
    output_dir = Path(args.output_dir).resolve()

    _prepare_airflow_home()
    from airflow.utils.db import initdb

    initdb()
    sys.path.insert(0, str(REPO))
    with _api_connection() as where:
        print(f"\n>>> Generating with {where}\n")
        from airflow_provider_bfl.testing.dag_runs import load_dag_file, xcom

        dag = load_dag_file(DAG_FILE, DAG_ID)
        run = dag.test(run_conf={"output_dir": str(output_dir)})
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        print(f"\n>>> DAG run {run.run_id}: {run.state}")
        for task_id, state in states.items():
            print(f"    {task_id:<24} {state}")
        if str(run.state) != "success":
            return 1
        manifest = xcom(run, "publish")
        print()
        _print_table(manifest)
        total = sum(float(m["cost"]) for m in manifest if m.get("cost") is not None)
        print(
            f"\n>>> {len(manifest)} images, total cost {total:.2f} USD, written to {Path(manifest[0]['file']).parent}"
        )
        if "SYNTHETIC" in where:
            print(">>> These images are synthetic: set RUNWARE_API_KEY to generate real ones.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
