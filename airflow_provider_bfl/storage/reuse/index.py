"""
:class:`ReuseIndex`: which landed images answer which request fingerprint, kept in the destination.

One small JSON object per fingerprint (no new service, no database)::

    {destination}/_bfl_index/{fp[:2]}/{fp}.json

(landing never names a folder ``_bfl_index``: :func:`~airflow_provider_bfl.storage.landing.safe_segment`
never starts a segment with ``_``). Every write is conditional (:mod:`._store`), so runs racing
on the same content agree on one taskUUID per fingerprint: the first :meth:`~ReuseIndex.claim`
fixes it, every later one is told it. The API bills a taskUUID once (a resubmission is a
``conflictTaskUUID`` the hook re-attaches to), so whoever ends up submitting it, even after the
claimer died, at most one generation is paid for.

An entry that cannot be read as one (truncated, garbled, another fingerprint's, naming an image
outside the destination) is treated as absent and overwritten; only a store that fails is a
:class:`~airflow_provider_bfl.exceptions.BflReuseError`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_bfl.exceptions import BflError, BflInvalidRequestError, BflReuseError
from airflow_provider_bfl.storage.landing import CHUNK, stored_uri
from airflow_provider_bfl.storage.reuse import entries
from airflow_provider_bfl.storage.reuse._store import LocalStore, Lost, S3Store, Store, Stored
from airflow_provider_bfl.storage.reuse.entries import Claim, Entry

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

INDEX_FOLDER = "_bfl_index"
#: Read-decide-write rounds one operation may lose to other writers before giving up; each lost
#: round means another writer made progress, so reaching this needs a storm of them.
MAX_ROUNDS = 16
#: Copies of one image :meth:`ReuseIndex.rebuild` keeps to choose from (each run that landed a
#: generation holds one): memory stays bounded by the distinct images, however many runs there were.
MAX_COPIES = 4
#: Entries read (and their images checked) or claimed at once by the ``*_many`` methods.
LOOKUP_CONCURRENCY = 16
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
#: {taskUUID: {imageUUID: [the copies of that image, as entries keep them]}} of one fingerprint.
Generations = dict[str, dict[str, list[dict[str, Any]]]]


@dataclass(frozen=True)
class Found:
    """What the index holds for a fingerprint, and whether its images can be re-used as they are."""

    entry: Entry | None
    usable: bool


class ReuseIndex:
    """
    The index of landed images under ``destination`` (``file://``, an absolute path, or ``s3://``).

    :param conn_id: the storage connection, as for landing (e.g. ``aws_default``).
    """

    def __init__(self, destination: str, *, conn_id: str | None = None) -> None:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        from airflow_provider_bfl.storage.destination import validate_destination

        validate_destination(destination, conn_id)
        root = ObjectStoragePath(destination, conn_id=conn_id) if conn_id else ObjectStoragePath(destination)
        self.conn_id = conn_id
        #: The destination (the index is one folder in it).
        self.root: ObjectStoragePath = root
        #: The destination as landed records name it (their ``storedURI`` starts with it).
        self.root_uri = stored_uri(root).rstrip("/")
        scheme = self.root_uri.partition("://")[0]
        self._store: Store
        if scheme == "file":
            self._store = LocalStore(Path(str(root.path)) / INDEX_FOLDER)
        elif scheme in ("s3", "s3a"):
            self._store = S3Store(root / INDEX_FOLDER)
        else:
            raise BflInvalidRequestError(
                f"destination {destination!r:.200}: re-use keeps its index in the destination and needs "
                "conditional writes there (create if absent, replace if unchanged), which this provider "
                f"has for local folders and s3:// only, not {scheme}://",
                parameter="destination",
            )

    def __repr__(self) -> str:
        return f"ReuseIndex({self.root_uri!r})"

    # -- reading --------------------------------------------------------------------------------

    def lookup(self, fingerprint: str) -> Entry | None:
        """The entry of ``fingerprint``; None when there is none or it is not a valid entry."""
        key = _key(fingerprint)
        stored = self._read(key)
        return None if stored is None else self._parsed(fingerprint, key, stored)

    def usable(self, entry: Entry, *, verify: bool = False) -> bool:
        """
        Landed, and every image still stored with its recorded size (``verify``: and its sha256).

        An image whose record has no sha256 cannot be verified, so ``verify=True`` refuses it.
        """
        return entry.landed and all(self._present(image, verify) for image in entry.images)

    def lookup_many(self, fingerprints: Iterable[str], *, verify: bool = False) -> dict[str, Found]:
        """:meth:`lookup` and :meth:`usable` for many fingerprints, :data:`LOOKUP_CONCURRENCY` at a time."""

        def one(fingerprint: str) -> Found:
            entry = self.lookup(fingerprint)
            return Found(entry, entry is not None and self.usable(entry, verify=verify))

        wanted = list(dict.fromkeys(fingerprints))
        with ThreadPoolExecutor(max_workers=LOOKUP_CONCURRENCY, thread_name_prefix="bfl-reuse") as pool:
            return dict(zip(wanted, pool.map(one, wanted), strict=True))

    # -- writing --------------------------------------------------------------------------------

    def claim(self, fingerprint: str, task_uuid: str, owner: str) -> Claim:
        """
        Fix the one taskUUID that generates ``fingerprint``: ours if nobody has, else theirs.

        Atomic however many runs claim at once; exactly one is told ``won=True``, and every one
        gets the same ``task_uuid``. Submit that taskUUID, won or not: the API bills it once. A
        landed entry is never claimed over (see :meth:`replace`).
        """
        proposed = entries.claimed(fingerprint, task_uuid, owner)
        # Claims follow a lookup that found nothing: try to create first, one request instead of two.
        if self._written(_key(fingerprint), proposed, None):
            return Claim(True, proposed.task_uuid, proposed)
        return self._settle(fingerprint, proposed, lambda _: False)

    def claim_many(self, proposals: Mapping[str, str], owner: str) -> dict[str, Claim]:
        """:meth:`claim` for ``{fingerprint: proposed taskUUID}``, :data:`LOOKUP_CONCURRENCY` at a time."""
        with ThreadPoolExecutor(max_workers=LOOKUP_CONCURRENCY, thread_name_prefix="bfl-reuse") as pool:
            claims = pool.map(lambda item: self.claim(item[0], item[1], owner), proposals.items())
            return dict(zip(proposals, claims, strict=True))

    def replace(self, fingerprint: str, new_task_uuid: str, owner: str, *, stale: str | None) -> Claim:
        """
        :meth:`claim`, also taking over the entry of taskUUID ``stale``, which the caller found
        unusable (its images gone, its generation failed, or forced to regenerate).

        Runs that replace the same stale entry at once still agree on one new taskUUID: the
        first swap wins, the others find an entry that is no longer ``stale`` and are told its
        taskUUID. ``stale=None``: the caller found no valid entry (same as :meth:`claim`).
        """
        proposed = entries.claimed(fingerprint, new_task_uuid, owner)
        return self._settle(fingerprint, proposed, lambda current: current.task_uuid == stale)

    def publish(
        self,
        fingerprint: str,
        records: Sequence[Mapping[str, Any]],
        *,
        owner: str,
        origin: Mapping[str, Any] | None = None,
    ) -> Entry:
        """
        Record the landed, verified ``records`` (every image of one taskUUID) under ``fingerprint``.

        Replaces a claim of the same taskUUID, or an invalid entry. A landed entry of the same
        taskUUID whose images are still there is kept (another run landed the same generation
        first). An entry of another taskUUID is never replaced: :class:`BflReuseError`
        ``indexConflict`` (the images stay landed; they are just not indexed).
        """
        proposed = entries.landed(fingerprint, records, self.root_uri, origin or {}, owner)
        outcome = self._settle(
            fingerprint,
            proposed,
            lambda current: (
                current.task_uuid == proposed.task_uuid and not (current.landed and self.usable(current))
            ),
        )
        if outcome.task_uuid != proposed.task_uuid:
            raise BflReuseError(
                f"index entry {self._store.where(_key(fingerprint))} is held by taskUUID "
                f"{outcome.task_uuid} ({outcome.entry.state}); the images of this generation are "
                "landed but not indexed (replace() the entry first to index them instead)",
                code="indexConflict",
                task_uuid=proposed.task_uuid,
            )
        return outcome.entry

    def publish_many(
        self,
        generations: Mapping[str, Sequence[Mapping[str, Any]]],
        *,
        owner: str,
        origin: Mapping[str, Any] | None = None,
    ) -> dict[str, Entry | BflReuseError]:
        """
        :meth:`publish` for ``{fingerprint: records}``, :data:`LOOKUP_CONCURRENCY` at a time.

        A generation that cannot be indexed gets its :class:`BflReuseError` in the answer instead
        of stopping the others: its images are landed and paid for either way.
        """

        def one(item: tuple[str, Sequence[Mapping[str, Any]]]) -> Entry | BflReuseError:
            try:
                return self.publish(item[0], item[1], owner=owner, origin=origin)
            except BflReuseError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=LOOKUP_CONCURRENCY, thread_name_prefix="bfl-reuse") as pool:
            return dict(zip(generations, pool.map(one, generations.items()), strict=True))

    def rebuild(self, records: Iterable[Mapping[str, Any]], *, owner: str = "rebuild") -> dict[str, int]:
        """
        Restore entries from landed records that carry a ``fingerprint`` (e.g. read from manifests).

        A generation is indexed only if every one of its images is still stored with its
        recorded size (any one copy of it, when several runs landed the same generation). A
        usable entry, or a claim of a generation the records do not know (it may be running),
        is left alone. Returns counts: ``records`` read, entries ``restored``, ``kept`` as they
        were, fingerprints whose images are ``missing``, records ``skipped`` (no fingerprint, or
        not a landed image under this destination).
        """
        counts = {"records": 0, "restored": 0, "kept": 0, "missing": 0, "skipped": 0}
        found: dict[str, Generations] = {}
        for record in records:
            counts["records"] += 1
            indexable = _indexable(record, self.root_uri)
            if indexable is None:
                counts["skipped"] += 1
                continue
            fingerprint, task_uuid, image = indexable
            generation = found.setdefault(fingerprint, {}).setdefault(task_uuid, {})
            copies = generation.setdefault(image["imageUUID"], [])
            if len(copies) < MAX_COPIES and all(c["storedURI"] != image["storedURI"] for c in copies):
                copies.append(image)  # a re-used record names the original's copy: kept once
        with ThreadPoolExecutor(max_workers=LOOKUP_CONCURRENCY, thread_name_prefix="bfl-reuse") as pool:
            for outcome in pool.map(lambda item: self._restore(item[0], item[1], owner), found.items()):
                counts[outcome] += 1
        return counts

    # -- internals ------------------------------------------------------------------------------

    def _settle(self, fingerprint: str, proposed: Entry, takes_over: Callable[[Entry], bool]) -> Claim:
        """Write ``proposed`` where there is no valid entry or ``takes_over`` says it may go; else theirs wins."""
        key = _key(fingerprint)
        for _ in range(MAX_ROUNDS):
            stored = self._read(key)
            current = None if stored is None else self._parsed(fingerprint, key, stored)
            if current is None or takes_over(current):
                if self._written(key, proposed, stored):
                    return Claim(True, proposed.task_uuid, proposed)
                continue
            # Equal taskUUIDs: our own write that succeeded although its answer was lost (and retried).
            return Claim(current.task_uuid == proposed.task_uuid, current.task_uuid, current)
        raise BflReuseError(
            f"index entry {self._store.where(key)} kept changing under {MAX_ROUNDS} attempts to write it",
            code="indexUnavailable",
        )

    def _restore(self, fingerprint: str, generations: Generations, owner: str) -> str:
        """One fingerprint of :meth:`rebuild`: restored, kept or missing."""
        current = self.lookup(fingerprint)
        if current is not None and current.landed and self.usable(current):
            return "kept"
        if current is not None and not current.landed:
            if current.task_uuid not in generations:
                return "kept"
            generations = {current.task_uuid: generations[current.task_uuid]}  # land that claim
        complete = self._complete(generations)
        if complete is None:
            return "missing"
        task_uuid, records = complete
        # What may be overwritten: a claim of this generation, or the unusable entry seen above.
        replaceable = {task_uuid, current.task_uuid if current is not None else task_uuid}
        proposed = entries.landed(fingerprint, records, self.root_uri, {}, owner)
        outcome = self._settle(fingerprint, proposed, lambda found: found.task_uuid in replaceable)
        return "restored" if outcome.won else "kept"

    def _complete(self, generations: Generations) -> tuple[str, list[dict[str, Any]]] | None:
        """The first generation with a stored copy of every image: its taskUUID and records."""
        for task_uuid, copies in generations.items():
            images = [next((c for c in same if self._present(c, False)), None) for same in copies.values()]
            if all(image is not None for image in images):
                return task_uuid, [{**image, "taskUUID": task_uuid} for image in images if image is not None]
        return None

    def _written(self, key: str, proposed: Entry, stored: Stored | None) -> bool:
        """Whether ``proposed`` replaced exactly what was read (``stored``; None: nothing)."""
        try:
            with self._failures(key):
                if stored is None:
                    self._store.create(key, proposed.encode())
                else:
                    self._store.swap(key, proposed.encode(), stored.token)
        except Lost:
            return False
        return True

    def _read(self, key: str) -> Stored | None:
        with self._failures(key):
            return self._store.read(key)

    def _parsed(self, fingerprint: str, key: str, stored: Stored) -> Entry | None:
        try:
            return entries.parse(stored.data, fingerprint, self.root_uri)
        except ValueError as why:
            log.warning("Index entry %s is not valid (%s): treated as absent", self._store.where(key), why)
            return None

    def _present(self, image: Mapping[str, Any], verify: bool) -> bool:
        """The image is stored with its recorded size (and, if ``verify``, its sha256)."""
        path = self._path(str(image["storedURI"]))
        expected = image.get("bytes")
        with self._failures(str(image["storedURI"])):
            try:
                path.fs.invalidate_cache(path.path)  # remote listings are cached; a deleted object must show
                size = path.stat().st_size
            except FileNotFoundError:
                return False
            if expected is not None and size != expected:
                return False
            if not verify:
                return True
            if not image.get("sha256"):
                return False
            digest = hashlib.sha256()
            with path.open("rb") as stored:
                for chunk in iter(lambda: stored.read(CHUNK), b""):
                    digest.update(chunk)
            return digest.hexdigest() == image["sha256"]

    def _path(self, uri: str) -> ObjectStoragePath:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        return ObjectStoragePath(uri, conn_id=self.conn_id) if self.conn_id else ObjectStoragePath(uri)

    @contextmanager
    def _failures(self, where: str) -> Iterator[None]:
        """A store's failure as a :class:`BflReuseError` naming where (never a raw library exception)."""
        try:
            yield
        except (Lost, BflError):
            raise
        except Exception as exc:
            raise BflReuseError(
                f"the reuse index at {self.root_uri} could not be used ({where}): "
                f"{type(exc).__name__}: {str(exc)[:300]}",
                code="indexUnavailable",
            ) from exc


def _key(fingerprint: str) -> str:
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise BflInvalidRequestError(
            f"a fingerprint is 64 lowercase hex digits (see fingerprint()), got {fingerprint!r:.80}",
            parameter="fingerprint",
        )
    return f"{fingerprint[:2]}/{fingerprint}.json"


def _indexable(record: Mapping[str, Any], root: str) -> tuple[str, str, dict[str, Any]] | None:
    """A record's fingerprint, taskUUID and the image an entry keeps of it; None if it is not indexable."""
    fingerprint, task_uuid = record.get("fingerprint"), record.get("taskUUID")
    if (
        not isinstance(fingerprint, str)
        or not _FINGERPRINT.match(fingerprint)
        or not isinstance(task_uuid, str)
    ):
        return None
    image = {name: record[name] for name in entries.IMAGE_FIELDS if record.get(name) is not None}
    original = record.get("original")
    if record.get("reused") and isinstance(original, Mapping):
        image.pop("cost", None)  # what the generation cost, not what re-using it did (0)
        if original.get("cost") is not None:
            image["cost"] = original["cost"]
    return None if entries.image_problem(image, root) else (fingerprint, task_uuid, image)
