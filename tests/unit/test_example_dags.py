"""The example DAGs import cleanly without I/O and run end to end, deferred and in the worker."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bfl.testing.emulator import RunwareEmulator
from tests.conftest import DAGS_FOLDER
from tests.dag_runs import DAGBAG_IMPORT, load_dag_file, task_states, xcom

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
{DAGBAG_IMPORT}
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
    """Generate, land, QA (one blank, one flagged), auto-review, publish, contact sheet."""
    bfl_conn.configure(latency=0.2, blank_prompt_marker="stoneware mug", nsfw_marker="cognac leather")
    dag = _installed(PIPELINE_DAG)
    _set_deferrable(dag, deferrable)
    run = dag.test(run_conf={"destination": f"file://{tmp_path}", "review": "auto"})
    states = task_states(run)
    assert states.pop("human_review") == "skipped"
    assert set(states.values()) == {"success"}, states
    verdicts = xcom(run, "qa")
    assert len(verdicts) == 8  # six products + two variants
    actions = sorted(v["qa"]["action"] for v in verdicts)
    assert actions == ["kept"] * 6 + ["quarantined"] * 2
    failed = {tuple(r.split(":")[0] for r in v["qa"]["reasons"]) for v in verdicts if not v["qa"]["passed"]}
    assert failed == {("not_blank",), ("nsfw",)}
    # every record names its product: the heroes their SKU (keys=), the sensor's variants theirs
    products = json.loads((EXAMPLES / "data" / "catalogue_prompts.json").read_text())
    assert [v["key"] for v in verdicts] == [p["sku"] for p in products] + ["LMP-0142 lifestyle"] * 2
    assert [v["prompt"] for v in verdicts[:6]] == [p["positivePrompt"] for p in products]
    assert all(v["prompt"].startswith("Lifestyle photo of a brushed brass desk lamp") for v in verdicts[6:])
    published = xcom(run, "publish")
    assert len(published) == 6
    for record in published:
        path = Path(record["publishedURI"].removeprefix("file://"))
        assert path.is_relative_to(tmp_path / "published") and path.stat().st_size == record["bytes"]
    sheet = Path(xcom(run, "qa", key="contact_sheet").removeprefix("file://"))
    assert sheet.read_bytes().startswith(b"\x89PNG")
    assert bfl_conn.snapshot().images_billed == 8


def _answer_review(
    chosen: list[str], leave_out: list[int], seen: dict[str, Any], stop: threading.Event
) -> None:
    """
    Play the reviewer: record the answer exactly as Airflow's HITL REST endpoint does.

    (``dag.test()`` has no api-server; this mirrors its update: response fields, then, from
    Airflow 3.3, the event-driven resume of the parked task instance. Before 3.3 the endpoint only
    records the answer and the HITL trigger finds it by polling, which ``dag.test()`` answers there
    with the backport the version matrix loads: ``tests.browser.hitl_backport``.)
    """
    from airflow import __version__
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.sdk import timezone
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    resumes_by_event = tuple(int(part) for part in __version__.split(".")[:2]) >= (3, 3)
    # Where a waiting review is parked: awaiting_input (3.3); deferred, or queued while dag.test()
    # runs its trigger in line (3.1, 3.2).
    waiting = [TaskInstanceState.DEFERRED, TaskInstanceState.QUEUED]
    if hasattr(TaskInstanceState, "AWAITING_INPUT"):
        waiting = [TaskInstanceState.AWAITING_INPUT]
    while not stop.is_set():
        with create_session() as session:
            ti = session.scalars(
                select(TaskInstance)
                .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
                .where(
                    TaskInstance.task_id == "human_review",
                    TaskInstance.state.in_(waiting),
                    HITLDetail.responded_at.is_(None),
                )
            ).first()
            detail = session.get(HITLDetail, ti.id) if ti is not None else None
            if ti is not None and detail is not None:
                seen.update(body=detail.body, options=detail.options, params=detail.params)
                labels = detail.params["leave_out"]["schema"]["examples"]
                detail.chosen_options = chosen
                detail.params_input = {"leave_out": [labels[i] for i in leave_out]}
                detail.responded_at = timezone.utcnow()
                detail.responded_by = {"id": "reviewer-1", "name": "Catalogue reviewer"}
                session.add(detail)
                if resumes_by_event:
                    handle_event_submit(
                        TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session
                    )
                return
        stop.wait(0.2)


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("decision", ["Publish", "Reject the batch"])
def test_catalogue_pipeline_human_review(bfl_conn: RunwareEmulator, tmp_path: Path, decision: str) -> None:
    """The reviewer sees 8 thumbnails, leaves #2 out by picking it; a rejection fails the run visibly."""
    dag = _installed(PIPELINE_DAG)
    _set_deferrable(dag, False)
    stop = threading.Event()
    seen: dict[str, Any] = {}
    reviewer = threading.Thread(target=_answer_review, args=([decision], [1], seen, stop), daemon=True)
    reviewer.start()
    try:
        run = dag.test(run_conf={"destination": f"file://{tmp_path}", "review": "human"})
    finally:
        stop.set()
        reviewer.join(5)
    states = task_states(run)
    assert seen["options"] == ["Publish", "Reject the batch"]
    assert seen["body"].count("](/bfl-gallery/thumb/example_bfl_catalogue_pipeline/") == 8
    labels = seen["params"]["leave_out"]["schema"]["examples"]
    assert len(labels) == 8 and labels[1].startswith("#2 ")
    assert states["auto_review"] == "skipped"
    if decision == "Publish":
        assert states["human_review"] == "success" and states["publish"] == "success"
        published = xcom(run, "publish")
        assert len(published) == 7
        assert xcom(run, "qa")[1]["imageUUID"] not in {r["imageUUID"] for r in published}
        assert run.state == "success"
    else:
        assert states["human_review"] == "failed" and states["publish"] == "upstream_failed"
        assert run.state == "failed"
        assert not (tmp_path / "published").exists()


@pytest.mark.usefixtures("airflow_db")
def test_product_edit_dag_edits_each_product_photo_with_it_as_reference(
    bfl_conn: RunwareEmulator, tmp_path: Path
) -> None:
    """One Kontext edit per product photo, landed, QA'd and auto-reviewed; each record names its photo."""
    dag = _installed("example_bfl_product_edit")
    run = dag.test(run_conf={"destination": f"file://{tmp_path}", "review": "auto"})
    states = task_states(run)
    assert states.pop("human_review") == "skipped", states
    assert set(states.values()) == {"success"}, states
    photos = sorted((DAGS_FOLDER / "data" / "products").glob("*.png"))
    verdicts = xcom(run, "qa")
    assert [(v["key"], v["references"]) for v in verdicts] == [(p.stem, [p.as_uri()]) for p in photos]
    assert all((v["width"], v["height"], v["qa"]["action"]) == (1248, 832, "kept") for v in verdicts)
    assert len(xcom(run, "auto_review")["approved"]) == len(photos) == 3
    sent = bfl_conn.received_tasks("imageInference")
    assert {task["model"] for task in sent} == {"bfl:3@1"}
    assert all(task["inputs"]["referenceImages"][0].startswith("data:image/png;base64,") for task in sent)
