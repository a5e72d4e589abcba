"""Runtime knobs of the emulator, kept in one validated object so Python and HTTP callers share rules.

Every UNCONFIRMED item of the Runware protocol is a knob here, so tests can make the emulator play each
variant a real server might send.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

MODEL_ID = "bfl:2@1"
"""The only model this emulator serves: FLUX.1.1 [pro] on Runware."""

UnknownTaskMode = Literal["error", "empty"]
ProcessingWord = Literal["processing", "pending"]
AsyncErrorShape = Literal["item", "envelope"]
ImageCorruption = Literal["none", "html", "garbage", "truncated"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "unknown_task_mode": ("error", "empty"),
    "processing_status_word": ("processing", "pending"),
    "async_error_shape": ("item", "envelope"),
    "image_corruption": ("none", "html", "garbage", "truncated"),
}
_NON_NEGATIVE = {"latency", "cost_per_image", "delivery_backoff", "initial_balance"}
_POSITIVE = {"default_ttl", "result_retention", "delivery_timeout"}


@dataclass
class EmulatorConfig:
    """Behaviour switches; read on every request, so changes apply to the next request."""

    api_key: str = "test-key"
    latency: float = 0.0
    """Seconds from acceptance until the last image of a task is ready."""
    nsfw_marker: str = "nsfw"
    """Prompt substring that yields ``NSFWContent: true`` when ``safety.checkContent`` is on."""
    fail_marker: str = "fail-marker"
    """Prompt substring that makes the task fail with ``processingFailed`` (not billed)."""
    moderation_marker: str = "moderation-marker"
    """Prompt substring that makes the task fail with ``contentPolicyViolation`` (not billed)."""
    blank_prompt_marker: str = "blank"
    """Prompt substring that renders uniform (blank) images, for image QA tests."""
    cost_per_image: float = 0.04
    default_ttl: float = 3600.0
    """Seconds an ``imageURL`` stays downloadable when the request has no ``ttl``."""
    result_retention: float = 86400.0
    """Seconds after completion that getResponse still knows a task (then ``taskExpired``)."""
    unknown_task_mode: UnknownTaskMode = "error"
    processing_status_word: ProcessingWord = "processing"
    async_error_shape: AsyncErrorShape = "item"
    legacy_error_key: bool = False
    data_as_object: bool = False
    max_tasks_per_request: int | None = None
    """Tasks allowed in one POST; ``None`` means unlimited (the real limit is undocumented)."""
    initial_balance: float = 1000.0
    """Account balance reported by accountManagement before anything is billed."""
    delivery_attempts: int = 4
    """Attempts per webhook POST / upload PUT before giving up (non-2xx or connection error)."""
    delivery_backoff: float = 0.2
    """Seconds before the first delivery retry; doubles on each further retry."""
    delivery_timeout: float = 5.0
    image_corruption: ImageCorruption = "none"
    """What ``GET /images/...`` serves instead of the image: ``html`` (an error page, 200 text/html),
    ``garbage`` (non-image bytes under the image's Content-Type) or ``truncated`` (its first half)."""
    image_extra_bytes: int = 0
    """Zero bytes appended to every served image (declared in Content-Length): oversized bodies."""
    lose_uploads: int = 0
    """How many of the next upload PUTs are silently never sent (an upload that never arrives)."""

    def update(self, **changes: Any) -> None:
        """Validate every change first, then apply them all (all-or-nothing)."""
        checked = {name: _check(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(EmulatorConfig))


def _check(name: str, value: Any) -> Any:
    if name not in FIELD_NAMES:
        raise ValueError(f"unknown emulator setting {name!r}")
    default = getattr(EmulatorConfig, name, None)
    if name in _CHOICES:
        if value not in _CHOICES[name]:
            raise ValueError(f"{name} must be one of {_CHOICES[name]}, got {value!r}")
        return value
    if name in ("image_extra_bytes", "lose_uploads"):
        if not _is_int(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        return value
    if name == "max_tasks_per_request":
        if value is not None and (not _is_int(value) or value < 1):
            raise ValueError("max_tasks_per_request must be a positive integer or None")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a boolean, got {value!r}")
        return value
    if isinstance(default, int):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if (name in _NON_NEGATIVE and value < 0) or (name in _POSITIVE and value <= 0):
            raise ValueError(f"{name} out of range: {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    if name == "api_key" and not value:
        raise ValueError("api_key must not be empty")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
