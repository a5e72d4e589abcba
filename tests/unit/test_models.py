"""The request model honours every rule of the API reference, at both edges, with readable errors."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bfl.exceptions import BflInvalidRequestError
from airflow_provider_bfl.models import ImageInferenceRequest, ImageResult, TaskState, TaskStatus

SPEC_EXAMPLES = json.loads(
    (Path(__file__).parents[2] / "example_dags" / "data" / "spec_examples.json").read_text()
)
BASE: dict[str, Any] = {"positivePrompt": "a red bicycle", "width": 512, "height": 512}
SEED_MAX = 2**63 - 1


@pytest.mark.parametrize("example", SPEC_EXAMPLES, ids=lambda e: e["request"]["taskUUID"][:8])
def test_spec_examples_round_trip_exactly(example: dict[str, Any]) -> None:
    request = ImageInferenceRequest.model_validate(example["request"])
    assert request.to_wire() == example["request"]
    assert json.dumps(request.to_wire()) == json.dumps(example["request"])  # key order too


@pytest.mark.parametrize("example", SPEC_EXAMPLES, ids=lambda e: e["request"]["taskUUID"][:8])
def test_spec_example_results_parse(example: dict[str, Any]) -> None:
    result = ImageResult.model_validate(example["result"])
    assert result.to_xcom() == example["result"]


def test_python_names_and_wire_names_build_the_same_request() -> None:
    by_wire = ImageInferenceRequest(
        taskUUID="d75835ee-cbcd-436e-87d8-1ea7af3d3983",
        positivePrompt="a lamp",
        width=256,
        height=1440,
        numberResults=3,
        outputType="base64Data",
        outputFormat="PNG",
        outputQuality=20,
        includeCost=True,
        safety={"checkContent": True, "mode": "fast"},
        providerSettings={"bfl": {"promptUpsampling": True, "safetyTolerance": 6}},
    )
    by_python = ImageInferenceRequest(
        task_uuid="d75835ee-cbcd-436e-87d8-1ea7af3d3983",
        positive_prompt="a lamp",
        width=256,
        height=1440,
        number_results=3,
        output_type="base64Data",
        output_format="PNG",
        output_quality=20,
        include_cost=True,
        safety={"check_content": True, "mode": "fast"},
        provider_settings={"bfl": {"prompt_upsampling": True, "safety_tolerance": 6}},
    )
    assert by_wire.to_wire() == by_python.to_wire()
    assert by_wire.to_wire()["safety"] == {"checkContent": True, "mode": "fast"}


def test_only_what_was_set_is_sent_and_defaults_are_the_apis() -> None:
    request = ImageInferenceRequest(**BASE)
    wire = request.to_wire()
    assert set(wire) == {"taskType", "taskUUID", "model", "positivePrompt", "width", "height"}
    assert wire["model"] == "bfl:2@1"
    assert (request.output_type, request.output_format, request.output_quality) == ("URL", "JPG", 95)
    assert (request.delivery_method, request.number_results, request.include_cost) == ("sync", 1, False)


def test_task_uuid_is_generated_as_v4_and_unique() -> None:
    first, second = ImageInferenceRequest(**BASE), ImageInferenceRequest(**BASE)
    assert first.task_uuid != second.task_uuid
    assert first.task_uuid[14] == "4"


def test_numeric_strings_from_templates_are_accepted() -> None:
    request = ImageInferenceRequest(positivePrompt="ab", width="1024", height="768", seed="42")
    assert (request.width, request.height, request.seed) == (1024, 768, 42)


# (parameter, accepted values at the edges, rejected values just outside, extra fields needed)
EDGES: list[tuple[str, list[Any], list[Any], dict[str, Any]]] = [
    ("positivePrompt", ["ab", "x" * 3000], ["a", "", "x" * 3001, 12], {}),
    ("width", [256, 1440, 288], [224, 1472, 300, 255.5, True, "wide"], {}),
    ("height", [256, 1440, 1408], [224, 1472, 1000, None], {}),
    ("seed", [0, SEED_MAX], [-1, SEED_MAX + 1, 1.5], {}),
    ("numberResults", [1, 20], [0, 21], {}),
    ("outputQuality", [20, 99], [19, 100], {}),
    ("outputType", ["URL", "dataURI", "base64Data"], ["url", "png", ""], {}),
    ("outputFormat", ["JPG", "PNG", "WEBP"], ["jpg", "TIFF", "GIF"], {}),
    ("deliveryMethod", ["sync", "async"], ["webhook", "SYNC"], {}),
    ("ttl", [60, 86400], [59, 0, -5], {}),
    ("includeCost", [True, False], ["maybe", 2], {}),
    (
        "webhookURL",
        ["https://hooks.example.com/x?token=1", "http://127.0.0.1:8/h"],
        ["ftp://x/y", "file:///tmp/a", "hooks", "https://"],
        {},
    ),
    (
        "uploadEndpoint",
        ["https://bucket.s3.amazonaws.com/k?X-Amz-Signature=a"],
        ["ftp://x/y", "s3://bucket/key"],
        {},
    ),
    (
        "taskUUID",
        ["d75835ee-cbcd-436e-87d8-1ea7af3d3983"],
        ["not-a-uuid", "d75835ee-cbcd-136e-87d8-1ea7af3d3983", 7],
        {},
    ),
    ("model", ["bfl:2@1"], ["bfl:1@1", "runware:100@1"], {}),
    ("taskType", ["imageInference"], ["getResponse"], {}),
    (
        "safety",
        [{"checkContent": True}, {"mode": "fast"}, {"checkContent": False, "mode": "none"}],
        [{"mode": "full"}, {"checkContent": "yes please"}, "on"],
        {},
    ),
    (
        "providerSettings",
        [{"bfl": {"safetyTolerance": 0}}, {"bfl": {"safetyTolerance": 6, "promptUpsampling": True}}],
        [
            {"bfl": {"safetyTolerance": 7}},
            {"bfl": {"safetyTolerance": -1}},
            {"bfl": {"promptUpsampling": "very"}},
        ],
        {},
    ),
]


@pytest.mark.parametrize(("parameter", "value"), [(p, v) for p, ok, _, _ in EDGES for v in ok], ids=repr)
def test_accepts_values_at_the_edges(parameter: str, value: Any) -> None:
    request = ImageInferenceRequest(**{**BASE, parameter: value})
    assert request.to_wire()[parameter] == value


@pytest.mark.parametrize(("parameter", "value"), [(p, v) for p, _, bad, _ in EDGES for v in bad], ids=repr)
def test_rejects_values_just_outside(parameter: str, value: Any) -> None:
    with pytest.raises(BflInvalidRequestError) as caught:
        ImageInferenceRequest(**{**BASE, parameter: value})
    message = str(caught.value)
    assert parameter in message
    assert "allowed:" in message or "required" in message
    assert caught.value.parameter is not None and parameter in str(caught.value.parameter)


def test_ttl_only_with_url_output() -> None:
    assert ImageInferenceRequest(**BASE, ttl=60, outputType="URL").ttl == 60
    with pytest.raises(
        BflInvalidRequestError, match="ttl only applies when outputType is 'URL', not 'base64Data'"
    ):
        ImageInferenceRequest(**BASE, ttl=60, outputType="base64Data")


@pytest.mark.parametrize("missing", ["positivePrompt", "width", "height"])
def test_required_fields(missing: str) -> None:
    data = {key: value for key, value in BASE.items() if key != missing}
    with pytest.raises(BflInvalidRequestError, match=f"{missing} is required"):
        ImageInferenceRequest(**data)


def test_violation_names_parameter_value_allowed_range_and_nearest_step() -> None:
    with pytest.raises(BflInvalidRequestError) as caught:
        ImageInferenceRequest(positivePrompt="ab", width=1000, height=512)
    message = str(caught.value)
    assert "width: got 1000" in message
    assert "an integer from 256 to 1440 in steps of 32" in message
    assert "nearest: 992 or 1024" in message


def test_long_prompt_is_summarised_not_echoed() -> None:
    with pytest.raises(BflInvalidRequestError) as caught:
        ImageInferenceRequest(positivePrompt="x" * 3001, width=512, height=512)
    assert "a 3001-character string" in str(caught.value)
    assert "x" * 100 not in str(caught.value)


def test_every_violation_is_reported_at_once_with_the_task_uuid() -> None:
    uuid = "d75835ee-cbcd-436e-87d8-1ea7af3d3983"
    with pytest.raises(BflInvalidRequestError) as caught:
        ImageInferenceRequest(taskUUID=uuid, positivePrompt="a", width=100, height=2000, outputQuality=5)
    assert len(caught.value.violations) == 4
    assert caught.value.task_uuid == uuid
    assert uuid in str(caught.value)


@pytest.mark.parametrize(
    ("data", "unknown", "suggestion"),
    [
        ({**BASE, "widht": 512}, "widht", "width"),
        ({**BASE, "positive_promt": "x"}, "positive_promt", "positive_prompt"),
        ({**BASE, "outputtype": "URL"}, "outputtype", "outputType"),
        ({**BASE, "safety": {"chekContent": True}}, "safety.chekContent", "checkContent"),
        (
            {**BASE, "providerSettings": {"bfl": {"safetyTolerence": 2}}},
            "providerSettings.bfl.safetyTolerence",
            "safetyTolerance",
        ),
    ],
)
def test_unknown_fields_name_the_field_and_suggest_the_closest(
    data: dict[str, Any], unknown: str, suggestion: str
) -> None:
    with pytest.raises(BflInvalidRequestError) as caught:
        ImageInferenceRequest(**data)
    assert f"unknown parameter {unknown!r}; did you mean {suggestion!r}?" in str(caught.value)


def test_unknown_field_without_close_match_lists_valid_ones() -> None:
    with pytest.raises(
        BflInvalidRequestError, match=r"unknown parameter 'zzz'\. Valid parameters here: taskType"
    ):
        ImageInferenceRequest(**BASE, zzz=1)


def test_error_survives_pickling_between_processes() -> None:
    with pytest.raises(BflInvalidRequestError) as caught:
        ImageInferenceRequest(positivePrompt="a", width=512, height=512)
    clone = pickle.loads(pickle.dumps(caught.value))
    assert type(clone) is BflInvalidRequestError
    assert str(clone) == str(caught.value)
    assert clone.violations == caught.value.violations


def test_with_task_uuid_keeps_everything_else() -> None:
    request = ImageInferenceRequest(**BASE, seed=3)
    moved = request.with_task_uuid("5c7a9c23-6866-4003-93b9-d3f52e15111b")
    assert moved.to_wire() == {**request.to_wire(), "taskUUID": "5c7a9c23-6866-4003-93b9-d3f52e15111b"}


def test_image_result_keeps_unknown_fields_but_never_shows_bytes() -> None:
    data = base64.b64encode(b"\x89PNG fake").decode()
    result = ImageResult.model_validate(
        {"taskUUID": "t", "imageUUID": "i", "imageBase64Data": data, "seed": 1, "newField": "kept"}
    )
    assert result.image_bytes() == b"\x89PNG fake"
    assert result.model_extra == {"newField": "kept"}
    assert data not in repr(result)
    assert "imageBase64Data" not in result.to_xcom()


def test_image_result_decodes_data_uri() -> None:
    uri = "data:image/png;base64," + base64.b64encode(b"abc").decode()
    result = ImageResult.model_validate({"taskUUID": "t", "imageUUID": "i", "imageDataURI": uri})
    assert result.image_bytes() == b"abc"


def test_image_result_rejects_non_http_url() -> None:
    with pytest.raises(ValueError, match="imageURL must be an http"):
        ImageResult.model_validate({"taskUUID": "t", "imageUUID": "i", "imageURL": "file:///etc/passwd"})


def test_image_result_without_image_uuid_is_refused() -> None:
    """The imageUUID names the image in storage and XCom; without it the result cannot be used."""
    with pytest.raises(ValueError, match="imageUUID"):
        ImageResult.model_validate({"taskUUID": "t", "imageURL": "https://im.example.com/a.jpg"})


@pytest.mark.parametrize(
    "cost",
    [float("nan"), float("inf"), float("-inf"), -0.04, True, "NaN", "-1", "a lot", [0.04]],
    ids=["nan", "inf", "minus_inf", "negative", "bool", "nan_text", "negative_text", "text", "list"],
)
def test_an_insane_cost_is_dropped_and_the_image_kept(cost: Any, caplog: pytest.LogCaptureFixture) -> None:
    """NaN, infinite, negative or non-numeric costs become None (unknown), never a summable number."""
    result = ImageResult.model_validate({"taskUUID": "t", "imageUUID": "i", "cost": cost})
    assert result.cost is None and result.image_uuid == "i"
    assert "cost" not in result.to_xcom()
    assert "not a sane amount" in caplog.text


@pytest.mark.parametrize("cost", [0, 0.0, 0.04, "0.04", 12])
def test_a_sane_cost_is_kept(cost: Any) -> None:
    assert ImageResult.model_validate({"taskUUID": "t", "imageUUID": "i", "cost": cost}).cost == float(cost)


def test_task_status_done_only_when_terminal() -> None:
    status = TaskStatus("t", expected_images=2)
    assert not status.done
    status.state = TaskState.SUCCESS
    assert status.done
