"""Manifests in real storage (file:// on disk, s3:// on a loopback S3 server): written whole, read strictly."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_bfl.exceptions import BflError, BflManifestError
from airflow_provider_bfl.storage import manifest
from airflow_provider_bfl.storage.landing import safe_segment
from airflow_provider_bfl.storage.manifest import (
    MAX_LINE_BYTES,
    is_manifest_ref,
    iter_records,
    manifest_uri,
    read_manifest,
    write_manifest,
)

RUN_ID = "scheduled__2026-11-25T02:00:00+00:00"


def record(index: int, **extra: Any) -> dict[str, Any]:
    """A landed image record as the operator returns it (about 700 bytes of JSON)."""
    task_uuid = str(uuid.UUID(int=index // 2))  # two images per generation
    image_uuid = str(uuid.UUID(int=10**9 + index))
    return {
        "taskType": "imageInference",
        "taskUUID": task_uuid,
        "imageUUID": image_uuid,
        "storedURI": f"s3://catalogue/out/nightly/{RUN_ID}/{task_uuid}/{image_uuid}.png",
        "seed": 1000 + index,
        "cost": 0.04,
        "prompt": f"Studio photo of SKU-{index:05d}, a stoneware mug in matte glaze, white background",
        "key": f"SKU-{index:05d}",
        "sha256": f"{index:064x}",
        "bytes": 1_500_000 + index,
        "contentType": "image/png",
        "format": "PNG",
        "width": 1024,
        "height": 1024,
        "requested": {"width": 1024, "height": 1024, "outputFormat": "PNG"},
        **extra,
    }


def records(count: int, **extra: Any) -> Iterator[dict[str, Any]]:
    return (record(index, **extra) for index in range(count))


def local_uri(tmp_path: Path, task_id: str = "generate") -> str:
    return manifest_uri(f"file://{tmp_path}/out", "nightly", RUN_ID, task_id, -1)


def visible_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# -- layout --------------------------------------------------------------------------------------


def test_manifest_uri_sits_beside_the_run_s_images_with_safe_segments() -> None:
    assert (
        manifest_uri("s3://bucket/out/", "nightly", RUN_ID, "generate", -1)
        == f"s3://bucket/out/nightly/{safe_segment(RUN_ID)}/_manifests/generate.jsonl"
    )
    assert manifest_uri("/data/out", "d", "r", "t", 3) == "file:///data/out/d/r/_manifests/t.3.jsonl"
    assert manifest_uri("file:///data/out", "d", "r", "t", 0) == "file:///data/out/d/r/_manifests/t.0.jsonl"
    hostile = manifest_uri("file:///data", "../../etc", "run/../x", "a/b", -1)
    assert hostile == "file:///data/etc/run_.._x/_manifests/a_b.jsonl"
    # No image folder (a safe taskUUID segment) can ever be the manifest folder.
    assert safe_segment(manifest.MANIFEST_FOLDER) != manifest.MANIFEST_FOLDER


def test_a_task_s_other_manifests_go_in_a_folder_named_after_it() -> None:
    own = manifest_uri("s3://bucket/out", "d", "r", "qa", -1)
    assert manifest_uri("s3://bucket/out", "d", "r", "qa", -1, role="passed") == (
        "s3://bucket/out/d/r/_manifests/qa/passed.jsonl"
    )
    # A consumer writes beside its input, in the input's run folder, whatever the input's name.
    assert manifest.manifest_beside(own, "review", 2, role="approved") == (
        "s3://bucket/out/d/r/_manifests/review.2/approved.jsonl"
    )
    assert manifest.manifest_beside("s3://bucket/out/d/r/_manifests/qa/passed.jsonl", "review", -1) == (
        "s3://bucket/out/d/r/_manifests/review.jsonl"
    )
    assert manifest.manifest_beside("file:///elsewhere/mine.jsonl", "qa", -1) == (
        "file:///elsewhere/_manifests/qa.jsonl"
    )


def test_first_manifest_ref_tells_a_manifest_input_from_records() -> None:
    ref = {"bflManifest": "file:///m/_manifests/a.jsonl", "conn_id": None}
    assert manifest.first_manifest_ref(ref) == ref
    assert manifest.first_manifest_ref([record(0), [ref]]) == ref
    assert manifest.first_manifest_ref([record(0), [record(1)]]) is None
    assert manifest.first_manifest_ref(None) is None
    consumed = iter([ref])
    assert manifest.first_manifest_ref(consumed) is None and next(consumed) == ref  # never used up


# -- round trips -----------------------------------------------------------------------------------


def test_round_trip_on_disk_with_counts_and_costs(tmp_path: Path) -> None:
    written = [
        record(0, prompt="Tasse en grès, émail mat ☕"),
        record(1),
        record(2, cost=0.07, costReused=True),
        record(3, cost=float("nan")),  # a lying cost is kept in the record, not summed
    ]
    uri = local_uri(tmp_path)
    ref = write_manifest(written, uri, conn_id=None)
    assert ref == {
        "bflManifest": uri,
        "conn_id": None,
        "images": 4,
        "generations": 2,
        "cost": 0.08,
        "reusedCost": 0.07,
    }
    assert is_manifest_ref(ref) and not is_manifest_ref(written[0])
    raw = Path(uri.removeprefix("file://")).read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 4
    raw.decode("utf-8")  # UTF-8 (in fact ASCII: non-ASCII text is escaped)
    read = list(read_manifest(uri, conn_id=None))
    assert [json.dumps(r) for r in read] == [json.dumps(r) for r in written]
    assert read[0]["prompt"] == "Tasse en grès, émail mat ☕"
    assert visible_files(Path(uri.removeprefix("file://")).parent) == ["generate.jsonl"]


def test_round_trip_on_s3_through_the_connection(s3_bucket: Any) -> None:
    bucket = s3_bucket.bucket
    uri = manifest_uri(f"s3://{bucket}/out", "nightly", RUN_ID, "generate", 2)
    ref = write_manifest(records(5), uri, conn_id="aws_default")
    assert ref["bflManifest"] == uri and ref["conn_id"] == "aws_default" and ref["images"] == 5
    key = uri.removeprefix(f"s3://{bucket}/")
    assert key == f"out/nightly/{safe_segment(RUN_ID)}/_manifests/generate.2.jsonl"
    body = s3_bucket.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert [json.loads(line) for line in body.splitlines()] == list(records(5))
    assert list(read_manifest(uri, conn_id="aws_default")) == list(records(5))
    assert list(iter_records(ref)) == list(records(5))  # the ref's own connection is used


def test_qa_counts_appear_only_when_records_carry_verdicts(tmp_path: Path) -> None:
    verdicts = [
        record(0, qa={"passed": True, "action": "kept"}),
        record(1, qa={"passed": False, "action": "quarantined"}),
        record(2, qa={"passed": False, "action": "skipped"}),
    ]
    ref = write_manifest(verdicts, local_uri(tmp_path, "qa"), conn_id=None)
    assert (ref["passed"], ref["quarantined"]) == (1, 1)
    assert "passed" not in write_manifest(records(2), local_uri(tmp_path), conn_id=None)


# -- size and memory -----------------------------------------------------------------------------


def test_ten_thousand_records_stream_in_bounded_memory_and_the_ref_stays_small(tmp_path: Path) -> None:
    uri = local_uri(tmp_path)
    tracemalloc.start()
    try:
        ref = write_manifest(records(10_000), uri, conn_id=None)
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        count = sum(1 for _ in read_manifest(uri, conn_id=None))
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = Path(uri.removeprefix("file://")).stat().st_size
    assert count == 10_000 and ref["images"] == 10_000 and ref["generations"] == 5_000
    assert ref["cost"] == pytest.approx(400.0)
    assert size > 6_000_000
    assert write_peak < size / 5, (write_peak, size)
    assert read_peak < size / 20, (read_peak, size)
    assert len(json.dumps(ref)) < 400


@pytest.fixture(scope="module")
def separate_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """
    An S3 server (moto) in its own process, so tracemalloc counts only this process's side of the
    transfer (the shared in-process server keeps every object it receives in this process's memory).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(10)


def test_s3_transfers_hold_a_bounded_amount_whatever_the_batch(
    separate_s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_APART",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {
                    "endpoint_url": separate_s3,
                    "region_name": "us-east-1",
                    "config_kwargs": {"s3": {"addressing_style": "path"}},
                },
            }
        ),
    )
    client = boto3.client(
        "s3",
        endpoint_url=separate_s3,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket="bfl-memory")
    uri = manifest_uri("s3://bfl-memory/out", "nightly", RUN_ID, "generate", -1)
    list(
        read_manifest(
            write_manifest([record(0)], uri, conn_id="aws_apart")["bflManifest"], conn_id="aws_apart"
        )
    )

    def peaks(count: int) -> tuple[int, int, int]:
        tracemalloc.start()
        try:
            write_manifest(records(count), uri, conn_id="aws_apart")
            _, write_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            assert sum(1 for _ in read_manifest(uri, conn_id="aws_apart")) == count
            _, read_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        size = client.head_object(Bucket="bfl-memory", Key=uri.removeprefix("s3://bfl-memory/"))[
            "ContentLength"
        ]
        return write_peak, read_peak, size

    small_write, small_read, small_size = peaks(10_000)
    big_write, big_read, big_size = peaks(20_000)
    assert big_size > 1.9 * small_size
    # An upload holds one 5 MiB part (S3's smallest) and the client's copies of it, however many
    # parts follow; a read holds one 1 MiB block. Neither grows with the manifest.
    assert big_write < 1.2 * small_write < 5 * manifest.UPLOAD_PART_BYTES, (small_write, big_write)
    assert big_read < 1.2 * small_read < 6 * manifest.READ_BLOCK_BYTES, (small_read, big_read)
    assert big_read < big_size / 3


# -- atomicity -------------------------------------------------------------------------------------


def test_a_reader_during_a_write_sees_the_old_manifest_or_none(tmp_path: Path) -> None:
    uri = local_uri(tmp_path)
    seen: list[list[dict[str, Any]] | None] = []

    def watched(count: int) -> Iterator[dict[str, Any]]:
        for index in range(count):
            if index == count // 2:  # half written: what does a reader find?
                try:
                    seen.append(list(read_manifest(uri, conn_id=None)))
                except BflManifestError as exc:
                    assert "does not exist" in str(exc)
                    seen.append(None)
            yield record(index)

    write_manifest(watched(100), uri, conn_id=None)
    write_manifest(watched(300), uri, conn_id=None)
    assert seen[0] is None
    assert seen[1] == list(records(100))
    assert list(read_manifest(uri, conn_id=None)) == list(records(300))


def test_a_failing_disk_leaves_the_old_manifest_and_no_partial_file(tmp_path: Path, mocker: Any) -> None:
    uri = local_uri(tmp_path)
    write_manifest(records(3), uri, conn_id=None)
    folder = Path(uri.removeprefix("file://")).parent
    replace = mocker.patch.object(
        manifest.os, "replace", autospec=True, side_effect=OSError(28, "No space left on device")
    )
    with pytest.raises(BflManifestError, match=r"cannot be written: OSError.*No space left"):
        write_manifest(records(50), uri, conn_id=None)
    assert replace.call_count == 1
    assert visible_files(folder) == ["generate.jsonl"]
    assert list(read_manifest(uri, conn_id=None)) == list(records(3))


def test_records_that_fail_midway_leave_nothing_visible(tmp_path: Path) -> None:
    uri = local_uri(tmp_path)

    def broken() -> Iterator[dict[str, Any]]:
        yield record(0)
        raise RuntimeError("upstream broke")

    with pytest.raises(RuntimeError, match="upstream broke"):
        write_manifest(broken(), uri, conn_id=None)
    assert visible_files(Path(uri.removeprefix("file://")).parent) == []


def test_an_upload_failing_halfway_leaves_nothing_on_s3(s3_bucket: Any, mocker: Any) -> None:
    bucket = s3_bucket.bucket
    uri = manifest_uri(f"s3://{bucket}/out", "nightly", RUN_ID, "generate", -1)
    key = uri.removeprefix(f"s3://{bucket}/")

    def half_then_fail(source: Any, target: Any, length: int = 0) -> None:
        # 6 MiB: past s3fs's 5 MiB block, so a multipart upload has really started.
        for _ in range(6 * 1024 * 1024 // length):
            target.write(source.read(length))
        raise ConnectionResetError(104, "Connection reset by peer")

    copy = mocker.patch.object(manifest.shutil, "copyfileobj", autospec=True, side_effect=half_then_fail)
    with pytest.raises(BflManifestError, match="cannot be written: ConnectionResetError"):
        write_manifest(records(10_000), uri, conn_id="aws_default")
    assert copy.call_count == 1
    assert s3_bucket.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert not s3_bucket.list_multipart_uploads(Bucket=bucket).get("Uploads")

    mocker.stopall()
    write_manifest(records(3), uri, conn_id="aws_default")  # an old manifest to keep
    mocker.patch.object(manifest.shutil, "copyfileobj", autospec=True, side_effect=half_then_fail)
    with pytest.raises(BflManifestError):
        write_manifest(records(10_000), uri, conn_id="aws_default")
    assert [o["Key"] for o in s3_bucket.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    assert list(read_manifest(uri, conn_id="aws_default")) == list(records(3))


# -- what cannot be written ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("not a record", r"record #2 is a str, not an image record"),
        ({"taskUUID": "t", "when": object()}, r"record #2 cannot be written as JSON \(TypeError"),
        ({"taskUUID": "t", "prompt": "x" * MAX_LINE_BYTES}, r"record #2 is \d+ bytes of JSON, more than"),
    ],
)
def test_a_record_that_cannot_be_a_line_is_refused_and_nothing_written(
    tmp_path: Path, bad: Any, message: str
) -> None:
    uri = local_uri(tmp_path)
    with pytest.raises(BflManifestError, match=message):
        write_manifest([record(0), bad, record(2)], uri, conn_id=None)
    assert visible_files(Path(uri.removeprefix("file://")).parent) == []


def test_a_uri_that_is_not_a_jsonl_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BflManifestError, match=r"does not name a \.jsonl manifest"):
        write_manifest(records(1), f"file://{tmp_path}/passwd", conn_id=None)
    with pytest.raises(BflManifestError, match=r"does not name a \.jsonl manifest"):
        list(read_manifest("file:///etc/passwd", conn_id=None))


# -- hostile manifests -----------------------------------------------------------------------------


def hostile(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(content)
    return f"file://{path}"


GOOD = json.dumps(record(0)).encode() + b"\n"
SECRET = b"SECRET-CONTENT-NEVER-QUOTED"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (GOOD + GOOD[:-40], r"line 2 ends without a newline: the manifest is truncated"),
        (GOOD + b"x" * 200 + SECRET + b"\n", r"line 2 is not UTF-8 JSON \(starts b'xxxx"),
        (GOOD + b'{"a": 1}' + b" " * 40 + SECRET + b"\n", r"line 2 is not UTF-8 JSON"),
        (GOOD + b"[1, 2, 3]\n", r"line 2 is a JSON list, not an image record object"),
        (GOOD + b"\n", r"line 2 is not UTF-8 JSON \(starts b'\\n'\)"),
        (GOOD + b'{"prompt": "\xff\xfe"}\n', r"line 2 is not UTF-8 JSON"),
        (b"[" * 10_000 + b"]" * 10_000 + b"\n", r"line 1 is nested too deeply"),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"\n", r"line 1 is nested too deeply"),
        (GOOD + b'{"p": "' + b"x" * (MAX_LINE_BYTES + 10) + SECRET + b'"}\n', r"line 2 is longer than the"),
    ],
    ids=[
        "truncated",
        "garbage",
        "trailing-garbage",
        "not-an-object",
        "empty",
        "not-utf8",
        "nested-lists",
        "nested-objects",
        "huge-line",
    ],
)
def test_a_hostile_manifest_is_a_bfl_error_naming_the_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    uri = hostile(tmp_path, content)
    read: list[dict[str, Any]] = []
    with pytest.raises(BflManifestError, match=message) as caught:
        read.extend(read_manifest(uri, conn_id=None))
    text = str(caught.value)
    assert repr(uri) in text
    assert SECRET.decode() not in text and len(text) < 500
    assert read == ([] if message.startswith("line 1") else [record(0)])  # good lines before it were read


def test_a_manifest_over_the_size_cap_is_refused_before_reading(tmp_path: Path) -> None:
    uri = hostile(tmp_path, GOOD * 100)
    with pytest.raises(BflManifestError, match=r"is \d+ bytes, more than the 1000-byte limit"):
        next(read_manifest(uri, conn_id=None, max_bytes=1000))


def test_a_missing_manifest_says_so(tmp_path: Path) -> None:
    with pytest.raises(BflManifestError, match="does not exist"):
        list(iter_records({"bflManifest": f"file://{tmp_path}/gone.jsonl", "conn_id": None}))


def test_a_truncated_manifest_on_s3_is_refused(s3_bucket: Any) -> None:
    bucket = s3_bucket.bucket
    s3_bucket.put_object(Bucket=bucket, Key="m/_manifests/t.jsonl", Body=GOOD + GOOD[:10])
    with pytest.raises(BflManifestError, match="line 2 ends without a newline"):
        list(read_manifest(f"s3://{bucket}/m/_manifests/t.jsonl", conn_id="aws_default"))


# -- iter_records: every shape a consumer may be given ------------------------------------------------


def test_iter_records_reads_every_shape_in_order(tmp_path: Path) -> None:
    first = write_manifest(records(3), local_uri(tmp_path, "a"), conn_id=None)
    second = write_manifest((record(i) for i in range(3, 5)), local_uri(tmp_path, "b"), conn_id=None)
    five = list(records(5))
    shapes: dict[str, Any] = {
        "list": five,
        "list of lists (mapped outputs)": [five[:2], five[2:]],
        "ref": None,
        "list of refs (mapped refs)": [first, second],
        "mixture": [first, [five[3]], five[4]],
        "mixture of lists": [[first], [five[3], five[4]]],
        "JSON of refs": json.dumps([first, second]),
        "JSON of records": json.dumps(five),
        "Python literal": repr([first, second]),
    }
    for name, value in shapes.items():
        expected = five[:3] if value is None else five
        got = list(iter_records(first if value is None else value))
        assert got == expected, name
    assert list(iter_records([])) == []
    assert list(iter_records(json.dumps(first))) == five[:3]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, r"images: got NoneType None; expected a list of image records, a ManifestRef"),
        (42, r"images: got int 42; expected"),
        ({"storedURI": "s3://b/x.png"}, r"images: got a dict with keys \['storedURI'\]; expected"),
        ("{not json", r"images: got '\{not json', which is neither JSON nor a Python literal"),
        ([record(0), 7], r"images\[2\]: got int 7; expected an image record \(dict\) or a ManifestRef"),
        ([[record(0), [record(1)]]], r"images\[1\]\[2\]: got list"),
    ],
)
def test_iter_records_refuses_other_shapes_saying_what_is_allowed(value: Any, message: str) -> None:
    with pytest.raises(BflError, match=message):
        list(iter_records(value))


def test_a_ref_with_a_lying_conn_id_is_refused(tmp_path: Path) -> None:
    ref = write_manifest(records(1), local_uri(tmp_path), conn_id=None)
    with pytest.raises(BflManifestError, match="conn_id is a int"):
        list(iter_records({**ref, "conn_id": 5}))


def test_the_caller_s_connection_wins_over_the_ref_s(s3_bucket: Any, mocker: Any) -> None:
    uri = manifest_uri(f"s3://{s3_bucket.bucket}/out", "d", "r", "t", -1)
    ref = write_manifest(records(2), uri, conn_id="aws_default")
    path = mocker.spy(manifest, "_path")
    assert list(iter_records({**ref, "conn_id": "aws_elsewhere"}, conn_id="aws_default")) == list(records(2))
    assert path.call_args.args == (uri, "aws_default")
