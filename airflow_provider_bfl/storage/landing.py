"""
:class:`ImageLander`: move generated images into durable storage before their URLs expire.

Every image is streamed (64 KiB at a time, never a whole batch in memory), hashed on the way,
verified before it becomes visible, and committed atomically: on local storage through a hidden
temporary file renamed into place, on object stores by a single upload of a verified spool file
(an object appears whole or not at all). An image already at its final key is recorded from what
is stored, so a re-run neither re-downloads nor rewrites it.

Key layout (deterministic, so re-runs find their objects)::

    {destination}/{dag_id}/{run_id}/{taskUUID}/{imageUUID}.{jpg|png|webp}
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from airflow_provider_bfl.exceptions import (
    BflError,
    BflImageExpiredError,
    BflImageIntegrityError,
    BflLandingError,
)
from airflow_provider_bfl.storage.integrity import EXTENSIONS, MAX_BYTES, ImageFacts, verify

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
#: Spooled uploads stay in memory up to this size, then go to a temporary file.
SPOOL_MEMORY = 2 * 1024 * 1024
DOWNLOAD_ATTEMPTS = 4
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

#: What the request asked for, per taskUUID: {"width", "height", "outputFormat"}.
Requested = Mapping[str, Any]


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part).strip("_") or "_"


def image_key(
    root: ObjectStoragePath, dag_id: str, run_id: str, task_uuid: str, image_uuid: str, output_format: str
) -> ObjectStoragePath:
    """Where an image lives under ``root`` (run ids are made path-safe: ``:`` and ``+`` become ``_``)."""
    return (
        root
        / _safe(dag_id)
        / _safe(run_id)
        / _safe(task_uuid)
        / f"{_safe(image_uuid)}.{EXTENSIONS[output_format]}"
    )


def stored_uri(path: ObjectStoragePath) -> str:
    """A plain URI for a stored object (without the ``conn_id@`` Airflow puts in its own form)."""
    if _is_local(path):
        return f"file://{path.path}"
    return f"{path.protocol}://{path.path}"


def _is_local(path: ObjectStoragePath) -> bool:
    return path.protocol in ("", "file", "local")


class _Hashing:
    """Counts and hashes bytes as they stream past, and refuses more than ``limit``."""

    def __init__(self, limit: int, where: str) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.limit = limit
        self.where = where

    def feed(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        if self.size > self.limit:
            raise BflImageIntegrityError(
                f"{self.where}: larger than {self.limit} bytes, refusing to store it"
            )
        self.sha256.update(chunk)
        return chunk


class ImageLander:
    """
    Lands images under ``destination`` (an ``ObjectStoragePath`` URI: ``file://``, ``s3://``, ...).

    :param conn_id: Airflow connection for the storage (e.g. ``aws_default`` for ``s3://``).
    :param concurrency: Images downloaded at once; memory use is about ``concurrency`` x 64 KiB
        plus spool buffers for remote stores.
    """

    def __init__(
        self,
        destination: str,
        *,
        dag_id: str,
        run_id: str,
        conn_id: str | None = None,
        concurrency: int = 4,
        timeout: float = 60.0,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        self.root = (
            ObjectStoragePath(destination, conn_id=conn_id) if conn_id else ObjectStoragePath(destination)
        )
        self.dag_id = dag_id
        self.run_id = run_id
        self.concurrency = max(1, concurrency)
        self.max_bytes = max_bytes
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=10.0),
            follow_redirects=True,
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
        )

    def __enter__(self) -> ImageLander:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # -- public --------------------------------------------------------------------------------

    def target(self, entry: Mapping[str, Any], output_format: str) -> ObjectStoragePath:
        return image_key(
            self.root, self.dag_id, self.run_id, entry["taskUUID"], entry["imageUUID"], output_format
        )

    def land_urls(
        self, entries: Sequence[Mapping[str, Any]], requested: Mapping[str, Requested]
    ) -> tuple[list[dict[str, Any]], list[tuple[Mapping[str, Any], BflError]]]:
        """Land URL results concurrently: (records in input order, failures). One failure stops no other."""

        def one(entry: Mapping[str, Any]) -> dict[str, Any] | BflError:
            try:
                return self.land_url(entry, requested[entry["taskUUID"]])
            except BflError as error:
                return error

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="bfl-landing") as pool:
            outcomes = list(pool.map(one, entries))
        records = [outcome for outcome in outcomes if isinstance(outcome, dict)]
        failures = [
            (entry, outcome)
            for entry, outcome in zip(entries, outcomes, strict=True)
            if isinstance(outcome, BflError)
        ]
        return records, failures

    def land_url(self, entry: Mapping[str, Any], requested: Requested) -> dict[str, Any]:
        output_format = str(requested["outputFormat"])
        target = self.target(entry, output_format)
        existing = self.record_stored(target, entry, requested)
        if existing is not None:
            return existing
        url = entry.get("imageURL")
        if not isinstance(url, str):
            raise BflImageIntegrityError(f"{_label(entry)}: the result has no imageURL to download")
        attempt = 1
        while True:
            # Each attempt restarts the commit from scratch: a half-written partial is discarded.
            try:
                return self._commit(target, self._download(url, entry), entry, requested)
            except (httpx.TransportError, BflLandingError) as exc:
                transient = isinstance(exc, httpx.TransportError) or (
                    exc.retryable and (exc.status_code or 0) >= 500
                )
                if not transient or attempt == DOWNLOAD_ATTEMPTS:
                    if isinstance(exc, BflError):
                        raise
                    raise BflLandingError(
                        f"{_label(entry)}: downloading the image failed after {attempt} attempts: {exc}",
                        task_uuid=entry.get("taskUUID"),
                    ) from exc
                log.warning("Image download failed (%s); attempt %d/%d", exc, attempt, DOWNLOAD_ATTEMPTS)
                time.sleep(0.5 * 2 ** (attempt - 1))
                attempt += 1

    def land_bytes(self, entry: Mapping[str, Any], data: bytes, requested: Requested) -> dict[str, Any]:
        """Land a base64Data/dataURI result already decoded to ``data``."""
        target = self.target(entry, str(requested["outputFormat"]))
        existing = self.record_stored(target, entry, requested)
        if existing is not None:
            return existing
        return self._commit(target, iter([data]), entry, requested)

    def record_stored(
        self, target: ObjectStoragePath, entry: Mapping[str, Any], requested: Requested
    ) -> dict[str, Any] | None:
        """The record of an object already at ``target`` (read back and verified), or None."""
        if not target.exists():
            return None
        where = f"{_label(entry)} at {target}"
        hashing = _Hashing(self.max_bytes, where)
        if _is_local(target):
            with open(target.path, "rb") as file:
                for chunk in iter(lambda: file.read(CHUNK), b""):
                    hashing.feed(chunk)
                facts = verify(file, hashing.size, str(requested["outputFormat"]), where)
        else:
            with target.open("rb") as stored, self._spool() as spool:
                for chunk in iter(lambda: stored.read(CHUNK), b""):
                    spool.write(hashing.feed(chunk))
                facts = verify(spool, hashing.size, str(requested["outputFormat"]), where)
        log.info("Already stored, not rewritten: %s", target)
        return _record(entry, target, hashing, facts, requested)

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _spool() -> tempfile.SpooledTemporaryFile[bytes]:
        return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY, prefix="bfl-landing-")

    def _commit(
        self,
        target: ObjectStoragePath,
        chunks: Iterable[bytes],
        entry: Mapping[str, Any],
        requested: Requested,
    ) -> dict[str, Any]:
        where = f"{_label(entry)} for {target}"
        hashing = _Hashing(self.max_bytes, where)
        output_format = str(requested["outputFormat"])
        if _is_local(target):
            facts = self._commit_local(Path(target.path), chunks, hashing, output_format, where)
        else:
            facts = self._commit_remote(target, chunks, hashing, output_format, where)
        log.info("Stored %s (%d bytes, sha256 %s)", target, hashing.size, hashing.sha256.hexdigest()[:12])
        return _record(entry, target, hashing, facts, requested)

    def _commit_local(
        self, final: Path, chunks: Iterable[bytes], hashing: _Hashing, output_format: str, where: str
    ) -> ImageFacts:
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f".{final.name}.{uuid.uuid4().hex}.partial")
        try:
            with open(partial, "w+b") as file:
                for chunk in chunks:
                    file.write(hashing.feed(chunk))
                file.flush()
                facts = verify(file, hashing.size, output_format, where)
                os.fsync(file.fileno())
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
        return facts

    def _commit_remote(
        self,
        target: ObjectStoragePath,
        chunks: Iterable[bytes],
        hashing: _Hashing,
        output_format: str,
        where: str,
    ) -> ImageFacts:
        with self._spool() as spool:
            for chunk in chunks:
                spool.write(hashing.feed(chunk))
            facts = verify(spool, hashing.size, output_format, where)
            spool.seek(0)
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                shutil.copyfileobj(spool, out, CHUNK)
        return facts

    def _download(self, url: str, entry: Mapping[str, Any]) -> Iterator[bytes]:
        """Stream an image URL once; a 404/410 means it expired."""
        with self._client.stream("GET", url) as response:
            if response.status_code in (404, 410):
                raise BflImageExpiredError(
                    f"{_label(entry)}: the image URL answered HTTP {response.status_code}: it expired "
                    "(ttl) before it was downloaded; generate it again",
                    task_uuid=entry.get("taskUUID"),
                    status_code=response.status_code,
                )
            if response.status_code >= 400:
                raise BflLandingError(
                    f"{_label(entry)}: downloading the image answered HTTP {response.status_code}",
                    task_uuid=entry.get("taskUUID"),
                    status_code=response.status_code,
                )
            declared = int(response.headers.get("content-length") or 0)
            if declared > self.max_bytes:
                raise BflImageIntegrityError(
                    f"{_label(entry)}: the image is {declared} bytes, larger than the {self.max_bytes}-byte limit"
                )
            yield from response.iter_bytes(CHUNK)


def _label(entry: Mapping[str, Any]) -> str:
    return f"image {entry.get('imageUUID')} of task {entry.get('taskUUID')}"


def _record(
    entry: Mapping[str, Any],
    target: ObjectStoragePath,
    hashing: _Hashing,
    facts: ImageFacts,
    requested: Requested,
) -> dict[str, Any]:
    return {
        **entry,
        "storedURI": stored_uri(target),
        "sha256": hashing.sha256.hexdigest(),
        "bytes": hashing.size,
        "contentType": facts.content_type,
        "format": facts.format,
        "width": facts.width,
        "height": facts.height,
        "requested": {key: requested[key] for key in ("width", "height", "outputFormat")},
    }


def requested_of(request: Any) -> dict[str, Any]:
    """The part of an ImageInferenceRequest that landing and QA compare against."""
    return {"width": request.width, "height": request.height, "outputFormat": request.output_format}
