"""Server-side validation of imageInference for bfl:2@1, edge by edge, mirroring the model spec."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

CLOSED_PORT_URL = "http://127.0.0.1:9/hook"

# (overrides, expected code or None for accepted, expected parameter)
CASES: list[tuple[str, dict[str, Any], str | None, Any]] = [
    ("taskUUID-uppercase-v4", {"taskUUID": str(uuid.uuid4()).upper()}, None, None),
    ("taskUUID-missing", {"taskUUID": ...}, "missingTaskUUID", "taskUUID"),
    ("taskUUID-not-uuid", {"taskUUID": "task-1"}, "invalidTaskUUID", "taskUUID"),
    ("taskUUID-v1", {"taskUUID": str(uuid.uuid1())}, "invalidTaskUUID", "taskUUID"),
    ("taskUUID-int", {"taskUUID": 12}, "invalidTaskUUID", "taskUUID"),
    ("outputType-URL", {"outputType": "URL"}, None, None),
    ("outputType-dataURI", {"outputType": "dataURI"}, None, None),
    ("outputType-base64Data", {"outputType": "base64Data"}, None, None),
    ("outputType-lowercase", {"outputType": "url"}, "invalidOutputType", "outputType"),
    ("outputFormat-WEBP", {"outputFormat": "WEBP"}, None, None),
    ("outputFormat-GIF", {"outputFormat": "GIF"}, "invalidOutputFormat", "outputFormat"),
    ("outputFormat-lowercase", {"outputFormat": "png"}, "invalidOutputFormat", "outputFormat"),
    ("outputQuality-20", {"outputQuality": 20}, None, None),
    ("outputQuality-99", {"outputQuality": 99}, None, None),
    ("outputQuality-19", {"outputQuality": 19}, "invalidOutputQuality", "outputQuality"),
    ("outputQuality-100", {"outputQuality": 100}, "invalidOutputQuality", "outputQuality"),
    ("outputQuality-float", {"outputQuality": 95.0}, "invalidOutputQuality", "outputQuality"),
    ("webhookURL-http", {"webhookURL": CLOSED_PORT_URL}, None, None),
    ("webhookURL-ftp", {"webhookURL": "ftp://host/hook"}, "invalidWebhookURL", "webhookURL"),
    ("webhookURL-relative", {"webhookURL": "/hook"}, "invalidWebhookURL", "webhookURL"),
    ("deliveryMethod-async", {"deliveryMethod": "async"}, None, None),
    ("deliveryMethod-webhook", {"deliveryMethod": "webhook"}, "invalidDeliveryMethod", "deliveryMethod"),
    ("uploadEndpoint-http", {"uploadEndpoint": CLOSED_PORT_URL}, None, None),
    ("uploadEndpoint-not-uri", {"uploadEndpoint": "s3 bucket"}, "invalidUploadEndpoint", "uploadEndpoint"),
    ("safety-full", {"safety": {"checkContent": True, "mode": "fast"}}, None, None),
    ("safety-not-object", {"safety": "on"}, "invalidSafety", "safety"),
    (
        "safety-checkContent-string",
        {"safety": {"checkContent": "true"}},
        "invalidCheckContent",
        "safety.checkContent",
    ),
    ("safety-mode-full", {"safety": {"mode": "full"}}, "invalidMode", "safety.mode"),
    ("safety-unknown", {"safety": {"tolerance": 2}}, "unknownParameter", "safety.tolerance"),
    ("ttl-60", {"ttl": 60}, None, None),
    ("ttl-59", {"ttl": 59}, "invalidTtl", "ttl"),
    (
        "ttl-not-url",
        {"ttl": 120, "outputType": "base64Data"},
        "incompatibleParameters",
        ["ttl", "outputType"],
    ),
    ("includeCost-true", {"includeCost": True}, None, None),
    ("includeCost-string", {"includeCost": "true"}, "invalidIncludeCost", "includeCost"),
    ("includeCost-int", {"includeCost": 1}, "invalidIncludeCost", "includeCost"),
    ("numberResults-1", {"numberResults": 1}, None, None),
    ("numberResults-20", {"numberResults": 20}, None, None),
    ("numberResults-0", {"numberResults": 0}, "invalidNumberResults", "numberResults"),
    ("numberResults-21", {"numberResults": 21}, "invalidNumberResults", "numberResults"),
    ("numberResults-bool", {"numberResults": True}, "invalidNumberResults", "numberResults"),
    ("model-missing", {"model": ...}, "missingModel", "model"),
    ("model-other", {"model": "bfl:1@1"}, "unknownModel", "model"),
    ("model-malformed", {"model": "flux-pro"}, "invalidModel", "model"),
    ("model-int", {"model": 2}, "invalidModel", "model"),
    ("positivePrompt-2", {"positivePrompt": "ab"}, None, None),
    ("positivePrompt-3000", {"positivePrompt": "a" * 3000}, None, None),
    ("positivePrompt-1", {"positivePrompt": "a"}, "invalidPositivePrompt", "positivePrompt"),
    ("positivePrompt-3001", {"positivePrompt": "a" * 3001}, "invalidPositivePrompt", "positivePrompt"),
    ("positivePrompt-int", {"positivePrompt": 42}, "invalidPositivePrompt", "positivePrompt"),
    ("positivePrompt-missing", {"positivePrompt": ...}, "missingPositivePrompt", "positivePrompt"),
    ("width-256", {"width": 256}, None, None),
    ("width-1440", {"width": 1440}, None, None),
    ("width-224", {"width": 224}, "invalidWidth", "width"),
    ("width-1472", {"width": 1472}, "invalidWidth", "width"),
    ("width-not-step", {"width": 300}, "invalidWidth", "width"),
    ("width-float", {"width": 512.0}, "invalidWidth", "width"),
    ("width-string", {"width": "512"}, "invalidWidth", "width"),
    ("width-missing", {"width": ...}, "missingWidth", "width"),
    ("height-256", {"height": 256}, None, None),
    ("height-1440", {"height": 1440}, None, None),
    ("height-224", {"height": 224}, "invalidHeight", "height"),
    ("height-1472", {"height": 1472}, "invalidHeight", "height"),
    ("height-missing", {"height": ...}, "missingHeight", "height"),
    ("seed-0", {"seed": 0}, None, None),
    ("seed-max", {"seed": 2**63 - 1}, None, None),
    ("seed-negative", {"seed": -1}, "invalidSeed", "seed"),
    ("seed-too-big", {"seed": 2**63}, "invalidSeed", "seed"),
    ("seed-float", {"seed": 1.5}, "invalidSeed", "seed"),
    ("seed-null", {"seed": None}, "invalidSeed", "seed"),
    (
        "bfl-edges-low",
        {"providerSettings": {"bfl": {"promptUpsampling": False, "safetyTolerance": 0}}},
        None,
        None,
    ),
    (
        "bfl-edges-high",
        {"providerSettings": {"bfl": {"promptUpsampling": True, "safetyTolerance": 6}}},
        None,
        None,
    ),
    (
        "bfl-tolerance-7",
        {"providerSettings": {"bfl": {"safetyTolerance": 7}}},
        "invalidSafetyTolerance",
        "providerSettings.bfl.safetyTolerance",
    ),
    (
        "bfl-tolerance-negative",
        {"providerSettings": {"bfl": {"safetyTolerance": -1}}},
        "invalidSafetyTolerance",
        "providerSettings.bfl.safetyTolerance",
    ),
    (
        "bfl-upsampling-string",
        {"providerSettings": {"bfl": {"promptUpsampling": "yes"}}},
        "invalidPromptUpsampling",
        "providerSettings.bfl.promptUpsampling",
    ),
    (
        "bfl-unknown",
        {"providerSettings": {"bfl": {"raw": True}}},
        "unknownParameter",
        "providerSettings.bfl.raw",
    ),
    ("provider-unknown", {"providerSettings": {"openai": {}}}, "unknownParameter", "providerSettings.openai"),
    ("provider-not-object", {"providerSettings": []}, "invalidProviderSettings", "providerSettings"),
    ("unknown-top-level", {"prompt": "a cat"}, "unknownParameter", "prompt"),
    ("unknown-snake-case", {"output_format": "PNG"}, "unknownParameter", "output_format"),
]


@pytest.mark.parametrize(
    ("overrides", "code", "parameter"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_image_inference_validation(
    api: Any, make_task: Any, overrides: dict[str, Any], code: str | None, parameter: Any
) -> None:
    task = make_task(**overrides)
    response = api.post([task])
    if code is None:
        assert response.status_code == 200, response.text
        assert response.json()["data"][0]["taskUUID"] == task["taskUUID"]
        assert api.emu.counters.tasks_accepted == 1
        return
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"errors"}
    (error,) = body["errors"]
    assert error["code"] == code
    assert error["parameter"] == parameter
    assert error["taskType"] == "imageInference"
    assert error["message"]
    if isinstance(task.get("taskUUID"), str):
        assert error["taskUUID"] == task["taskUUID"]
    assert api.emu.counters.tasks_accepted == 0
    assert api.emu.counters.images_billed == 0


def test_enum_errors_list_allowed_values(api: Any, make_task: Any) -> None:
    error = api.post([make_task(outputFormat="TIFF")]).json()["errors"][0]
    assert error["allowedValues"] == ["JPG", "PNG", "WEBP"]
    assert error["type"] == "string"
    model_error = api.post([make_task(model="runware:100@1")]).json()["errors"][0]
    assert model_error["allowedValues"] == [
        "bfl:2@1",
        "bfl:2@2",
        "bfl:3@1",
        "bfl:4@1",
        "bfl:5@1",
        "bfl:6@1",
        "bfl:7@1",
    ]


def test_integer_errors_name_their_type(api: Any, make_task: Any) -> None:
    error = api.post([make_task(width=257)]).json()["errors"][0]
    assert error["type"] == "integer"
    assert "multiples of 32" in error["message"]
