"""The operator's content-pipeline duties: landing, uploads, assets, lineage, costs and budgets."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bfl.exceptions import BflBudgetExceededError
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from tests.conftest import DAGS_FOLDER
from tests.dag_runs import task_states, write_dag, xcom

pytestmark = pytest.mark.usefixtures("airflow_db")


def run(body: str, **test_kwargs: Any) -> Any:
    return write_dag(DAGS_FOLDER, body).test(**test_kwargs)


def test_images_are_landed_and_xcom_gains_storage_facts(bfl_conn: RunwareEmulator, tmp_path: Path) -> None:
    destination = f"file://{tmp_path}/catalogue"
    dag_run = run(
        f"""
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(
                task_id="generate", prompts=["a lamp", "a chair", "a mug"], width=512, height=256,
                output_format="WEBP", destination={destination!r},
            )
        """
    )
    assert task_states(dag_run) == {"generate": "success"}
    records = xcom(dag_run, "generate")
    assert len(records) == 3
    for record in records:
        path = Path(record["storedURI"].removeprefix("file://"))
        assert path.parent.name == record["taskUUID"] and path.suffix == ".webp"
        assert str(path).startswith(f"{tmp_path}/catalogue/{dag_run.dag_id}/")
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (record["format"], record["width"], record["height"], record["bytes"]) == (
            "WEBP",
            512,
            256,
            path.stat().st_size,
        )
    assert xcom(dag_run, "generate", key="total_cost") == pytest.approx(0.12)


def test_landing_emits_an_asset_event_for_downstream_dags(bfl_conn: RunwareEmulator, tmp_path: Path) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    destination = f"file://{tmp_path}/assets-{tmp_path.name}"
    dag_run = run(
        f"""
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(task_id="generate", prompts=["a lamp", "a chair"], width=256, height=256,
                                      destination={destination!r})
        """
    )
    assert task_states(dag_run) == {"generate": "success"}
    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == destination)
        ).all()
        assert len(events) == 1
        assert events[0].extra["images"] == 2
        assert events[0].extra["storedURIs"] == [r["storedURI"] for r in xcom(dag_run, "generate")]


def test_a_templated_destination_needs_explicit_outlets() -> None:
    templated = BflImageInferenceOperator(
        task_id="t", positive_prompt="ab", width=256, height=256, destination="file:///tmp/{{ ds }}"
    )
    plain = BflImageInferenceOperator(
        task_id="u", positive_prompt="ab", width=256, height=256, destination="s3://bucket/images"
    )
    assert templated.outlets == []
    assert [outlet.uri for outlet in plain.outlets] == ["s3://bucket/images"]


def test_lineage_names_the_storage_location() -> None:
    operator = BflImageInferenceOperator(task_id="t", positive_prompt="ab", width=256, height=256)
    assert operator.get_openlineage_facets_on_complete(None).outputs == []
    operator.destination = "s3://catalogue-bucket/images/nightly"  # as rendered for the run
    [dataset] = operator.get_openlineage_facets_on_complete(None).outputs
    assert (dataset.namespace, dataset.name) == ("s3://catalogue-bucket", "images/nightly")
    operator.destination = "file:///data/images"
    [dataset] = operator.get_openlineage_facets_on_complete(None).outputs
    assert (dataset.namespace, dataset.name) == ("file", "/data/images")


def test_landing_to_s3_through_the_operator(bfl_conn: RunwareEmulator, s3_bucket: Any) -> None:
    dag_run = run(
        f"""
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(task_id="generate", prompts=["a lamp", "a chair"], width=256, height=256,
                                      destination="s3://{s3_bucket.bucket}/images", destination_conn_id="aws_default")
        """
    )
    assert task_states(dag_run) == {"generate": "success"}
    keys = {obj["Key"] for obj in s3_bucket.list_objects_v2(Bucket=s3_bucket.bucket)["Contents"]}
    manifests = {key for key in keys if "/_manifests/" in key}
    assert len(manifests) == 1 and next(iter(manifests)).endswith("/_manifests/generate.jsonl")
    assert {
        r["storedURI"].removeprefix(f"s3://{s3_bucket.bucket}/") for r in xcom(dag_run, "generate")
    } == keys - manifests


def test_presigned_upload_path_end_to_end(bfl_conn: RunwareEmulator, s3_bucket: Any) -> None:
    """Runware (the emulator) PUTs each image to a presigned S3 URL; the task checks it arrived."""
    dag_run = run(
        f"""
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(task_id="generate", prompts=["a lamp", "a chair"], width=256, height=256,
                                      output_format="PNG", upload_to="s3://{s3_bucket.bucket}/uploads",
                                      upload_timeout=20)
        """
    )
    assert task_states(dag_run) == {"generate": "success"}
    assert bfl_conn.snapshot().uploads == 2
    sent = bfl_conn.received_tasks("imageInference")
    assert all(task["uploadEndpoint"].startswith(s3_server_prefix(s3_bucket)) for task in sent)
    records = xcom(dag_run, "generate")
    for record in records:
        key = record["storedURI"].removeprefix(f"s3://{s3_bucket.bucket}/")
        assert key.endswith(f"{record['taskUUID']}/uploaded.png")
        body = s3_bucket.get_object(Bucket=s3_bucket.bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == record["sha256"] and body.startswith(b"\x89PNG")


def s3_server_prefix(client: Any) -> str:
    return f"{client.meta.endpoint_url}/{client.bucket}/uploads/"


def test_upload_to_refuses_several_images_per_request() -> None:
    with pytest.raises(ValueError, match="numberResults 1"):  # literal: refused when the DAG is parsed
        BflImageInferenceOperator(
            task_id="t", positive_prompt="ab", width=256, height=256, number_results=2, upload_to="s3://b/p"
        )


def test_an_upload_that_never_arrived_is_replaced_by_a_new_generation(
    bfl_conn: RunwareEmulator, s3_bucket: Any
) -> None:
    bfl_conn.configure(lose_uploads=1)  # the first generation's image never reaches the bucket
    dag_run = run(
        f"""
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(task_id="generate", positive_prompt="a lamp", width=256, height=256,
                                      output_format="PNG", upload_to="s3://{s3_bucket.bucket}/uploads",
                                      upload_timeout=3, deferrable=False)
        """
    )
    assert task_states(dag_run) == {"generate": "success"}
    snapshot = bfl_conn.snapshot()
    assert len(snapshot.tasks) == 2 and snapshot.images_billed == 2  # the lost one and its replacement
    assert snapshot.uploads == 1
    [record] = xcom(dag_run, "generate")
    assert record["storedURI"].endswith(f"{record['taskUUID']}/uploaded.png")
    [lost] = set(snapshot.tasks) - {record["taskUUID"]}
    sent = {task["taskUUID"]: task["uploadEndpoint"] for task in bfl_conn.received_tasks("imageInference")}
    assert sent[lost] != sent[record["taskUUID"]]  # each generation has its own object


@pytest.mark.parametrize(
    ("guard", "fragment"),
    [
        ({"max_images": 5}, "asks for 6 images (3 requests), over max_images=5"),
        ({"max_cost": 0.2}, "6 images at 0.04 USD each would cost 0.24 USD, over max_cost=0.2"),
    ],
)
def test_budget_guard_refuses_before_any_money_is_spent(
    bfl_conn: RunwareEmulator, guard: dict[str, float], fragment: str
) -> None:
    batch = {"prompts": ["a lamp", "a chair", "a mug"], "width": 256, "height": 256, "number_results": 2}
    with pytest.raises(BflBudgetExceededError, match=re.escape(fragment)):  # literal: at parse time
        BflImageInferenceOperator(task_id="t", **batch, **guard)
    templated = {**batch, "number_results": "{{ 2 }}"}  # known only at run time: refused there, unsent
    dag_run = run(
        f"""
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(task_id="generate", **{templated!r}, **{guard!r})
        """
    )
    assert task_states(dag_run) == {"generate": "failed"}
    assert bfl_conn.snapshot().requests == 0


def test_cost_can_be_opted_out(bfl_conn: RunwareEmulator) -> None:
    dag_run = run(
        """
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(task_id="generate", positive_prompt="a lamp", width=256, height=256,
                                      include_cost=False)
        """
    )
    assert "cost" not in xcom(dag_run, "generate")[0]
    assert xcom(dag_run, "generate", key="total_cost") is None
    assert bfl_conn.received_tasks("imageInference")[0]["includeCost"] is False


def test_mapping_over_prompts_runs_one_generation_per_mapped_task(bfl_conn: RunwareEmulator) -> None:
    dag_run = run(
        """
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator.partial(task_id="generate", width=256, height=256).expand(
                positive_prompt=["a lamp", "a chair", "a mug"]
            )
        """
    )
    states = task_states(dag_run)
    assert [states[f"generate[{i}]"] for i in range(3)] == ["success"] * 3
    uuids = {xcom(dag_run, "generate", map_index=i)[0]["taskUUID"] for i in range(3)}
    assert len(uuids) == 3 and bfl_conn.snapshot().images_billed == 3


def test_one_operator_many_prompts_waits_with_one_trigger(bfl_conn: RunwareEmulator) -> None:
    """Deferred batch: submissions in one request, every poll covers the whole batch."""
    bfl_conn.latency = 0.3
    dag_run = run(
        """
        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            BflImageInferenceOperator(task_id="generate", prompts=[f"product {i}" for i in range(20)],
                                      width=256, height=256, deferrable=True, poll_interval=0.1)
        """
    )
    assert task_states(dag_run) == {"generate": "success"}
    assert len(bfl_conn.received_requests("imageInference")) == 1
    polls = bfl_conn.received_requests("getResponse")
    assert polls and all(len(tasks) == 20 for tasks in polls)
