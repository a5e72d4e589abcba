"""Landing images in real storage: file:// on disk and s3:// on a loopback S3 server (moto)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_bfl.exceptions import BflImageExpiredError, BflImageIntegrityError
from airflow_provider_bfl.storage.landing import ImageLander
from airflow_provider_bfl.testing.emulator import RunwareEmulator

REQUESTED = {"width": 256, "height": 256, "outputFormat": "PNG"}


def generate(emulator: RunwareEmulator, count: int = 2, **fields: Any) -> list[dict[str, Any]]:
    """Real results from the emulator (sync delivery), as the operator sees them."""
    tasks = [
        {
            "taskType": "imageInference",
            "taskUUID": str(uuid.uuid4()),
            "model": "bfl:2@1",
            "positivePrompt": f"a lighthouse number {index}",
            "width": 256,
            "height": 256,
            "outputFormat": "PNG",
            "seed": index,
            **fields,
        }
        for index in range(count)
    ]
    response = httpx.post(
        emulator.base_url, json=tasks, headers={"Authorization": f"Bearer {emulator.api_key}"}
    )
    response.raise_for_status()
    return response.json()["data"]


def lander(destination: str, **kwargs: Any) -> ImageLander:
    return ImageLander(destination, dag_id="catalogue", run_id="manual__2026-11-25T10:00:00+00:00", **kwargs)


def requested_for(entries: list[dict[str, Any]], **overrides: Any) -> dict[str, dict[str, Any]]:
    return {entry["taskUUID"]: {**REQUESTED, **overrides} for entry in entries}


def test_file_landing_streams_verifies_and_records(emulator: RunwareEmulator, tmp_path: Path) -> None:
    entries = generate(emulator)
    with lander(f"file://{tmp_path}/images") as landing:
        records, failures = landing.land_urls(entries, requested_for(entries))
    assert failures == []
    assert [r["imageUUID"] for r in records] == [e["imageUUID"] for e in entries]
    for record in records:
        path = Path(record["storedURI"].removeprefix("file://"))
        assert (
            path
            == tmp_path
            / "images"
            / "catalogue"
            / "manual__2026-11-25T10_00_00_00_00"
            / record["taskUUID"]
            / f"{record['imageUUID']}.png"
        )
        data = path.read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["bytes"] == len(data)
        assert (record["format"], record["width"], record["height"]) == ("PNG", 256, 256)
        assert record["contentType"] == "image/png" and record["requested"] == REQUESTED
    assert not list(tmp_path.rglob("*.partial")), "a temporary file was left behind"


def test_a_rerun_neither_redownloads_nor_rewrites(emulator: RunwareEmulator, tmp_path: Path) -> None:
    entries = generate(emulator)
    with lander(f"file://{tmp_path}") as landing:
        first, _ = landing.land_urls(entries, requested_for(entries))
    downloads = emulator.snapshot().image_downloads
    stamps = [os.stat(r["storedURI"].removeprefix("file://")).st_mtime_ns for r in first]
    time.sleep(0.01)
    with lander(f"file://{tmp_path}") as landing:
        second, _ = landing.land_urls(entries, requested_for(entries))
    assert second == first
    assert emulator.snapshot().image_downloads == downloads
    assert [os.stat(r["storedURI"].removeprefix("file://")).st_mtime_ns for r in second] == stamps


def test_expired_url_is_a_clear_error_and_nothing_is_written(
    emulator: RunwareEmulator, tmp_path: Path
) -> None:
    emulator.default_ttl = 0.1
    [entry] = generate(emulator, count=1)
    time.sleep(0.3)
    with (
        lander(f"file://{tmp_path}") as landing,
        pytest.raises(BflImageExpiredError, match="expired") as caught,
    ):
        landing.land_url(entry, REQUESTED)
    assert entry["taskUUID"] in str(caught.value) and "HTTP 410" in str(caught.value)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("requested", "max_bytes", "fragment"),
    [
        ({**REQUESTED, "outputFormat": "JPG"}, None, "expected a JPG image, got PNG bytes"),
        (REQUESTED, 500, "larger than the 500-byte limit"),
    ],
)
def test_integrity_failures_leave_nothing_at_the_final_key(
    emulator: RunwareEmulator, tmp_path: Path, requested: dict[str, Any], max_bytes: int | None, fragment: str
) -> None:
    [entry] = generate(emulator, count=1)
    kwargs = {"max_bytes": max_bytes} if max_bytes else {}
    with (
        lander(f"file://{tmp_path}", **kwargs) as landing,
        pytest.raises(BflImageIntegrityError, match=fragment),
    ):
        landing.land_url(entry, requested)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"<html>gateway error</html>" * 20, "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 400, "damaged"),
    ],
)
def test_bytes_that_are_not_the_image_are_refused(tmp_path: Path, data: bytes, fragment: str) -> None:
    entry = {"taskUUID": str(uuid.uuid4()), "imageUUID": str(uuid.uuid4())}
    with lander(f"file://{tmp_path}") as landing, pytest.raises(BflImageIntegrityError, match=fragment):
        landing.land_bytes(entry, data, REQUESTED)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_byte_outputs_land_straight_from_base64(emulator: RunwareEmulator, tmp_path: Path) -> None:
    [entry] = generate(emulator, count=1, outputType="base64Data")
    data = base64.b64decode(entry.pop("imageBase64Data"))
    with lander(f"file://{tmp_path}") as landing:
        record = landing.land_bytes(entry, data, REQUESTED)
    assert Path(record["storedURI"].removeprefix("file://")).read_bytes() == data


def test_s3_landing_on_a_real_s3_server(emulator: RunwareEmulator, s3_bucket: Any) -> None:
    entries = generate(emulator, count=3)
    with lander(f"s3://{s3_bucket.bucket}/generated", conn_id="aws_default") as landing:
        records, failures = landing.land_urls(entries, requested_for(entries))
    assert failures == []
    for record in records:
        assert record["storedURI"].startswith(f"s3://{s3_bucket.bucket}/generated/catalogue/")
        key = record["storedURI"].removeprefix(f"s3://{s3_bucket.bucket}/")
        stored = s3_bucket.get_object(Bucket=s3_bucket.bucket, Key=key)["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == record["sha256"]
    downloads = emulator.snapshot().image_downloads
    with lander(f"s3://{s3_bucket.bucket}/generated", conn_id="aws_default") as landing:
        again, _ = landing.land_urls(entries, requested_for(entries))
    assert again == records and emulator.snapshot().image_downloads == downloads


def test_failed_s3_landing_leaves_no_object(emulator: RunwareEmulator, s3_bucket: Any) -> None:
    [entry] = generate(emulator, count=1)
    with (
        lander(f"s3://{s3_bucket.bucket}/generated", conn_id="aws_default") as landing,
        pytest.raises(BflImageIntegrityError),
    ):
        landing.land_url(entry, {**REQUESTED, "outputFormat": "WEBP"})
    assert s3_bucket.list_objects_v2(Bucket=s3_bucket.bucket).get("KeyCount", 0) == 0


def test_pillow_reads_back_what_was_landed(emulator: RunwareEmulator, tmp_path: Path) -> None:
    from PIL import Image

    [entry] = generate(emulator, count=1, width=512, height=384)
    with lander(f"file://{tmp_path}") as landing:
        record = landing.land_url(entry, {**REQUESTED, "width": 512, "height": 384})
    with Image.open(io.BytesIO(Path(record["storedURI"].removeprefix("file://")).read_bytes())) as image:
        assert image.size == (512, 384) == (record["width"], record["height"])


def test_an_s3_upload_failing_midway_stores_nothing_and_the_rerun_lands_it(
    emulator: RunwareEmulator, s3_bucket: Any, mocker: Any
) -> None:
    """Closing a half-written S3 file would upload the half under the image's key: it is discarded instead."""
    import shutil

    real_copy = shutil.copyfileobj

    def half_then_reset(source: Any, target: Any, length: int = 0) -> None:
        data = source.read()
        target.write(data[: len(data) // 2])
        raise ConnectionResetError("connection reset by peer")

    [entry] = generate(emulator, count=1)
    copy = mocker.patch("airflow_provider_bfl.storage.landing.shutil.copyfileobj", autospec=True)
    copy.side_effect = half_then_reset
    with lander(f"s3://{s3_bucket.bucket}/generated", conn_id="aws_default") as landing:
        records, failures = landing.land_urls([entry], requested_for([entry]))
    assert records == [] and copy.call_count == 1
    [(_, error)] = failures
    assert "storing the image failed: ConnectionResetError" in str(error)
    assert s3_bucket.list_objects_v2(Bucket=s3_bucket.bucket).get("KeyCount", 0) == 0

    copy.side_effect = real_copy
    with lander(f"s3://{s3_bucket.bucket}/generated", conn_id="aws_default") as landing:
        records, failures = landing.land_urls([entry], requested_for([entry]))
    assert failures == []
    key = records[0]["storedURI"].removeprefix(f"s3://{s3_bucket.bucket}/")
    stored = s3_bucket.get_object(Bucket=s3_bucket.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == records[0]["sha256"]


@pytest.mark.parametrize("scheme", ["file", "s3"])
def test_a_cut_short_object_already_at_the_target_is_replaced_not_trusted(
    emulator: RunwareEmulator, tmp_path: Path, s3_bucket: Any, scheme: str
) -> None:
    """A half object left by an older version or another writer fails verification: the image is landed again."""
    [entry] = generate(emulator, count=1)
    destination = f"file://{tmp_path}/images" if scheme == "file" else f"s3://{s3_bucket.bucket}/generated"
    kwargs = {} if scheme == "file" else {"conn_id": "aws_default"}
    with lander(destination, **kwargs) as landing:
        target = landing.target(entry, "PNG")
        full = httpx.get(entry["imageURL"]).content
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(full[: len(full) // 2])
        records, failures = landing.land_urls([entry], requested_for([entry]))
    assert failures == []
    assert target.read_bytes() == full
    assert records[0]["sha256"] == hashlib.sha256(full).hexdigest()
