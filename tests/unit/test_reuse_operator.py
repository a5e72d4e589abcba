"""
Opt-in reuse through the operator: pay only for what changed (issue: nightly catalogues at scale).

Every test runs the operator against the emulator over HTTP and reads its billing counters: what
was billed, and how many imageInference tasks reached it. DAG runs go through ``dag.test()``
(each a new run of the same DAG unless the test says otherwise); the race runs two task
instances of the same DAG at once in threads, sharing one destination (a local folder, and S3
served with S3's atomic conditional writes), with the emulator slow enough that they overlap.
"""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from airflow_provider_bfl.exceptions import BflBudgetExceededError, BflInvalidRequestError
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator, _recorded_generations
from airflow_provider_bfl.storage.landing import safe_segment
from airflow_provider_bfl.storage.manifest import is_manifest_ref, iter_records
from airflow_provider_bfl.storage.reuse import ReuseIndex, rebuild_from_manifests
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from tests.conftest import API_KEY, DAGS_FOLDER, connection_json
from tests.dag_runs import task_states, write_dag, xcom
from tests.unit import test_reuse_index as stores

pytestmark = pytest.mark.usefixtures("airflow_db")

# S3 with S3's atomic conditional writes (moto's are not atomic), shared with the index's tests.
atomic_s3_server = stores.atomic_s3_server
reuse_bucket = stores.reuse_bucket

PRICE = 0.04


def catalogue(
    count: int, *, seeded: bool = True, changes: dict[int, dict[str, Any]] | None = None
) -> list[dict]:
    """``count`` wire requests (SKU-1...), each its own prompt and seed; ``changes`` per 1-based position."""
    requests = []
    for n in range(1, count + 1):
        request = {
            "taskType": "imageInference",
            "model": "bfl:2@1",
            "positivePrompt": f"a walnut desk lamp, catalogue view {n}",
            "width": 256,
            "height": 256,
        }
        if seeded:
            request["seed"] = 1000 + n
        requests.append({**request, **(changes or {}).get(n, {})})
    return requests


def keys(count: int) -> list[str]:
    return [f"SKU-{n}" for n in range(1, count + 1)]


def reuse_dag(
    destination: str, requests: list[dict], *, dag_id: str, conn: str = "", **arguments: Any
) -> Any:
    """The nightly DAG (written again under the same ``dag_id`` when its requests change)."""
    options = {"keys": keys(len(requests)), "reuse": True, "deferrable": False, **arguments}
    rendered = ", ".join(f"{name}={value!r}" for name, value in options.items())
    return write_dag(
        DAGS_FOLDER,
        f"""
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1), params={{"refresh": []}}) as dag:
    BflImageInferenceOperator(
        task_id="generate", request={requests!r}, destination={destination!r}, {conn}
        poll_interval=0.2, {rendered}
    )
""",
        dag_id=dag_id,
    )


def image_inference_tasks(emulator: RunwareEmulator) -> int:
    return len(emulator.received_tasks("imageInference"))


def records_of(run: Any) -> list[dict[str, Any]]:
    return list(iter_records(xcom(run, "generate")))


def stored_path(record: dict[str, Any]) -> Path:
    return Path(record["storedURI"].removeprefix("file://"))


@pytest.fixture
def destination(tmp_path: Path) -> str:
    return f"file://{tmp_path}/catalogue"


@pytest.fixture
def dag_id(request: pytest.FixtureRequest) -> str:
    return f"nightly_{abs(hash(request.node.nodeid)) % 10**10}"


# -- a second run pays nothing ----------------------------------------------------------------------


def test_a_second_run_of_the_same_dag_sends_and_bills_nothing_and_points_at_the_first_runs_images(
    bfl_conn: RunwareEmulator, destination: str, dag_id: str, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = reuse_dag(destination, catalogue(5), dag_id=dag_id)
    first_run = dag.test()
    assert task_states(first_run) == {"generate": "success"}
    first = records_of(first_run)
    assert bfl_conn.snapshot().images_billed == 5
    assert xcom(first_run, "generate", key="total_cost") == pytest.approx(5 * PRICE)
    assert all(len(record["fingerprint"]) == 64 and "reused" not in record for record in first)
    sent_before, requests_before = image_inference_tasks(bfl_conn), bfl_conn.snapshot().requests
    capfd.readouterr()

    second_run = dag.test()

    assert task_states(second_run) == {"generate": "success"}
    snapshot = bfl_conn.snapshot()
    assert snapshot.images_billed == 5  # nothing billed by the second run
    assert image_inference_tasks(bfl_conn) == sent_before  # no imageInference request at all
    assert snapshot.requests == requests_before  # nor any other API request
    second = records_of(second_run)
    assert [r["key"] for r in second] == keys(5)  # batch order, each tied to its SKU
    for was, now in zip(first, second, strict=True):
        assert now["reused"] is True and now["cost"] == 0
        for field in ("taskUUID", "imageUUID", "storedURI", "sha256", "bytes", "seed", "fingerprint"):
            assert now[field] == was[field], field
        assert now["original"]["cost"] == pytest.approx(PRICE)
        assert now["original"]["runId"] == first_run.run_id
        assert now["prompt"] == was["prompt"] and now["requested"] == was["requested"]
        assert stored_path(now).read_bytes()[:3] == b"\xff\xd8\xff"  # the first run's file, still there
    assert xcom(second_run, "generate", key="total_cost") is None  # this run was billed nothing
    assert xcom(second_run, "generate", key="reused_cost") == pytest.approx(5 * PRICE)
    manifest = xcom(second_run, "generate", key="manifest")  # the ref beside the list, for consumers
    assert (manifest["images"], manifest["cost"], manifest["reusedCost"]) == (
        5,
        None,
        pytest.approx(5 * PRICE),
    )
    out = capfd.readouterr().out
    assert (
        "Re-used 5 image(s) already landed under the destination (not generated again), saving 0.2000 USD"
        in out
    )
    assert "Nothing to send: all 5 image(s) are re-used" in out


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(
            {7: {"positivePrompt": "a walnut desk lamp, new angle"}, 23: {"seed": 5}}, id="prompt+seed"
        ),
        pytest.param({7: {"width": 320}, 41: {"height": 288}}, id="size"),
    ],
)
def test_when_2_of_50_requests_changed_exactly_2_are_sent_and_billed(
    bfl_conn: RunwareEmulator, destination: str, dag_id: str, changes: dict[int, dict[str, Any]]
) -> None:
    bfl_conn.latency = 0.3  # deferred: the re-used records wait in XCom with the plan
    first_run = reuse_dag(destination, catalogue(50), dag_id=dag_id, deferrable=True).test()
    assert bfl_conn.snapshot().images_billed == 50
    sent_before = image_inference_tasks(bfl_conn)

    second_run = reuse_dag(destination, catalogue(50, changes=changes), dag_id=dag_id, deferrable=True).test()

    assert task_states(second_run) == {"generate": "success"}
    assert bfl_conn.snapshot().images_billed == 52
    sent = bfl_conn.received_tasks("imageInference")[sent_before:]
    assert len(sent) == 2
    assert {task["positivePrompt"] for task in sent} == {
        {**request, **changes.get(n, {})}["positivePrompt"]
        for n, request in enumerate(catalogue(50), start=1)
        if n in changes
    }
    first, second = records_of(first_run), records_of(second_run)
    assert [r["key"] for r in second] == keys(50)
    for n, (was, now) in enumerate(zip(first, second, strict=True), start=1):
        if n in changes:
            assert "reused" not in now and now["cost"] == pytest.approx(PRICE)
            assert f"/{safe_segment(second_run.run_id)}/" in now["storedURI"]
            assert now["imageUUID"] != was["imageUUID"]
        else:
            assert now["reused"] is True and now["storedURI"] == was["storedURI"]
    assert xcom(second_run, "generate", key="total_cost") == pytest.approx(2 * PRICE)
    assert xcom(second_run, "generate", key="reused_cost") == pytest.approx(48 * PRICE)


def test_a_seedless_request_is_reused_only_with_reuse_any(
    bfl_conn: RunwareEmulator, destination: str, dag_id: str
) -> None:
    seedless = catalogue(1, seeded=False)
    first = records_of(reuse_dag(destination, seedless, dag_id=dag_id, reuse="any").test())
    assert bfl_conn.snapshot().images_billed == 1
    seeded_policy = records_of(reuse_dag(destination, seedless, dag_id=dag_id, reuse=True).test())
    assert bfl_conn.snapshot().images_billed == 2  # reuse=True: a seedless request is a new image
    assert "reused" not in seeded_policy[0] and seeded_policy[0]["imageUUID"] != first[0]["imageUUID"]
    any_image = records_of(reuse_dag(destination, seedless, dag_id=dag_id, reuse="any").test())
    assert bfl_conn.snapshot().images_billed == 2  # "any": an earlier image of the request will do
    assert any_image[0]["reused"] is True and any_image[0]["imageUUID"] == first[0]["imageUUID"]


def test_refresh_regenerates_only_the_items_it_names(
    bfl_conn: RunwareEmulator, destination: str, dag_id: str
) -> None:
    dag = reuse_dag(destination, catalogue(3), dag_id=dag_id, refresh="{{ params.refresh }}")
    first = records_of(dag.test())
    assert bfl_conn.snapshot().images_billed == 3

    refreshed = records_of(dag.test(run_conf={"refresh": ["SKU-2"]}))  # templated, from the run's conf
    assert bfl_conn.snapshot().images_billed == 4
    assert [r.get("reused", False) for r in refreshed] == [True, False, True]
    assert refreshed[1]["imageUUID"] != first[1]["imageUUID"] and refreshed[1]["seed"] == first[1]["seed"]

    by_position = records_of(dag.test(run_conf={"refresh": [3]}))
    assert bfl_conn.snapshot().images_billed == 5
    assert [r.get("reused", False) for r in by_position] == [True, True, False]
    assert by_position[1]["imageUUID"] == refreshed[1]["imageUUID"]  # the index now holds the new one

    after = records_of(dag.test(run_conf={"refresh": []}))  # in-process, dag.test() keeps the last conf
    assert bfl_conn.snapshot().images_billed == 5
    assert [r["imageUUID"] for r in after] == [
        first[0]["imageUUID"],
        refreshed[1]["imageUUID"],
        by_position[2]["imageUUID"],
    ]


def test_an_indexed_image_that_was_deleted_is_regenerated_once_and_the_index_replaced(
    bfl_conn: RunwareEmulator, destination: str, dag_id: str
) -> None:
    dag = reuse_dag(destination, catalogue(2), dag_id=dag_id)
    first = records_of(dag.test())
    stored_path(first[0]).unlink()  # someone cleaned up the bucket

    second = records_of(dag.test())
    assert bfl_conn.snapshot().images_billed == 3  # the deleted one, once
    assert "reused" not in second[0] and second[0]["imageUUID"] != first[0]["imageUUID"]
    assert second[1]["reused"] is True
    entry = ReuseIndex(destination).lookup(first[0]["fingerprint"])
    assert entry is not None and entry.landed and entry.task_uuid == second[0]["taskUUID"]

    third = records_of(dag.test())
    assert bfl_conn.snapshot().images_billed == 3
    assert [r["imageUUID"] for r in third] == [second[0]["imageUUID"], first[1]["imageUUID"]]
    assert stored_path(third[0]).is_file()


def test_the_index_rebuilt_from_the_manifests_reuses_the_same_images(
    bfl_conn: RunwareEmulator, destination: str, dag_id: str, tmp_path: Path
) -> None:
    dag = reuse_dag(destination, catalogue(4), dag_id=dag_id)
    first = records_of(dag.test())
    shutil.rmtree(tmp_path / "catalogue" / "_bfl_index")

    counts = rebuild_from_manifests(destination)

    assert counts["restored"] == 4 and counts["manifests"] == 1
    second = records_of(dag.test())
    assert bfl_conn.snapshot().images_billed == 4
    assert [r["imageUUID"] for r in second] == [r["imageUUID"] for r in first]
    assert all(r["reused"] is True for r in second)


def test_the_same_request_twice_in_one_batch_is_generated_apart_and_both_reused_later(
    bfl_conn: RunwareEmulator, destination: str, dag_id: str
) -> None:
    twice = catalogue(1) * 2
    first = records_of(reuse_dag(destination, twice, dag_id=dag_id).test())
    assert bfl_conn.snapshot().images_billed == 2 and len({r["taskUUID"] for r in first}) == 2
    second = records_of(reuse_dag(destination, twice, dag_id=dag_id).test())
    assert bfl_conn.snapshot().images_billed == 2
    assert [r["reused"] for r in second] == [True, True] and [r["key"] for r in second] == ["SKU-1", "SKU-2"]


# -- budgets, bad arguments -------------------------------------------------------------------------


def test_the_budget_counts_only_the_requests_sent(
    bfl_conn: RunwareEmulator, destination: str, dag_id: str, tmp_path: Path
) -> None:
    reuse_dag(destination, catalogue(5), dag_id=dag_id, max_images=5).test()
    grown = catalogue(7)  # 5 unchanged, 2 new
    run = reuse_dag(destination, grown, dag_id=dag_id, max_images=2).test()
    assert task_states(run) == {"generate": "success"}
    assert bfl_conn.snapshot().images_billed == 7
    grown_again = catalogue(9)
    requests_before = bfl_conn.snapshot().requests
    entries = sorted((tmp_path / "catalogue" / "_bfl_index").glob("*/*.json"))
    assert len(entries) == 7
    refused = reuse_dag(destination, grown_again, dag_id=dag_id, max_images=1).test()
    assert task_states(refused) == {"generate": "failed"}
    assert bfl_conn.snapshot().requests == requests_before  # refused before anything was sent
    assert sorted((tmp_path / "catalogue" / "_bfl_index").glob("*/*.json")) == entries  # nor claimed


def test_max_images_refuses_only_what_would_be_sent(destination: str) -> None:
    operator = BflImageInferenceOperator(
        task_id="t", request=catalogue(3), reuse=True, destination=destination, max_images=1
    )  # literal and over the budget, yet fine: with reuse the budget is checked once the index answered
    assert operator.max_images == 1
    with pytest.raises(BflBudgetExceededError, match="max_images=1"):
        BflImageInferenceOperator(task_id="t", request=catalogue(3), destination=destination, max_images=1)


@pytest.mark.parametrize(
    ("arguments", "parameter", "message"),
    [
        ({"reuse": True}, "reuse", "neither destination nor upload_to is set"),
        ({"reuse": "sometimes", "destination": "file:///tmp/x"}, "reuse", "reuse must be False"),
        ({"reuse": 1, "destination": "file:///tmp/x"}, "reuse", "got 1"),
        ({"refresh": ["SKU-1"], "destination": "file:///tmp/x"}, "refresh", "set reuse=True"),
        ({"reuse": True, "destination": "file:///tmp/x", "refresh": ["SKU-9"]}, "refresh", "SKU-9"),
        ({"reuse": True, "destination": "file:///tmp/x", "refresh": [0]}, "refresh", r"positions 1\.\.2"),
        ({"reuse": True, "destination": "file:///tmp/x", "refresh": {"a": 1}}, "refresh", "caller keys"),
        (
            {"reuse": "any", "destination": "file:///tmp/x", "wait_for_completion": False},
            "reuse",
            "wait_for_completion=True",
        ),
    ],
)
def test_invalid_reuse_arguments_fail_the_dag_import(
    arguments: dict[str, Any], parameter: str, message: str
) -> None:
    with pytest.raises(BflInvalidRequestError, match=message) as raised:
        BflImageInferenceOperator(task_id="nightly", request=catalogue(2), keys=keys(2), **arguments)
    assert raised.value.parameter == parameter
    assert "Task 'nightly'" in str(raised.value)


def test_templated_reuse_is_checked_when_rendered(
    bfl_conn: RunwareEmulator, destination: str, dag_id: str
) -> None:
    dag = write_dag(
        DAGS_FOLDER,
        f"""
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1), params={{"reuse": "True"}}) as dag:
    BflImageInferenceOperator(
        task_id="generate", positive_prompt="a lamp", seed=3, width=256, height=256, deferrable=False,
        destination={destination!r}, reuse="{{{{ params.reuse }}}}",
    )
""",
        dag_id=dag_id,
    )
    dag.test()
    assert xcom(dag.test(), "generate")[0]["reused"] is True  # "True" as rendered text is True
    assert bfl_conn.snapshot().images_billed == 1
    requests_before = bfl_conn.snapshot().requests
    assert task_states(dag.test(run_conf={"reuse": "often"})) == {"generate": "failed"}
    assert bfl_conn.snapshot().requests == requests_before


def test_recorded_generations_keep_their_positions_when_reuse_sends_a_subset() -> None:
    recorded = {"regenerate": "", "generations": [["a", 0, 2], ["b", 1, 5]]}
    assert _recorded_generations(recorded, "", 5) == {2: ("a", 0), 5: ("b", 1)}
    assert _recorded_generations(recorded, "", 4) is None  # position 5 is not in this batch
    assert _recorded_generations({"regenerate": "", "generations": [["a", 0], ["b", 0]]}, "", 2) == {
        1: ("a", 0),
        2: ("b", 0),
    }
    assert _recorded_generations({"regenerate": "", "generations": [["a", 0, 1], ["b", 0, 1]]}, "", 2) is None
    assert _recorded_generations({"regenerate": "", "generations": [["a", "x", 1]]}, "", 2) is None


# -- runs racing for the same content ---------------------------------------------------------------


def race_place(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where both racers land: a local folder, or a bucket on the S3 server with atomic conditional writes."""
    if kind == "file":
        return {"destination": f"file://{tmp_path}/shared"}
    bucket = request.getfixturevalue("reuse_bucket").bucket
    return {"destination": f"s3://{bucket}/shared", "destination_conn_id": "aws_default"}


def task_instance(mocker: MockerFixture, run_id: str, pushed: dict[str, Any]) -> Any:
    """The task instance of ``nightly_race.generate`` in run ``run_id``, on its first try; XCom into ``pushed``."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    ti = mocker.create_autospec(
        RuntimeTaskInstance,
        instance=True,
        dag_id="nightly_race",
        run_id=run_id,
        task_id="generate",
        map_index=-1,
        try_number=1,
    )
    ti.xcom_push.side_effect = lambda key, value: pushed.__setitem__(key, value)
    return ti


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["file", "s3"])
def test_two_runs_racing_on_one_destination_pay_once_for_each_request(
    bfl_conn: RunwareEmulator,
    monkeypatch: pytest.MonkeyPatch,
    mocker: MockerFixture,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    kind: str,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(bfl_conn, namespace="nightly"))
    bfl_conn.latency = 1.0  # both runs are still waiting when the other one submits
    place = race_place(kind, tmp_path, request)
    requests = catalogue(10)
    runs = ["scheduled__2026-12-01T00:00:00+00:00", "manual__2026-12-01T00:00:03+00:00"]
    pushed: list[dict[str, Any]] = [{}, {}]
    contexts = [{"ti": task_instance(mocker, run_id, pushed[i])} for i, run_id in enumerate(runs)]
    barrier = threading.Barrier(2)

    def run(i: int) -> list[dict[str, Any]]:
        operator = BflImageInferenceOperator(
            task_id="generate",
            request=requests,
            keys=keys(10),
            reuse=True,
            deferrable=False,
            poll_interval=0.1,
            outlets=[],
            **place,
        )
        barrier.wait(timeout=60)
        return list(operator.execute(contexts[i]))

    with ThreadPoolExecutor(max_workers=2) as pool:
        raced = list(pool.map(run, range(2)))

    snapshot = bfl_conn.snapshot()
    assert snapshot.images_billed == 10 and snapshot.tasks_accepted == 10  # at most one paid for each
    assert len(bfl_conn.received_tasks("imageInference")) == 20  # both runs did submit every request
    assert snapshot.conflicts == 10  # ...the later submission of each re-attached
    assert all(counters.submissions == 2 for counters in snapshot.tasks.values())
    for first, second in zip(*raced, strict=True):
        assert first["key"] == second["key"]
        assert (first["taskUUID"], first["imageUUID"]) == (second["taskUUID"], second["imageUUID"])
    for records in raced:
        assert all(record.get("reused") is None for record in records)  # nothing was landed before
    # What each run reports as billed adds up to what was billed; the rest is reported as re-used.
    billed = [p.get("total_cost") or 0.0 for p in pushed]
    reused = [p.get("reused_cost") or 0.0 for p in pushed]
    assert sum(billed) == pytest.approx(10 * PRICE)
    assert [b + r for b, r in zip(billed, reused, strict=True)] == [pytest.approx(10 * PRICE)] * 2

    tomorrow = BflImageInferenceOperator(
        task_id="generate", request=requests, keys=keys(10), reuse=True, deferrable=False, outlets=[], **place
    )
    records = tomorrow.execute({"ti": task_instance(mocker, "scheduled__2026-12-02T00:00:00+00:00", {})})
    assert bfl_conn.snapshot().images_billed == 10
    assert [r["imageUUID"] for r in records] == [r["imageUUID"] for r in raced[0]]
    assert all(r["reused"] is True for r in records)


def test_without_reuse_the_same_two_runs_pay_twice(
    bfl_conn: RunwareEmulator, monkeypatch: pytest.MonkeyPatch, mocker: MockerFixture, tmp_path: Path
) -> None:
    """The control for the race: the same runs without the index each pay for every request."""
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(bfl_conn, namespace="nightly"))
    for run_id in ("scheduled__2026-12-01T00:00:00+00:00", "manual__2026-12-01T00:00:03+00:00"):
        BflImageInferenceOperator(
            task_id="generate",
            request=catalogue(3),
            deferrable=False,
            outlets=[],
            destination=f"file://{tmp_path}/shared",
        ).execute({"ti": task_instance(mocker, run_id, {})})
    assert bfl_conn.snapshot().images_billed == 6


# -- S3, manifests, the key -------------------------------------------------------------------------


def test_a_second_run_on_s3_reuses_the_first_runs_objects(
    bfl_conn: RunwareEmulator, reuse_bucket: Any, dag_id: str
) -> None:
    destination = f"s3://{reuse_bucket.bucket}/catalogue"
    dag = reuse_dag(destination, catalogue(3), dag_id=dag_id, conn="destination_conn_id='aws_default',")
    first = records_of(dag.test())
    sent = image_inference_tasks(bfl_conn)
    second = records_of(dag.test())
    assert bfl_conn.snapshot().images_billed == 3 and image_inference_tasks(bfl_conn) == sent
    assert [r["storedURI"] for r in second] == [r["storedURI"] for r in first]
    assert all(r["reused"] is True and r["cost"] == 0 for r in second)
    listed = reuse_bucket.list_objects_v2(Bucket=reuse_bucket.bucket, Prefix="catalogue/_bfl_index/")
    assert len(listed["Contents"]) == 3  # one index entry per request, in the bucket itself


@pytest.mark.timeout(300)
def test_a_big_batch_reuses_through_its_manifest_and_the_deferral(
    bfl_conn: RunwareEmulator, destination: str, dag_id: str
) -> None:
    """Above manifest_threshold: XCom holds a ManifestRef; the re-used records wait in the task's manifest."""
    bfl_conn.latency = 0.3
    big = {"manifest_threshold": 10, "deferrable": True}
    first_run = reuse_dag(destination, catalogue(24), dag_id=dag_id, **big).test()
    ref = xcom(first_run, "generate")
    assert is_manifest_ref(ref) and ref["images"] == 24
    changed = {5: {"seed": 1}, 17: {"positivePrompt": "a linen armchair"}}
    second_run = reuse_dag(destination, catalogue(24, changes=changed), dag_id=dag_id, **big).test()
    assert task_states(second_run) == {"generate": "success"}
    assert bfl_conn.snapshot().images_billed == 26
    ref = xcom(second_run, "generate")
    assert is_manifest_ref(ref) and ref["images"] == 24 and ref["generations"] == 24
    assert ref["cost"] == pytest.approx(2 * PRICE)  # re-used records cost this run nothing...
    assert ref["reusedCost"] == pytest.approx(22 * PRICE)  # ...and saved what they first cost
    records = list(iter_records(ref))
    assert [r["key"] for r in records] == keys(24)
    assert [n for n, r in enumerate(records, start=1) if not r.get("reused")] == [5, 17]
    assert xcom(second_run, "generate", key="reused_cost") == pytest.approx(22 * PRICE)
    assert len(json.dumps(xcom(second_run, "generate", key="bfl_plan"))) < 4096


def test_the_api_key_is_in_no_record_xcom_index_entry_manifest_or_log(
    bfl_conn: RunwareEmulator,
    destination: str,
    dag_id: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from tests.unit.test_large_batches import pushed as pushed_xcoms

    dag = reuse_dag(destination, catalogue(3), dag_id=dag_id)
    runs = [dag.test(), reuse_dag(destination, catalogue(3, changes={2: {"seed": 9}}), dag_id=dag_id).test()]
    assert bfl_conn.snapshot().images_billed == 4
    written = [json.dumps(pushed_xcoms(run, "generate"), default=str) for run in runs]
    written += [path.read_text() for path in (tmp_path / "catalogue").rglob("*.json*")]
    assert any('"reused": true' in text or '"reused":true' in text for text in written)
    written.append(capfd.readouterr().out)
    for text in written:
        for form in (API_KEY, API_KEY[:12], json.dumps(API_KEY)[1:-1], API_KEY[::-1]):
            assert form not in text


def test_an_index_that_cannot_be_read_fails_the_task_before_anything_is_sent(
    bfl_conn: RunwareEmulator,
    destination: str,
    dag_id: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "catalogue").mkdir()
    (tmp_path / "catalogue" / "_bfl_index").write_text("not a folder")  # every read of an entry fails
    run = reuse_dag(destination, catalogue(2), dag_id=dag_id).test()
    assert task_states(run) == {"generate": "failed"}
    assert bfl_conn.snapshot().requests == 0  # neither re-used nor paid for again: the task says why
    assert "nothing was submitted: the reuse index at" in capfd.readouterr().out


@pytest.mark.timeout(600)
def test_with_upload_to_a_racing_run_downloads_the_image_uploaded_for_the_other_and_pays_nothing(
    bfl_conn: RunwareEmulator, monkeypatch: pytest.MonkeyPatch, mocker: MockerFixture, reuse_bucket: Any
) -> None:
    """Runware uploads a generation once, for whoever submitted it first; the other run still lands it."""
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(bfl_conn, namespace="nightly"))
    bfl_conn.latency = 1.0
    place = {"upload_to": f"s3://{reuse_bucket.bucket}/uploads", "upload_timeout": 20}
    requests = [{**request, "outputFormat": "PNG"} for request in catalogue(3)]
    barrier = threading.Barrier(2)
    runs = ["scheduled__2026-12-01T00:00:00+00:00", "manual__2026-12-01T00:00:03+00:00"]
    contexts = [{"ti": task_instance(mocker, run_id, {})} for run_id in runs]

    def run(i: int) -> list[dict[str, Any]]:
        operator = BflImageInferenceOperator(
            task_id="generate",
            request=requests,
            reuse=True,
            deferrable=False,
            poll_interval=0.1,
            outlets=[],
            **place,
        )
        barrier.wait(timeout=60)
        return list(operator.execute(contexts[i]))

    with ThreadPoolExecutor(max_workers=2) as pool:
        raced = list(pool.map(run, range(2)))

    snapshot = bfl_conn.snapshot()
    assert snapshot.images_billed == 3 and snapshot.uploads == 3  # one generation, one upload each
    assert snapshot.conflicts == 3 and snapshot.image_downloads == 3  # the later submitter downloads it
    for first, second in zip(*raced, strict=True):
        assert first["imageUUID"] == second["imageUUID"] and first["sha256"] == second["sha256"]
    stored = {record["storedURI"] for records in raced for record in records}
    assert len(stored) == 6  # each run holds its own copy under its own run folder
    tomorrow = BflImageInferenceOperator(
        task_id="generate", request=requests, reuse=True, deferrable=False, outlets=[], **place
    ).execute({"ti": task_instance(mocker, "scheduled__2026-12-02T00:00:00+00:00", {})})
    assert bfl_conn.snapshot().images_billed == 3 and snapshot.requests == bfl_conn.snapshot().requests
    assert all(record["reused"] is True for record in tomorrow)


def test_an_explicit_task_uuid_is_looked_up_but_never_claimed(
    bfl_conn: RunwareEmulator, destination: str, dag_id: str, tmp_path: Path
) -> None:
    """The caller's own taskUUID is theirs: the index may answer it, but never fixes it for others."""
    explicit = {**catalogue(1)[0], "taskUUID": "0b6a3e52-5b7e-4c1f-9a57-3c0f2d9e8a11"}
    failing = {
        **explicit,
        "taskUUID": "5d1e7f0a-2c44-4b8e-8f3a-6b9d0e1c2a77",
        "positivePrompt": "fail-marker " + explicit["positivePrompt"],
    }
    failed = reuse_dag(destination, [failing], dag_id=dag_id).test()
    assert task_states(failed) == {"generate": "failed"}
    assert list((tmp_path / "catalogue").glob("_bfl_index/*/*.json")) == []  # looked up, not claimed
    first = records_of(reuse_dag(destination, [explicit], dag_id=dag_id).test())
    assert first[0]["taskUUID"] == explicit["taskUUID"]
    assert len(list((tmp_path / "catalogue").glob("_bfl_index/*/*.json"))) == 1  # landed: indexed
    sent = image_inference_tasks(bfl_conn)
    second = records_of(reuse_dag(destination, [explicit], dag_id=dag_id).test())
    assert image_inference_tasks(bfl_conn) == sent and second[0]["reused"] is True
    assert bfl_conn.snapshot().images_billed == 1
