"""
The gallery benchmark's server: a real run's records in a real metadata DB, the plugin's app on uvicorn.

    python -m benchmarks.gallery_server --records records.json --port 8123

Records a DAG run with ``dag.test()`` (a ``generate`` task pushes the landed records, a ``qa`` task
the same records with verdicts, as the catalogue pipeline does), then serves
:func:`airflow_provider_bfl.ui.app.create_app` on loopback with one worker and prints
``READY <dag_id> <run_id>``. The auth manager's check is replaced by a pass (it is the same small
cost for a page, a thumbnail and an original); everything else is the plugin's own path: records
read from XCom, merged, rendered, images read from where they were landed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

DAG_ID = "bench_gallery"

DAG_FILE = """
import json, os
import pendulum
from airflow.sdk import DAG, task

RECORDS = os.environ["BFL_BENCH_RECORDS"]

with DAG(dag_id="bench_gallery", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:

    @task
    def generate():
        return [{k: v for k, v in r.items() if k != "qa"} for r in json.load(open(RECORDS))]

    @task
    def qa(landed):
        return json.load(open(RECORDS))

    qa(generate())
"""


def record_run(records: Path) -> str:
    """A finished DAG run whose XCom holds ``records`` (as generated and as QA-checked): its run_id."""
    from airflow.utils.db import initdb

    from airflow_provider_bfl.testing.dag_runs import load_dag_file

    initdb()
    dag_file = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{DAG_ID}.py"
    dag_file.write_text(DAG_FILE)
    os.environ["BFL_BENCH_RECORDS"] = str(records)
    run = load_dag_file(dag_file, DAG_ID).test()
    if str(run.state) != "success":
        raise RuntimeError(f"the benchmark's DAG run ended {run.state}")
    return str(run.run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bfl-bench-gallery-home-"))
    (home / "dags").mkdir()
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    run_id = record_run(args.records)

    import uvicorn
    from fastapi import FastAPI

    from airflow_provider_bfl.ui import urls
    from airflow_provider_bfl.ui.app import authorized, create_app

    gallery = create_app()
    gallery.dependency_overrides[authorized] = lambda dag_id: dag_id
    root = FastAPI()
    root.mount(urls.PREFIX, gallery)  # where the api-server mounts it
    print(f"READY {DAG_ID} {run_id}", flush=True)
    uvicorn.run(
        root,
        host="127.0.0.1",
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=300,  # a browser keeps its connections; none is closed under the client
    )


if __name__ == "__main__":
    main()
