"""
Manifests: a batch's image records as JSON Lines next to its images, and a small reference to them.

A batch of 10,000 images has 10,000 records (megabytes); XCom and trigger events must stay a few
KiB whatever the batch. So the records are written to a manifest, one JSON object per line::

    {destination}/{dag_id}/{run_id}/_manifests/{task_id}[.{map_index}].jsonl

beside the run's image folders (no image folder can be called ``_manifests``: :func:`safe_segment`
never starts a segment with ``_``), and what travels through XCom is a :class:`ManifestRef`: the
manifest's URI, its connection, and the counts and costs a reader wants without opening it.

A manifest is written whole or not at all (a hidden temporary file renamed into place locally,
one upload of a spooled file on object stores), streamed both ways (memory stays bounded whatever
the batch), and read strictly: a truncated, garbled, oversized or nested-to-death manifest is a
:class:`BflManifestError` naming the line, never a half-read batch.

Consumers (QA, review, publishing, the gallery) never branch on the shape they were given: they
call :func:`iter_records`, which accepts records, refs, a mapped task's lists of either, and the
JSON text of any of these.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NotRequired, TypedDict

from airflow_provider_bfl._rendered import decode_rendered
from airflow_provider_bfl.exceptions import BflError, BflInvalidRequestError, BflManifestError
from airflow_provider_bfl.storage.landing import CHUNK, SPOOL_MEMORY, safe_segment, stored_uri

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

#: The folder under ``{destination}/{dag_id}/{run_id}`` that holds the run's manifests.
MANIFEST_FOLDER = "_manifests"
MANIFEST_SUFFIX = ".jsonl"
#: Longest line (one record) written or read; a record is a few KiB, a QA verdict a few more.
MAX_LINE_BYTES = 1024 * 1024
#: Largest manifest read: about 100,000 QA verdicts.
MAX_MANIFEST_BYTES = 1024 * 1024 * 1024
#: Bytes an object store upload buffers before sending a part (S3's smallest part), and bytes one
#: ranged read fetches. s3fs's default for both is 50 MiB: a whole 10,000-record manifest in memory.
UPLOAD_PART_BYTES = 5 * 1024 * 1024
READ_BLOCK_BYTES = 1024 * 1024
#: Bytes of a bad line an error may quote.
_EXCERPT = 40
_ALLOWED = (
    "a list of image records, a ManifestRef ({'bflManifest': uri, ...}), a list of ManifestRefs, "
    "a mapped task's list of these, or the JSON text of any of them"
)


class ManifestRef(TypedDict):
    """What travels in XCom instead of the records: a few hundred bytes whatever the batch."""

    bflManifest: str
    conn_id: str | None
    images: int
    #: Distinct taskUUIDs.
    generations: int
    #: Billed by this run (records marked ``costReused`` are left out); None when none had a cost.
    cost: float | None
    #: Billed by an earlier run and re-used here; None when nothing was re-used.
    reusedCost: float | None
    #: QA counts, present only when the records carry a ``qa`` verdict.
    passed: NotRequired[int]
    quarantined: NotRequired[int]


def manifest_uri(
    destination: str, dag_id: str, run_id: str, task_id: str, map_index: int, *, role: str | None = None
) -> str:
    """
    Where a task instance's manifest lives; every segment is :func:`safe_segment`, like an image's.

    A task writing more than one manifest names the others by ``role``:
    ``_manifests/{task_id}[.{map_index}]/{role}.jsonl`` (QA's passed records, the review's approved
    ones), a folder no task's own manifest can be called.
    """
    scheme, separator, location = destination.partition("://")
    root = f"{scheme}://{location.rstrip('/')}" if separator else f"file://{destination.rstrip('/')}"
    return "/".join(
        [root, safe_segment(dag_id), safe_segment(run_id), _manifest_name(task_id, map_index, role)]
    )


def manifest_beside(uri: str, task_id: str, map_index: int, *, role: str | None = None) -> str:
    """
    A task's manifest in the same run folder as the manifest at ``uri``: where a consumer (QA,
    review) writes what it derived from a manifest it was given.
    """
    head, found, _ = uri.rpartition(f"/{MANIFEST_FOLDER}/")
    run_folder = head if found else uri.rpartition("/")[0]
    return f"{run_folder}/{_manifest_name(task_id, map_index, role)}"


def _manifest_name(task_id: str, map_index: int, role: str | None) -> str:
    stem = safe_segment(task_id) + (f".{map_index}" if map_index >= 0 else "")
    name = f"{stem}/{safe_segment(role)}" if role else stem
    return f"{MANIFEST_FOLDER}/{name}{MANIFEST_SUFFIX}"


def is_manifest_ref(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("bflManifest"), str)


def first_manifest_ref(value: Any) -> Mapping[str, Any] | None:
    """
    The first :class:`ManifestRef` in an (already decoded) input, or None for plain records.

    Consumers answer in the shape they were given: records for records, a manifest for a manifest
    (or for a mapped task's refs); this says which, and where the input's manifests live.
    """
    if is_manifest_ref(value):
        return dict(value)
    if not _is_sequence(value):  # a generator is not looked into: that would use it up
        return None
    for item in value:
        if is_manifest_ref(item):
            return dict(item)
        if _is_sequence(item):
            found = next((member for member in item if is_manifest_ref(member)), None)
            if found is not None:
                return dict(found)
    return None


# -- writing -----------------------------------------------------------------------------------


class _Summary:
    """The counts and costs of the records streamed past, for the :class:`ManifestRef`."""

    def __init__(self) -> None:
        self.images = 0
        self.task_uuids: set[str] = set()
        self.cost: float | None = None
        self.reused_cost: float | None = None
        self.qa_seen = False
        self.passed = 0
        self.quarantined = 0

    def add(self, record: Mapping[str, Any]) -> None:
        self.images += 1
        task_uuid = record.get("taskUUID")
        if isinstance(task_uuid, str):
            self.task_uuids.add(task_uuid)
        original = record.get("original")
        if record.get("reused") and isinstance(original, Mapping):  # cost 0 here: it saved the original's
            saved = _amount(original.get("cost"))
            if saved is not None:
                self.reused_cost = (self.reused_cost or 0.0) + saved
        elif (amount := _amount(record.get("cost"))) is not None:
            if record.get("costReused"):
                self.reused_cost = (self.reused_cost or 0.0) + amount
            else:
                self.cost = (self.cost or 0.0) + amount
        qa = record.get("qa")
        if isinstance(qa, Mapping):
            self.qa_seen = True
            self.passed += bool(qa.get("passed"))
            self.quarantined += qa.get("action") == "quarantined"

    def ref(self, uri: str, conn_id: str | None) -> ManifestRef:
        ref = ManifestRef(
            bflManifest=uri,
            conn_id=conn_id,
            images=self.images,
            generations=len(self.task_uuids),
            cost=None if self.cost is None else round(self.cost, 6),
            reusedCost=None if self.reused_cost is None else round(self.reused_cost, 6),
        )
        if self.qa_seen:
            ref["passed"] = self.passed
            ref["quarantined"] = self.quarantined
        return ref


def _amount(value: object) -> float | None:
    """A cost that is a real amount (finite, not negative), as the operator's cost report counts it."""
    from airflow_provider_bfl.operators._landing import total_cost

    return total_cost([{"cost": value}])


def write_manifest(records: Iterable[Mapping[str, Any]], uri: str, *, conn_id: str | None) -> ManifestRef:
    """
    Write ``records`` as the manifest at ``uri`` (replacing any earlier one) and return its reference.

    Records are encoded one at a time into a spool (memory stays bounded); the manifest becomes
    visible only once every record is written, so a reader sees the old manifest or the new one.
    """
    _check_uri(uri)
    path = _path(uri, conn_id)
    summary = _Summary()
    if _is_local(path):
        _write_local(Path(path.path), records, summary, uri)
    else:
        _write_remote(path, records, summary, uri)
    return summary.ref(uri, conn_id)


def _write_lines(records: Iterable[Mapping[str, Any]], out: IO[bytes], summary: _Summary, uri: str) -> None:
    for number, record in enumerate(records, start=1):
        if not isinstance(record, Mapping):
            raise BflManifestError(
                f"manifest {_shown(uri)}: record #{number} is a {type(record).__name__}, not an image "
                "record (dict); nothing was written"
            )
        try:
            line = json.dumps(record, separators=(",", ":")).encode("ascii") + b"\n"
        except (TypeError, ValueError, RecursionError) as exc:
            raise BflManifestError(
                f"manifest {_shown(uri)}: record #{number} cannot be written as JSON "
                f"({type(exc).__name__}: {str(exc)[:_EXCERPT]}); nothing was written"
            ) from None
        if len(line) > MAX_LINE_BYTES:
            raise BflManifestError(
                f"manifest {_shown(uri)}: record #{number} is {len(line)} bytes of JSON, more than the "
                f"{MAX_LINE_BYTES}-byte limit of a manifest line; nothing was written"
            )
        out.write(line)
        summary.add(record)


def _write_local(final: Path, records: Iterable[Mapping[str, Any]], summary: _Summary, uri: str) -> None:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        descriptor, partial = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial")
    except OSError as exc:
        raise _storage_error("cannot be written", uri, exc) from None
    try:
        with os.fdopen(descriptor, "wb") as file:
            _write_lines(records, file, summary, uri)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, final)
    except OSError as exc:
        raise _storage_error("cannot be written", uri, exc) from None
    finally:
        Path(partial).unlink(missing_ok=True)


def _write_remote(
    path: ObjectStoragePath, records: Iterable[Mapping[str, Any]], summary: _Summary, uri: str
) -> None:
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY, prefix="bfl-manifest-") as spool:
        _write_lines(records, spool, summary, uri)
        spool.seek(0)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            upload = path.fs.open(path.path, "wb", block_size=UPLOAD_PART_BYTES)
        except OSError as exc:
            raise _storage_error("cannot be written", uri, exc) from None
        try:
            shutil.copyfileobj(spool, upload, CHUNK)
        except BaseException as exc:
            _abandon(upload)
            if isinstance(exc, OSError):
                raise _storage_error("cannot be written", uri, exc) from None
            raise
        try:
            upload.close()  # the object appears here, whole
        except OSError as exc:
            raise _storage_error("cannot be written", uri, exc) from None


def _abandon(upload: Any) -> None:
    """
    Drop an unfinished upload: closing it (a ``with`` block's exit, or garbage collection) would
    publish the bytes written so far as the whole manifest.
    """
    discard = getattr(upload, "discard", None)
    if callable(discard):
        discard()  # aborts a multipart upload already started
    with contextlib.suppress(AttributeError):  # a file object whose close cannot be skipped
        upload.closed = True


# -- reading -----------------------------------------------------------------------------------


def read_manifest(
    uri: str, *, conn_id: str | None, max_bytes: int = MAX_MANIFEST_BYTES
) -> Iterator[dict[str, Any]]:
    """
    The manifest's records, one line at a time.

    Raises :class:`BflManifestError`, naming the URI and the line, for a manifest that is missing,
    larger than ``max_bytes``, truncated (a last line without its newline), or has a line that is
    empty, longer than :data:`MAX_LINE_BYTES`, not UTF-8 JSON, or not an object.
    """
    _check_uri(uri)
    path = _path(uri, conn_id)
    try:
        size = path.stat().st_size
        # fsspec's own readline() takes no limit: a buffered reader on top gives the bounded one.
        stream: IO[bytes] = (
            open(path.path, "rb")  # noqa: SIM115  (closed by the with block below)
            if _is_local(path)
            else io.BufferedReader(path.fs.open(path.path, "rb", block_size=READ_BLOCK_BYTES), CHUNK)
        )
    except FileNotFoundError:
        raise BflManifestError(
            f"manifest {_shown(uri)} does not exist (deleted, or written to another store or connection)"
        ) from None
    except OSError as exc:
        raise _storage_error("cannot be read", uri, exc) from None
    with stream:
        if size > max_bytes:
            raise BflManifestError(
                f"manifest {_shown(uri)} is {size} bytes, more than the {max_bytes}-byte limit"
            )
        yield from _parse_lines(stream, uri, max_bytes)


def _parse_lines(stream: IO[bytes], uri: str, max_bytes: int) -> Iterator[dict[str, Any]]:
    read = 0
    number = 0
    while True:
        try:
            line = stream.readline(MAX_LINE_BYTES + 1)
        except OSError as exc:
            raise _storage_error("cannot be read", uri, exc) from None
        if not line:
            return
        number += 1
        read += len(line)
        where = f"manifest {_shown(uri)} line {number}"
        if read > max_bytes:
            raise BflManifestError(f"manifest {_shown(uri)} grew past the {max_bytes}-byte limit while read")
        if not line.endswith(b"\n"):
            if len(line) > MAX_LINE_BYTES:
                raise BflManifestError(f"{where} is longer than the {MAX_LINE_BYTES}-byte limit of a record")
            raise BflManifestError(
                f"{where} ends without a newline: the manifest is truncated ({_excerpt(line)})"
            )
        yield _record(line, where)


def _record(line: bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(line.decode("utf-8"))
    except RecursionError:
        raise BflManifestError(f"{where} is nested too deeply to be an image record") from None
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both
        raise BflManifestError(f"{where} is not UTF-8 JSON ({_excerpt(line)})") from None
    if not isinstance(value, dict):
        raise BflManifestError(
            f"{where} is a JSON {type(value).__name__}, not an image record object ({_excerpt(line)})"
        )
    return value


def iter_records(
    value: Any,
    *,
    conn_id: str | None = None,
    parameter: str = "images",
    error: type[BflError] = BflInvalidRequestError,
) -> Iterator[Mapping[str, Any]]:
    """
    Every image record ``value`` holds or names, in order: the one reader consumers call.

    ``value`` is a list of records, a :class:`ManifestRef`, a list of refs, a mapped task's list
    of these (one level), or the JSON/Python-literal text of any of them. A manifest is read
    through the ref's own ``conn_id`` unless ``conn_id`` is given. Anything else is ``error``
    (naming ``parameter``) saying what was given and what is allowed; a broken manifest is a
    :class:`BflManifestError`.
    """
    value = decode_rendered(value, parameter=parameter, error=error)
    if is_manifest_ref(value):
        yield from _read_ref(value, conn_id)
        return
    if not _is_group(value):
        raise error(f"{parameter}: got {_described(value)}; expected {_ALLOWED}", parameter=parameter)
    for number, item in enumerate(value, start=1):
        if _is_group(item):
            for inner, member in enumerate(item, start=1):
                yield from _records_of(member, conn_id, f"{parameter}[{number}][{inner}]", error)
        else:
            yield from _records_of(item, conn_id, f"{parameter}[{number}]", error)


def _records_of(
    item: Any, conn_id: str | None, where: str, error: type[BflError]
) -> Iterator[Mapping[str, Any]]:
    if is_manifest_ref(item):
        yield from _read_ref(item, conn_id)
    elif isinstance(item, Mapping):
        yield item
    else:
        raise error(
            f"{where}: got {_described(item)}; expected an image record (dict) or a ManifestRef",
            parameter=where.partition("[")[0],
        )


def _read_ref(ref: Mapping[str, Any], conn_id: str | None) -> Iterator[dict[str, Any]]:
    own = ref.get("conn_id")
    if own is not None and not isinstance(own, str):
        raise BflManifestError(
            f"ManifestRef of {_shown(ref['bflManifest'])}: conn_id is a {type(own).__name__}, not a string"
        )
    return read_manifest(ref["bflManifest"], conn_id=conn_id or own)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _is_group(value: Any) -> bool:
    """A list-like of items (a list, a tuple, the lazy sequence of a mapped task's outputs)."""
    return isinstance(value, Iterable) and not isinstance(value, str | bytes | bytearray | Mapping)


# -- shared ------------------------------------------------------------------------------------


def _path(uri: str, conn_id: str | None) -> ObjectStoragePath:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    return ObjectStoragePath(uri, conn_id=conn_id) if conn_id else ObjectStoragePath(uri)


def _is_local(path: ObjectStoragePath) -> bool:
    return stored_uri(path).startswith("file://")


def _check_uri(uri: object) -> None:
    if not isinstance(uri, str) or not uri.endswith(MANIFEST_SUFFIX):
        raise BflManifestError(
            f"manifest URI {_shown(uri)} does not name a {MANIFEST_SUFFIX} manifest "
            "(see airflow_provider_bfl.storage.manifest.manifest_uri)"
        )


def _storage_error(what: str, uri: str, exc: OSError) -> BflManifestError:
    return BflManifestError(f"manifest {_shown(uri)} {what}: {type(exc).__name__}: {str(exc)[:200]}")


def _shown(uri: object) -> str:
    text = repr(uri)
    return text if len(text) <= 200 else text[:200] + "..."


def _excerpt(line: bytes) -> str:
    shown = line[:_EXCERPT]
    return f"starts {shown!r}" + (f", {len(line)} bytes" if len(line) > _EXCERPT else "")


def _described(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"a dict with keys {sorted(map(str, value))[:8]!r:.120}"
    return f"{type(value).__name__} {value!r:.60}"
