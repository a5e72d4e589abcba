"""BflImageInferenceOperator in real DAG runs (dag.test) against the emulator over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bfl.exceptions import BflContentModeratedError, BflError, BflInvalidRequestError
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from tests.conftest import DAGS_FOLDER
from tests.dag_runs import task_states, write_dag, xcom

pytestmark = pytest.mark.usefixtures("airflow_db")

SPEC_EXAMPLE = json.loads(
    (Path(__file__).parents[2] / "example_dags" / "data" / "spec_examples.json").read_text()
)[0]["request"]


def run(body: str, **test_kwargs: Any) -> Any:
    dag = write_dag(DAGS_FOLDER, body)
    return dag.test(**test_kwargs)


def submitted(emulator: RunwareEmulator) -> list[dict[str, Any]]:
    """Every imageInference task object the emulator received, as sent on the wire."""
    return emulator.received_tasks("imageInference")


def test_keyword_request_generates_and_returns_small_json(bfl_conn: RunwareEmulator) -> None:
    dag_run = run(
        """
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(
                task_id="generate", positive_prompt="a red bicycle", width=512, height=384,
                seed=7, number_results=2, deferrable=False,
            )
        """
    )
    assert task_states(dag_run) == {"generate": "success"}
    results = xcom(dag_run, "generate")
    assert len(results) == 2
    assert {entry["seed"] for entry in results} == {7, 8}
    assert all(
        set(entry)
        <= {"taskType", "taskUUID", "imageUUID", "imageURL", "seed", "cost", "NSFWContent", "prompt"}
        for entry in results
    )
    assert {entry["prompt"] for entry in results} == {"a red bicycle"}  # ties each image to its request
    assert all(entry["cost"] == 0.04 for entry in results)  # includeCost is on by default
    task_uuids = xcom(dag_run, "generate", key="task_uuids")
    assert task_uuids == {results[0]["taskUUID"]: 2}
    assert bfl_conn.snapshot().images_billed == 2
    [sent] = submitted(bfl_conn)
    assert sent["deliveryMethod"] == "async" and sent["includeCost"] is True


def test_spec_example_pasted_as_request_runs_as_written(bfl_conn: RunwareEmulator) -> None:
    dag_run = run(
        f"""
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(task_id="generate", request={SPEC_EXAMPLE!r}, deferrable=False)
        """
    )
    assert task_states(dag_run) == {"generate": "success"}
    [sent] = submitted(bfl_conn)
    assert {key: sent[key] for key in SPEC_EXAMPLE} == SPEC_EXAMPLE  # the explicit taskUUID is honoured
    [result] = xcom(dag_run, "generate")
    assert result["taskUUID"] == SPEC_EXAMPLE["taskUUID"]
    assert result["seed"] == SPEC_EXAMPLE["seed"]


def test_templated_fields_render_before_validation(bfl_conn: RunwareEmulator) -> None:
    dag_run = run(
        """
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1),
                 params={"subject": "a teapot", "w": 640}) as dag:
            BflImageInferenceOperator(
                task_id="generate", positive_prompt="studio photo of {{ params.subject }}",
                width="{{ params.w }}", height="{{ params.w }}", deferrable=False,
            )
        """
    )
    assert task_states(dag_run) == {"generate": "success"}
    [sent] = submitted(bfl_conn)
    assert sent["positivePrompt"] == "studio photo of a teapot"
    assert (sent["width"], sent["height"]) == (640, 640)


def test_invalid_input_fails_the_task_before_any_http_request(bfl_conn: RunwareEmulator) -> None:
    dag_run = run(
        """
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1), params={"w": 1000}) as dag:
            BflImageInferenceOperator(
                task_id="generate", positive_prompt="a red bicycle", width="{{ params.w }}", height=512,
                deferrable=False,
            )
        """
    )
    assert task_states(dag_run) == {"generate": "failed"}
    assert bfl_conn.snapshot().requests == 0


def test_validation_message_names_task_parameter_value_and_range() -> None:
    with pytest.raises(BflInvalidRequestError) as caught:  # literal arguments: checked when the DAG is parsed
        BflImageInferenceOperator(
            task_id="hero_shot", prompts=["a lamp", "b"], width=1000, height=512, output_quality=10
        )
    message = str(caught.value)
    assert "Task 'hero_shot': nothing was submitted" in message
    assert "request 1 of 2: width: got 1000" in message
    assert "request 2 of 2" in message and "positivePrompt: got 'b'" in message
    assert "outputQuality: got 10; allowed: an integer from 20 to 99" in message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"request": {"positivePrompt": "ab", "width": 512, "height": 512}, "width": 512}, "not both"),
        ({"request": "not json"}, "neither JSON nor a Python literal"),
        ({"prompts": "a lamp", "width": 512, "height": 512}, "prompts must be a list"),
        ({"prompts": [], "width": 512, "height": 512}, "prompts is empty"),
        (
            {"positive_prompt": "ab", "width": 512, "height": 512, "output_type": "base64Data"},
            "set destination=",
        ),
        ({"positive_prompt": "ab", "width": 512, "height": 512, "widht": 3}, None),
    ],
)
def test_careless_arguments_get_clear_errors(kwargs: dict[str, Any], fragment: str | None) -> None:
    if fragment is None:  # an unknown keyword is caught by Airflow itself when the DAG is parsed
        with pytest.raises(TypeError, match="widht"):
            BflImageInferenceOperator(task_id="t", **kwargs)
        return
    with pytest.raises(BflInvalidRequestError, match=fragment):  # literal: refused when the DAG is parsed
        BflImageInferenceOperator(task_id="t", **kwargs)


def test_a_batch_of_prompts_goes_in_one_http_request(bfl_conn: RunwareEmulator) -> None:
    dag_run = run(
        """
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(
                task_id="generate", prompts=[f"product shot number {i}" for i in range(12)],
                width=256, height=256, deferrable=False,
            )
        """
    )
    assert task_states(dag_run) == {"generate": "success"}
    snapshot = bfl_conn.snapshot()
    assert snapshot.requests_by_task_type["imageInference"] == 12
    assert len(bfl_conn.received_requests("imageInference")) == 1
    assert len(xcom(dag_run, "generate")) == 12


def test_fire_and_forget_returns_task_uuids_without_waiting(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.latency = 30
    dag_run = run(
        """
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(
                task_id="submit", positive_prompt="a red bicycle", width=256, height=256,
                number_results=3, wait_for_completion=False,
            )
        """
    )
    assert task_states(dag_run) == {"submit": "success"}
    returned = xcom(dag_run, "submit")
    assert list(returned.values()) == [3]
    assert bfl_conn.snapshot().requests_by_task_type.get("getResponse", 0) == 0


def test_moderated_generation_fails_naming_the_task_uuid_and_keeps_siblings(
    bfl_conn: RunwareEmulator,
) -> None:
    dag_run = run(
        """
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(
                task_id="generate", prompts=["a calm lake", "moderation-marker here", "a quiet forest"],
                width=256, height=256, deferrable=False,
            )
        """
    )
    assert task_states(dag_run) == {"generate": "failed"}
    partial = xcom(dag_run, "generate", key="partial_results")
    assert len(partial) == 2
    assert bfl_conn.snapshot().images_billed == 2


def test_generation_timeout_fails_the_task(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.latency = 5
    dag_run = run(
        """
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(
                task_id="generate", positive_prompt="a red bicycle", width=256, height=256,
                generation_timeout=0.3, deferrable=False,
            )
        """
    )
    assert task_states(dag_run) == {"generate": "failed"}
    assert xcom(dag_run, "generate", key="task_uuids")  # recorded before waiting


def test_retry_reattaches_and_pays_once(bfl_conn: RunwareEmulator) -> None:
    """Try 1 submits, then polling fails for good; try 2 re-attaches to the same generation."""
    bfl_conn.latency = 0.3
    bfl_conn.inject("status", count=1000, status=503, only_task_type="getResponse")
    dag_run = run(
        f"""
        import datetime, httpx
        def heal(context):  # the API recovers between the tries
            httpx.delete({bfl_conn.control_url + "/faults"!r})
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(
                task_id="generate", positive_prompt="a red bicycle", width=256, height=256,
                number_results=2, deferrable=False, retries=1, retry_delay=datetime.timedelta(seconds=0),
                on_retry_callback=heal,
            )
        """
    )
    assert task_states(dag_run) == {"generate": "success"}
    snapshot = bfl_conn.snapshot()
    [(task_uuid, counters)] = snapshot.tasks.items()
    assert counters.submissions == 2  # the retry sent the same taskUUID again...
    assert counters.images_billed == 2  # ...and paid nothing more
    assert snapshot.conflicts == 1
    assert [entry["taskUUID"] for entry in xcom(dag_run, "generate")] == [task_uuid, task_uuid]


def test_retry_replaces_a_generation_that_failed_in_the_earlier_try(bfl_conn: RunwareEmulator) -> None:
    dag_run = run(
        f"""
        import datetime, httpx
        def provider_recovers(context):
            httpx.post({bfl_conn.control_url + "/config"!r}, json={{"fail_marker": "never-matches"}})
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(
                task_id="generate", prompts=["a calm lake", "fail-marker portrait"], width=256, height=256,
                deferrable=False, retries=1, retry_delay=datetime.timedelta(seconds=0),
                on_retry_callback=provider_recovers,
            )
        """
    )
    assert task_states(dag_run) == {"generate": "success"}
    snapshot = bfl_conn.snapshot()
    assert len(snapshot.tasks) == 3  # the lake, the failed portrait, its replacement
    assert snapshot.images_billed == 2
    assert all(counters.images_billed <= 1 for counters in snapshot.tasks.values())
    results = xcom(dag_run, "generate")
    assert len(results) == 2 and len({entry["taskUUID"] for entry in results}) == 2


def test_byte_outputs_are_written_to_output_dir_never_to_xcom(
    bfl_conn: RunwareEmulator, tmp_path: Path
) -> None:
    dag_run = run(
        f"""
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(
                task_id="generate", positive_prompt="a red bicycle", width=256, height=256,
                output_type="base64Data", output_format="PNG", destination={"file://" + str(tmp_path)!r}, deferrable=False,
            )
        """
    )
    assert task_states(dag_run) == {"generate": "success"}
    [entry] = xcom(dag_run, "generate")
    assert "imageBase64Data" not in entry and "imageURL" not in entry
    written = Path(entry["storedURI"].removeprefix("file://"))
    assert written.suffix == ".png" and written.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (None, "Expected a trigger event"),
        ({"status": "success"}, "missing task_uuids"),
        (
            {
                "status": "weird",
                "task_uuids": [],
                "results": [],
                "failures": [],
                "pending": [],
                "message": "",
            },
            "Unknown trigger event status 'weird'",
        ),
    ],
)
def test_execute_complete_rejects_missing_or_unknown_events(event: Any, fragment: str) -> None:
    operator = BflImageInferenceOperator(task_id="t", positive_prompt="a lamp", width=256, height=256)
    with pytest.raises(BflError, match=fragment):
        operator.execute_complete(context={}, event=event)


def test_execute_complete_raises_the_family_the_api_reported() -> None:
    operator = BflImageInferenceOperator(task_id="hero", positive_prompt="a lamp", width=256, height=256)
    event = {
        "status": "error",
        "task_uuids": ["5c7a9c23-6866-4003-93b9-d3f52e15111b"],
        "results": [],
        "failures": [
            {
                "taskUUID": "5c7a9c23-6866-4003-93b9-d3f52e15111b",
                "code": "contentPolicyViolation",
                "message": "refused",
                "error": "BflContentModeratedError",
            }
        ],
        "pending": [],
        "message": "1 of 1 generation(s) failed: 5c7a9c23-6866-4003-93b9-d3f52e15111b: contentPolicyViolation: refused",
    }
    with pytest.raises(BflContentModeratedError) as caught:
        operator.execute_complete(context={"ti": None}, event=event)
    assert "Task 'hero'" in str(caught.value) and "contentPolicyViolation" in str(caught.value)
    assert caught.value.task_uuid == "5c7a9c23-6866-4003-93b9-d3f52e15111b"
