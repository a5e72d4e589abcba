"""
The pydantic request classes the registry hands out, built from the plain model specs.

:func:`build_request_class` turns a :class:`~airflow_provider_bfl.models.spec.ModelSpec` into its
request class (read as the spec's ``request_class``), a subclass of
:class:`~airflow_provider_bfl.models.request.ImageInferenceRequest` (every model is an
``imageInference`` task with the same platform fields), so the hook, the plan and the operator
handle every model through one type. :class:`UnknownModelRequest` is the escape hatch for a model
the registry does not list. Building a class takes milliseconds, so this module is imported when
a request is validated, never by a DAG file's imports alone.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable
from typing import Any, Literal, cast

from pydantic import ConfigDict, Field, ValidationInfo, create_model, field_validator

from airflow_provider_bfl.models._base import WireInt, WireModel
from airflow_provider_bfl.models.request import BflSettings, ImageInferenceRequest, ProviderSettings
from airflow_provider_bfl.models.spec import (
    BASE_BFL_FIELDS,
    REFERENCES_FIELD,
    ModelSpec,
    Sampling,
    SizeRange,
)

_DATA_URI = re.compile(r"^data:image/(png|jpeg|jpg|webp);base64,(?P<data>.+)$", re.IGNORECASE | re.DOTALL)
_STORAGE_URI = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


class UnknownModelRequest(ImageInferenceRequest):
    """The escape hatch: a model the registry does not list; platform fields checked, the rest passed through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(alias="model", description="an AIR id the provider does not know yet")  # type: ignore[assignment]
    positive_prompt: str = Field(alias="positivePrompt", min_length=1, description="a non-empty string")
    width: WireInt | None = Field(None, alias="width", description="an integer")  # type: ignore[assignment]
    height: WireInt | None = Field(None, alias="height", description="an integer")  # type: ignore[assignment]
    provider_settings: dict[str, Any] | None = Field(  # type: ignore[assignment]
        None, alias="providerSettings", description="an object"
    )

    def to_wire(self) -> dict[str, Any]:
        return {**super().to_wire(), **(self.model_extra or {})}


def _reference_image(value: Any) -> str:
    """One reference as the API takes it (UUID, http(s) URL, data URI, base64) or a storage URI the provider inlines."""
    if not isinstance(value, str) or not value:
        raise ValueError("a reference image is a non-empty string")
    if value.lower().startswith("data:"):
        match = _DATA_URI.match(value)
        if match is None:
            raise ValueError("a data URI reference must be data:image/png|jpeg|webp;base64,...")
        _decodes(match["data"])
        return value
    if _STORAGE_URI.match(
        value
    ):  # http(s) goes to the API as is; file://, s3://... are inlined before sending
        return value
    try:
        uuid.UUID(value)
        return value
    except ValueError:
        pass
    if len(value) < 64:
        raise ValueError("not a UUID, a URL, a data URI or base64 image data")
    _decodes(value)
    return value


def _decodes(data: str) -> None:
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64 image data") from None


def _reference_inputs(spec_air: str, max_references: int | None) -> type[WireModel]:
    limit = "" if max_references is None else f"at most {max_references} "
    description = (
        f"{limit}images, each a UUID, an http(s) URL, a data URI or base64 (PNG, JPG or WEBP)"
        if limit
        else "images, each a UUID, an http(s) URL, a data URI or base64 (PNG, JPG or WEBP); the count is the server's call"
    )
    constraints: dict[str, Any] = {} if max_references is None else {"max_length": max_references}
    inputs = create_model(
        f"ReferenceInputs_{_slug(spec_air)}",
        __base__=WireModel,
        __validators__={"_each": field_validator("reference_images")(_each_reference)},
        reference_images=(
            list[str] | None,
            Field(None, alias="referenceImages", description=description, **constraints),
        ),
    )
    return cast(type[WireModel], inputs)


def _each_reference(cls: Any, value: list[str] | None) -> list[str] | None:
    return None if value is None else [_reference_image(item) for item in value]


class OpenBflSettings(BflSettings):
    """``providerSettings.bfl`` where the model's settings are not confirmed: known ones typed, others passed to the server."""

    model_config = ConfigDict(extra="allow")


class UltraBflSettings(BflSettings):
    raw: bool = Field(False, alias="raw", description="true or false")


def _provider_class(spec: ModelSpec) -> type[ProviderSettings]:
    fields = spec.provider_fields
    if fields == BASE_BFL_FIELDS:
        return ProviderSettings
    bfl_class: type[BflSettings]
    if fields is None:
        bfl_class = OpenBflSettings
    elif fields == BASE_BFL_FIELDS | {"raw"}:
        bfl_class = UltraBflSettings
    else:
        raise ValueError(f"{spec.air}: no settings class for providerSettings.bfl fields {sorted(fields)}")
    described = "{bfl: {...}}" if fields is None else "{bfl: {" + ", ".join(sorted(fields)) + "}}"
    built = create_model(
        f"ProviderSettings_{_slug(spec.air)}",
        __base__=ProviderSettings,
        bfl=(bfl_class, Field(default_factory=bfl_class, alias="bfl", description=described)),
    )
    return cast(type[ProviderSettings], built)


def build_request_class(spec: ModelSpec) -> type[ImageInferenceRequest]:
    """The pydantic request class of ``spec``: ImageInferenceRequest with this model's rules."""
    low, high = spec.prompt_length
    prompt_text = (
        f"a string of {low} to {high} characters" if high else f"a string of at least {low} characters"
    )
    fields: dict[str, Any] = {
        "model": (Literal[spec.air], Field(spec.air, alias="model", description=repr(spec.air))),
        "positive_prompt": (
            str,
            Field(alias="positivePrompt", min_length=low, max_length=high, description=prompt_text),
        ),
    }
    size_type: Any = WireInt | None if spec.sizes_optional else WireInt
    size_default: Any = None if spec.sizes_optional else ...
    validate_default = spec.sizes_optional  # "both or neither" must see a missing height too
    if isinstance(spec.sizes, SizeRange):
        rule = spec.sizes
        for name in ("width", "height"):
            fields[name] = (
                size_type,
                Field(
                    size_default,
                    alias=name,
                    ge=rule.low,
                    le=rule.high,
                    multiple_of=rule.step,
                    description=rule.describe()
                    + (" (with the other, or neither)" if spec.sizes_optional else ""),
                    validate_default=validate_default and name == "height",
                ),
            )
    else:
        pairs = spec.sizes
        fields["width"] = (
            size_type,
            Field(
                size_default,
                alias="width",
                description="one of " + ", ".join(sorted({str(w) for w, _ in pairs}, key=int)),
            ),
        )
        fields["height"] = (
            size_type,
            Field(
                size_default,
                alias="height",
                description="with width, one of " + ", ".join(f"{w}x{h}" for w, h in pairs),
                validate_default=validate_default,
            ),
        )
    if spec.takes_references:
        inputs = _reference_inputs(spec.air, spec.max_references)
        fields[REFERENCES_FIELD] = (
            inputs | None,
            Field(None, alias=REFERENCES_FIELD, description="{referenceImages: [...]}"),
        )
    if spec.sampling is not None:
        (s_low, s_high), (c_low, c_high) = spec.sampling.steps, spec.sampling.cfg_scale
        steps, cfg_scale = Sampling.FIELDS["steps"], Sampling.FIELDS["cfg_scale"]
        fields["steps"] = (
            WireInt | None,
            Field(None, alias=steps, ge=s_low, le=s_high, description=_bounds("an integer", s_low, s_high)),
        )
        fields["cfg_scale"] = (
            float | None,
            Field(None, alias=cfg_scale, ge=c_low, le=c_high, description=_bounds("a number", c_low, c_high)),
        )
    provider = _provider_class(spec)
    if provider is not ProviderSettings:
        fields["provider_settings"] = (
            provider | None,
            Field(None, alias="providerSettings", description="{bfl: {...}}"),
        )
    validators = {"_size_rule": field_validator("width", "height")(_size_checker(spec))}
    built = create_model(
        f"Request_{_slug(spec.air)}",
        __base__=ImageInferenceRequest,
        __validators__=validators,
        __doc__=f"An ``imageInference`` request for {spec.name} (``{spec.air}``).",
        **fields,
    )
    return cast(type[ImageInferenceRequest], built)


def _bounds(kind: str, low: float | None, high: float | None) -> str:
    if low is None and high is None:
        return f"{kind} (its range is the server's call)"
    if high is None:
        return f"{kind} of at least {low}"
    if low is None:
        return f"{kind} up to {high}"
    return f"{kind} from {low} to {high}"


def _size_checker(spec: ModelSpec) -> Callable[[Any, Any, ValidationInfo], Any]:
    pairs = None if isinstance(spec.sizes, SizeRange) else spec.sizes

    def check(cls: Any, value: int | None, info: ValidationInfo) -> int | None:
        if info.field_name == "width":
            if value is not None and pairs is not None and value not in {w for w, _ in pairs}:
                raise ValueError(f"{value} is not the width of an allowed size")
            return value
        width = info.data.get("width")
        if spec.sizes_optional and (value is None) != (width is None) and "width" in info.data:
            raise ValueError("width and height go together: give both, or neither")
        if pairs is not None and value is not None and width is not None and (width, value) not in pairs:
            raise ValueError(f"{width}x{value} is not one of the allowed sizes")
        return value

    return check


def _slug(air: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", air)
