"""
What the gallery may show: the images a run's records name, merged per image.

A run records each image several times: the generating operator's XCom (``storedURI`` ...), then
the QA task's verdict (the same record plus ``qa`` and, when moved, ``quarantinedURI``), then maybe
a publishing task's copy (``publishedURI``). :func:`gallery_images` folds them into one entry per
image, in the order the images were first recorded. The objects those records name are the only
ones the gallery ever reads: :meth:`GalleryImage.locations`.

:func:`read_xcom_records` is the one place that knows where records are stored: XCom rows, and the
JSON Lines manifests those rows name (a large batch records a ManifestRef instead of its list). Only
manifests a run's XCom names are ever read, and of their records only what the gallery shows is
kept (:data:`GALLERY_FIELDS`): about 650 bytes a record, 13 MB for a 10,000-image run and its QA.
:class:`RunRecordsCache` keeps what it read per run while the run's record rows are unchanged, so a
page of 100 thumbnails reads them once, not 101 times.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_bfl.exceptions import BflError
from airflow_provider_bfl.storage.manifest import is_manifest_ref, iter_records

log = logging.getLogger(__name__)

#: The XCom keys whose values are lists of image records: results and verdicts, and the verdicts
#: a failing QA task pushes before it raises.
RECORD_XCOM_KEYS = ("return_value", "verdicts")
#: What the gallery shows or serves of a record read from a manifest (the rest is left there).
GALLERY_FIELDS = (
    "taskUUID",
    "imageUUID",
    "storedURI",
    "quarantinedURI",
    "publishedURI",
    "key",
    "prompt",
    "width",
    "height",
    "seed",
    "cost",
)
#: Of a QA verdict, what the page shows (not the per-check details).
GALLERY_QA_FIELDS = ("passed", "action", "reasons")

#: Reads the records of a ManifestRef.
ManifestReader = Callable[[Mapping[str, Any]], Iterable[Mapping[str, Any]]]


@dataclass(frozen=True)
class RecordSet:
    """One XCom value holding image records, and which task instance pushed it."""

    task_id: str
    map_index: int
    records: Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class GalleryImage:
    """One image as the gallery shows it: its merged record and where it was first recorded."""

    image_id: str
    record: Mapping[str, Any]
    task_id: str
    map_index: int

    @property
    def qa(self) -> Mapping[str, Any] | None:
        qa = self.record.get("qa")
        return qa if isinstance(qa, Mapping) else None

    @property
    def verdict(self) -> str:
        """``kept``/``quarantined``/``skipped``/``failed`` from QA, or ``unchecked``."""
        return str(self.qa.get("action", "unchecked")) if self.qa else "unchecked"

    def locations(self) -> list[str]:
        """Where the bytes are, most likely first: a quarantined object no longer sits at storedURI."""
        candidates = (self.record.get(key) for key in ("quarantinedURI", "storedURI", "publishedURI"))
        return list(dict.fromkeys(uri for uri in candidates if isinstance(uri, str) and uri))


def is_image_record(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("storedURI"), str)


def record_sets(
    task_id: str, map_index: int, value: Any, manifests: ManifestReader | None = None
) -> list[RecordSet]:
    """
    The image records in one XCom value: a list of records, a ManifestRef, or a list of these (a
    mapped task's). Refs are read with ``manifests`` (and ignored without it); other values too.
    """
    if is_manifest_ref(value):
        return _manifest_set(task_id, map_index, value, manifests)
    if not isinstance(value, list):
        return []
    if value and all(isinstance(item, list) or is_manifest_ref(item) for item in value):
        return [s for item in value for s in record_sets(task_id, map_index, item, manifests)]
    records = [item for item in value if is_image_record(item)]
    return [RecordSet(task_id, map_index, records)] if records else []


def _manifest_set(
    task_id: str, map_index: int, ref: Mapping[str, Any], manifests: ManifestReader | None
) -> list[RecordSet]:
    if manifests is None:
        return []
    try:
        records = [_shown_fields(record) for record in manifests(ref) if is_image_record(record)]
    except BflError as exc:  # the rest of the run is still shown
        log.warning("Gallery: the manifest of task %s is not shown: %s", task_id, exc)
        return []
    return [RecordSet(task_id, map_index, records)] if records else []


def _shown_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    # Interned: the generating task's manifest and QA's name the same URIs, ids and prompts.
    kept = {name: _shared(record[name]) for name in GALLERY_FIELDS if name in record}
    qa = record.get("qa")
    if isinstance(qa, Mapping):
        kept["qa"] = {name: qa[name] for name in GALLERY_QA_FIELDS if name in qa}
    requested = record.get("requested")
    if "prompt" not in kept and isinstance(requested, Mapping) and "positivePrompt" in requested:
        kept["requested"] = {"positivePrompt": requested["positivePrompt"]}
    return kept


def _shared(value: Any) -> Any:
    return sys.intern(value) if isinstance(value, str) else value


def image_id(record: Mapping[str, Any]) -> str:
    """The imageUUID when the API gave one, else a digest of where the image was stored."""
    uuid = record.get("imageUUID")
    if isinstance(uuid, str) and uuid:
        return uuid
    return "uri-" + hashlib.sha256(str(record["storedURI"]).encode()).hexdigest()[:32]


def gallery_images(
    sets: Iterable[RecordSet], *, task_id: str | None = None, map_index: int | None = None
) -> list[GalleryImage]:
    """
    One entry per image, in first-recorded order; later records of an image add to its record.

    With ``task_id`` only the images that task instance recorded are listed, but what the other
    tasks of the run recorded about them (the QA verdict, the published copy) is still merged in.
    """
    merged: dict[str, dict[str, Any]] = {}
    origin: dict[str, tuple[str, int]] = {}
    for record_set in sets:
        for record in record_set.records:
            key = image_id(record)
            merged.setdefault(key, {}).update(record)
            origin.setdefault(key, (record_set.task_id, record_set.map_index))
    if task_id is not None:
        mine = {
            image_id(record)
            for s in sets
            if s.task_id == task_id and (map_index is None or s.map_index == map_index)
            for record in s.records
        }
        return [
            GalleryImage(key, merged[key], task_id, map_index if map_index is not None else -1)
            for key in merged
            if key in mine
        ]
    return [GalleryImage(key, record, *origin[key]) for key, record in merged.items()]


@dataclass(frozen=True)
class Totals:
    images: int
    cost: float
    verdicts: Mapping[str, int]


def totals(images: Sequence[GalleryImage]) -> Totals:
    counts: dict[str, int] = {}
    for entry in images:
        counts[entry.verdict] = counts.get(entry.verdict, 0) + 1
    cost = sum(float(entry.record.get("cost") or 0) for entry in images)
    return Totals(images=len(images), cost=round(cost, 6), verdicts=counts)


def _record_rows(dag_id: str, run_id: str) -> Any:
    from airflow.models.xcom import XComModel

    return (
        XComModel.dag_id == dag_id,
        XComModel.run_id == run_id,
        XComModel.key.in_(RECORD_XCOM_KEYS),
    )


def xcom_stamp(dag_id: str, run_id: str) -> tuple[Any, ...]:
    """What changes whenever the run's record rows do: their count and newest timestamp (a push,
    a retry's re-push and a clear each delete or insert rows)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    query = select(func.count(), func.max(XComModel.timestamp)).where(*_record_rows(dag_id, run_id))
    with create_session() as session:
        return tuple(session.execute(query).one())


class RunRecords:
    """
    A run's record sets as read, and their merged images, computed once: every thumbnail request
    finds its image by id, and merging a 10,000-image run per request would cost a page of 100
    thumbnails 100 merges.
    """

    def __init__(self, sets: list[RecordSet]) -> None:
        self.sets = sets
        self._images: list[GalleryImage] | None = None
        self._by_id: dict[str, GalleryImage] = {}

    def images(self) -> list[GalleryImage]:
        if self._images is None:
            images = gallery_images(self.sets)
            self._by_id = {entry.image_id: entry for entry in images}
            self._images = images
        return self._images

    def find(self, image_id: str) -> GalleryImage | None:
        self.images()
        return self._by_id.get(image_id)

    def count(self) -> int:
        return sum(len(s.records) for s in self.sets)


class RunRecordsCache:
    """
    The records of the last few runs asked for, each re-read only when its :func:`xcom_stamp`
    changes (a task pushes, a retry replaces, a clear deletes): one light query per request
    instead of reading and decoding every record of the run. At most ``runs`` runs and, beyond the
    newest run, ``max_records`` records (about 650 bytes each) are kept.
    """

    def __init__(
        self,
        read: Callable[[str, str], list[RecordSet]],
        stamp: Callable[[str, str], tuple[Any, ...]],
        runs: int = 16,
        max_records: int = 50_000,
    ) -> None:
        self._read, self._stamp, self._runs, self._max_records = read, stamp, runs, max_records
        self._entries: OrderedDict[tuple[str, str], tuple[tuple[Any, ...], RunRecords]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, dag_id: str, run_id: str) -> RunRecords:
        key, stamp = (dag_id, run_id), self._stamp(dag_id, run_id)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None and cached[0] == stamp:
                self._entries.move_to_end(key)
                return cached[1]
        run = RunRecords(self._read(dag_id, run_id))
        with self._lock:
            self._entries[key] = (stamp, run)
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and (
                len(self._entries) > self._runs
                or sum(entry.count() for _, entry in self._entries.values()) > self._max_records
            ):
                self._entries.popitem(last=False)
        return run


def storage_conn_id() -> str | None:
    """``[bfl] gallery_storage_conn_id``: the api-server's connection to the images' object store."""
    from airflow.configuration import conf

    return conf.get("bfl", "gallery_storage_conn_id", fallback=None) or None


def read_manifest_records(ref: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """A ref's records, through the gallery's storage connection if one is set, else the ref's own."""
    return iter_records(ref, conn_id=storage_conn_id())


def read_xcom_records(dag_id: str, run_id: str) -> list[RecordSet]:
    """
    Every image record the run's task instances pushed (and the manifests their XCom names hold),
    oldest first (read in the api-server).
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = (
        select(XComModel)
        .where(*_record_rows(dag_id, run_id))
        .order_by(XComModel.timestamp, XComModel.task_id, XComModel.map_index)
    )
    with create_session() as session:
        rows = [
            (row.task_id, row.map_index, XComModel.deserialize_value(row)) for row in session.scalars(query)
        ]
    return [
        s
        for task_id, map_index, value in rows
        for s in record_sets(task_id, map_index, value, read_manifest_records)
    ]
