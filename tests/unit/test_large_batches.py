"""
Big batches keep XCom and trigger events small (issue: nightly catalogues at scale).

A batch above ``manifest_threshold`` images returns a ManifestRef; its records live in a JSON Lines
manifest beside the images, its plan beside that, and the trigger event carries counts only. Every
test runs real DAG runs with ``dag.test()`` against the emulator over HTTP, reads what the task
pushed from the XCom table and what the trigger handed back to ``execute_complete``, and counts
what the emulator billed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pendulum
import pytest
from pytest_mock import MockerFixture

from airflow_provider_bfl import events
from airflow_provider_bfl.exceptions import BflInvalidRequestError
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.plan import GenerationPlan
from airflow_provider_bfl.sensors.bfl import BflImageInferenceSensor
from airflow_provider_bfl.storage.manifest import is_manifest_ref, iter_records
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from tests.conftest import DAGS_FOLDER
from tests.dag_runs import task_states, write_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

#: "A few KiB": what any XCom value or trigger event of a big batch may weigh, as JSON.
SMALL = 4096
#: The XCom Airflow pushes for the operator's extra link (the gallery page): small whatever the batch.
LINK = "_link_BflImageLink"
SAME_RUN_DATE = pendulum.datetime(2026, 3, 1, tz="UTC")
SAME_RUN = {"logical_date": SAME_RUN_DATE, "run_after": SAME_RUN_DATE}


def pushed(run: Any, task_id: str, map_index: int = -1) -> dict[str, Any]:
    """Every XCom a task instance of ``run`` left in the metadata DB, by key."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == run.dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id == task_id,
                XComModel.map_index == map_index,
            )
        ).all()
        return {row.key: XComModel.deserialize_value(row) for row in rows}


def size(value: Any) -> int:
    return len(json.dumps(value))


def resumed_events(spy: Any) -> list[dict[str, Any]]:
    """The trigger events ``execute_complete`` was resumed with, in order."""
    return [call.kwargs["event"] for call in spy.call_args_list]


def catalogue_dag(tmp_path: Path, *, prompts: int, deferrable: bool, extra: str = "") -> Any:
    return write_dag(
        DAGS_FOLDER,
        f"""
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(
        task_id="generate", prompts={{f"SKU-{{i}}": f"a walnut desk lamp, view {{i}}" for i in range({prompts})}},
        width=256, height=256, destination={"file://" + str(tmp_path)!r}, deferrable={deferrable},
        poll_interval=0.2, {extra}
    )
""",
    )


def assert_manifest_holds_the_batch(ref: dict[str, Any], emulator: RunwareEmulator, images: int) -> list[Any]:
    records = list(iter_records(ref))
    assert ref["images"] == len(records) == images
    assert len({record["imageUUID"] for record in records}) == images
    assert {record["taskUUID"] for record in records} == set(emulator.snapshot().tasks)
    for record in records[:: max(1, images // 50)]:  # a sample of the files: every record names its image
        stored = Path(record["storedURI"].removeprefix("file://"))
        assert stored.stat().st_size == record["bytes"]
    return records


# -- a big batch, deferred and in the worker ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_1000_image_deferred_batch_keeps_xcom_and_its_event_small(
    bfl_conn: RunwareEmulator, tmp_path: Path, mocker: MockerFixture
) -> None:
    bfl_conn.latency = 0.5
    resumed = mocker.spy(BflImageInferenceOperator, "execute_complete")
    fetches: list[int] = []
    real_fetch = events.fetch_results

    def counted_fetch(*args: Any, **kwargs: Any) -> Any:
        before = bfl_conn.snapshot().requests
        result = real_fetch(*args, **kwargs)
        fetches.append(bfl_conn.snapshot().requests - before)
        return result

    mocker.patch.object(events, "fetch_results", autospec=True, side_effect=counted_fetch)

    run = catalogue_dag(tmp_path, prompts=1000, deferrable=True).test()

    assert task_states(run) == {"generate": "success"}
    xcoms = pushed(run, "generate")
    assert set(xcoms) == {"return_value", "manifest", "task_uuids", "bfl_plan", "total_cost", LINK}
    assert {key: size(value) for key, value in xcoms.items() if size(value) >= SMALL} == {}
    ref = xcoms["return_value"]
    assert is_manifest_ref(ref) and xcoms["manifest"] == ref
    assert ref["cost"] == xcoms["total_cost"] == pytest.approx(1000 * 0.04)
    records = assert_manifest_holds_the_batch(ref, bfl_conn, 1000)
    assert [record["key"] for record in records] == [f"SKU-{i}" for i in range(1000)]  # batch order
    (event,) = resumed_events(resumed)
    assert size(event) < SMALL and events.is_summary(event)
    assert event["summary"] == {"generations": 1000, "done": 1000, "images": 1000, "failed": 0, "pending": 0}
    # The plan travelled as a location; what it names is the plan of every taskUUID billed.
    saved = xcoms["bfl_plan"]
    assert set(saved) == {"planURI", "conn_id", "kept"}
    plan = GenerationPlan.load(saved["planURI"], conn_id=saved["conn_id"])
    assert list(plan) == [record["taskUUID"] for record in records]
    assert xcoms["task_uuids"] == {
        "planURI": saved["planURI"],
        "conn_id": None,
        "destination": f"file://{tmp_path}",
        "generations": 1000,
        "images": 1000,
    }
    # The images came from the API in batched getResponse requests: 1 per 100 taskUUIDs.
    assert fetches == [math.ceil(1000 / 100)]
    for text in (json.dumps(xcoms), json.dumps(event), Path(saved["planURI"][7:]).read_text()):
        assert bfl_conn.api_key not in text
    assert bfl_conn.api_key not in Path(ref["bflManifest"][7:]).read_text()
    assert bfl_conn.snapshot().images_billed == 1000


def test_a_rerun_of_a_big_deferred_batch_reattaches_and_pays_nothing(
    bfl_conn: RunwareEmulator, tmp_path: Path
) -> None:
    bfl_conn.latency = 0.3
    dag = catalogue_dag(tmp_path, prompts=150, deferrable=True)
    first = pushed(dag.test(**SAME_RUN), "generate")

    again = dag.test(**SAME_RUN)  # the same task instance, cleared long after: re-attaches to all 150

    assert task_states(again) == {"generate": "success"}
    snapshot = bfl_conn.snapshot()
    assert snapshot.images_billed == 150 and snapshot.conflicts == 150
    rerun = pushed(again, "generate")
    assert {key: size(value) for key, value in rerun.items() if size(value) >= SMALL} == {}
    assert [r["imageUUID"] for r in iter_records(rerun["return_value"])] == [
        r["imageUUID"] for r in iter_records(first["return_value"])
    ]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_1000_image_batch_waited_for_in_the_worker_keeps_xcom_small(
    bfl_conn: RunwareEmulator, tmp_path: Path
) -> None:
    """250 requests of 4 images each: the task's image count, not its request count, decides."""
    bfl_conn.latency = 0.3
    dag = catalogue_dag(tmp_path, prompts=250, deferrable=False, extra="number_results=4,")

    run = dag.test()

    assert task_states(run) == {"generate": "success"}
    xcoms = pushed(run, "generate")
    assert set(xcoms) == {"return_value", "manifest", "task_uuids", "total_cost", LINK}  # never deferred
    assert {key: size(value) for key, value in xcoms.items() if size(value) >= SMALL} == {}
    assert xcoms["task_uuids"]["generations"] == 250 and xcoms["task_uuids"]["images"] == 1000
    records = assert_manifest_holds_the_batch(xcoms["return_value"], bfl_conn, 1000)
    assert len({record["taskUUID"] for record in records}) == 250
    assert bfl_conn.snapshot().images_billed == 1000


# -- the threshold ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompts", "big"),
    [(100, False), (101, True)],
    ids=["100-images-keep-the-list", "101-images-get-a-manifest"],
)
def test_the_threshold_is_the_number_of_images(
    bfl_conn: RunwareEmulator, tmp_path: Path, mocker: MockerFixture, prompts: int, big: bool
) -> None:
    bfl_conn.latency = 0.3
    resumed = mocker.spy(BflImageInferenceOperator, "execute_complete")

    run = catalogue_dag(tmp_path, prompts=prompts, deferrable=True).test()

    assert task_states(run) == {"generate": "success"}
    xcoms = pushed(run, "generate")
    (event,) = resumed_events(resumed)
    manifest = list(iter_records(xcoms["manifest"]))  # with a destination, a manifest for any size
    assert len(manifest) == prompts
    if big:
        assert is_manifest_ref(xcoms["return_value"]) and xcoms["return_value"] == xcoms["manifest"]
        assert events.is_summary(event) and "results" not in event
        assert "planURI" in xcoms["bfl_plan"] and "planURI" in xcoms["task_uuids"]
    else:  # today's behaviour, exactly: the list, every result in the event, the plan and UUIDs in XCom
        assert xcoms["return_value"] == manifest
        assert len(event["results"]) == prompts and not events.is_summary(event)
        assert len(xcoms["bfl_plan"]["plan"]) == prompts
        assert xcoms["task_uuids"] == {record["taskUUID"]: 1 for record in manifest}


def test_threshold_zero_gives_even_one_image_a_manifest(bfl_conn: RunwareEmulator, tmp_path: Path) -> None:
    run = catalogue_dag(tmp_path, prompts=1, deferrable=False, extra="manifest_threshold=0,").test()
    ref = pushed(run, "generate")["return_value"]
    assert is_manifest_ref(ref) and ref["images"] == 1
    assert len(list(iter_records(ref))) == 1


def test_a_small_batch_without_a_destination_returns_its_records_and_no_manifest(
    bfl_conn: RunwareEmulator,
) -> None:
    run = write_dag(
        DAGS_FOLDER,
        """
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(task_id="generate", prompts=["a lamp", "a chair"], width=256, height=256,
                              deferrable=False)
""",
    ).test()
    xcoms = pushed(run, "generate")
    assert "manifest" not in xcoms
    assert [record["imageURL"][:4] for record in xcoms["return_value"]] == ["http", "http"]


@pytest.mark.parametrize("threshold", [-1, True, "100", 2.5])
def test_a_threshold_that_is_not_a_count_is_refused(threshold: Any) -> None:
    with pytest.raises(BflInvalidRequestError, match="manifest_threshold must be a whole number") as caught:
        BflImageInferenceOperator(task_id="t", positive_prompt="a lamp", manifest_threshold=threshold)
    assert caught.value.parameter == "manifest_threshold"


# -- a big batch needs somewhere to write its manifest: refused before any money -------------------------------------


def test_a_big_literal_batch_without_a_destination_fails_the_dag_import() -> None:
    with pytest.raises(BflInvalidRequestError) as caught:
        BflImageInferenceOperator(
            task_id="catalogue", prompts=[f"lamp {i}" for i in range(101)], width=256, height=256
        )
    message = str(caught.value)
    for part in ("'catalogue'", "101 images", "manifest_threshold=100", "destination=", "upload_to"):
        assert part in message
    assert caught.value.parameter == "destination"
    BflImageInferenceOperator(  # at the threshold, or with a higher one, the list return stays
        task_id="ok", prompts=[f"lamp {i}" for i in range(101)], width=256, height=256, manifest_threshold=101
    )


def test_a_big_batch_whose_destination_renders_empty_fails_before_anything_is_sent(
    bfl_conn: RunwareEmulator, capfd: pytest.CaptureFixture[str]
) -> None:
    run = write_dag(
        DAGS_FOLDER,
        """
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1), params={"where": ""}) as dag:
    BflImageInferenceOperator(task_id="generate", prompts=[f"lamp {i}" for i in range(150)], width=256,
                              height=256, destination="{{ params.where }}", deferrable=False)
""",
    ).test()
    assert task_states(run) == {"generate": "failed"}
    assert bfl_conn.snapshot().requests == 0  # not one request: nothing submitted, nothing billed
    assert "a batch of 150 images is above manifest_threshold=100" in capfd.readouterr().out


# -- failures and replacements keep their guarantees -----------------------------------------------------------------


def test_a_big_batch_that_partly_fails_keeps_its_images_in_a_manifest(
    bfl_conn: RunwareEmulator, tmp_path: Path, mocker: MockerFixture
) -> None:
    """15 of 120 generations fail: the event names 10 of them and counts all, partial_results is a ref."""
    bfl_conn.latency = 0.3
    resumed = mocker.spy(BflImageInferenceOperator, "execute_complete")
    dag = write_dag(
        DAGS_FOLDER,
        f"""
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(
        task_id="generate", prompts=[("fail-marker " if i % 8 == 0 else "") + f"lamp {{i}}" for i in range(120)],
        width=256, height=256, destination={"file://" + str(tmp_path)!r}, deferrable=True, poll_interval=0.2,
    )
""",
    )

    run = dag.test()

    assert task_states(run) == {"generate": "failed"}
    xcoms = pushed(run, "generate")
    assert "return_value" not in xcoms and "manifest" not in xcoms
    assert {key: size(value) for key, value in xcoms.items() if size(value) >= SMALL} == {}
    partial = xcoms["partial_results"]
    assert is_manifest_ref(partial) and partial["images"] == 105
    assert {record["prompt"] for record in iter_records(partial)} == {
        f"lamp {i}" for i in range(120) if i % 8
    }
    (event,) = resumed_events(resumed)
    assert size(event) < SMALL
    assert event["status"] == events.ERROR and event["summary"]["failed"] == 15
    assert len(event["failures"]) == events.DETAILED and "and 12 more" in event["message"]
    assert bfl_conn.snapshot().images_billed == 105


def test_a_replacement_in_a_big_batch_carries_the_landed_images_through_the_next_deferral(
    bfl_conn: RunwareEmulator, tmp_path: Path
) -> None:
    """
    Try 1: the lamp's image cannot be landed and the chair's generation fails. Try 2: the lamp's URL has
    expired and the chair's replacement lands, so the lamp is replaced while the chair's record waits in
    the task's manifest (not XCom) through a second deferral. Each image is billed once.
    """
    bfl_conn.latency = 0.3
    bfl_conn.configure(image_corruption="html")
    control = bfl_conn.control_url
    dag = write_dag(
        DAGS_FOLDER,
        f"""
import datetime, httpx
def between_tries(context):
    httpx.post({control + "/config"!r}, json={{"image_corruption": "none", "lapse_issued_urls": True,
                                              "fail_marker": "no-longer-fails"}}).raise_for_status()
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(
        task_id="generate", prompts={{"lamp": "a walnut desk lamp", "chair": "fail-marker a linen chair"}},
        width=256, height=256, destination={"file://" + str(tmp_path)!r}, deferrable=True, poll_interval=0.2,
        manifest_threshold=0, retries=1, retry_delay=datetime.timedelta(seconds=0),
        on_retry_callback=between_tries,
    )
""",
    )

    run = dag.test()

    assert task_states(run) == {"generate": "success"}
    xcoms = pushed(run, "generate")
    kept = xcoms["bfl_plan"]["kept"]  # the last deferral's: the chair, landed before the lamp's replacement
    assert is_manifest_ref(kept) and kept["images"] == 1
    records = list(iter_records(xcoms["return_value"]))
    assert [record["key"] for record in records] == ["lamp", "chair"]
    snapshot = bfl_conn.snapshot()
    assert len(snapshot.tasks) == 4  # lamp, its replacement, chair (failed, unbilled), its replacement
    assert snapshot.images_billed == 3
    billed = {uuid for uuid, counters in snapshot.tasks.items() if counters.images_billed}
    assert {record["taskUUID"] for record in records} < billed
    plan = GenerationPlan.load(xcoms["bfl_plan"]["planURI"], conn_id=None)
    assert [entry.generation for entry in plan.values()] == [1, 1]


# -- the sensor waits on a big batch by its plan's location -------------------------------------------------------


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "poking"])
def test_the_sensor_waits_for_a_big_batch_by_its_saved_plan(
    bfl_conn: RunwareEmulator, tmp_path: Path, deferrable: bool
) -> None:
    bfl_conn.latency = 0.3
    run = write_dag(
        DAGS_FOLDER,
        f"""
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    submitted = BflImageInferenceOperator(
        task_id="submit", prompts=[f"lamp {{i}}" for i in range(150)], width=256, height=256,
        destination={"file://" + str(tmp_path)!r}, wait_for_completion=False,
    )
    BflImageInferenceSensor(task_id="wait", task_uuids=submitted.output, deferrable={deferrable},
                            poke_interval=0.2, poll_interval=0.2, timeout=300)
""",
    ).test()

    assert task_states(run) == {"submit": "success", "wait": "success"}
    for task_id in ("submit", "wait"):
        xcoms = pushed(run, task_id)
        assert {key: size(value) for key, value in xcoms.items() if size(value) >= SMALL} == {}, task_id
    handoff = pushed(run, "submit")["return_value"]
    assert handoff["generations"] == 150 and "planURI" in handoff
    ref = pushed(run, "wait")["return_value"]
    assert is_manifest_ref(ref) and ref["bflManifest"].endswith("/_manifests/wait.jsonl")
    results = list(iter_records(ref))
    assert len({result["imageUUID"] for result in results}) == 150
    assert {result["taskUUID"] for result in results} == set(bfl_conn.snapshot().tasks)
    assert bfl_conn.snapshot().images_billed == 150


def test_the_sensor_refuses_a_plan_location_without_a_destination() -> None:
    waiter = BflImageInferenceSensor(task_id="wait", task_uuids={"planURI": "file:///tmp/x/plans/t.jsonl"})
    with pytest.raises(BflInvalidRequestError, match="no destination") as caught:
        waiter.poke(context={})
    assert caught.value.parameter == "task_uuids"


def test_saved_plans_never_share_a_path_with_any_tasks_manifests() -> None:
    """QA named ``plans`` writes ``_manifests/plans/passed.jsonl``: a plans folder of that name held task ``passed``'s plan."""
    from airflow.sdk.definitions._internal.node import validate_key

    from airflow_provider_bfl.plan import PLANS_FOLDER, plan_location

    folder = "s3://bucket/catalogue/run/_manifests"
    task_ids = ["plans", "passed", "approved", "left_out", "generate.plans", "_plans"]
    for task_id in task_ids:
        validate_key(task_id)  # all legal task ids...
    with pytest.raises(ValueError):
        validate_key(PLANS_FOLDER)  # ...and the plans folder is none
    task_files = {
        path
        for task_id in task_ids
        for path in (
            f"{folder}/{task_id}.jsonl",
            *(f"{folder}/{task_id}/{n}.jsonl" for n in ("passed", "approved", "left_out")),
        )
    }
    plans = {plan_location(f"{folder}/{task_id}.jsonl") for task_id in task_ids}
    assert len(plans) == len(task_ids) and not plans & task_files
