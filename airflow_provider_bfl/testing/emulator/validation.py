"""Server-side validation of ``imageInference`` tasks for every FLUX model, per model.

It is deliberately independent of the provider's request classes (pydantic): the emulator plays the
server, so a client bug (a float width, a missing prompt, a stray field) must be caught here, with
the error code and ``parameter`` a real Runware server would send. Only the first problem of a task
is reported. The per-model *tables* (AIR ids, size lists and ranges, prompt limits, reference
counts, provider settings) are read from the model registry, so a model added in one file is also
served here; where the client leaves a rule to the server (a FLUX.2 reference count, its provider
settings), this server plays the value the sources suggest (``server_max_references``, the two
documented BFL settings), so the client's "the server judges" path is exercised too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_bfl.models import registry
from airflow_provider_bfl.models.spec import ModelSpec, SizeRange
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
INPUT_FIELDS = frozenset({"referenceImages"})
FLUX_1_1_PRO_SIZES = SizeRange(SIZE_MIN, SIZE_MAX, SIZE_STEP)
#: Size this server picks when a model lets both width and height be omitted (FLUX.2 [max]).
DEFAULT_SIZE = (1024, 1024)

_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.IGNORECASE)
_AIR_ID = re.compile(r"^[A-Za-z0-9_-]+:[0-9]+@[0-9]+$")


@dataclass(frozen=True)
class ReferenceImage:
    """One reference as received: its form, and for inline images a small thumbnail (for rendering)."""

    form: str  # "uuid", "url", "dataURI" or "base64"
    digest: str
    thumbnail: bytes | None = None


REFERENCE_MAX_BYTES = 20 * 1024 * 1024
_REFERENCE_DATA_URI = re.compile(r"^data:image/(png|jpeg|jpg|webp);base64,", re.IGNORECASE)


def parse_reference(value: Any) -> ReferenceImage | str:
    """A reference image as Runware takes it (UUID, http(s) URL, data URI, base64 PNG/JPG/WEBP), or why not."""
    if not isinstance(value, str) or not value:
        return "a reference image must be a non-empty string"
    if is_uuid4(value):
        return ReferenceImage("uuid", value)
    if _is_http_uri(value):
        return ReferenceImage("url", hashlib.sha256(value.encode()).hexdigest()[:16])
    form, data = "base64", value
    if value.lower().startswith("data:"):
        match = _REFERENCE_DATA_URI.match(value)
        if match is None:
            return "a data URI must be data:image/png|jpeg|webp;base64,..."
        form, data = "dataURI", value[match.end() :]
    if len(data) > REFERENCE_MAX_BYTES * 4 // 3 + 4:
        return "the image is too large"
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return "not a UUID, an http(s) URL, a data URI or base64 image data"
    thumbnail = _thumbnail(raw)
    if thumbnail is None:
        return "the image is not a PNG, JPG or WEBP file"
    return ReferenceImage(form, hashlib.sha256(raw).hexdigest()[:16], thumbnail)


def _thumbnail(raw: bytes) -> bytes | None:
    """A 96 px PNG of the image, or None when it is not a PNG/JPEG/WEBP this server can read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            if image.format not in ("PNG", "JPEG", "WEBP") or image.width * image.height > 50_000_000:
                return None
            image.thumbnail((96, 96))
            out = io.BytesIO()
            image.convert("RGB").save(out, format="PNG")
            return out.getvalue()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


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
    model: str = MODEL_ID
    references: tuple[ReferenceImage, ...] = ()
    raw_look: bool = False
    steps: int | None = None
    cfg_scale: float | None = None


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
    checker.reject_unknown(task, TOP_LEVEL_FIELDS | {"inputs", "steps", "CFGScale"}, "")

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
    model = checker.required("model", "string", f"model is required; this server serves {_served()}.")
    if not isinstance(model, str) or not _AIR_ID.match(model):
        checker.fail("model", "invalid", "string", f"model must be an AIR identifier such as {MODEL_ID}.")
    spec = registry.models().get(model)
    if spec is None:
        raise _Invalid(
            ApiError(
                code="unknownModel",
                message=f"Unknown model {model!r}; this server serves {_served()}.",
                parameter="model",
                type="string",
                task_type=TASK_TYPE,
                task_uuid=scope_uuid,
                allowed_values=list(registry.models()),
            )
        )
    checker.reject_unknown(task, _top_level_fields(spec), "", model)
    prompt = checker.required("positivePrompt", "string", "positivePrompt is required.")
    low, high = spec.prompt_length
    if not isinstance(prompt, str) or len(prompt) < low or (high is not None and len(prompt) > high):
        limits = f"{low} to {high}" if high is not None else f"at least {low}"
        checker.fail(
            "positivePrompt",
            "invalid",
            "string",
            f"Invalid value for positivePrompt parameter. It must be a string of {limits} characters.",
        )
    width, height = checker.size(spec)
    seed = checker.integer("seed", 0, SEED_MAX, None)
    providers = checker.obj(task, "providerSettings", PROVIDER_FIELDS, model)
    bfl_fields = spec.provider_fields if spec.provider_fields is not None else BFL_FIELDS
    bfl = _Checker(providers, scope_uuid, prefix="providerSettings.").obj(providers, "bfl", bfl_fields, model)
    bfl_checker = _Checker(bfl, scope_uuid, prefix="providerSettings.bfl.")
    upsampling = bfl_checker.boolean("promptUpsampling", False)
    tolerance = bfl_checker.integer("safetyTolerance", SAFETY_TOLERANCE_MIN, SAFETY_TOLERANCE_MAX, 2)
    raw_look = bfl_checker.boolean("raw", False)
    references = checker.references(task, spec)
    steps = cfg_scale = None
    if spec.sampling is not None:
        steps = checker.integer(
            "steps", spec.sampling.steps[0] or 1, spec.sampling.steps[1] or STEPS_MAX, None
        )
        cfg_scale = checker.number(
            "CFGScale", spec.sampling.cfg_scale[0] or 0.0, spec.sampling.cfg_scale[1] or CFG_MAX, None
        )
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
        model=model,
        references=references,
        raw_look=raw_look,
        steps=steps,
        cfg_scale=cfg_scale,
    )


#: What this server allows where the sources give no bound (FLUX.2 [flex] sampling): BFL's own API.
STEPS_MAX = 50
CFG_MAX = 20.0


def _served() -> str:
    return ", ".join(registry.models())


def _top_level_fields(spec: ModelSpec) -> frozenset[str]:
    fields = set(TOP_LEVEL_FIELDS)
    if spec.takes_references:
        fields.add("inputs")
    if spec.sampling is not None:
        fields.update({"steps", "CFGScale"})
    return frozenset(fields)


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

    def reject_unknown(
        self, source: Mapping[str, Any], known: frozenset[str] | set[str], prefix: str, model: str = MODEL_ID
    ) -> None:
        for key in source:
            if key not in known:
                raise _Invalid(
                    ApiError(
                        code="unknownParameter",
                        message=f"Unknown parameter {prefix + str(key)!r} for {model} imageInference.",
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

    def dimension(self, name: str, rule: SizeRange = FLUX_1_1_PRO_SIZES) -> int:
        value = self.required(name, "integer", f"{name} is required.")
        if not is_int(value) or not rule.low <= value <= rule.high or value % rule.step:
            self.fail(
                name,
                "invalid",
                "integer",
                f"Invalid value for {name} parameter. It must be an integer between {rule.low} and "
                f"{rule.high} in multiples of {rule.step}.",
            )
        result: int = value
        return result

    def size(self, spec: ModelSpec) -> tuple[int, int]:
        """Width and height by the model's rule: a range, or a closed list of pairs; both or neither."""
        given = [name for name in ("width", "height") if name in self._source]
        if spec.sizes_optional and not given:
            return DEFAULT_SIZE
        if spec.sizes_optional and len(given) == 1:
            missing = "height" if given == ["width"] else "width"
            self.fail(missing, "missing", "integer", "width and height must be used together.")
        if isinstance(spec.sizes, SizeRange):
            return self.dimension("width", spec.sizes), self.dimension("height", spec.sizes)
        width = self.required("width", "integer", "width is required.")
        height = self.required("height", "integer", "height is required.")
        if not is_int(width) or not is_int(height) or (width, height) not in spec.sizes:
            pairs = [f"{w}x{h}" for w, h in spec.sizes]
            raise _Invalid(
                ApiError(
                    code="invalidDimensions",
                    message=f"Invalid width and height for {spec.air}: use one of {', '.join(pairs)}.",
                    parameter=["width", "height"],
                    type="integer",
                    task_type=TASK_TYPE,
                    task_uuid=self._task_uuid,
                    allowed_values=pairs,
                )
            )
        return int(width), int(height)

    def number(self, name: str, low: float, high: float, default: float | None) -> float | None:
        def fail() -> None:
            self.fail(
                name,
                "invalid",
                "number",
                f"Invalid value for {name} parameter: a number between {low} and {high}.",
            )

        def accept(value: Any) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high

        value: float | None = self._optional(name, default, accept, fail)
        return value

    def references(self, task: Mapping[str, Any], spec: ModelSpec) -> tuple[ReferenceImage, ...]:
        """``inputs.referenceImages``: a list of UUIDs, URLs, data URIs or base64 PNG/JPG/WEBP images."""
        if not spec.takes_references:
            return ()
        inputs = self.obj(task, "inputs", INPUT_FIELDS, spec.air)
        if "referenceImages" not in inputs:
            return ()
        images = inputs["referenceImages"]
        limit = spec.max_references if spec.max_references is not None else spec.server_max_references
        checker = _Checker(inputs, self._task_uuid, prefix="inputs.")
        if not isinstance(images, list) or not images:
            checker.fail(
                "referenceImages",
                "invalid",
                "array",
                "inputs.referenceImages must be a non-empty array of images.",
            )
        if limit is not None and len(images) > limit:
            checker.fail(
                "referenceImages",
                "invalid",
                "array",
                f"Invalid value for inputs.referenceImages: {spec.air} takes at most {limit} reference images, got {len(images)}.",
            )
        parsed = []
        for index, image in enumerate(images):
            reference = parse_reference(image)
            if isinstance(reference, str):
                checker.fail(
                    "referenceImages", "invalid", "array", f"inputs.referenceImages[{index}]: {reference}"
                )
            else:
                parsed.append(reference)
        return tuple(parsed)

    def uri(self, name: str) -> str | None:
        def fail() -> None:
            self.fail(name, "invalid", "string", f"{name} must be an absolute http(s) URI.")

        value: str | None = self._optional(name, None, _is_http_uri, fail)
        return value

    def obj(
        self, source: Mapping[str, Any], name: str, known: frozenset[str], model: str = MODEL_ID
    ) -> Mapping[str, Any]:
        if name not in source:
            return {}
        value = source[name]
        if not isinstance(value, dict):
            self.fail(name, "invalid", "object", f"{self._prefix + name} must be an object.")
        self.reject_unknown(value, known, f"{self._prefix}{name}.", model)
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
