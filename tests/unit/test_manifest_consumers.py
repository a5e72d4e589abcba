"""
QA, review, publishing and the gallery given ManifestRefs: they read the manifest, answer with
manifests (never a 10,000-record XCom), and a list input behaves exactly as before.
"""

from __future__ import annotations

import json
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bfl.storage import manifest
from airflow_provider_bfl.storage.manifest import is_manifest_ref, read_manifest, write_manifest
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from airflow_provider_bfl.ui import page, records
from tests.conftest import DAGS_FOLDER
from tests.dag_runs import task_states, write_dag, xcom
from tests.unit.qa_images import ImageSource, image_source, land, path_of
from tests.unit.test_example_dags import _answer_review

pytestmark = pytest.mark.usefixtures("airflow_db")

#: Any XCom value of a run that reads its records from manifests stays below this.
SMALL_XCOM = 1024
#: How a reviewer's answer reaches ``execute_complete`` (the fields the HITL base class reads).
ANSWERED = {
    "responded_at": datetime(2026, 12, 1, tzinfo=timezone.utc),
    "responded_by_user": {"id": "reviewer", "name": "reviewer"},
}


@pytest.fixture(scope="module")
def source() -> Iterator[ImageSource]:
    yield from image_source()


def read(ref: Any) -> list[dict[str, Any]]:
    assert is_manifest_ref(ref), ref
    return list(read_manifest(ref["bflManifest"], conn_id=ref["conn_id"]))


def run_xcoms(run: Any) -> list[tuple[str, int, str, Any]]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(XComModel.dag_id == run.dag_id, XComModel.run_id == run.run_id)
        )
        return [(r.task_id, r.map_index, r.key, XComModel.deserialize_value(r)) for r in rows]


def assert_small_xcoms(run: Any) -> None:
    sizes = {
        (task_id, map_index, key): len(json.dumps(value)) for task_id, map_index, key, value in run_xcoms(run)
    }
    assert sizes and max(sizes.values()) < SMALL_XCOM, sizes


def run_with_landed(tmp_path: Path, groups: list[list[dict[str, Any]]], downstream: str) -> Any:
    """``land`` (mapped over ``groups``) returns a ManifestRef per group, then ``downstream`` runs."""
    dag = write_dag(
        DAGS_FOLDER,
        f"""
        from airflow.sdk import task
        from airflow_provider_bfl.qa import BflImageQAOperator
        from airflow_provider_bfl.storage.manifest import manifest_uri, write_manifest

        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            @task
            def land(group, ti=None):
                uri = manifest_uri({f"file://{tmp_path}/out"!r}, ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
                return write_manifest(group, uri, conn_id=None)

            landed = land.expand(group={groups!r})
            {downstream}
        """,
    )
    return dag.test()


# -- QA ------------------------------------------------------------------------------------------


def test_qa_reads_mapped_manifests_and_answers_with_manifests_beside_them(
    source: ImageSource, tmp_path: Path
) -> None:
    good = land(tmp_path, source.generate("a harbour", seed=31))
    blank = land(tmp_path, source.generate("blank", seed=32))
    quay = land(tmp_path, source.generate("a quay", seed=33))
    run = run_with_landed(
        tmp_path, [[good, blank], [quay]], "BflImageQAOperator(task_id='qa', images=landed)"
    )
    assert task_states(run)["qa"] == "success"
    verdicts_ref, passed_ref = xcom(run, "qa"), xcom(run, "qa", key="passed")
    input_uri = xcom(run, "land", map_index=0)["bflManifest"]
    folder = input_uri.rpartition("/")[0]
    assert verdicts_ref["bflManifest"] == f"{folder}/qa.jsonl"
    assert passed_ref["bflManifest"] == f"{folder}/qa/passed.jsonl"
    verdicts = read(verdicts_ref)
    assert [v["imageUUID"] for v in verdicts] == [r["imageUUID"] for r in (good, blank, quay)]
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "quarantined", "kept"]
    assert (verdicts_ref["images"], verdicts_ref["passed"], verdicts_ref["quarantined"]) == (3, 2, 1)
    assert read(passed_ref) == [good, quay]
    assert path_of(verdicts[1]["quarantinedURI"]).exists() and not path_of(blank["storedURI"]).exists()
    assert_small_xcoms(run)


def test_a_failing_qa_of_a_manifest_keeps_its_verdicts_in_a_manifest(
    source: ImageSource, tmp_path: Path
) -> None:
    good = land(tmp_path, source.generate("a harbour", seed=34))
    wide = land(tmp_path, source.generate("a quay", seed=35), requested_width=512)
    run = run_with_landed(
        tmp_path, [[good, wide]], "BflImageQAOperator(task_id='qa', images=landed, near_duplicate='off')"
    )
    assert task_states(run)["qa"] == "failed"
    assert xcom(run, "qa") is None and xcom(run, "qa", key="passed") is None
    verdicts = read(xcom(run, "qa", key="verdicts"))
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "failed"]


def test_qa_of_a_list_still_answers_with_lists_and_writes_no_manifest(
    source: ImageSource, tmp_path: Path
) -> None:
    good = land(tmp_path, source.generate("a harbour", seed=36))
    blank = land(tmp_path, source.generate("blank", seed=37))
    dag = write_dag(
        DAGS_FOLDER,
        f"""
        from airflow.sdk import task
        from airflow_provider_bfl.qa import BflImageQAOperator

        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            @task
            def land():
                return {[good, blank]!r}

            BflImageQAOperator(task_id="qa", images=land())
        """,
    )
    run = dag.test()
    verdicts = xcom(run, "qa")
    assert isinstance(verdicts, list) and [v["qa"]["action"] for v in verdicts] == ["kept", "quarantined"]
    assert xcom(run, "qa", key="passed") == [good]
    assert not list(tmp_path.rglob("*.jsonl"))


# -- the whole pipeline on the provider's own manifests ------------------------------------------------


@pytest.mark.timeout(600)
def test_generate_qa_review_publish_and_gallery_all_through_manifests(
    bfl_conn: RunwareEmulator, tmp_path: Path, mocker: Any
) -> None:
    """
    The generating operator writes a manifest (manifest_threshold=0); QA, the human review and
    publishing each read the one before and write their own; the gallery reads exactly the
    manifests the run's XCom names. Every XCom value stays small.
    """
    prompts = ["a lighthouse", "a blank wall", "a harbour at dawn", "a red door"]
    dag = write_dag(
        DAGS_FOLDER,
        f"""
        from airflow.sdk import task
        from airflow_provider_bfl.qa import BflImageQAOperator
        from airflow_provider_bfl.review.operator import BflImageReviewOperator

        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            generate = BflImageInferenceOperator(
                task_id="generate", prompts={prompts!r}, width=256, height=256, seed=5,
                output_type="base64Data", output_format="PNG", deferrable=False,
                destination="file://{tmp_path}/images", manifest_threshold=0,
            )
            qa = BflImageQAOperator(task_id="qa", images=generate.output, near_duplicate="off")
            review = BflImageReviewOperator(task_id="human_review", images=qa.output)

            @task
            def publish(decision):
                from airflow_provider_bfl.storage.publishing import publish_images

                return publish_images(decision["approved"], "file://{tmp_path}/published")

            publish(review.output)
        """,
    )
    stop = threading.Event()
    seen: dict[str, Any] = {}
    # Leave out the second passed image (#3, "a harbour at dawn").
    reviewer = threading.Thread(target=_answer_review, args=(["Publish"], [1], seen, stop), daemon=True)
    reviewer.start()
    try:
        run = dag.test()
    finally:
        stop.set()
        reviewer.join(5)
    assert set(task_states(run).values()) == {"success"}, task_states(run)
    generated = read(xcom(run, "generate"))
    verdicts = read(xcom(run, "qa"))
    assert [v["imageUUID"] for v in verdicts] == [r["imageUUID"] for r in generated]
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "quarantined", "kept", "kept"]
    labels = seen["params"]["leave_out"]["schema"]["examples"]
    assert [label.split(" ")[0] for label in labels] == ["#1", "#3", "#4"]
    assert seen["body"].count("](/bfl-gallery/thumb/") == 4
    decision = xcom(run, "human_review")
    assert decision["approved"]["bflManifest"].endswith("/_manifests/human_review/approved.jsonl")
    assert [r["imageUUID"] for r in read(decision["approved"])] == [generated[i]["imageUUID"] for i in (0, 3)]
    assert decision["left_out"]["bflManifest"].endswith("/_manifests/human_review/left_out.jsonl")
    assert [r["imageUUID"] for r in read(decision["left_out"])] == [generated[2]["imageUUID"]]
    published_ref = xcom(run, "publish")
    assert published_ref["bflManifest"] == f"file://{tmp_path}/published/_manifests/published.jsonl"
    published = read(published_ref)
    assert [Path(r["publishedURI"].removeprefix("file://")).read_bytes() for r in published] == [
        Path(generated[i]["storedURI"].removeprefix("file://")).read_bytes() for i in (0, 3)
    ]
    assert_small_xcoms(run)

    # The gallery: every image, QA merged in, read from exactly the manifests the XCom names.
    named = {value["bflManifest"] for *_, value in run_xcoms(run) if is_manifest_ref(value)}
    decoy = generated[0]["storedURI"].rpartition("/")[0].rpartition("/")[0] + "/_manifests/decoy.jsonl"
    write_manifest(
        [{**generated[0], "imageUUID": "decoy", "storedURI": "file:///etc/hostname"}], decoy, conn_id=None
    )
    opened = mocker.spy(manifest, "read_manifest")
    sets = records.read_xcom_records(run.dag_id, run.run_id)
    assert {call.args[0] for call in opened.call_args_list} <= named
    assert decoy not in {call.args[0] for call in opened.call_args_list}
    images = records.gallery_images(sets)
    assert [i.image_id for i in images] == [r["imageUUID"] for r in generated]
    assert [i.verdict for i in images] == ["kept", "quarantined", "kept", "kept"]
    assert images[1].locations()[0] == verdicts[1]["quarantinedURI"]
    # the publish task's return value is a ManifestRef too: the published copies are merged in
    assert [i.record.get("publishedURI") for i in images] == [
        published[0]["publishedURI"],
        None,
        None,
        published[1]["publishedURI"],
    ]
    assert [i.image_id for i in records.gallery_images(sets, task_id="qa", map_index=-1)] == [
        r["imageUUID"] for r in generated
    ]


# -- review ----------------------------------------------------------------------------------------


def _verdict(n: int, action: str = "kept") -> dict[str, Any]:
    return {
        "taskUUID": str(uuid.UUID(int=n)),
        "imageUUID": f"img-{n}",
        "storedURI": f"file:///x/{n}.png",
        "cost": 0.04,
        "prompt": f"Product {n}",
        "key": f"SKU-{n}",
        "qa": {"passed": action == "kept", "action": action, "reasons": [] if action == "kept" else ["nsfw"]},
    }


def test_review_items_read_manifests_with_the_numbers_a_list_would_get(tmp_path: Path) -> None:
    from airflow_provider_bfl.review.body import review_items
    from airflow_provider_bfl.review.operator import BflImageReviewOperator

    verdicts = [_verdict(n, "quarantined" if n == 2 else "kept") for n in range(1, 6)]
    first = write_manifest(verdicts[:3], f"file://{tmp_path}/_manifests/a.jsonl", conn_id=None)
    second = write_manifest(verdicts[3:], f"file://{tmp_path}/_manifests/b.jsonl", conn_id=None)
    as_list = [(i.number, i.label, i.passed) for i in review_items(verdicts)]
    assert [(i.number, i.label, i.passed) for i in review_items(first)] == as_list[:3]
    for given in ([first, second], [[first], [second]], json.dumps([first, second])):
        review = BflImageReviewOperator(task_id="r", images=given)
        assert [(i.number, i.label, i.passed) for i in review._items()] == as_list
    with pytest.raises(Exception, match="images must be a list of image records or a ManifestRef"):
        BflImageReviewOperator(task_id="r", images={"storedURI": "x"})._items()


def test_review_of_a_list_still_returns_lists(tmp_path: Path) -> None:
    from airflow_provider_bfl.review.operator import LEAVE_OUT, PUBLISH, BflImageReviewOperator

    review = BflImageReviewOperator(task_id="r", images=[_verdict(1), _verdict(2)])
    event = {"chosen_options": [PUBLISH], "params_input": {LEAVE_OUT: ["#2"]}, **ANSWERED}
    answer = review.execute_complete({}, event)
    assert answer["approved"] == [_verdict(1)] and answer["left_out"] == [_verdict(2)]


def test_a_large_review_offers_a_bounded_pick_list_and_takes_any_image_by_number(mocker: Any) -> None:
    from airflow.providers.standard.operators.hitl import HITLOperator
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from airflow_provider_bfl.exceptions import BflError
    from airflow_provider_bfl.review.operator import (
        LEAVE_OUT,
        LEAVE_OUT_CHOICES,
        PUBLISH,
        BflImageReviewOperator,
    )

    verdicts = [_verdict(n) for n in range(1, 1501)]
    review = BflImageReviewOperator(task_id="r", images=verdicts)
    mocker.patch.object(HITLOperator, "execute", autospec=True, return_value=None)  # the HITL request itself
    ti = mocker.create_autospec(RuntimeTaskInstance, instance=True, dag_id="d", run_id="r1")
    review.execute({"ti": ti})
    examples = review.params.get_param(LEAVE_OUT).schema["examples"]
    assert len(examples) == LEAVE_OUT_CHOICES == 1000
    event = {"chosen_options": [PUBLISH], "params_input": {LEAVE_OUT: ["#1400", examples[0]]}, **ANSWERED}
    answer = review.execute_complete({}, event)
    assert [r["imageUUID"] for r in answer["left_out"]] == ["img-1", "img-1400"]
    assert len(answer["approved"]) == 1498
    with pytest.raises(BflError, match=r"not in this batch: \['#1501'\]"):
        review.execute_complete({}, {**event, "params_input": {LEAVE_OUT: ["#1501"]}})


# -- publishing ------------------------------------------------------------------------------------


def test_publishing_a_manifest_writes_one_and_a_rerun_copies_nothing(
    source: ImageSource, tmp_path: Path
) -> None:
    from airflow_provider_bfl.storage.publishing import publish_images

    landed = [land(tmp_path / "in", source.generate(f"a vase {n}", seed=40 + n)) for n in range(3)]
    ref = write_manifest(landed, f"file://{tmp_path}/in/d/r/_manifests/review/approved.jsonl", conn_id=None)
    first = publish_images(ref, f"file://{tmp_path}/pub")
    assert isinstance(first, dict) and is_manifest_ref(first)
    assert first["bflManifest"] == f"file://{tmp_path}/pub/_manifests/published.jsonl"
    published = read(first)
    assert [r["imageUUID"] for r in published] == [r["imageUUID"] for r in landed]
    paths = [Path(r["publishedURI"].removeprefix("file://")) for r in published]
    assert all(p.stat().st_size == r["bytes"] for p, r in zip(paths, landed, strict=True))
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert publish_images([ref], f"file://{tmp_path}/pub") == first
    assert [p.stat().st_mtime_ns for p in paths] == stamps


def test_publishing_a_list_still_returns_a_list_and_writes_no_manifest(
    source: ImageSource, tmp_path: Path
) -> None:
    from airflow_provider_bfl.storage.publishing import publish_images

    landed = [land(tmp_path / "in", source.generate("a bowl", seed=50))]
    published = publish_images(landed, f"file://{tmp_path}/pub")
    assert isinstance(published, list) and published[0]["publishedURI"].startswith(f"file://{tmp_path}/pub/")
    assert not list(tmp_path.rglob("*.jsonl"))


def test_publishing_a_manifest_on_s3_uses_the_manifest_s_connection(
    source: ImageSource, s3_bucket: Any
) -> None:
    from airflow_provider_bfl.storage.publishing import publish_images

    bucket = s3_bucket.bucket
    generated = source.generate("a jug", seed=51)
    key = f"out/d/r/{generated.result['taskUUID']}/{generated.result['imageUUID']}.png"
    s3_bucket.put_object(Bucket=bucket, Key=key, Body=generated.data)
    record = {**generated.result, "storedURI": f"s3://{bucket}/{key}", "bytes": len(generated.data)}
    ref = write_manifest([record], f"s3://{bucket}/out/d/r/_manifests/generate.jsonl", conn_id="aws_default")
    result = publish_images(ref, f"s3://{bucket}/published")  # no conn_id: the manifest's is used
    assert isinstance(result, dict) and result["conn_id"] == "aws_default"
    [published] = read(result)
    copied = s3_bucket.get_object(
        Bucket=bucket, Key=published["publishedURI"].removeprefix(f"s3://{bucket}/")
    )
    assert copied["Body"].read() == generated.data


# -- gallery ---------------------------------------------------------------------------------------


def test_record_sets_read_refs_only_through_the_reader_they_are_given(tmp_path: Path) -> None:
    verdicts = [_verdict(n) for n in range(1, 4)]
    ref = write_manifest(verdicts, f"file://{tmp_path}/_manifests/qa.jsonl", conn_id=None)
    assert records.record_sets("qa", -1, ref) == []  # no reader: nothing is read
    [single] = records.record_sets("qa", -1, ref, records.read_manifest_records)
    assert [r["imageUUID"] for r in single.records] == ["img-1", "img-2", "img-3"]
    assert single.records[0] == {k: v for k, v in verdicts[0].items() if k != "qa"} | {
        "qa": {"passed": True, "action": "kept", "reasons": []}
    }
    mapped = records.record_sets("qa", 2, [ref, [verdicts[0]]], records.read_manifest_records)
    assert [len(s.records) for s in mapped] == [3, 1]
    broken = {"bflManifest": f"file://{tmp_path}/_manifests/gone.jsonl", "conn_id": None}
    assert (
        records.record_sets("qa", -1, [broken, ref], records.read_manifest_records)[0].records
        == single.records
    )


def test_the_gallery_of_a_list_run_is_unchanged() -> None:
    value = [_verdict(1), {"no": "uri"}, _verdict(2)]
    [single] = records.record_sets("qa", -1, value, records.read_manifest_records)
    assert single.records == [_verdict(1), _verdict(2)]  # records from XCom are kept whole, as before


def _peak_of_whole_records(folder: Path) -> int:
    """The memory of every manifest's records held as parsed: what the gallery must stay below."""
    tracemalloc.start()
    try:
        held = [json.loads(line) for path in sorted(folder.rglob("*.jsonl")) for line in path.open()]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(held) >= 20_000
    return peak


@pytest.mark.timeout(600)
def test_gallery_pages_a_ten_thousand_image_run_recorded_only_as_manifest_refs(tmp_path: Path) -> None:
    count = 10_000
    dag = write_dag(
        DAGS_FOLDER,
        f"""
        from airflow.sdk import task
        from airflow_provider_bfl.storage.manifest import manifest_uri, write_manifest

        def record(n, **extra):
            return {{
                "taskUUID": f"task-{{n // 4}}", "imageUUID": f"img-{{n}}", "key": f"SKU-{{n:05d}}",
                "storedURI": f"file://{tmp_path}/img/{{n}}.png", "prompt": "Studio photo of a mug " * 4,
                "width": 1024, "height": 1024, "seed": n, "cost": 0.04, "sha256": "0" * 64,
                "requested": {{"width": 1024, "height": 1024, "outputFormat": "PNG"}}, **extra,
            }}

        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            @task
            def generate(ti=None):
                uri = manifest_uri("file://{tmp_path}/out", ti.dag_id, ti.run_id, ti.task_id, -1)
                return write_manifest((record(n) for n in range({count})), uri, conn_id=None)

            @task
            def qa(ti=None):
                uri = manifest_uri("file://{tmp_path}/out", ti.dag_id, ti.run_id, ti.task_id, -1)
                checks = {{"decodes": {{"ok": True, "detail": "PNG 1024x1024 " * 20}}}}
                verdict = lambda n: {{"passed": n % 10 != 3, "action": "quarantined" if n % 10 == 3 else "kept",
                                      "reasons": ["not_blank: flat"] if n % 10 == 3 else [], "checks": checks}}
                return write_manifest((record(n, qa=verdict(n)) for n in range({count})), uri, conn_id=None)

            generate() >> qa()
        """,
    )
    run = dag.test()
    assert set(task_states(run).values()) == {"success"}
    assert_small_xcoms(run)
    records.read_xcom_records(run.dag_id, run.run_id)  # imports and query compilation out of the figure
    tracemalloc.start()
    try:
        sets = records.read_xcom_records(run.dag_id, run.run_id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held = sum(len(s.records) for s in sets)
    whole = _peak_of_whole_records(tmp_path)
    print(f"gallery read of {count} images ({held} records): peak {peak} bytes, whole records {whole} bytes")
    assert held == 2 * count
    # The gallery keeps what the page shows, not the whole records: a baseline measured here, on
    # the same manifests (a byte limit would depend on the paths' lengths and the Python build).
    assert peak < 0.6 * whole, (peak, whole)
    images = records.gallery_images(sets)
    assert len(images) == count
    totals = records.totals(images)
    assert (totals.images, dict(totals.verdicts)) == (count, {"kept": 9000, "quarantined": 1000})
    last = page.render("t", images, totals, run.dag_id, run.run_id, page=100)
    assert last.count("<figure ") == page.PAGE_SIZE
    assert "#10000</b> · <b>SKU-09999</b>" in last and "#9901</b>" in last
    assert '<a href="?page=1">page 1</a>' in last and "<span>page 100</span>" in last
    first = page.render("t", images, totals, run.dag_id, run.run_id, page=1)
    assert "not_blank: flat" in first and "#4</b> · <b>SKU-00003</b>" in first


def test_a_run_s_images_are_merged_once_for_all_its_thumbnail_requests(mocker: Any) -> None:
    sets = [records.RecordSet("qa", -1, [_verdict(n) for n in range(1, 501)])]
    cache = records.RunRecordsCache(lambda dag_id, run_id: sets, lambda dag_id, run_id: (1,))
    merge = mocker.spy(records, "gallery_images")
    found = [cache.get("d", "r").find(f"img-{n}") for n in range(1, 101)]  # a page of thumbnails
    assert [entry.image_id for entry in found if entry is not None] == [f"img-{n}" for n in range(1, 101)]
    assert cache.get("d", "r").find("img-9999") is None
    assert merge.call_count == 1


def test_the_records_cache_is_bounded_by_records_as_well_as_runs() -> None:
    sizes = {"big1": 30_000, "big2": 30_000, "small": 10}

    def read_run(dag_id: str, run_id: str) -> list[records.RecordSet]:
        return [records.RecordSet("t", -1, [{"storedURI": "x"}] * sizes[run_id])]

    reads: list[str] = []

    def counted(dag_id: str, run_id: str) -> list[records.RecordSet]:
        reads.append(run_id)
        return read_run(dag_id, run_id)

    cache = records.RunRecordsCache(counted, lambda dag_id, run_id: (1, run_id), runs=16, max_records=50_000)
    cache.get("d", "big1")
    cache.get("d", "small")
    cache.get("d", "big2")  # 60,010 records: big1 (the oldest) goes
    cache.get("d", "small")
    cache.get("d", "big2")
    assert reads == ["big1", "small", "big2"]
    cache.get("d", "big1")
    assert reads == ["big1", "small", "big2", "big1"]
