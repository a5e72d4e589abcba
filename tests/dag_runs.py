"""Running DAG files for real with ``dag.test()`` and reading back what Airflow recorded."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

from airflow.sdk import DAG

DAG_HEADER = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.sensors.bfl import BflImageInferenceSensor
"""


def load_dag_file(path: Path, dag_id: str) -> DAG:
    name = f"bfl_test_dag_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    found = [value for value in vars(module).values() if isinstance(value, DAG) and value.dag_id == dag_id]
    assert found, f"no DAG {dag_id!r} in {path}"
    return found[0]


def write_dag(dags_folder: Path, body: str, dag_id: str | None = None) -> DAG:
    """Write a DAG file whose body uses ``dag_id`` and return the DAG (the file stays for dag.test)."""
    dag_id = dag_id or f"bfl_test_{uuid.uuid4().hex[:10]}"
    source = DAG_HEADER + f"\nDAG_ID = {dag_id!r}\n" + textwrap.dedent(body)
    path = dags_folder / f"{dag_id}.py"
    path.write_text(source)
    return load_dag_file(path, dag_id)


def task_states(run: Any) -> dict[str, str]:
    return {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in run.get_task_instances()}


def xcom(run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    from sqlalchemy import select

    from airflow.models.xcom import XComModel
    from airflow.settings import Session

    with Session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == run.dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
                XComModel.map_index == map_index,
            )
        ).first()
        return None if row is None else XComModel.deserialize_value(row)
