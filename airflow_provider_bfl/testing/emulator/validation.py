"""Server-side validation of ``imageInference`` tasks for ``bfl:2@1``, written from the model spec.

It is deliberately independent of the provider's own request models: the emulator plays the server,
so a client bug (a float width, a missing prompt, a stray field) must be caught here, with the error
code and ``parameter`` a real Runware server would send. Only the first problem of a task is reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_bfl.testing.emulator.config import MODEL_ID
from airflow_provider_bfl.testing.emulator.wire import ApiError, param_code

TASK_TYPE = "imageInference"
OUTPUT_TYPES = ("URL", "dataURI", "base64Data")
OUTPUT_FORMATS = ("JPG", "PNG", "WEBP")
DELIVERY_METHODS = ("sync", "async")
SAFETY_MODES = ("none", "fast")
SIZE_MIN, SIZE_MAX, SIZE_STEP = 256, 1440, 32
PROMPT_MIN, PROMPT_MAX = 2, 3000
QUALITY_MIN, QUALITY_MAX = 20, 99
RESULTS_MIN, RESULTS_MAX = 1, 20
TTL_MIN = 60
SEED_MAX = 2**63 - 1
SAFETY_TOLERANCE_MIN, SAFETY_TOLERANCE_MAX = 0, 6

TOP_LEVEL_FIELDS = frozenset(
    {
        "taskType",
        "taskUUID",
        "outputType",
        "outputFormat",
        "outputQuality",
        "webhookURL",
        "deliveryMethod",
        "uploadEndpoint",
        "safety",
        "ttl",
        "includeCost",
        "numberResults",
        "model",
        "positivePrompt",
        "width",
        "height",
        "seed",
        "providerSettings",
    }
)
SAFETY_FIELDS = frozenset({"checkContent", "mode"})
PROVIDER_FIELDS = frozenset({"bfl"})
BFL_FIELDS = frozenset({"promptUpsampling", "safetyTolerance"})

_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.IGNORECASE)
_AIR_ID = re.compile(r"^[A-Za-z0-9_-]+:[0-9]+@[0-9]+$")


@dataclass(frozen=True)
class ImageRequest:
    """A validated imageInference task with every default applied."""

    task_uuid: str
    prompt: str
    width: int
    height: int
    seed: int | None
    number_results: int
    output_type: str
    output_format: str
    output_quality: int
    delivery_method: str
    webhook_url: str | None
    upload_endpoint: str | None
    check_content: bool
    safety_mode: str
    ttl: int | None
    include_cost: bool
    prompt_upsampling: bool
    safety_tolerance: int
    raw: Mapping[str, Any]


class _Invalid(Exception):
    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def is_uuid4(value: Any) -> bool:
    return isinstance(value, str) and _UUID4.match(value) is not None


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_image_inference(task: Mapping[str, Any]) -> ImageRequest | ApiError:
    """Return the validated request, or the first error as a Runware error item."""
    try:
        return _validate(task)
    except _Invalid as invalid:
        return invalid.error


def _validate(task: Mapping[str, Any]) -> ImageRequest:
    raw_uuid = task.get("taskUUID")
    scope_uuid = raw_uuid if isinstance(raw_uuid, str) else None
    checker = _Checker(task, scope_uuid)
    if "taskUUID" not in task:
        checker.fail("taskUUID", "missing", "string", "taskUUID is required (a UUID v4 string).")
    if not is_uuid4(raw_uuid):
        checker.fail("taskUUID", "invalid", "string", "taskUUID must be a UUID v4 string.")
    checker.reject_unknown(task, TOP_LEVEL_FIELDS, "")

    output_type = checker.choice("outputType", OUTPUT_TYPES, "URL")
    output_format = checker.choice("outputFormat", OUTPUT_FORMATS, "JPG")
    quality = checker.integer("outputQuality", QUALITY_MIN, QUALITY_MAX, 95)
    webhook_url = checker.uri("webhookURL")
    delivery = checker.choice("deliveryMethod", DELIVERY_METHODS, "sync")
    upload_endpoint = checker.uri("uploadEndpoint")
    safety = checker.obj(task, "safety", SAFETY_FIELDS)
    safety_checker = _Checker(safety, scope_uuid, prefix="safety.")
    check_content = safety_checker.boolean("checkContent", False)
    safety_mode = safety_checker.choice("mode", SAFETY_MODES, "none")
    ttl = checker.integer("ttl", TTL_MIN, None, None)
    if ttl is not None and output_type != "URL":
        raise _Invalid(
            ApiError(
                code="incompatibleParameters",
                message="ttl only applies when outputType is URL.",
                parameter=["ttl", "outputType"],
                task_type=TASK_TYPE,
                task_uuid=scope_uuid,
            )
        )
    include_cost = checker.boolean("includeCost", False)
    number_results = checker.integer("numberResults", RESULTS_MIN, RESULTS_MAX, 1)
    model = checker.required("model", "string", f"model is required; this server serves {MODEL_ID}.")
    if not isinstance(model, str) or not _AIR_ID.match(model):
        checker.fail("model", "invalid", "string", f"model must be an AIR identifier such as {MODEL_ID}.")
    if model != MODEL_ID:
        raise _Invalid(
            ApiError(
                code="unknownModel",
                message=f"Unknown model {model!r}; this server serves {MODEL_ID}.",
                parameter="model",
                type="string",
                task_type=TASK_TYPE,
                task_uuid=scope_uuid,
                allowed_values=[MODEL_ID],
            )
        )
    prompt = checker.required("positivePrompt", "string", "positivePrompt is required.")
    if not isinstance(prompt, str) or not PROMPT_MIN <= len(prompt) <= PROMPT_MAX:
        checker.fail(
            "positivePrompt",
            "invalid",
            "string",
            f"Invalid value for positivePrompt parameter. It must be a string of "
            f"{PROMPT_MIN} to {PROMPT_MAX} characters.",
        )
    width = checker.dimension("width")
    height = checker.dimension("height")
    seed = checker.integer("seed", 0, SEED_MAX, None)
    providers = checker.obj(task, "providerSettings", PROVIDER_FIELDS)
    bfl = _Checker(providers, scope_uuid, prefix="providerSettings.").obj(providers, "bfl", BFL_FIELDS)
    bfl_checker = _Checker(bfl, scope_uuid, prefix="providerSettings.bfl.")
    upsampling = bfl_checker.boolean("promptUpsampling", False)
    tolerance = bfl_checker.integer("safetyTolerance", SAFETY_TOLERANCE_MIN, SAFETY_TOLERANCE_MAX, 2)
    assert isinstance(raw_uuid, str) and isinstance(prompt, str)
    return ImageRequest(
        task_uuid=raw_uuid,
        prompt=prompt,
        width=width,
        height=height,
        seed=seed,
        number_results=number_results if number_results is not None else 1,
        output_type=output_type,
        output_format=output_format,
        output_quality=quality if quality is not None else 95,
        delivery_method=delivery,
        webhook_url=webhook_url,
        upload_endpoint=upload_endpoint,
        check_content=check_content,
        safety_mode=safety_mode,
        ttl=ttl,
        include_cost=include_cost,
        prompt_upsampling=upsampling,
        safety_tolerance=tolerance if tolerance is not None else 2,
        raw=dict(task),
    )


class _Checker:
    """Field checks over one (possibly nested) object; failures raise ``_Invalid``."""

    def __init__(self, source: Mapping[str, Any], task_uuid: str | None, prefix: str = "") -> None:
        self._source = source
        self._task_uuid = task_uuid
        self._prefix = prefix

    def fail(
        self, name: str, kind: str, type_name: str, message: str, allowed: list[Any] | None = None
    ) -> None:
        parameter = self._prefix + name
        raise _Invalid(
            ApiError(
                code=param_code(kind, name),
                message=message,
                parameter=parameter,
                type=type_name,
                task_type=TASK_TYPE,
                task_uuid=self._task_uuid,
                allowed_values=allowed,
            )
        )

    def reject_unknown(self, source: Mapping[str, Any], known: frozenset[str], prefix: str) -> None:
        for key in source:
            if key not in known:
                raise _Invalid(
                    ApiError(
                        code="unknownParameter",
                        message=f"Unknown parameter {prefix + str(key)!r} for {MODEL_ID} imageInference.",
                        parameter=prefix + str(key),
                        task_type=TASK_TYPE,
                        task_uuid=self._task_uuid,
                    )
                )

    def required(self, name: str, type_name: str, message: str) -> Any:
        if name not in self._source:
            self.fail(name, "missing", type_name, message)
        return self._source[name]

    def _optional(
        self, name: str, default: Any, accept: Callable[[Any], bool], fail: Callable[[], None]
    ) -> Any:
        if name not in self._source:
            return default
        value = self._source[name]
        if not accept(value):
            fail()
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        def fail() -> None:
            self.fail(
                name, "invalid", "string", f"{name} must be one of {', '.join(allowed)}.", list(allowed)
            )

        value: str = self._optional(name, default, lambda v: isinstance(v, str) and v in allowed, fail)
        return value

    def boolean(self, name: str, default: bool) -> bool:
        def fail() -> None:
            self.fail(name, "invalid", "boolean", f"{name} must be a boolean (true or false).")

        value: bool = self._optional(name, default, lambda v: isinstance(v, bool), fail)
        return value

    def integer(self, name: str, low: int, high: int | None, default: int | None) -> int | None:
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"

        def fail() -> None:
            self.fail(name, "invalid", "integer", f"Invalid value for {name} parameter: an integer {bounds}.")

        def accept(value: Any) -> bool:
            return is_int(value) and value >= low and (high is None or value <= high)

        value: int | None = self._optional(name, default, accept, fail)
        return value

    def dimension(self, name: str) -> int:
        value = self.required(name, "integer", f"{name} is required.")
        if not is_int(value) or not SIZE_MIN <= value <= SIZE_MAX or value % SIZE_STEP:
            self.fail(
                name,
                "invalid",
                "integer",
                f"Invalid value for {name} parameter. It must be an integer between {SIZE_MIN} and "
                f"{SIZE_MAX} in multiples of {SIZE_STEP}.",
            )
        result: int = value
        return result

    def uri(self, name: str) -> str | None:
        def fail() -> None:
            self.fail(name, "invalid", "string", f"{name} must be an absolute http(s) URI.")

        value: str | None = self._optional(name, None, _is_http_uri, fail)
        return value

    def obj(self, source: Mapping[str, Any], name: str, known: frozenset[str]) -> Mapping[str, Any]:
        if name not in source:
            return {}
        value = source[name]
        if not isinstance(value, dict):
            self.fail(name, "invalid", "object", f"{self._prefix + name} must be an object.")
        self.reject_unknown(value, known, f"{self._prefix}{name}.")
        result: Mapping[str, Any] = value
        return result


def _is_http_uri(value: Any) -> bool:
    if not isinstance(value, str) or any(ch.isspace() for ch in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)
