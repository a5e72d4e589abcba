"""
The ``imageInference`` request for FLUX.1.1 [pro] (``bfl:2@1``), exactly as the API reference defines it.

Each field's ``description`` is the rule users see when they break it, so the limits live in one
place. Defaults are the API's own; :meth:`ImageInferenceRequest.to_wire` sends only what was set,
so a request pasted from the API reference round-trips to the same JSON object.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from airflow_provider_bfl.models._base import WireInt, WireModel, invalid_request
from airflow_provider_bfl.models.wire import MODEL_ID, DeliveryMethod, OutputFormat, OutputType

SEED_MAX = 2**63 - 1


def _is_uuid4(value: str) -> str:
    try:
        parsed = uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise ValueError("not a UUID") from None
    if parsed.version != 4 or parsed.variant != uuid.RFC_4122:
        raise ValueError(f"a UUID of version {parsed.version}, not 4")
    return str(parsed)


def _http_uri(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not an http:// or https:// URI")
    return value  # unchanged: presigned URLs must reach the API byte for byte


class SafetySettings(WireModel):
    check_content: bool = Field(False, alias="checkContent", description="true or false")
    mode: Literal["none", "fast"] = Field("none", alias="mode", description="'none' or 'fast'")


class BflSettings(WireModel):
    prompt_upsampling: bool = Field(False, alias="promptUpsampling", description="true or false")
    safety_tolerance: WireInt = Field(
        2, alias="safetyTolerance", ge=0, le=6, description="an integer from 0 (strictest) to 6"
    )


class ProviderSettings(WireModel):
    bfl: BflSettings = Field(default_factory=lambda: BflSettings(), alias="bfl", description="an object")


class ImageInferenceRequest(WireModel):
    """
    One generation task. Build it from wire names or Python names::

        ImageInferenceRequest(positivePrompt="a red bicycle", width=1024, height=768)
        ImageInferenceRequest(positive_prompt="a red bicycle", width=1024, height=768, seed=7)

    Invalid input raises :class:`~airflow_provider_bfl.exceptions.BflInvalidRequestError` naming
    every offending parameter, the value given and what is allowed.
    """

    task_type: Literal["imageInference"] = Field(
        "imageInference", alias="taskType", description="'imageInference'"
    )
    task_uuid: str = Field(
        default_factory=lambda: str(uuid.uuid4()),
        alias="taskUUID",
        description="a UUID v4 string, unique per task",
    )
    model: Literal["bfl:2@1"] = Field("bfl:2@1", alias="model", description=f"{MODEL_ID!r}")
    positive_prompt: str = Field(
        alias="positivePrompt", min_length=2, max_length=3000, description="a string of 2 to 3000 characters"
    )
    width: WireInt = Field(
        alias="width",
        ge=256,
        le=1440,
        multiple_of=32,
        description="an integer from 256 to 1440 in steps of 32",
    )
    height: WireInt = Field(
        alias="height",
        ge=256,
        le=1440,
        multiple_of=32,
        description="an integer from 256 to 1440 in steps of 32",
    )
    seed: WireInt | None = Field(
        None, alias="seed", ge=0, le=SEED_MAX, description=f"an integer from 0 to {SEED_MAX}"
    )
    number_results: WireInt = Field(
        1, alias="numberResults", ge=1, le=20, description="an integer from 1 to 20"
    )
    output_type: OutputType = Field("URL", alias="outputType", description="'URL', 'dataURI' or 'base64Data'")
    output_format: OutputFormat = Field("JPG", alias="outputFormat", description="'JPG', 'PNG' or 'WEBP'")
    output_quality: WireInt = Field(
        95, alias="outputQuality", ge=20, le=99, description="an integer from 20 to 99"
    )
    delivery_method: DeliveryMethod = Field("sync", alias="deliveryMethod", description="'sync' or 'async'")
    include_cost: bool = Field(False, alias="includeCost", description="true or false")
    ttl: WireInt | None = Field(
        None,
        alias="ttl",
        ge=60,
        description="an integer of at least 60 (seconds), only with outputType 'URL'",
    )
    webhook_url: str | None = Field(None, alias="webhookURL", description="an http:// or https:// URI")
    upload_endpoint: str | None = Field(
        None, alias="uploadEndpoint", description="an http:// or https:// URI"
    )
    safety: SafetySettings | None = Field(None, alias="safety", description="{checkContent, mode}")
    provider_settings: ProviderSettings | None = Field(
        None, alias="providerSettings", description="{bfl: {promptUpsampling, safetyTolerance}}"
    )

    @field_validator("task_uuid")
    @classmethod
    def _check_uuid(cls, value: str) -> str:
        return _is_uuid4(value)

    @field_validator("webhook_url", "upload_endpoint")
    @classmethod
    def _check_uri(cls, value: str | None) -> str | None:
        return None if value is None else _http_uri(value)

    @field_validator("ttl")
    @classmethod
    def _ttl_needs_url_output(cls, value: int | None, info: ValidationInfo) -> int | None:
        output_type = info.data.get("output_type", "URL")
        if value is not None and output_type != "URL":
            raise ValueError(f"ttl only applies when outputType is 'URL', not {output_type!r}")
        return value

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid_request(type(self), exc, _task_uuid_of(data)) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> ImageInferenceRequest:
        if isinstance(obj, cls):
            return obj
        if isinstance(obj, dict) and not kwargs:
            return cls(**obj)
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise invalid_request(cls, exc, _task_uuid_of(obj)) from None

    def to_wire(self) -> dict[str, Any]:
        """The JSON object to send: taskType, taskUUID and model, plus every field that was set."""
        sent = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        head = {"taskType": self.task_type, "taskUUID": self.task_uuid, "model": self.model}
        return {**head, **{key: value for key, value in sent.items() if key not in head}}

    @property
    def image_count(self) -> int:
        return self.number_results

    def with_task_uuid(self, task_uuid: str) -> ImageInferenceRequest:
        """The same request under another taskUUID (validated)."""
        return type(self).model_validate({**self.to_wire(), "taskUUID": task_uuid})


def _task_uuid_of(data: Any) -> str | None:
    if isinstance(data, dict):
        found = data.get("taskUUID", data.get("task_uuid"))
        return found if isinstance(found, str) else None
    return None
