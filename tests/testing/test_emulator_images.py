"""Images: real files of the requested size and format, deterministic per seed, served with expiry."""

from __future__ import annotations

import base64
import io
import time
import uuid
from typing import Any

import pytest
from PIL import Image, ImageStat

FORMATS = {"JPG": ("JPEG", "image/jpeg"), "PNG": ("PNG", "image/png"), "WEBP": ("WEBP", "image/webp")}


def dhash(data: bytes) -> int:
    """64-bit difference hash: near-duplicate images differ in only a few bits."""
    gray = Image.open(io.BytesIO(data)).convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = gray.tobytes()
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | int(pixels[row * 9 + col] > pixels[row * 9 + col + 1])
    return bits


def fetch(api: Any, item: dict[str, Any]) -> bytes:
    response = api.http.get(item["imageURL"])
    assert response.status_code == 200, response.text
    return response.content


def generate(api: Any, make_task: Any, **overrides: Any) -> list[dict[str, Any]]:
    response = api.post([make_task(**overrides)])
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.mark.parametrize("output_format", ["JPG", "PNG", "WEBP"])
def test_url_images_are_real_files_of_the_requested_size(
    api: Any, make_task: Any, output_format: str
) -> None:
    (item,) = generate(api, make_task, width=320, height=256, outputFormat=output_format, seed=3)
    pil_format, mime = FORMATS[output_format]
    assert item["imageURL"].endswith("." + output_format.lower())
    response = api.http.get(item["imageURL"])
    assert response.status_code == 200
    assert response.headers["content-type"] == mime
    assert int(response.headers["content-length"]) == len(response.content)
    image = Image.open(io.BytesIO(response.content))
    assert image.format == pil_format
    assert image.size == (320, 256)
    stddev = ImageStat.Stat(image.convert("L")).stddev[0]
    assert stddev > 20, "a placeholder must not be blank or near-uniform"


def test_base64_and_data_uri_outputs(api: Any, make_task: Any) -> None:
    (raw,) = generate(api, make_task, outputType="base64Data", outputFormat="PNG", width=288, height=352)
    assert "imageURL" not in raw
    image = Image.open(io.BytesIO(base64.b64decode(raw["imageBase64Data"])))
    assert (image.format, image.size) == ("PNG", (288, 352))
    (uri,) = generate(api, make_task, outputType="dataURI", outputFormat="WEBP")
    prefix, _, payload = uri["imageDataURI"].partition(",")
    assert prefix == "data:image/webp;base64"
    assert Image.open(io.BytesIO(base64.b64decode(payload))).format == "WEBP"


def test_images_are_deterministic_per_seed_and_quality(api: Any, make_task: Any) -> None:
    first = generate(api, make_task, seed=1234, outputType="base64Data")
    second = generate(api, make_task, seed=1234, outputType="base64Data")
    assert first[0]["imageBase64Data"] == second[0]["imageBase64Data"]
    assert first[0]["imageUUID"] != second[0]["imageUUID"]
    lower = generate(api, make_task, seed=1234, outputType="base64Data", outputQuality=30)
    assert len(lower[0]["imageBase64Data"]) < len(first[0]["imageBase64Data"])


def test_distinct_seeds_are_perceptually_distinct(api: Any, make_task: Any) -> None:
    items = generate(api, make_task, seed=500, numberResults=6, width=512, height=512, outputFormat="PNG")
    hashes = [dhash(fetch(api, item)) for item in items]
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            distance = bin(hashes[i] ^ hashes[j]).count("1")
            assert distance > 10, f"seeds {500 + i} and {500 + j} look alike (distance {distance})"


def test_blank_prompt_marker_renders_a_uniform_image(api: Any, make_task: Any) -> None:
    (item,) = generate(api, make_task, positivePrompt="a blank wall", outputFormat="PNG")
    image = Image.open(io.BytesIO(fetch(api, item))).convert("L")
    assert ImageStat.Stat(image).stddev[0] == 0
    api.emu.blank_prompt_marker = "empty-frame"
    (normal,) = generate(api, make_task, positivePrompt="a blank wall", outputFormat="PNG")
    assert ImageStat.Stat(Image.open(io.BytesIO(fetch(api, normal))).convert("L")).stddev[0] > 20


def test_blank_next_images_applies_to_exactly_k_images(api: Any, make_task: Any) -> None:
    api.emu.blank_next_images(2)
    items = generate(api, make_task, numberResults=3, outputFormat="PNG")
    items += generate(api, make_task, outputFormat="PNG")
    stddevs = [ImageStat.Stat(Image.open(io.BytesIO(fetch(api, i))).convert("L")).stddev[0] for i in items]
    assert stddevs[:2] == [0, 0]
    assert all(value > 20 for value in stddevs[2:])


def test_default_ttl_expiry_gives_410(api: Any, make_task: Any) -> None:
    api.emu.default_ttl = 60
    task = make_task()
    (item,) = api.post([task]).json()["data"]
    assert api.http.get(item["imageURL"]).status_code == 200
    api.emu.store.get(task["taskUUID"]).accepted_at -= 59
    assert api.http.get(item["imageURL"]).status_code == 200
    api.emu.store.get(task["taskUUID"]).accepted_at -= 2  # age the image instead of sleeping a minute
    assert api.http.get(item["imageURL"]).status_code == 410


def test_request_ttl_governs_expiry(api: Any, make_task: Any) -> None:
    api.emu.default_ttl = 0.1
    task = make_task(ttl=60)
    (item,) = api.post([task]).json()["data"]
    time.sleep(0.15)
    assert api.http.get(item["imageURL"]).status_code == 200, "ttl=60 outlives the default"
    api.emu.store.get(task["taskUUID"]).accepted_at -= 61
    assert api.http.get(item["imageURL"]).status_code == 410


def test_image_downloads_counter_and_head(api: Any, make_task: Any) -> None:
    (item,) = generate(api, make_task)
    head = api.http.head(item["imageURL"])
    assert head.status_code == 200 and int(head.headers["content-length"]) > 0 and head.content == b""
    fetch(api, item)
    fetch(api, item)
    assert api.emu.counters.image_downloads == 2


def test_unknown_and_mismatched_image_paths_are_404(api: Any, make_task: Any) -> None:
    (item,) = generate(api, make_task, outputFormat="JPG")
    assert api.http.get(item["imageURL"].replace(".jpg", ".png")).status_code == 404
    assert api.http.get(f"{api.emu.origin}/images/{uuid.uuid4()}.jpg").status_code == 404
    assert api.http.get(f"{api.emu.origin}/images/nope").status_code == 404


def test_async_image_url_is_404_until_ready(api: Any, make_task: Any) -> None:
    api.emu.latency = 0.3
    task = make_task(deliveryMethod="async")
    api.post([task])
    record = api.emu.store.get(task["taskUUID"])
    url = f"{api.emu.origin}/images/{record.image_uuids[0]}.jpg"
    assert api.http.get(url).status_code == 404
    time.sleep(0.35)
    assert api.http.get(url).status_code == 200


def test_rendered_bytes_are_cached(api: Any, make_task: Any) -> None:
    before = api.emu.renderer.renders
    generate(api, make_task, seed=77, outputType="base64Data", width=640, height=640)
    generate(api, make_task, seed=77, outputType="base64Data", width=640, height=640)
    assert api.emu.renderer.renders == before + 1
