"""
A rerun always recovers (issue: trust under hostile conditions, sections 1, 2 and 7).

Each test runs real DAG runs with ``dag.test()`` against the emulator over HTTP and reads what
the emulator billed. ``logical_date`` is fixed where a test re-runs *the same* task instance
(same run_id, as a clear long after the first run would), so the derived taskUUIDs are the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pendulum
import pytest
from pytest_mock import MockerFixture

from airflow_provider_bfl._identity import TaskIdentity
from airflow_provider_bfl.exceptions import BflError, BflInvalidRequestError, BflMalformedResponseError
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.plan import GenerationPlan
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from tests.conftest import DAGS_FOLDER, connection_json
from tests.dag_runs import dagbag_class, task_states, write_dag, xcom

pytestmark = pytest.mark.usefixtures("airflow_db")

SAME_RUN_DATE = pendulum.datetime(2026, 3, 1, tz="UTC")
#: dag.test() arguments that re-create the same DAG run (same run_id): a clear long after the first run.
SAME_RUN = {"logical_date": SAME_RUN_DATE, "run_after": SAME_RUN_DATE}
SPEC_EXAMPLE = json.loads(
    (Path(__file__).parents[2] / "example_dags" / "data" / "spec_examples.json").read_text()
)[0]["request"]


def dag_with(body: str) -> Any:
    return write_dag(DAGS_FOLDER, body)


def heal_then(control_url: str, **config: Any) -> str:
    """DAG source of an ``on_retry_callback`` that posts ``config`` to the emulator between tries."""
    return f"""
import datetime, httpx
def between_tries(context):
    httpx.delete({control_url + "/faults"!r})
    httpx.post({control_url + "/config"!r}, json={config!r}).raise_for_status()
"""


def test_retry_replaces_a_generation_whose_image_url_expired_before_landing(
    bfl_conn: RunwareEmulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Try 1 cannot land (a broken image host); by try 2 the URL has expired: only a new generation helps."""
    bfl_conn.configure(image_corruption="html")
    dag = dag_with(
        heal_then(bfl_conn.control_url, image_corruption="none", lapse_issued_urls=True)
        + f"""
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(
        task_id="generate", positive_prompt="a walnut desk lamp", width=256, height=256,
        destination={"file://" + str(tmp_path)!r}, deferrable=False,
        retries=1, retry_delay=datetime.timedelta(seconds=0), on_retry_callback=between_tries,
    )
"""
    )
    dag_run = dag.test()
    assert task_states(dag_run) == {"generate": "success"}
    snapshot = bfl_conn.snapshot()
    assert len(snapshot.tasks) == 2  # the expired generation and its replacement
    assert snapshot.images_billed == 2  # the replacement is the only extra cost
    [record] = xcom(dag_run, "generate")
    assert record["taskUUID"] in snapshot.tasks
    assert snapshot.tasks[record["taskUUID"]].submissions == 1  # a new generation, landed in try 2
    assert Path(record["storedURI"].removeprefix("file://")).read_bytes()[:3] == b"\xff\xd8\xff"
    out = capfd.readouterr().out
    assert "expired before it was landed: replacing it with" in out
    assert "this bills 1 more image(s), about 0.04 USD" in out


def test_retry_replaces_a_generation_the_server_no_longer_knows(bfl_conn: RunwareEmulator) -> None:
    """getResponse says nothing about the task while a resubmission answers conflictTaskUUID."""
    bfl_conn.configure(unknown_task_mode="empty")
    bfl_conn.latency = 0.2
    bfl_conn.inject("status", count=1000, status=503, only_task_type="getResponse")
    dag = dag_with(
        heal_then(bfl_conn.control_url, forget_tasks="all")
        + """
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(
        task_id="generate", positive_prompt="a walnut desk lamp", width=256, height=256,
        deferrable=False, retries=1, retry_delay=datetime.timedelta(seconds=0),
        on_retry_callback=between_tries,
    )
"""
    )
    dag_run = dag.test()
    assert task_states(dag_run) == {"generate": "success"}
    snapshot = bfl_conn.snapshot()
    assert len(snapshot.tasks) == 2
    [forgotten] = [uuid for uuid, counters in snapshot.tasks.items() if counters.submissions == 2]
    [replacement] = set(snapshot.tasks) - {forgotten}  # re-sent once above, answered with a conflict
    assert snapshot.conflicts == 1
    assert [entry["taskUUID"] for entry in xcom(dag_run, "generate")] == [replacement]


def test_a_rerun_of_a_finished_task_instance_reattaches_and_pays_nothing(bfl_conn: RunwareEmulator) -> None:
    body = """
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(
        task_id="generate", positive_prompt="a walnut desk lamp", width=256, height=256, deferrable=False,
    )
"""
    dag = dag_with(body)
    first = xcom(dag.test(**SAME_RUN), "generate")
    again = xcom(dag.test(**SAME_RUN), "generate")
    assert [entry["imageUUID"] for entry in again] == [entry["imageUUID"] for entry in first]
    assert bfl_conn.snapshot().images_billed == 1


def test_regenerate_asks_for_new_images_once_per_value(bfl_conn: RunwareEmulator) -> None:
    dag = dag_with(
        """
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1), params={"regenerate": ""}) as dag:
    BflImageInferenceOperator(
        task_id="generate", positive_prompt="a walnut desk lamp", width=256, height=256, deferrable=False,
        regenerate="{{ params.regenerate }}",
    )
"""
    )
    original = xcom(dag.test(**SAME_RUN), "generate")
    redone = xcom(dag.test(**SAME_RUN, run_conf={"regenerate": "new-lamp-shot"}), "generate")
    redone_again = xcom(dag.test(**SAME_RUN, run_conf={"regenerate": "new-lamp-shot"}), "generate")
    assert redone[0]["imageUUID"] != original[0]["imageUUID"]
    assert redone_again[0]["imageUUID"] == redone[0]["imageUUID"]  # the same request re-attaches
    assert bfl_conn.snapshot().images_billed == 2


def test_two_deployments_on_one_account_never_receive_each_others_images(bfl_conn: RunwareEmulator) -> None:
    """Same DAG, same run_id, default settings: the second deployment has its own namespace."""
    from airflow.models.variable import Variable

    from airflow_provider_bfl.operators._namespace import VARIABLE

    dag = dag_with(
        """
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(
        task_id="generate", positive_prompt="a walnut desk lamp", width=256, height=256, deferrable=False,
    )
"""
    )
    staging = xcom(dag.test(**SAME_RUN), "generate")
    Variable.delete(VARIABLE)  # production: another metadata database, no namespace yet
    production = xcom(dag.test(**SAME_RUN), "generate")
    assert production[0]["taskUUID"] != staging[0]["taskUUID"]
    assert production[0]["imageUUID"] != staging[0]["imageUUID"]
    assert bfl_conn.snapshot().conflicts == 0
    assert bfl_conn.snapshot().images_billed == 2


def test_the_connection_namespace_overrides_the_default(
    bfl_conn: RunwareEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two deployments that set the same namespace in the connection share generations on purpose."""
    from airflow.models.variable import Variable

    from airflow_provider_bfl.operators._namespace import VARIABLE

    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(bfl_conn, namespace="acme-shared"))
    dag = dag_with(
        """
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(
        task_id="generate", positive_prompt="a walnut desk lamp", width=256, height=256, deferrable=False,
    )
"""
    )
    first = xcom(dag.test(**SAME_RUN), "generate")
    Variable.delete(VARIABLE)
    second = xcom(dag.test(**SAME_RUN), "generate")
    assert second[0]["taskUUID"] == first[0]["taskUUID"]
    assert bfl_conn.snapshot().images_billed == 1


def test_derived_task_uuids_depend_on_the_namespace_only_where_they_should() -> None:
    base = TaskIdentity(namespace="staging", dag_id="d", task_id="t", run_id="scheduled__2026", map_index=-1)
    other = TaskIdentity(
        namespace="production", dag_id="d", task_id="t", run_id="scheduled__2026", map_index=-1
    )
    wire = {"positivePrompt": "a lamp", "width": 256, "height": 256, "taskUUID": "ignored"}
    import uuid

    assert base.task_uuid(0, wire) == base.task_uuid(0, {**wire, "taskUUID": "different"})
    assert base.task_uuid(0, wire) != other.task_uuid(0, wire)
    assert base.task_uuid(0, wire) != base.task_uuid(1, wire) != base.task_uuid(0, wire, generation=1)
    assert uuid.UUID(base.task_uuid(0, wire)).version == 4


def test_a_pasted_request_with_a_task_uuid_is_reported_as_reused_on_later_runs(
    bfl_conn: RunwareEmulator, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = dag_with(
        f"""
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(task_id="generate", request={SPEC_EXAMPLE!r}, deferrable=False)
"""
    )
    first_run = dag.test()
    assert xcom(first_run, "generate", key="total_cost") == pytest.approx(0.04)
    capfd.readouterr()
    later_run = dag.test()
    assert task_states(later_run) == {"generate": "success"}
    [record] = xcom(later_run, "generate")
    assert record["costReused"] is True
    assert xcom(later_run, "generate", key="reused_cost") == pytest.approx(0.04)
    assert xcom(later_run, "generate", key="total_cost") is None  # nothing was billed this run
    assert bfl_conn.snapshot().images_billed == 1
    assert "is not billed again" in capfd.readouterr().out


def test_an_explicit_task_uuid_whose_generation_failed_is_not_replaced_behind_the_callers_back(
    bfl_conn: RunwareEmulator,
) -> None:
    request = {**SPEC_EXAMPLE, "positivePrompt": "fail-marker " + SPEC_EXAMPLE["positivePrompt"]}
    dag = dag_with(
        f"""
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(task_id="generate", request={request!r}, deferrable=False)
"""
    )
    assert task_states(dag.test()) == {"generate": "failed"}
    assert task_states(dag.test()) == {"generate": "failed"}
    snapshot = bfl_conn.snapshot()
    assert list(snapshot.tasks) == [SPEC_EXAMPLE["taskUUID"]]  # never a second, unasked-for generation
    assert snapshot.images_billed == 0


def test_the_plan_travels_through_the_deferral(bfl_conn: RunwareEmulator, tmp_path: Path) -> None:
    bfl_conn.latency = 0.5
    dag = dag_with(
        f"""
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(
        task_id="generate", prompts={{"SKU-1": "a walnut desk lamp", "SKU-2": "a linen armchair"}},
        width=256, height=320, output_format="PNG", destination={"file://" + str(tmp_path)!r},
        deferrable=True, poll_interval=0.2,
    )
"""
    )
    dag_run = dag.test()
    assert task_states(dag_run) == {"generate": "success"}
    records = xcom(dag_run, "generate")
    assert [(r["key"], r["prompt"]) for r in records] == [
        ("SKU-1", "a walnut desk lamp"),
        ("SKU-2", "a linen armchair"),
    ]
    assert all((r["width"], r["height"], r["format"]) == (256, 320, "PNG") for r in records)


def test_resuming_with_results_the_plan_does_not_know_is_a_clear_error(mocker: MockerFixture) -> None:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    operator = BflImageInferenceOperator(task_id="t", positive_prompt="a lamp", width=256, height=256)
    known = "5c7a9c23-6866-4003-93b9-d3f52e15111b"
    plan = GenerationPlan.from_json(
        [
            {
                "task_uuid": known,
                "position": 1,
                "model": "bfl:2@1",
                "width": 256,
                "height": 256,
                "output_format": "JPG",
                "output_type": "URL",
                "number_results": 1,
                "prompt": "a lamp",
                "wire": {"taskUUID": known, "positivePrompt": "a lamp", "width": 256, "height": 256},
            }
        ]
    )
    foreign = "0f0e8a4f-3b7a-4c59-9d0c-1d2e3f405060"
    event = {
        "status": "success",
        "task_uuids": [known],
        "pending": [],
        "failures": [],
        "message": "",
        "results": [{"taskUUID": foreign, "imageUUID": foreign, "imageURL": "http://127.0.0.1:1/x.jpg"}],
    }
    ti = mocker.create_autospec(RuntimeTaskInstance, instance=True, task_id="t", map_index=-1)
    ti.xcom_pull.return_value = {"plan": plan.to_json(), "kept": []}
    with pytest.raises(BflMalformedResponseError, match="not in this task's plan"):
        operator.execute_complete(context={"ti": ti}, event=event)
    ti.xcom_pull.assert_called_once_with(task_ids="t", key="bfl_plan", map_indexes=-1)


def test_resuming_without_a_plan_says_what_to_do() -> None:
    operator = BflImageInferenceOperator(task_id="t", positive_prompt="a lamp", width=256, height=256)
    event = {
        "status": "success",
        "task_uuids": [],
        "results": [],
        "failures": [],
        "pending": [],
        "message": "",
    }
    with pytest.raises(BflError, match=r"without its generation plan.*clear the task"):
        operator.execute_complete(context={"ti": None}, event=event)


@pytest.mark.parametrize(
    "plan",
    [{"not": "a list"}, [{"task_uuid": "x", "unknown_field": 1}], [{"task_uuid": "x"}], ["text"]],
)
def test_a_damaged_plan_is_a_bflerror(plan: Any) -> None:
    with pytest.raises(BflError):
        GenerationPlan.from_json(plan)


def test_literal_arguments_that_are_invalid_fail_the_dag_import() -> None:
    path = DAGS_FOLDER / "bfl_literal_width.py"
    path.write_text(
        """
import pendulum
from airflow.sdk import DAG
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
with DAG("bfl_literal_width", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(task_id="hero", positive_prompt="a lamp", width=1000, height=512)
"""
    )
    bag = dagbag_class()(dag_folder=str(path))
    [error] = bag.import_errors.values()
    assert "Task 'hero'" in error and "width: got 1000" in error and "992 or 1024" in error


def test_templated_arguments_wait_for_the_run() -> None:
    operator = BflImageInferenceOperator(
        task_id="t", positive_prompt="a lamp", width="{{ params.w }}", height=1000
    )
    assert operator.height == 1000  # not refused yet: the template may change the whole batch
    operator.width = 512
    with pytest.raises(BflInvalidRequestError, match="height: got 1000"):
        operator.build_requests()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"prompts": ["a lamp", "a desk"], "keys": ["SKU-1"]}, "one key per request"),
        ({"prompts": ["a lamp", "a desk"], "keys": ["SKU-1", "SKU-1"]}, "unique"),
        ({"prompts": {"SKU-1": "a lamp"}, "keys": ["SKU-1"]}, "not both"),
    ],
)
def test_bad_keys_are_refused_naming_keys(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(BflInvalidRequestError, match=fragment) as caught:
        BflImageInferenceOperator(task_id="t", width=256, height=256, **kwargs)
    assert caught.value.parameter == "keys"
