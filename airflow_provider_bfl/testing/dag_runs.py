"""
Helpers for testing DAGs offline: load a DAG file and read back what a ``dag.test()`` run recorded.

``dag.test()`` syncs DAGs from the configured DAGs folder, so a DAG under test lives in a file
there; these helpers load it the way the DAG processor would and query the run's XComs.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import DAG


def load_dag_file(path: Path, dag_id: str) -> DAG:
    """Import ``path`` as a fresh module and return its DAG ``dag_id``."""
    from airflow.sdk import DAG

    name = f"bfl_dag_file_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    for value in vars(module).values():
        if isinstance(value, DAG) and value.dag_id == dag_id:
            return value
    raise LookupError(f"no DAG {dag_id!r} in {path}")


def task_states(run: Any) -> dict[str, str]:
    """``{task_id or task_id[map_index]: state}`` of a finished DAG run."""
    return {
        ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": str(ti.state)
        for ti in run.get_task_instances()
    }


def xcom(run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """The XCom value a task instance of ``run`` recorded (None when there is none)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
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
