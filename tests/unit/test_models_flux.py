"""Each registered FLUX model validates exactly per its reference (shared/spec/models/), at both edges.

The expected values here are copied from the reference files, not read from the registry, so a
wrong table in a model module fails a test.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest

from airflow_provider_bfl.exceptions import BflInvalidRequestError
from airflow_provider_bfl.models import ImageInferenceRequest, registry

ULTRA_SIZES = [
    (3136, 1344),
    (2752, 1536),
    (2368, 1792),
    (2496, 1664),
    (2048, 2048),
    (1664, 2496),
    (1792, 2368),
    (1536, 2752),
    (1344, 3136),
]
KONTEXT_SIZES = [
    (1568, 672),
    (1392, 752),
    (1184, 880),
    (1248, 832),
    (1024, 1024),
    (832, 1248),
    (880, 1184),
    (752, 1392),
    (672, 1568),
]
URL = "https://cdn.example.com/products/mug.png"
UUID = "d75835ee-cbcd-436e-87d8-1ea7af3d3983"


def _png_data_uri() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


DATA_URI = _png_data_uri()
RAW_BASE64 = DATA_URI.partition(",")[2]


def request(model: str, **fields: Any) -> dict[str, Any]:
    size = {"bfl:2@2": (2048, 2048), "bfl:3@1": (1024, 1024), "bfl:4@1": (1024, 1024)}.get(
        model, (1024, 1024)
    )
    return {
        "model": model,
        "positivePrompt": "a mug on a table",
        "width": size[0],
        "height": size[1],
        **fields,
    }


def validate(model: str, **fields: Any) -> ImageInferenceRequest:
    return registry.validate_request(request(model, **fields))


def rejected(model: str, **fields: Any) -> BflInvalidRequestError:
    with pytest.raises(BflInvalidRequestError) as caught:
        validate(model, **fields)
    return caught.value


def test_the_registry_lists_the_seven_models_in_air_order() -> None:
    assert list(registry.models()) == [
        "bfl:2@1",
        "bfl:2@2",
        "bfl:3@1",
        "bfl:4@1",
        "bfl:5@1",
        "bfl:6@1",
        "bfl:7@1",
    ]
    assert registry.models()["bfl:2@1"].request_class is ImageInferenceRequest


@pytest.mark.parametrize("air", list(registry.models()))
def test_each_models_example_round_trips_exactly(air: str) -> None:
    example = dict(registry.models()[air].example)
    validated = registry.validate_request(example)
    assert type(validated) is registry.models()[air].request_class
    assert validated.to_wire() == example
    assert json.dumps(validated.to_wire()) == json.dumps(example)  # key order too
    assert validated.with_task_uuid(UUID).to_wire() == {**example, "taskUUID": UUID}


@pytest.mark.parametrize("air", list(registry.models()))
def test_a_request_through_the_hooks_entry_point_keeps_its_model(air: str) -> None:
    """The hook validates with ImageInferenceRequest.model_validate: a validated request of any model passes as is."""
    validated = registry.validate_request(dict(registry.models()[air].example))
    assert ImageInferenceRequest.model_validate(validated) is validated


# -- FLUX1.1 [pro] Ultra -------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), ULTRA_SIZES)
def test_ultra_accepts_each_of_its_nine_sizes(width: int, height: int) -> None:
    assert validate("bfl:2@2", width=width, height=height).to_wire()["width"] == width


@pytest.mark.parametrize(
    ("width", "height", "parameter"),
    [
        (2048, 2032, "height"),
        (2032, 2048, "width"),
        (1344, 2048, "height"),
        (1024, 1024, "width"),
        (3136, 3136, "height"),
    ],
)
def test_ultra_rejects_sizes_off_its_list(width: int, height: int, parameter: str) -> None:
    error = rejected("bfl:2@2", width=width, height=height)
    assert error.parameter == parameter
    assert ("2752x1536" if parameter == "height" else "1344, 1536, 1664") in str(error)  # what is allowed


def test_ultra_has_raw_and_no_references() -> None:
    wire = validate(
        "bfl:2@2", providerSettings={"bfl": {"raw": True, "promptUpsampling": True, "safetyTolerance": 6}}
    )
    assert wire.to_wire()["providerSettings"] == {
        "bfl": {"raw": True, "promptUpsampling": True, "safetyTolerance": 6}
    }
    assert "raw" in str(rejected("bfl:2@2", providerSettings={"bfl": {"raw": "maybe"}}))
    assert "unknown parameter 'inputs'" in str(rejected("bfl:2@2", inputs={"referenceImages": [URL]}))
    assert rejected("bfl:2@2", providerSettings={"bfl": {"safetyTolerance": 7}}).parameter == (
        "providerSettings.bfl.safetyTolerance"
    )


def test_raw_belongs_to_ultra_only() -> None:
    for air in ("bfl:2@1", "bfl:3@1", "bfl:4@1"):
        base = {"width": 1024, "height": 768} if air == "bfl:2@1" else {}
        error = rejected(air, providerSettings={"bfl": {"raw": True}}, **base)
        assert "unknown parameter 'providerSettings.bfl.raw'" in str(error), air


@pytest.mark.parametrize("air", ["bfl:2@2", "bfl:3@1", "bfl:4@1"])
def test_flux1_prompt_limits_are_2_to_3000(air: str) -> None:
    assert validate(air, positivePrompt="ab").positive_prompt == "ab"
    assert validate(air, positivePrompt="x" * 3000)
    assert rejected(air, positivePrompt="a").parameter == "positivePrompt"
    assert rejected(air, positivePrompt="x" * 3001).parameter == "positivePrompt"


# -- FLUX.1 Kontext [pro] / [max] ----------------------------------------------------------------


@pytest.mark.parametrize("air", ["bfl:3@1", "bfl:4@1"])
@pytest.mark.parametrize(("width", "height"), KONTEXT_SIZES)
def test_kontext_accepts_each_of_its_nine_sizes(air: str, width: int, height: int) -> None:
    assert (
        validate(air, width=width, height=height).width,
        validate(air, width=width, height=height).height,
    ) == (
        width,
        height,
    )


@pytest.mark.parametrize("air", ["bfl:3@1", "bfl:4@1"])
@pytest.mark.parametrize(
    ("width", "height"), [(1024, 1008), (1040, 1024), (1568, 1568), (2048, 2048), (512, 512)]
)
def test_kontext_rejects_sizes_off_its_list(air: str, width: int, height: int) -> None:
    assert rejected(air, width=width, height=height).parameter in ("width", "height")


@pytest.mark.parametrize("air", ["bfl:3@1", "bfl:4@1"])
def test_kontext_takes_up_to_two_references_in_every_form(air: str) -> None:
    assert validate(air).to_wire().get("inputs") is None  # text to image without references
    for forms in ([URL], [UUID, DATA_URI], [RAW_BASE64, URL]):
        wire = validate(air, inputs={"referenceImages": forms}).to_wire()
        assert wire["inputs"] == {"referenceImages": forms}
    error = rejected(air, inputs={"referenceImages": [URL, URL, URL]})
    assert error.parameter == "inputs.referenceImages" and "at most 2" in str(error)


@pytest.mark.parametrize(
    "bad",
    ["", "not an image", "data:text/plain;base64,aGVsbG8=", "data:image/png;base64,@@@@", 7, "x" * 80 + "!"],
)
def test_a_reference_in_no_accepted_form_is_refused(bad: Any) -> None:
    error = rejected("bfl:3@1", inputs={"referenceImages": [bad]})
    assert str(error.parameter).startswith("inputs.referenceImages")


def test_a_data_uri_reference_is_never_echoed_in_an_error() -> None:
    big = "data:image/png;base64," + "A" * 5000 + "@"
    error = rejected("bfl:3@1", inputs={"referenceImages": [big]})
    assert "AAAA" not in str(error) and "a 5023-character string" in str(error)
    too_many = rejected("bfl:3@1", inputs={"referenceImages": [DATA_URI] * 3})
    assert DATA_URI[22:40] not in str(too_many) and "at most 2" in str(too_many)


def test_kontext_refuses_sampling_controls() -> None:
    assert "unknown parameter 'steps'" in str(rejected("bfl:3@1", steps=20))
    assert "unknown parameter 'CFGScale'" in str(rejected("bfl:4@1", CFGScale=3.5))


# -- FLUX.2 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("air", ["bfl:5@1", "bfl:6@1", "bfl:7@1"])
def test_flux2_sizes_256_to_2048_in_steps_of_16(air: str) -> None:
    for width, height in ((256, 2048), (2048, 256), (1040, 784)):
        assert validate(air, width=width, height=height).width == width
    for width, parameter in ((240, "width"), (2064, "width"), (1030, "width")):
        assert rejected(air, width=width).parameter == parameter
    assert "nearest: 1024 or 1040" in str(rejected(air, width=1030))


@pytest.mark.parametrize("air", ["bfl:5@1", "bfl:6@1"])
def test_flux2_pro_and_flex_need_width_and_height(air: str) -> None:
    data = request(air)
    del data["height"]
    with pytest.raises(BflInvalidRequestError, match="height is required"):
        registry.validate_request(data)


def test_flux2_max_takes_both_sizes_or_neither() -> None:
    data = request("bfl:7@1")
    neither = registry.validate_request({key: v for key, v in data.items() if key not in ("width", "height")})
    assert (neither.width, neither.height) == (None, None)
    assert "width" not in neither.to_wire()
    for missing in ("width", "height"):
        with pytest.raises(BflInvalidRequestError, match="width and height go together"):
            registry.validate_request({key: v for key, v in data.items() if key != missing})


@pytest.mark.parametrize("air", ["bfl:5@1", "bfl:7@1"])
def test_flux2_pro_and_max_leave_the_reference_count_to_the_server(air: str) -> None:
    wire = validate(air, inputs={"referenceImages": [URL] * 12}).to_wire()
    assert len(wire["inputs"]["referenceImages"]) == 12


def test_flux2_flex_takes_up_to_ten_references() -> None:
    assert (
        len(
            validate("bfl:6@1", inputs={"referenceImages": [URL] * 10}).to_wire()["inputs"]["referenceImages"]
        )
        == 10
    )
    error = rejected("bfl:6@1", inputs={"referenceImages": [URL] * 11})
    assert "at most 10" in str(error)


def test_flux2_flex_has_steps_and_cfg_scale_the_others_do_not() -> None:
    wire = validate("bfl:6@1", steps=1, CFGScale=1.5).to_wire()
    assert (wire["steps"], wire["CFGScale"]) == (1, 1.5)
    assert validate("bfl:6@1", steps=50, CFGScale=10).to_wire()["CFGScale"] == 10
    assert rejected("bfl:6@1", steps=0).parameter == "steps"
    assert rejected("bfl:6@1", steps=2.5).parameter == "steps"
    assert rejected("bfl:6@1", CFGScale="strong").parameter == "CFGScale"
    for air in ("bfl:5@1", "bfl:7@1", "bfl:2@2"):
        assert "unknown parameter 'steps'" in str(rejected(air, steps=20)), air


@pytest.mark.parametrize("air", ["bfl:5@1", "bfl:6@1", "bfl:7@1"])
def test_flux2_provider_settings_known_ones_typed_others_passed_to_the_server(air: str) -> None:
    wire = validate(air, providerSettings={"bfl": {"promptUpsampling": True, "newSetting": 3}}).to_wire()
    assert wire["providerSettings"] == {"bfl": {"promptUpsampling": True, "newSetting": 3}}
    assert rejected(air, providerSettings={"bfl": {"safetyTolerance": 7}}).parameter == (
        "providerSettings.bfl.safetyTolerance"
    )
    assert rejected(air, providerSettings={"bfl": {"promptUpsampling": "often"}}).parameter == (
        "providerSettings.bfl.promptUpsampling"
    )


@pytest.mark.parametrize("air", ["bfl:5@1", "bfl:6@1", "bfl:7@1"])
def test_flux2_prompt_needs_one_character_and_has_no_client_side_maximum(air: str) -> None:
    assert validate(air, positivePrompt="a").positive_prompt == "a"
    assert validate(air, positivePrompt="x" * 10_000)
    assert rejected(air, positivePrompt="").parameter == "positivePrompt"


@pytest.mark.parametrize("air", list(registry.models()))
def test_platform_fields_keep_their_rules_on_every_model(air: str) -> None:
    for field, bad in (
        ("outputQuality", 19),
        ("numberResults", 21),
        ("outputFormat", "TIFF"),
        ("taskUUID", "x"),
    ):
        base = {"width": 1024, "height": 768} if air == "bfl:2@1" else {}
        assert rejected(air, **{field: bad}, **base).parameter == field, (air, field)
