"""
The five example requests of the FLUX.1.1 [pro] API reference, run exactly as written.

Each request is mapped to its own task instance (dynamic task mapping), so the grid shows one
generation per example. The requests carry their own taskUUIDs, which the operator honours as
idempotency keys: a retry of a mapped task re-attaches to its generation instead of paying again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator

EXAMPLES_FILE = Path(__file__).parent / "data" / "spec_examples.json"

with DAG(
    dag_id="example_bfl_spec_examples",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["bfl", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def load_example_requests() -> list[dict]:
        """Read the requests when the DAG runs, not when it is parsed."""
        return [example["request"] for example in json.loads(EXAMPLES_FILE.read_text())]

    BflImageInferenceOperator.partial(task_id="generate", deferrable=True).expand(
        request=load_example_requests()
    )
