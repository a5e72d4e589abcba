"""Writing throw-away DAG files into the test DAGs folder and running them with ``dag.test()``."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_bfl.testing.dag_runs import load_dag_file, task_states, xcom

__all__ = ["load_dag_file", "task_states", "write_dag", "xcom"]

#: Where DagBag lives: airflow.dag_processing.dagbag from 3.2, airflow.models.dagbag on 3.1 (code
#: to paste into a fresh interpreter's script, and :func:`dagbag_class` in this one).
DAGBAG_IMPORT = """
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag
"""


def dagbag_class() -> type:
    namespace: dict[str, type] = {}
    exec(DAGBAG_IMPORT, namespace)
    return namespace["DagBag"]


DAG_HEADER = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.sensors.bfl import BflImageInferenceSensor
"""


def write_dag(dags_folder: Path, body: str, dag_id: str | None = None) -> DAG:
    """Write a DAG file whose body uses ``DAG_ID`` and return the DAG (the file stays for dag.test)."""
    dag_id = dag_id or f"bfl_test_{uuid.uuid4().hex[:10]}"
    source = DAG_HEADER + f"\nDAG_ID = {dag_id!r}\n" + textwrap.dedent(body)
    path = dags_folder / f"{dag_id}.py"
    path.write_text(source)
    return load_dag_file(path, dag_id)
