"""The example DAGs import cleanly without I/O and run end to end, deferred and in the worker."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bfl.testing.emulator import RunwareEmulator
from tests.conftest import DAGS_FOLDER
from tests.dag_runs import load_dag_file, task_states, xcom

EXAMPLES = Path(__file__).parents[2] / "example_dags"
SPEC_DAG = "example_bfl_spec_examples"
PIPELINE_DAG = "example_bfl_catalogue_pipeline"


def _installed(dag_id: str) -> Any:
    """Copy the example (and its data) into the test DAGs folder, as a deployment would."""
    shutil.copytree(EXAMPLES / "data", DAGS_FOLDER / "data", dirs_exist_ok=True)
    target = DAGS_FOLDER / f"{dag_id}.py"
    shutil.copy(EXAMPLES / f"{dag_id}.py", target)
    return load_dag_file(target, dag_id)


def _set_deferrable(dag: Any, deferrable: bool) -> None:
    for task in dag.tasks:
        if hasattr(task, "partial_kwargs"):
            task.partial_kwargs["deferrable"] = deferrable
        elif hasattr(task, "deferrable"):
            task.deferrable = deferrable


@pytest.mark.parametrize("dag_file", sorted(EXAMPLES.glob("example_*.py")), ids=lambda p: p.stem)
def test_example_imports_without_errors_or_connection_lookups(dag_file: Path) -> None:
    """Parse each DAG in a fresh interpreter with no connection defined at all."""
    code = f"""
import sys
from airflow.sdk.definitions.connection import Connection
lookups = []
Connection.get = classmethod(lambda cls, conn_id: lookups.append(conn_id))
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(dag_file)!r})
print("errors", bag.import_errors, "dags", list(bag.dags), "lookups", lookups)
sys.exit(1 if bag.import_errors or not bag.dags or lookups else 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dag_file", sorted(EXAMPLES.glob("example_*.py")), ids=lambda p: p.stem)
def test_examples_carry_docs(dag_file: Path) -> None:
    dag = load_dag_file(dag_file, dag_file.stem)
    assert dag.doc_md and len(dag.doc_md) > 100


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "worker"])
def test_spec_examples_dag_runs_all_five(bfl_conn: RunwareEmulator, deferrable: bool) -> None:
    dag = _installed(SPEC_DAG)
    _set_deferrable(dag, deferrable)
    run = dag.test()
    states = task_states(run)
    assert [states[f"generate[{i}]"] for i in range(5)] == ["success"] * 5
    seeds = sorted(xcom(run, "generate", map_index=i)[0]["seed"] for i in range(5))
    assert seeds == sorted([74910, 7626, 64789, 70851, 61157])
    assert bfl_conn.snapshot().images_billed == 5


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "worker"])
def test_catalogue_pipeline_runs_end_to_end(
    bfl_conn: RunwareEmulator, deferrable: bool, tmp_path: Path
) -> None:
    bfl_conn.latency = 0.2
    dag = _installed(PIPELINE_DAG)
    _set_deferrable(dag, deferrable)
    run = dag.test(run_conf={"output_dir": str(tmp_path)})
    assert set(task_states(run).values()) == {"success"}, task_states(run)
    manifest = xcom(run, "publish")
    assert len(manifest) == 8  # six products + two variants
    for entry in manifest:
        assert Path(entry["file"]).stat().st_size > 1000
        assert entry["cost"] == 0.04
    assert manifest[0]["prompt"].startswith("Studio product photo of a brushed brass desk lamp")
    assert bfl_conn.snapshot().images_billed == 8
