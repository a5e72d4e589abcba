"""QA on records from the real landing step, on local disk and on a loopback S3 server (moto)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from airflow_provider_bfl.qa import QAConfig, evaluate, passed_records, qa_images
from airflow_provider_bfl.qa.contact_sheet import make_contact_sheet
from airflow_provider_bfl.storage.landing import ImageLander
from tests.unit.qa_images import Generated, ImageSource, image_source, path_of

RUN_ID = "scheduled__2026-11-25T02:00:00+00:00"
SAFE_RUN_ID = "scheduled__2026-11-25T02_00_00_00_00"


@pytest.fixture(scope="module")
def source() -> Iterator[ImageSource]:
    yield from image_source()


def land_all(destination: str, images: list[Generated], conn_id: str | None = None) -> list[dict[str, Any]]:
    """Land through the provider's own ImageLander, exactly as the generation task does."""
    with ImageLander(destination, dag_id="catalogue", run_id=RUN_ID, conn_id=conn_id) as lander:
        return [
            lander.land_bytes(
                dict(image.result),
                image.data,
                {key: image.request[key] for key in ("width", "height", "outputFormat")},
            )
            for image in images
        ]


def batch(source: ImageSource) -> list[Generated]:
    return [
        source.generate("a lighthouse", seed=1),
        source.generate("blank backdrop", seed=2),
        source.generate("a lighthouse", seed=1, fresh=True),
        source.generate("a quay", seed=3, output_format="JPG"),
    ]


def test_landed_records_on_disk(source: ImageSource, tmp_path: Path) -> None:
    records = land_all(f"file://{tmp_path}/images", batch(source))
    verdicts = qa_images(records)
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "quarantined", "skipped", "kept"]
    assert passed_records(verdicts) == [records[0], records[3]]
    # The landing layout is <root>/<dag_id>/<run_id>/<taskUUID>/<file>: quarantine sits beside the
    # run's taskUUID folders.
    blank = verdicts[1]
    name = path_of(blank["storedURI"]).name
    expected = tmp_path / "images" / "catalogue" / SAFE_RUN_ID / "quarantine" / blank["taskUUID"] / name
    assert path_of(blank["quarantinedURI"]) == expected and expected.exists()


def test_quarantine_and_rerun_on_s3(source: ImageSource, s3_bucket: Any) -> None:
    bucket = s3_bucket.bucket
    records = land_all(f"s3://{bucket}/generated", batch(source), conn_id="aws_default")
    assert all(record["storedURI"].startswith(f"s3://{bucket}/generated/catalogue/") for record in records)
    verdicts = qa_images(records, conn_id="aws_default")
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "quarantined", "skipped", "kept"]

    blank = verdicts[1]
    old_key = blank["storedURI"].removeprefix(f"s3://{bucket}/")
    new_key = blank["quarantinedURI"].removeprefix(f"s3://{bucket}/")
    assert new_key == (
        f"generated/catalogue/{SAFE_RUN_ID}/quarantine/{blank['taskUUID']}/{old_key.rsplit('/', 1)[1]}"
    )
    keys = {item["Key"] for item in s3_bucket.list_objects_v2(Bucket=bucket)["Contents"]}
    assert new_key in keys and old_key not in keys
    moved = s3_bucket.get_object(Bucket=bucket, Key=new_key)["Body"].read()
    assert len(moved) == blank["bytes"]

    # A retry on the same upstream records finds the object in quarantine and changes nothing.
    again = evaluate(records, QAConfig(conn_id="aws_default"))
    assert again[1]["quarantinedURI"] == blank["quarantinedURI"]
    assert again[1]["qa"]["checks"]["not_blank"]["ok"] is False
    assert qa_images(records, conn_id="aws_default") == verdicts
    assert {item["Key"] for item in s3_bucket.list_objects_v2(Bucket=bucket)["Contents"]} == keys

    sheet = make_contact_sheet(verdicts, f"s3://{bucket}/qa/contact-sheet.png", conn_id="aws_default")
    assert sheet == f"s3://{bucket}/qa/contact-sheet.png"
    body = s3_bucket.get_object(Bucket=bucket, Key="qa/contact-sheet.png")["Body"].read()
    with Image.open(io.BytesIO(body)) as image:
        assert image.format == "PNG" and image.size == (4 * 256 + 5 * 8, 32 + 290 + 16)
