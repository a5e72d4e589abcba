"""
What the QA step checks, how hard it reacts, and the thresholds: one validated, immutable object.

Policies, from most to least severe:

- ``"fail"``: the task fails once every image was evaluated, naming each image, check and reason.
  The default for problems that are almost always systematic (a storage, landing or request bug that
  hits every image): ``decodes``, ``format``, ``dimensions``. Stopping loudly beats publishing a
  batch of broken files.
- ``"quarantine"``: the object is moved aside (see :mod:`airflow_provider_bfl.qa.storage`) and
  the task goes on. The default for per-image content problems whose bytes are worth keeping for
  a human or an audit: ``nsfw``, ``not_blank``, ``file_size``.
- ``"skip"``: the image is left where it is but dropped from the passing list. The default for
  ``near_duplicate``: the copy is a fine image, it just must not be published twice.
- ``"off"``: the check does not run.

Threshold defaults were measured on the bundled emulator (synthetic gradients, the least varied
images the provider sees) and sized for 256..1440 px outputs; see each field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast

from airflow_provider_bfl.qa.errors import QAInputError
from airflow_provider_bfl.qa.imaging import HASH_BITS

Policy = Literal["fail", "quarantine", "skip", "off"]

#: Every check, in the order it runs and is reported.
CHECKS: tuple[str, ...] = (
    "decodes",
    "format",
    "dimensions",
    "not_blank",
    "file_size",
    "nsfw",
    "near_duplicate",
)
#: Policies from most to least severe; an image failing several checks gets the most severe one.
POLICIES: tuple[Policy, ...] = ("fail", "quarantine", "skip", "off")

DEFAULT_POLICIES: Mapping[str, Policy] = {
    "decodes": "fail",
    "format": "fail",
    "dimensions": "fail",
    "not_blank": "quarantine",
    "file_size": "quarantine",
    "nsfw": "quarantine",
    "near_duplicate": "skip",
}

#: Emulator images never go below 13 (largest per-channel stddev, 600 seeds); blank ones are 0.
DEFAULT_MIN_STDDEV = 4.0
#: Emulator images top out near 0.67 of pixels in one colour bucket; blank ones are 1.0.
DEFAULT_MAX_DOMINANT_SHARE = 0.97
#: Below 1 KiB no 256 px image with content exists (a 256 px emulator WEBP is ~3.5 KB).
DEFAULT_MIN_BYTES = 1024
#: 1.5x an incompressible RGBA PNG of the largest registered output (FLUX1.1 [pro] Ultra's 2368x1792,
#: 17 MB; a test ties this to the registry): anything bigger is not one of our outputs.
DEFAULT_MAX_BYTES = 25 * 1024 * 1024
#: Of 128 dHash bits: re-encodes and resizes land at 0..3, distinct emulator images at 19 or more.
DEFAULT_MAX_DUPLICATE_DISTANCE = 10


@dataclass(frozen=True)
class QAConfig:
    """
    Settings for :func:`~airflow_provider_bfl.qa.evaluate` and :func:`~airflow_provider_bfl.qa.apply_policies`.

    :param policies: per-check policy overrides; checks not named keep :data:`DEFAULT_POLICIES`.
    :param min_stddev: ``not_blank`` fails when the largest per-channel (R, G, B) standard deviation
        is below this (0..255). Per channel, not grayscale: two colours of equal brightness are a
        real picture, not a blank one.
    :param max_dominant_share: ``not_blank`` fails when more than this share of pixels falls into
        one colour bucket (16 levels per channel): catches a flat frame with a small mark on it.
    :param min_bytes: ``file_size`` fails below this many bytes.
    :param max_bytes: ``file_size`` fails above this many bytes.
    :param max_duplicate_distance: ``near_duplicate`` fails when the 128-bit difference hash of an
        image is within this Hamming distance of an earlier image in the batch.
    :param quarantine_prefix: where quarantined objects go (a URI or local path); by default a
        ``quarantine`` folder next to the landing root (see :mod:`airflow_provider_bfl.qa.storage`).
    :param conn_id: Airflow connection for the object store (``None``: the store's default).
    """

    policies: Mapping[str, Policy] = field(default_factory=dict)
    min_stddev: float = DEFAULT_MIN_STDDEV
    max_dominant_share: float = DEFAULT_MAX_DOMINANT_SHARE
    min_bytes: int = DEFAULT_MIN_BYTES
    max_bytes: int = DEFAULT_MAX_BYTES
    max_duplicate_distance: int = DEFAULT_MAX_DUPLICATE_DISTANCE
    quarantine_prefix: str | None = None
    conn_id: str | None = None

    def __post_init__(self) -> None:
        # Frozen, so normalise through object.__setattr__: every check ends up with a policy.
        object.__setattr__(self, "policies", {**DEFAULT_POLICIES, **_validated_policies(self.policies)})
        _require_number("min_stddev", self.min_stddev, 0.0, 255.0)
        _require_number("max_dominant_share", self.max_dominant_share, 0.0, 1.0)
        _require_number("min_bytes", self.min_bytes, 0, None, integer=True)
        _require_number("max_bytes", self.max_bytes, 1, None, integer=True)
        if self.min_bytes > self.max_bytes:
            raise QAInputError(
                f"min_bytes ({self.min_bytes}) is larger than max_bytes ({self.max_bytes})",
                parameter=("min_bytes", "max_bytes"),
            )
        _require_number("max_duplicate_distance", self.max_duplicate_distance, 0, HASH_BITS, integer=True)
        for name in ("quarantine_prefix", "conn_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise QAInputError(
                    f"{name}: got {value!r}; expected a non-empty string or None", parameter=name
                )

    def policy(self, check: str) -> Policy:
        return self.policies[check]

    def enabled(self, check: str) -> bool:
        return self.policies[check] != "off"

    @classmethod
    def from_kwargs(cls, *, policies: Mapping[str, Policy] | None = None, **kwargs: Any) -> QAConfig:
        """
        A config from flat keywords: ``nsfw="skip"`` is shorthand for ``policies={"nsfw": "skip"}``.

        Naming a check both ways is refused (even with equal values) so a DAG never carries two
        sources of truth for one policy.
        """
        settings = {f.name for f in fields(cls)} - {"policies"}
        merged: dict[str, Any] = dict(policies or {})
        options: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key not in CHECKS and key not in settings:
                raise QAInputError(
                    f"Unknown QA setting {key!r}. Expected a check ({', '.join(CHECKS)}) or one of: "
                    f"{', '.join(sorted(settings))}",
                    parameter=key,
                )
            if value is None:  # "not given": the operator passes every keyword it has
                continue
            if key not in CHECKS:
                options[key] = value
            elif key in merged:
                raise QAInputError(
                    f"The policy of {key!r} is given twice (as {key}= and in policies=); keep one",
                    parameter=key,
                )
            else:
                merged[key] = value
        return cls(policies=merged, **options)


def _validated_policies(policies: Any) -> dict[str, Policy]:
    if not isinstance(policies, Mapping):
        raise QAInputError(
            f"policies: got {policies!r:.100}; expected a mapping of check name to policy",
            parameter="policies",
        )
    validated: dict[str, Policy] = {}
    for check, policy in policies.items():
        if check not in CHECKS:
            raise QAInputError(
                f"Unknown QA check {check!r}. Expected one of: {', '.join(CHECKS)}", parameter="policies"
            )
        if policy not in POLICIES:
            raise QAInputError(
                f"Policy of {check!r}: got {policy!r}; expected one of: {', '.join(POLICIES)}",
                parameter=check,
            )
        validated[check] = cast(Policy, policy)
    return validated


def _require_number(name: str, value: Any, low: float, high: float | None, *, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    allowed = f"{'an integer' if integer else 'a number'} from {low}" + (
        f" to {high}" if high is not None else " up"
    )
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or value < low
        or (high is not None and value > high)
    ):
        raise QAInputError(f"{name}: got {value!r}; allowed: {allowed}", parameter=name)
