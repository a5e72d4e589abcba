"""The emulator speaks every registered model: its sizes, references, settings, and a server's errors."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import pytest

from airflow_provider_bfl.models import registry
from tests.testing.conftest import Api, image_task


def _png(width: int = 40, height: int = 30, color: tuple[int, int, int] = (10, 160, 60)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


DATA_URI = "data:image/png;base64," + base64.b64encode(_png()).decode()


def _task(model: str, **fields: Any) -> dict[str, Any]:
    example = {k: v for k, v in registry.models()[model].example.items() if k not in ("taskUUID", "inputs")}
    return image_task(**{**example, **fields})


def _image_size(http: httpx.Client, item: dict[str, Any]) -> tuple[int, int]:
    from PIL import Image

    data = http.get(item["imageURL"]).content
    with Image.open(io.BytesIO(data)) as image:
        return image.size


@pytest.mark.parametrize("model", list(registry.models()))
def test_each_models_example_generates_an_image_of_its_size(api: Api, http: httpx.Client, model: str) -> None:
    task = _task(model, includeCost=True)
    response = api.post([task])
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    assert _image_size(http, item) == (task["width"], task["height"])
    assert item["taskUUID"] == task["taskUUID"] and isinstance(item["cost"], float)
    assert api.emu.received_tasks()[-1]["model"] == model


@pytest.mark.parametrize(
    ("model", "width", "height"),
    [("bfl:2@2", 2048, 2032), ("bfl:2@2", 1024, 1024), ("bfl:3@1", 1024, 1008), ("bfl:4@1", 1568, 1568)],
)
def test_a_size_off_a_models_list_is_invalid_dimensions_with_the_allowed_pairs(
    api: Api, model: str, width: int, height: int
) -> None:
    response = api.post([_task(model, width=width, height=height)])
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert (error["code"], error["parameter"]) == ("invalidDimensions", ["width", "height"])
    assert len(error["allowedValues"]) == 9 and f"{width}x{height}" not in error["allowedValues"]


@pytest.mark.parametrize(("model", "width"), [("bfl:5@1", 2064), ("bfl:6@1", 240), ("bfl:7@1", 1030)])
def test_flux2_sizes_outside_256_to_2048_step_16_are_invalid(api: Api, model: str, width: int) -> None:
    error = api.post([_task(model, width=width)]).json()["errors"][0]
    assert (error["code"], error["parameter"]) == ("invalidWidth", "width")


def test_flux2_max_without_a_size_gets_the_servers_and_with_half_a_size_is_refused(
    api: Api, http: httpx.Client
) -> None:
    (item,) = api.post([_task("bfl:7@1", width=..., height=...)]).json()["data"]
    assert _image_size(http, item) == (1024, 1024)
    error = api.post([_task("bfl:7@1", height=...)]).json()["errors"][0]
    assert (error["code"], error["parameter"]) == ("missingHeight", "height")


@pytest.mark.parametrize("model", ["bfl:3@1", "bfl:4@1", "bfl:5@1", "bfl:6@1", "bfl:7@1"])
def test_reference_images_in_every_form_are_accepted(api: Api, model: str) -> None:
    forms = [DATA_URI, base64.b64encode(_png()).decode(), "https://cdn.example.com/a.png"]
    forms = forms[:2] if model in ("bfl:3@1", "bfl:4@1") else forms
    response = api.post([_task(model, inputs={"referenceImages": forms})])
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("model", "limit"), [("bfl:3@1", 2), ("bfl:4@1", 2), ("bfl:5@1", 9), ("bfl:6@1", 10), ("bfl:7@1", 8)]
)
def test_the_server_refuses_more_references_than_the_model_takes(api: Api, model: str, limit: int) -> None:
    ok = api.post([_task(model, inputs={"referenceImages": [DATA_URI] * limit})])
    assert ok.status_code == 200, ok.text
    error = api.post([_task(model, inputs={"referenceImages": [DATA_URI] * (limit + 1)})]).json()["errors"][0]
    assert (error["code"], error["parameter"]) == ("invalidReferenceImages", "inputs.referenceImages")
    assert f"at most {limit}" in error["message"]


@pytest.mark.parametrize(
    "bad",
    [
        "data:image/png;base64," + base64.b64encode(b"GIF89a not a png").decode(),
        "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
        "definitely not an image",
        "ftp://example.com/a.png",
    ],
)
def test_a_reference_that_is_not_a_png_jpg_or_webp_image_is_refused(api: Api, bad: str) -> None:
    error = api.post([_task("bfl:3@1", inputs={"referenceImages": [bad]})]).json()["errors"][0]
    assert error["code"] == "invalidReferenceImages"


def test_models_without_references_have_no_inputs(api: Api) -> None:
    for model in ("bfl:2@1", "bfl:2@2"):
        error = api.post([_task(model, inputs={"referenceImages": [DATA_URI]})]).json()["errors"][0]
        assert (error["code"], error["parameter"]) == ("unknownParameter", "inputs"), model


def test_raw_is_ultras_only(api: Api) -> None:
    assert api.post([_task("bfl:2@2", providerSettings={"bfl": {"raw": True}})]).status_code == 200
    error = api.post([_task("bfl:3@1", providerSettings={"bfl": {"raw": True}})]).json()["errors"][0]
    assert (error["code"], error["parameter"]) == ("unknownParameter", "providerSettings.bfl.raw")


def test_flex_sampling_controls_are_checked_by_the_server(api: Api) -> None:
    assert api.post([_task("bfl:6@1", steps=50, CFGScale=1.5)]).status_code == 200
    for field, value in (("steps", 51), ("steps", 0), ("CFGScale", "high"), ("CFGScale", 25)):
        error = api.post([_task("bfl:6@1", **{field: value})]).json()["errors"][0]
        assert error["parameter"] == field, (field, value)
    error = api.post([_task("bfl:5@1", steps=20)]).json()["errors"][0]
    assert (error["code"], error["parameter"]) == ("unknownParameter", "steps")


def test_flux2_provider_settings_the_client_passes_through_are_judged_here(api: Api) -> None:
    assert api.post([_task("bfl:5@1", providerSettings={"bfl": {"safetyTolerance": 5}})]).status_code == 200
    error = api.post([_task("bfl:5@1", providerSettings={"bfl": {"guidance": 3}})]).json()["errors"][0]
    assert (error["code"], error["parameter"]) == ("unknownParameter", "providerSettings.bfl.guidance")


def test_flux2_prompts_may_be_longer_than_flux1s(api: Api) -> None:
    assert api.post([_task("bfl:6@1", positivePrompt="x" * 5000)]).status_code == 200
    error = api.post([_task("bfl:3@1", positivePrompt="x" * 3001)]).json()["errors"][0]
    assert error["code"] == "invalidPositivePrompt"


def test_an_unknown_model_lists_every_served_model(api: Api) -> None:
    error = api.post([image_task(model="bfl:99@1")]).json()["errors"][0]
    assert error["code"] == "unknownModel"
    assert error["allowedValues"] == list(registry.models())


def test_a_rendering_with_a_reference_shows_it_framed_in_the_corner() -> None:
    """What the emulator draws for a request with references: the product visible next to the scene."""
    from PIL import Image

    from airflow_provider_bfl.testing.emulator.rendering import ImageRenderer, RenderKey
    from airflow_provider_bfl.testing.emulator.validation import parse_reference

    reference = parse_reference(DATA_URI)
    assert not isinstance(reference, str) and reference.thumbnail is not None
    renderer = ImageRenderer()
    plain = RenderKey(seed=3, width=512, height=384, output_format="PNG", quality=0, blank=False)
    with_ref = plain._replace(reference=reference.thumbnail)
    with (
        Image.open(io.BytesIO(renderer.render(with_ref))) as image,
        Image.open(io.BytesIO(renderer.render(plain))) as without,
    ):
        # 40x30 scaled to a quarter of the short side (96x72), framed by 4 px, 9 px from the corner
        inside = (512 - 9 - (96 + 8) // 2, 384 - 9 - (72 + 8) // 2)
        assert image.getpixel(inside)[:3] == (10, 160, 60)
        assert image.getpixel((5, 5)) == without.getpixel((5, 5))  # the rest is the same picture
