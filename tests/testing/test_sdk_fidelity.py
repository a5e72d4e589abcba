"""
The official client (runware-sdk 1.8.0, REST transport) completes one imageInference per model
against the emulator, and its typed request classes agree with the registry's field lists.

The SDK is a second source for each model's fields (its classes are generated from Runware's
schemas); where it and the model pages disagree the registry follows the pages, and the test
names the disagreement.
"""

from __future__ import annotations

import asyncio
import base64
import io
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_bfl.models import registry
from airflow_provider_bfl.testing.emulator import RunwareEmulator

runware = pytest.importorskip("runware", reason="runware-sdk is part of the dev extra")
from runware.types import task_map  # noqa: E402

SDK_CLASSES = {
    "bfl:2@1": "BflFlux11ProParams",
    "bfl:2@2": "BflFlux11ProUltraParams",
    "bfl:3@1": "BflFlux1KontextProParams",
    "bfl:4@1": "BflFlux1KontextMaxParams",
    "bfl:5@1": "BflFlux2ProParams",
    "bfl:6@1": "BflFlux2FlexParams",
    "bfl:7@1": "BflFlux2MaxParams",
}
#: In the SDK for every model, on no model page: not accepted client-side (the pages are the rule).
SDK_ONLY = {"routing", "advancedFeatures"}


def _sdk_fields(air: str) -> dict[str, bool]:
    """``{wire name: required}`` of the SDK's class (a plain annotation is required, NotRequired[...] is not)."""
    cls = getattr(task_map, SDK_CLASSES[air])
    return {
        name: not getattr(hint, "__forward_arg__", str(hint)).startswith("NotRequired")
        for name, hint in cls.__annotations__.items()
    }


def test_every_registered_model_has_an_sdk_class() -> None:
    assert set(SDK_CLASSES) == set(registry.models())


@pytest.mark.parametrize("air", list(registry.models()))
def test_registry_fields_are_the_sdks_less_its_undocumented_platform_fields(air: str) -> None:
    sdk = _sdk_fields(air)
    ours = {
        info.alias or name: info.is_required()
        for name, info in registry.models()[air].request_class.model_fields.items()
    }
    assert set(ours) == set(sdk) - SDK_ONLY
    # Required alike, except taskType/taskUUID/model, which the provider fills in itself.
    filled_in = {"taskType", "taskUUID", "model"}
    assert {n for n, required in ours.items() if required} == {
        n for n, required in sdk.items() if required
    } - filled_in


def test_the_sdk_agrees_flux2_max_is_the_one_model_whose_size_is_optional() -> None:
    optional_size = {air for air in registry.models() if not _sdk_fields(air)["width"]}
    assert (
        optional_size
        == {"bfl:7@1"}
        == {air for air, spec in registry.models().items() if spec.sizes_optional}
    )


def test_the_sdk_has_inputs_exactly_for_the_models_that_take_references() -> None:
    with_inputs = {air for air in registry.models() if "inputs" in _sdk_fields(air)}
    assert with_inputs == {air for air, spec in registry.models().items() if spec.takes_references}


@pytest.fixture
def emu() -> Iterator[RunwareEmulator]:
    with RunwareEmulator(random_seed=11) as emulator:
        yield emulator


def _png_data_uri() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 90, 200)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _params(air: str) -> dict[str, Any]:
    params = {k: v for k, v in registry.models()[air].example.items() if k != "inputs"}
    params["taskUUID"] = str(uuid.uuid4())
    if registry.models()[air].takes_references:
        params["inputs"] = {"referenceImages": [_png_data_uri()]}
    return params


async def test_the_sdk_completes_one_image_inference_per_model(emu: RunwareEmulator) -> None:
    from runware import Runware

    params = {air: _params(air) for air in registry.models()}
    async with Runware(
        api_key=emu.api_key, transport="rest", http_base_url=emu.base_url, max_retries=1
    ) as client:
        results = await asyncio.gather(*(client.run(p) for p in params.values()))
    received = {task["taskUUID"]: task for task in emu.received_tasks("imageInference")}
    async with httpx.AsyncClient(trust_env=False) as http:
        for (air, sent), items in zip(params.items(), results, strict=True):
            (item,) = items
            assert item["taskUUID"] == sent["taskUUID"] and item["status"] == "success", air
            wire = received[sent["taskUUID"]]
            assert wire["deliveryMethod"] == "async" and wire["model"] == air  # the SDK polled getResponse
            assert wire.get("inputs") == sent.get("inputs")
            image = (await http.get(item["imageURL"])).content
            assert _size(image) == (sent["width"], sent["height"]), air


async def test_the_sdk_reports_the_servers_refusal_of_a_models_rule(emu: RunwareEmulator) -> None:
    from runware import Runware
    from runware.errors import RunwareError

    params = {**_params("bfl:3@1"), "width": 1000}
    async with Runware(
        api_key=emu.api_key, transport="rest", http_base_url=emu.base_url, max_retries=0
    ) as client:
        with pytest.raises(RunwareError) as caught:
            await client.run(params)
    # The SDK folds invalidDimensions into its "validation" family and keeps the first parameter.
    assert (caught.value.code, caught.value.status_code, caught.value.parameter) == (
        "validation",
        400,
        "width",
    )
    assert "1024x1024" in caught.value.message
    assert emu.snapshot().images_billed == 0


def _size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size
