"""Reference images: every way to name one, the checks before anything is paid, and how each is sent."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bfl.exceptions import BflInvalidRequestError
from airflow_provider_bfl.storage import references
from airflow_provider_bfl.testing.emulator import RunwareEmulator

PRODUCTS = Path(__file__).parents[2] / "example_dags" / "data" / "products"
MUG = PRODUCTS / "MUG-0107.png"


def _image(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 40, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_locators_from_paths_uris_urls_records_and_nested_lists() -> None:
    record = {"storedURI": "s3://bucket/run/a.jpg", "imageUUID": "x"}
    given: Any = [str(MUG), MUG, "s3://bucket/p.png", "https://cdn.example.com/q.webp", [record, [record]]]
    assert references.locators(given) == [
        MUG.as_uri(),
        MUG.as_uri(),
        "s3://bucket/p.png",
        "https://cdn.example.com/q.webp",
        "s3://bucket/run/a.jpg",
        "s3://bucket/run/a.jpg",
    ]
    assert references.locators(None) == []


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"imageURL": "https://x/y.jpg"}, "needs a storedURI"),
        ("data:image/png;base64,AAAA", "not image data"),
        ("  ", "empty string"),
        (42, "got int"),
    ],
)
def test_a_locator_that_is_not_one_says_what_to_give(given: Any, says: str) -> None:
    with pytest.raises(BflInvalidRequestError, match=says) as caught:
        references.locators(given)
    assert caught.value.parameter == "reference_images"


@pytest.mark.parametrize(("fmt", "api"), [("PNG", "PNG"), ("JPEG", "JPG"), ("WEBP", "WEBP")])
def test_png_jpg_and_webp_pass_with_their_facts(fmt: str, api: str) -> None:
    data = _image(fmt)
    reference = references.check("file:///x", data)
    assert (reference.format, reference.width, reference.height, reference.bytes) == (api, 64, 48, len(data))


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "is empty"),
        (b"hello, not an image", "not an image Pillow can read"),
        (_image("GIF"), "is GIF; references must be PNG, JPG or WEBP"),
        (_image("PNG", (8, 300)), "at least 16 px a side"),
    ],
)
def test_what_the_api_would_refuse_is_refused_first(data: bytes, says: str) -> None:
    with pytest.raises(BflInvalidRequestError, match=says):
        references.check("file:///product.png", data)


def test_every_bad_reference_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("not an image")
    with pytest.raises(BflInvalidRequestError) as caught:
        references.checked([(tmp_path / "a.txt").as_uri(), (tmp_path / "missing.png").as_uri(), MUG.as_uri()])
    assert len(caught.value.violations) == 2
    assert "no such file" in str(caught.value) and "a.txt" in str(caught.value)


def test_a_file_larger_than_the_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as out:
        out.truncate(references.MAX_BYTES + 10)
    with pytest.raises(BflInvalidRequestError, match="larger than"):
        references.load(big.as_uri())


def test_a_file_goes_out_as_a_data_uri_and_a_url_as_itself() -> None:
    assert (
        references.wire_value(MUG.as_uri())
        == "data:image/png;base64," + base64.b64encode(MUG.read_bytes()).decode()
    )
    assert references.wire_value("https://cdn.example.com/q.webp") == "https://cdn.example.com/q.webp"


def test_an_http_reference_is_downloaded_and_checked(emulator: RunwareEmulator) -> None:
    import httpx

    task = {
        "taskType": "imageInference",
        "taskUUID": "d75835ee-cbcd-436e-87d8-1ea7af3d3983",
        "model": "bfl:2@1",
    }
    body = [{**task, "positivePrompt": "a lamp", "width": 256, "height": 320}]
    reply = httpx.post(emulator.base_url, json=body, headers={"Authorization": f"Bearer {emulator.api_key}"})
    url = reply.json()["data"][0]["imageURL"]
    (reference,) = references.checked([url])
    assert (reference.format, reference.width, reference.height) == ("JPG", 256, 320)
    missing = url.rsplit("/", 1)[0] + "/00000000-0000-4000-8000-000000000000.jpg?X-Amz-Signature=secret"
    with pytest.raises(BflInvalidRequestError, match="answered HTTP 404") as caught:
        references.checked([missing])
    assert "secret" not in str(caught.value)  # a presigned URL's query is never echoed


def test_an_s3_reference_is_read_through_its_connection(s3_bucket: Any) -> None:
    s3_bucket.put_object(Bucket=s3_bucket.bucket, Key="products/mug.png", Body=MUG.read_bytes())
    uri = f"s3://{s3_bucket.bucket}/products/mug.png"
    (reference,) = references.checked([uri], conn_id="aws_default")
    assert (reference.locator, reference.format, reference.bytes) == (uri, "PNG", MUG.stat().st_size)
    assert references.wire_value(uri, conn_id="aws_default").endswith(
        base64.b64encode(MUG.read_bytes()).decode()
    )


def test_image_data_inside_request_is_refused_by_the_operator() -> None:
    """The request (and the plan made from it) goes to XCom: a data URI there would put bytes in XCom."""
    from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator

    data_uri = "data:image/png;base64," + base64.b64encode(MUG.read_bytes()).decode()
    with pytest.raises(BflInvalidRequestError, match="give the file, URI or URL as reference_images="):
        BflImageInferenceOperator(
            task_id="t",
            request={
                "model": "bfl:3@1",
                "positivePrompt": "a mug",
                "width": 1024,
                "height": 1024,
                "inputs": {"referenceImages": [data_uri]},
            },
        )
    ok = BflImageInferenceOperator(
        task_id="u",
        request={
            "model": "bfl:3@1",
            "positivePrompt": "a mug",
            "width": 1024,
            "height": 1024,
            "inputs": {
                "referenceImages": ["https://cdn.example.com/mug.png", "d75835ee-cbcd-436e-87d8-1ea7af3d3983"]
            },
        },
    )
    assert len(ok.build_requests()[0].to_wire()["inputs"]["referenceImages"]) == 2
