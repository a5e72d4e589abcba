"""
The checks: small pure functions from measured facts (and thresholds) to a :class:`CheckResult`.

None of them reads storage or decodes anything: :mod:`airflow_provider_bfl.qa.imaging` measured the
image once, so each check is cheap, testable with plain values, and reports *why* in its detail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from airflow_provider_bfl.qa.config import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DOMINANT_SHARE,
    DEFAULT_MAX_DUPLICATE_DISTANCE,
    DEFAULT_MIN_BYTES,
    DEFAULT_MIN_STDDEV,
)
from airflow_provider_bfl.qa.imaging import HASH_BITS, ImageFacts, hamming

#: Pillow's name for each outputFormat the API accepts.
PILLOW_FORMATS = {"JPG": "JPEG", "JPEG": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}


class CheckResult(NamedTuple):
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


def decodes(facts: ImageFacts) -> CheckResult:
    """The whole file decodes: a header that parses is not enough (truncated uploads parse)."""
    if facts.error is not None:
        return CheckResult(False, facts.error)
    return CheckResult(True, f"{facts.format} {facts.width}x{facts.height}")


def format_matches(facts: ImageFacts, requested_format: str) -> CheckResult:
    """The decoded format is the requested ``outputFormat`` (``JPG`` and ``JPEG`` are one format)."""
    expected = PILLOW_FORMATS.get(requested_format.upper(), requested_format.upper())
    if facts.format != expected:
        return CheckResult(False, f"decoded format {facts.format}, requested {requested_format}")
    return CheckResult(True, f"{facts.format} as requested")


def dimensions(facts: ImageFacts, requested_width: int, requested_height: int) -> CheckResult:
    """The decoded size is exactly the requested width x height (from the header when not decoded)."""
    measured = f"{facts.width}x{facts.height}"
    requested = f"{requested_width}x{requested_height}"
    if (facts.width, facts.height) != (requested_width, requested_height):
        how = "decoded" if facts.decoded else "not decoded, the header declares"
        return CheckResult(False, f"{how} {measured}, requested {requested}")
    return CheckResult(True, f"{measured} as requested")


def not_blank(
    facts: ImageFacts,
    min_stddev: float = DEFAULT_MIN_STDDEV,
    max_dominant_share: float = DEFAULT_MAX_DOMINANT_SHARE,
) -> CheckResult:
    """Not a uniform or near-uniform frame (a failed render, a safety-blacked image)."""
    measured = f"stddev {facts.stddev:.1f}, dominant colour {facts.dominant_share:.0%}"
    if facts.stddev < min_stddev:
        return CheckResult(False, f"near-uniform: {measured} (stddev below {min_stddev:g})")
    if facts.dominant_share > max_dominant_share:
        return CheckResult(
            False, f"near-uniform: {measured} (dominant colour above {max_dominant_share:.0%})"
        )
    return CheckResult(True, measured)


def file_size(
    size: int, min_bytes: int = DEFAULT_MIN_BYTES, max_bytes: int = DEFAULT_MAX_BYTES
) -> CheckResult:
    """The stored object's size is plausible for a 256..1440 px image."""
    if size < min_bytes:
        return CheckResult(False, f"{size} bytes, below the minimum of {min_bytes}")
    if size > max_bytes:
        return CheckResult(False, f"{size} bytes, above the maximum of {max_bytes}")
    return CheckResult(True, f"{size} bytes")


def nsfw(record: Mapping[str, Any]) -> CheckResult:
    """The API's safety check did not flag the image (absent when ``safety.checkContent`` was off)."""
    flagged = record.get("NSFWContent")
    if flagged is True:
        return CheckResult(False, "flagged NSFWContent by the API's safety check")
    if flagged is None:
        return CheckResult(True, "not checked (safety.checkContent was off)")
    return CheckResult(True, "not flagged by the API's safety check")


def near_duplicates(
    hashes: Sequence[int | None],
    labels: Sequence[str],
    max_distance: int = DEFAULT_MAX_DUPLICATE_DISTANCE,
) -> list[CheckResult | None]:
    """
    Per image of a batch, whether it repeats an earlier one (``None`` for images without a hash).

    The first member of a group of near-duplicates passes; each later member fails and names the
    closest earlier image (the earliest on a tie) and the Hamming distance between their hashes.
    """
    results: list[CheckResult | None] = []
    for index, current in enumerate(hashes):
        if current is None:
            results.append(None)
            continue
        earlier = [
            (hamming(current, other), position)
            for position, other in enumerate(hashes[:index])
            if other is not None
        ]
        distance, position = min(earlier, default=(HASH_BITS + 1, -1))
        if distance <= max_distance:
            results.append(
                CheckResult(
                    False,
                    f"near-duplicate of {labels[position]} (Hamming distance {distance}/{HASH_BITS}, "
                    f"threshold {max_distance})",
                )
            )
        elif position < 0:
            results.append(CheckResult(True, "no earlier image to compare with"))
        else:
            results.append(
                CheckResult(
                    True, f"nearest earlier image {labels[position]} at distance {distance}/{HASH_BITS}"
                )
            )
    return results
