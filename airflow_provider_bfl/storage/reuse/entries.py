"""
One index entry: what the reuse index knows of one fingerprint, as small strict JSON. No I/O.

An entry is ``claimed`` (a run fixed the taskUUID that generates this content) or ``landed``
(that generation's images are stored and verified, with their records). Whatever is read back is
checked field by field (:func:`parse`): a truncated, garbled or foreign object, one written for
another fingerprint, or one naming an image outside the destination is not an entry, and the
index treats it as absent. Images are kept without their URL: it expires, and a presigned one
carries credentials.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from airflow_provider_bfl.exceptions import BflReuseError

#: Version of the entry layout below (the fingerprint rule has its own).
ENTRY_FORMAT = 1
#: Largest entry read back: 20 images of about 500 bytes each fit a hundred times over.
MAX_ENTRY_BYTES = 256 * 1024
#: What an entry keeps of each landed image record.
IMAGE_FIELDS = (
    "imageUUID",
    "storedURI",
    "sha256",
    "bytes",
    "seed",
    "width",
    "height",
    "cost",
    "format",
    "contentType",
    "NSFWContent",
)
#: Longest owner or origin value kept (a DAG id and a run id are up to 250 characters each).
MAX_TEXT = 1000

State = Literal["claimed", "landed"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Entry:
    """What the index holds for one fingerprint."""

    fingerprint: str
    task_uuid: str
    state: State
    #: Who claimed or landed it (e.g. ``dag/run/task/map_index``), for people reading the index.
    owner: str
    #: When it was claimed or landed (UTC, ISO 8601).
    at: str
    #: The landed images (:data:`IMAGE_FIELDS` of their records); empty while claimed.
    images: tuple[Mapping[str, Any], ...] = ()
    #: The run that landed the images (e.g. dagId, runId, taskId, mapIndex).
    origin: Mapping[str, Any] = field(default_factory=dict)

    @property
    def landed(self) -> bool:
        return self.state == "landed"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "entryFormat": ENTRY_FORMAT,
            "fingerprint": self.fingerprint,
            "taskUUID": self.task_uuid,
            "state": self.state,
            "owner": self.owner,
            "at": self.at,
        }
        if self.landed:
            body["images"] = [dict(image) for image in self.images]
            body["origin"] = dict(self.origin)
        return body

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode("utf-8")

    def reused_records(self) -> list[dict[str, Any]]:
        """
        The landed images as records of a run that re-uses them: the original generation's ids
        (taskUUID, imageUUID) and stored object, ``reused: true`` and cost 0 (this run paid
        nothing); what the original cost and which run landed it are under ``original``.
        """
        if not self.landed:
            raise BflReuseError(
                f"index entry {self.fingerprint[:12]}... is claimed, not landed: it has no images to re-use",
                code="indexConflict",
                task_uuid=self.task_uuid,
            )
        return [
            {
                "taskType": "imageInference",
                "taskUUID": self.task_uuid,
                **image,
                "cost": 0,
                "reused": True,
                "fingerprint": self.fingerprint,
                "original": {"cost": image.get("cost"), "landedAt": self.at, **self.origin},
            }
            for image in self.images
        ]


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a fingerprint: the one taskUUID that generates it, and whether it is ours."""

    won: bool
    task_uuid: str
    entry: Entry


def claimed(fingerprint: str, task_uuid: str, owner: str) -> Entry:
    return Entry(fingerprint, _uuid(task_uuid, "task_uuid"), "claimed", _text(owner, "owner"), _now())


def landed(
    fingerprint: str, records: Sequence[Mapping[str, Any]], root: str, origin: Mapping[str, Any], owner: str
) -> Entry:
    """The landed entry of one generation's records (every image of one taskUUID); checked first."""
    if not records:
        raise BflReuseError(
            "no records to index: a landed entry has at least one image", code="invalidRecord"
        )
    task_uuids = {record.get("taskUUID") for record in records}
    if len(task_uuids) != 1:
        raise BflReuseError(
            f"one fingerprint is one generation, but the records carry {len(task_uuids)} taskUUIDs",
            code="invalidRecord",
        )
    task_uuid = _uuid(next(iter(task_uuids)), "taskUUID")
    images = []
    for record in records:
        image = {name: record[name] for name in IMAGE_FIELDS if record.get(name) is not None}
        problem = image_problem(image, root)
        if problem:
            raise BflReuseError(f"record not indexed: {problem}", code="invalidRecord", task_uuid=task_uuid)
        images.append(image)
    return Entry(
        fingerprint, task_uuid, "landed", _text(owner, "owner"), _now(), tuple(images), _origin(origin)
    )


def parse(data: bytes, fingerprint: str, root: str) -> Entry:
    """The entry in ``data``, or :class:`ValueError` saying why it is not one."""
    if len(data) > MAX_ENTRY_BYTES:
        raise ValueError(f"larger than {MAX_ENTRY_BYTES} bytes")
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError("not JSON (truncated or garbled)") from None
    if not isinstance(body, dict):
        raise ValueError(f"a JSON {type(body).__name__}, not an object")
    if body.get("entryFormat") != ENTRY_FORMAT:
        raise ValueError(f"entry format {body.get('entryFormat')!r:.20}, not {ENTRY_FORMAT}")
    if body.get("fingerprint") != fingerprint:
        raise ValueError(f"written for fingerprint {str(body.get('fingerprint'))[:70]!r}")
    state = body.get("state")
    if state not in ("claimed", "landed"):
        raise ValueError(f"state {state!r:.40}")
    try:
        task_uuid = _uuid(body.get("taskUUID"), "taskUUID")
        owner = _text(body.get("owner"), "owner")
        at = _text(body.get("at"), "at")
        origin = _origin(body.get("origin") or {})
    except BflReuseError as exc:
        raise ValueError(exc.message) from None
    if state == "claimed":
        return Entry(fingerprint, task_uuid, "claimed", owner, at)
    images = body.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, dict) for i in images):
        raise ValueError("landed without a list of images")
    for image in images:
        problem = image_problem(image, root)
        if problem:
            raise ValueError(problem)
    return Entry(fingerprint, task_uuid, "landed", owner, at, tuple(images), origin)


def image_problem(image: Mapping[str, Any], root: str) -> str | None:
    """Why ``image`` cannot stand in the index (None: it can). ``root`` is the destination's URI."""
    uri = image.get("storedURI")
    if not isinstance(uri, str) or not uri.startswith(root.rstrip("/") + "/"):
        return f"storedURI {str(uri)[:200]!r} is not under the destination {root}"
    if _CONTROL.search(uri) or any(part in (".", "..") for part in uri.split("/")):
        return f"storedURI {uri[:200]!r} has a '.' or '..' segment or control characters"
    if not isinstance(image.get("imageUUID"), str):
        return "an image without an imageUUID"
    size = image.get("bytes")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        return f"bytes {size!r:.40} is not a positive integer"
    digest = image.get("sha256")
    if digest is not None and not (isinstance(digest, str) and _SHA256.match(digest)):
        return f"sha256 {digest!r:.80} is not 64 lowercase hex digits"
    unknown = set(image) - set(IMAGE_FIELDS)
    if unknown:
        return f"unknown image fields {sorted(unknown)[:5]}"
    return None


def _origin(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or len(value) > 10:
        raise BflReuseError("origin is a mapping of at most 10 ids", code="invalidRecord")
    for key, item in value.items():
        if not isinstance(key, str) or not (item is None or isinstance(item, int | str)):
            raise BflReuseError(f"origin {key!r:.40} is not a string or integer id", code="invalidRecord")
        if isinstance(item, str):
            _text(item, f"origin {key}")
    return dict(value)


def _uuid(value: Any, name: str) -> str:
    """``value`` as given (the API knows a taskUUID by its exact string) once it is checked to be a UUID."""
    if isinstance(value, str):
        try:
            uuid.UUID(value)
            return value
        except ValueError:
            pass
    raise BflReuseError(f"{name} {value!r:.60} is not a UUID", code="invalidRecord")


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise BflReuseError(f"{name} must be a string of at most {MAX_TEXT} characters", code="invalidRecord")
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
