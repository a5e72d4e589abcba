"""
What makes two ``imageInference`` requests the same generation: their fingerprint, and whether
a request may be answered by an earlier image at all (:func:`reusable`). Pure functions, no I/O.

The rule errs one way only. Every wire field is part of the fingerprint except those listed in
:data:`NOT_GENERATION` (how and where an image is delivered or billed, never its pixels), so a
parameter the API adds tomorrow is included without anyone noticing: at worst an image is
generated again, never a wrong one re-used. An image named by location (``https://``, ``s3://``,
``file://``...) stands in the fingerprint only as the hash of its content, which the caller read;
a location without one is refused, since what it points at may have changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from airflow_provider_bfl.exceptions import BflInvalidRequestError, BflReuseError

#: Part of every fingerprint: changing the rule below changes it, so old index entries stop matching.
FINGERPRINT_VERSION = 1

#: Top-level wire fields that never change the pixels. ``numberResults`` is not among them: it
#: decides how many images (and which seeds) a generation yields.
NOT_GENERATION = frozenset(
    {
        "taskUUID",  # the generation's id, not its content
        "includeCost",  # whether the answer reports the price
        "deliveryMethod",  # sync or async: when the answer comes
        "outputType",  # URL, dataURI or base64Data: how the same bytes travel
        "ttl",  # how long the image URL lives
        "webhookURL",  # where results are announced
        "uploadEndpoint",  # where Runware puts the bytes
    }
)

#: Text, never a location, even when it looks like one (a prompt may be ``https://...`` itself).
TEXT_FIELDS = frozenset({"positivePrompt", "negativePrompt"})

#: How the policy argument is spelled, and what each spelling means.
ReuseMode = Literal["off", "seeded", "any"]
_MODES: dict[Any, ReuseMode] = {None: "off", False: "off", True: "seeded", "seeded": "seeded", "any": "any"}
_ALLOWED_MODES = (
    "False (never), True or 'seeded' (only requests with an explicit seed) or 'any' (seedless "
    "requests too: any earlier image for the same request is acceptable)"
)

_LOCATION = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def fingerprint(wire: Mapping[str, Any], *, reference_hashes: Mapping[str, str] | None = None) -> str:
    """
    The sha256 (hex) of the generation-relevant content of one imageInference wire request.

    ``reference_hashes`` maps each image location the request names (as written in the wire,
    e.g. an ``inputs.referenceImages`` entry) to the sha256 of its content. Key order, delivery
    and bookkeeping fields do not matter; everything else does.

    Raises :class:`BflReuseError` (``code="referenceNotHashed"``) for a location without a hash,
    and for content that is not JSON.
    """
    if not isinstance(wire, Mapping):
        raise BflInvalidRequestError(
            f"fingerprint() takes one request as a mapping of wire fields, got {type(wire).__name__}",
            parameter="request",
        )
    hashes = _checked_hashes(reference_hashes or {})
    content = {str(key): value for key, value in wire.items() if key not in NOT_GENERATION}
    task_uuid = wire.get("taskUUID") if isinstance(wire.get("taskUUID"), str) else None
    try:
        payload = {
            key: value if key in TEXT_FIELDS else _identified(value, hashes, key, task_uuid)
            for key, value in content.items()
        }
        canonical = json.dumps(
            {"fingerprintVersion": FINGERPRINT_VERSION, "request": payload},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise BflReuseError(
            f"the request cannot be fingerprinted: its content is not plain JSON ({type(exc).__name__})",
            code="notFingerprintable",
            task_uuid=task_uuid,
        ) from None
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _identified(value: Any, hashes: Mapping[str, str], where: str, task_uuid: str | None) -> Any:
    """``value`` with every image location replaced by ``{"sha256": <content hash>}``."""
    if isinstance(value, str):
        if value in hashes:
            return {"sha256": hashes[value]}
        if _LOCATION.match(value):
            raise BflReuseError(
                f"{where} names the image {_shown(value)} by its location only; its content may "
                "have changed since, so the request is fingerprinted only with the sha256 of what "
                "is there now (pass it in reference_hashes)",
                code="referenceNotHashed",
                parameter=where,
                task_uuid=task_uuid,
            )
        return value  # a UUID, data URI or base64 string is the content's own identity
    if isinstance(value, Mapping):
        return {str(k): _identified(v, hashes, f"{where}.{k}", task_uuid) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_identified(item, hashes, f"{where}[{index}]", task_uuid) for index, item in enumerate(value)]
    return value


def _checked_hashes(hashes: Mapping[str, str]) -> dict[str, str]:
    checked = {}
    for location, digest in hashes.items():
        text = digest.lower() if isinstance(digest, str) else ""
        if not isinstance(location, str) or not _SHA256.match(text):
            raise BflInvalidRequestError(
                f"reference_hashes maps each image location to the sha256 (64 hex digits) of its "
                f"content; got {_shown(str(location))} -> {str(digest)[:80]!r}",
                parameter="reference_hashes",
            )
        checked[location] = text
    return checked


def reuse_mode(value: Any) -> ReuseMode:
    """The policy ``value`` stands for; a clear error (``parameter="reuse"``) for anything else."""
    mode = _MODES.get(value) if value is None or isinstance(value, bool | str) else None
    if mode is None:
        raise BflInvalidRequestError(f"reuse must be {_ALLOWED_MODES}; got {value!r:.100}", parameter="reuse")
    return mode


def reusable(wire: Mapping[str, Any], mode: Any) -> bool:
    """
    Whether an earlier image may answer this request under the policy ``mode``.

    Without a seed the API draws a random one, so a seedless request is the same request only
    for a user who said any earlier image of it will do (``mode="any"``).
    """
    chosen = reuse_mode(mode)
    if chosen == "off":
        return False
    return chosen == "any" or wire.get("seed") is not None


def _shown(location: str) -> str:
    """A location fit for a message: no query string (presigned URLs carry credentials), cut short."""
    shown = location.split("?", 1)[0] + ("?..." if "?" in location else "")
    return repr(shown if len(shown) <= 200 else shown[:197] + "...")
