"""
:class:`ImageLander`: move generated images into durable storage before their URLs expire.

Every image is streamed (64 KiB at a time, never a whole batch in memory), hashed on the way,
verified before it becomes visible, and committed atomically: on local storage through a hidden
temporary file renamed into place, on object stores by a single upload of a verified spool file
(an object appears whole or not at all). An image already at its final key is recorded from what
is stored, so a re-run neither re-downloads nor rewrites it.

Key layout (deterministic, so re-runs find their objects)::

    {destination}/{dag_id}/{run_id}/{taskUUID}/{imageUUID}.{jpg|png|webp}

Each segment is made path-safe (:func:`safe_segment`), so no dag_id, run_id or UUID, however odd,
can name a folder outside ``destination``.

Downloads are bounded whatever the server does: a total deadline per image (not per read), a
size cap on the decoded bytes (a gzip body is inflated 64 KiB at a time and counted), at most
``max_redirects`` redirects, optionally only to ``image_hosts``, and never a quoted body byte in
an error message.

Throughput: a far image host answers each request after a round trip and sends each connection
only so fast, so one connection is a fraction of the link; :data:`DEFAULT_CONCURRENCY`
downloads run at once, each on a kept-alive connection of one pool (a new TCP connection only
when the pool has none free), which fills a link of about 40 MB/s from a host adding 80 ms a
request at 2 MB/s a connection (``benchmarks/landing_throughput.py``). Memory stays bounded
whatever the batch: each download streams 64 KiB at a time, and spools together keep at most
:data:`SPOOL_BUDGET` in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
import uuid
import zlib
from collections.abc import Collection, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from tempfile import SpooledTemporaryFile
from typing import TYPE_CHECKING, Any

import httpx

from airflow_provider_bfl._deadline import DeadlineTransport, deadline_passed, total_deadline
from airflow_provider_bfl.exceptions import (
    BflError,
    BflImageExpiredError,
    BflImageIntegrityError,
    BflInvalidRequestError,
    BflLandingError,
    BflMalformedResponseError,
)
from airflow_provider_bfl.storage.integrity import EXTENSIONS, MAX_BYTES, ImageFacts, verify

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
#: Downloads at once unless configured: with 80 ms a request and 2 MB/s a connection about 23
#: fill a 40 MB/s link; 32 reach 0.95x of it, 64 no more, and each costs ~0.5 MiB of memory
#: (``benchmarks/landing_throughput.py``), so more is never the default.
DEFAULT_CONCURRENCY = 32
#: A ceiling that catches a typo (a thread and a connection per download) rather than a real need.
MAX_CONCURRENCY = 128
#: The setting's name, in the operator (``landing_concurrency=``) and in ``[bfl]`` of the config.
CONCURRENCY_SETTING = "landing_concurrency"
#: A spooled upload stays in memory up to this size, then goes to a temporary file ...
SPOOL_MEMORY = 2 * 1024 * 1024
#: ... and all the spools of one lander together keep at most this much in memory.
SPOOL_BUDGET = 8 * 1024 * 1024
DOWNLOAD_ATTEMPTS = 4
#: Seconds one image may take to download, all attempts and redirects included.
DOWNLOAD_DEADLINE = 120.0
#: Redirects an image URL may take (a CDN needs one or two; httpx's default is 20).
MAX_REDIRECTS = 3
#: Longest key segment: file systems refuse names over 255 bytes; longer ones keep a hash suffix.
MAX_SEGMENT = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_REDIRECTS = (301, 302, 303, 307, 308)
_HOST_PATTERN = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")

#: What the request asked for, per taskUUID: {"width", "height", "outputFormat"}.
Requested = Mapping[str, Any]


def landing_concurrency(value: object = None) -> int:
    """
    Downloads at once: ``value`` if given, else ``[bfl] landing_concurrency``, else :data:`DEFAULT_CONCURRENCY`.

    A whole number from 1 to :data:`MAX_CONCURRENCY` (a string of digits too: the config holds
    text); anything else is a :class:`BflInvalidRequestError` naming where the value came from.
    """
    where = CONCURRENCY_SETTING
    if value is None:
        from airflow.providers.common.compat.sdk import conf

        value = conf.get("bfl", CONCURRENCY_SETTING, fallback=None)
        if value is None or not str(value).strip():
            return DEFAULT_CONCURRENCY
        where = f"[bfl] {CONCURRENCY_SETTING} in the Airflow configuration"
    number = value.strip() if isinstance(value, str) else value
    if isinstance(number, str) and number.isascii() and number.isdigit():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_CONCURRENCY:
        raise BflInvalidRequestError(
            f"{where}: got {value!r:.40}; allowed: a whole number of downloads at once from 1 to "
            f"{MAX_CONCURRENCY} (default {DEFAULT_CONCURRENCY})",
            parameter=CONCURRENCY_SETTING,
        )
    return number


def safe_segment(part: object) -> str:
    """
    One key segment from any value: only ``[A-Za-z0-9._-]``, never ``.``/``..`` or a hidden name.

    ``manual__2026-11-25T10:00:00+00:00`` becomes ``manual__2026-11-25T10_00_00_00_00``; a
    segment longer than :data:`MAX_SEGMENT` is cut and keeps a hash of the whole value, so two
    long ids stay apart.
    """
    text = str(part)
    safe = _UNSAFE.sub("_", text).lstrip("._").rstrip("_") or "_"
    if len(safe) > MAX_SEGMENT:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        safe = f"{safe[: MAX_SEGMENT - 17]}-{digest}"
    return safe


def image_key(
    root: ObjectStoragePath, dag_id: str, run_id: str, task_uuid: str, image_uuid: str, output_format: str
) -> ObjectStoragePath:
    """Where an image lives under ``root``; every segment is :func:`safe_segment`, so it stays under ``root``."""
    key = (
        root
        / safe_segment(dag_id)
        / safe_segment(run_id)
        / safe_segment(task_uuid)
        / f"{safe_segment(image_uuid)}.{EXTENSIONS[output_format]}"
    )
    if not str(key.path).startswith(str(root.path).rstrip("/") + "/"):  # pragma: no cover - defence in depth
        raise BflLandingError(f"Refusing a key outside the destination: {key}")
    return key


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
    :param concurrency: Images downloaded at once, each on a kept-alive connection (see
        :func:`landing_concurrency`; None: ``[bfl] landing_concurrency``, else
        :data:`DEFAULT_CONCURRENCY`). Memory is about ``concurrency`` x 0.5 MiB, plus
        :data:`SPOOL_BUDGET` and the store's own upload buffers for remote stores.
    :param timeout: seconds any one socket read, write or connect may wait.
    :param download_deadline: seconds one image may take in all (every attempt and redirect): a
        server dripping bytes cannot hold a worker longer than this.
    :param max_bytes: largest image accepted, counted after any ``Content-Encoding`` is decoded.
    :param max_redirects: redirects an image URL may take.
    :param image_hosts: if given, the only hosts images are downloaded from, every redirect hop
        included: ``"im.runware.ai"`` matches that host, ``"*.runware.ai"`` any host under it.
    """

    def __init__(
        self,
        destination: str,
        *,
        dag_id: str,
        run_id: str,
        conn_id: str | None = None,
        concurrency: int | None = None,
        timeout: float = 60.0,
        download_deadline: float = DOWNLOAD_DEADLINE,
        max_bytes: int = MAX_BYTES,
        max_redirects: int = MAX_REDIRECTS,
        image_hosts: Collection[str] | None = None,
    ) -> None:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        self.root = (
            ObjectStoragePath(destination, conn_id=conn_id) if conn_id else ObjectStoragePath(destination)
        )
        self.dag_id = dag_id
        self.run_id = run_id
        self.concurrency = landing_concurrency(concurrency)
        self.spool_memory = max(CHUNK, min(SPOOL_MEMORY, SPOOL_BUDGET // self.concurrency))
        self.max_bytes = max_bytes
        self.download_deadline = download_deadline
        self.max_redirects = max(0, max_redirects)
        self.image_hosts = _host_patterns(image_hosts)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        self._client = httpx.Client(
            transport=DeadlineTransport(limits=limits),
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            follow_redirects=False,  # followed by _open, hop by hop, against the limits above
            limits=limits,
        )

    def __enter__(self) -> ImageLander:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # -- public --------------------------------------------------------------------------------

    def target(self, entry: Mapping[str, Any], output_format: str) -> ObjectStoragePath:
        image_uuid = entry.get("imageUUID")
        if not isinstance(image_uuid, str) or not image_uuid:
            raise BflMalformedResponseError(
                f"{_label(entry)}: the result has no imageUUID, so it has no key to be stored under",
                task_uuid=_task_uuid(entry),
            )
        return image_key(
            self.root, self.dag_id, self.run_id, str(entry.get("taskUUID")), image_uuid, output_format
        )

    def land_urls(
        self, entries: Sequence[Mapping[str, Any]], requested: Mapping[str, Requested]
    ) -> tuple[list[dict[str, Any]], list[tuple[Mapping[str, Any], BflError]]]:
        """
        Land URL results concurrently: (records in input order, failures).

        One failure stops no other, and every failure is a :class:`BflError` (a library's
        exception is mapped by :func:`landing_error`), so the records that did land are kept.
        """

        def one(entry: Mapping[str, Any]) -> dict[str, Any] | BflError:
            try:
                wanted = requested.get(str(entry.get("taskUUID")))
                if wanted is None:
                    raise BflMalformedResponseError(
                        f"{_label(entry)}: a result for a taskUUID this task did not submit",
                        task_uuid=_task_uuid(entry),
                    )
                return self.land_url(entry, wanted)
            except Exception as exc:
                return landing_error(exc, entry)

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
        existing = self._usable_stored(target, entry, requested)
        if existing is not None:
            return existing
        url = entry.get("imageURL")
        if not isinstance(url, str):
            raise BflImageIntegrityError(f"{_label(entry)}: the result has no imageURL to download")
        with total_deadline(self.download_deadline) as end:
            attempt = 1
            while True:
                # Each attempt restarts the commit from scratch: a half-written partial is discarded.
                try:
                    with closing(self._download(url, entry)) as chunks:
                        return self._commit(target, chunks, entry, requested)
                except (httpx.TransportError, BflLandingError) as exc:
                    if deadline_passed():
                        raise BflLandingError(
                            f"{_label(entry)}: the download did not finish within its "
                            f"{self.download_deadline:g}s deadline ({attempt} attempt(s))",
                            task_uuid=_task_uuid(entry),
                        ) from None
                    transient = isinstance(exc, httpx.TransportError) or (
                        exc.retryable and (exc.status_code or 0) >= 500
                    )
                    if not transient or attempt == DOWNLOAD_ATTEMPTS:
                        raise landing_error(exc, entry, attempts=attempt) from None
                    log.warning("Image download failed (%s); attempt %d/%d", exc, attempt, DOWNLOAD_ATTEMPTS)
                    time.sleep(max(0.0, min(0.5 * 2 ** (attempt - 1), end - time.monotonic())))
                    attempt += 1

    def land_bytes(self, entry: Mapping[str, Any], data: bytes, requested: Requested) -> dict[str, Any]:
        """Land a base64Data/dataURI result already decoded to ``data``."""
        target = self.target(entry, str(requested["outputFormat"]))
        existing = self._usable_stored(target, entry, requested)
        if existing is not None:
            return existing
        if len(data) > self.max_bytes:
            raise BflImageIntegrityError(
                f"{_label(entry)}: the image is {len(data)} bytes, larger than the {self.max_bytes}-byte limit"
            )
        return self._commit(target, iter([data]), entry, requested)

    def record_stored(
        self, target: ObjectStoragePath, entry: Mapping[str, Any], requested: Requested
    ) -> dict[str, Any] | None:
        """The record of an object already at ``target`` (read back and verified), or None."""
        if not target.exists():
            return None
        where = f"{_label(entry)} at {target}"
        hashing = _Hashing(self.max_bytes, where)
        output_format = str(requested["outputFormat"])
        if _is_local(target):
            with open(target.path, "rb") as file:
                for chunk in iter(lambda: file.read(CHUNK), b""):
                    hashing.feed(chunk)
                facts = verify(file, hashing.size, output_format, where, _size_of(requested))
        else:
            with target.open("rb") as stored, self._spool() as spool:
                for chunk in iter(lambda: stored.read(CHUNK), b""):
                    spool.write(hashing.feed(chunk))
                facts = verify(spool, hashing.size, output_format, where, _size_of(requested))
        log.debug("Already stored, not rewritten: %s", target)  # per image: the task logs a summary
        return _record(entry, target, hashing, facts, requested)

    # -- internals -----------------------------------------------------------------------------

    def _usable_stored(
        self, target: ObjectStoragePath, entry: Mapping[str, Any], requested: Requested
    ) -> dict[str, Any] | None:
        """What :meth:`record_stored` finds, except that an object failing verification is landed again."""
        try:
            return self.record_stored(target, entry, requested)
        except BflImageIntegrityError as unusable:  # cut short or replaced by someone: never trusted
            log.warning("Replacing an unusable object already stored: %s", unusable)
            return None

    def _spool(self) -> SpooledTemporaryFile[bytes]:
        return SpooledTemporaryFile(max_size=self.spool_memory, prefix="bfl-landing-")

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
        size = _size_of(requested)
        if _is_local(target):
            facts = self._commit_local(Path(target.path), chunks, hashing, output_format, where, size)
        else:
            facts = self._commit_remote(target, chunks, hashing, output_format, where, size)
        log.debug("Stored %s (%d bytes, sha256 %s)", target, hashing.size, hashing.sha256.hexdigest()[:12])
        return _record(entry, target, hashing, facts, requested)

    def _commit_local(
        self,
        final: Path,
        chunks: Iterable[bytes],
        hashing: _Hashing,
        output_format: str,
        where: str,
        size: tuple[int, int] | None,
    ) -> ImageFacts:
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f".{final.name}.{uuid.uuid4().hex}.partial")
        try:
            with open(partial, "w+b") as file:
                for chunk in chunks:
                    file.write(hashing.feed(chunk))
                file.flush()
                facts = verify(file, hashing.size, output_format, where, size)
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
        size: tuple[int, int] | None,
    ) -> ImageFacts:
        with self._spool() as spool:
            for chunk in chunks:
                spool.write(hashing.feed(chunk))
            facts = verify(spool, hashing.size, output_format, where, size)
            spool.seek(0)
            target.parent.mkdir(parents=True, exist_ok=True)
            out = target.open("wb")
            try:
                shutil.copyfileobj(spool, out, CHUNK)
            except BaseException:
                _abandon(out)
                raise
            out.close()  # the upload (or its last part) happens here; a failure stores nothing
        return facts

    def _download(self, url: str, entry: Mapping[str, Any]) -> Generator[bytes, None, None]:
        """Stream an image URL once, decoded 64 KiB at a time; a 404/410 means it expired."""
        response = self._open(url, entry)
        try:
            declared = response.headers.get("content-length") or "0"
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise BflImageIntegrityError(
                    f"{_label(entry)}: the image is {int(declared)} bytes, larger than the "
                    f"{self.max_bytes}-byte limit"
                )
            decoder = _Decoder(response.headers.get("content-encoding"), _label(entry))
            # As the network delivers it (httpcore reads at most 64 KiB at a time): asking httpx
            # for CHUNK-sized pieces would copy every byte once more to re-cut them.
            for raw in response.iter_raw():
                yield from decoder.feed(raw)
                if deadline_passed():  # also between chunks: proxied connections lack the hard deadline
                    raise httpx.ReadTimeout("the total deadline passed")
            decoder.finish()
        finally:
            response.close()

    def _open(self, url: str, entry: Mapping[str, Any]) -> httpx.Response:
        """The final response for ``url`` after at most ``max_redirects`` redirects to allowed hosts."""
        current = self._checked_url(url, entry, previous=None)
        for _ in range(self.max_redirects + 1):
            response = self._client.send(
                self._client.build_request("GET", current, headers={"Accept-Encoding": "gzip, deflate"}),
                stream=True,
            )
            if response.status_code not in _REDIRECTS or "location" not in response.headers:
                break
            location = response.headers["location"]
            response.close()
            try:
                following = current.join(location)
            except (httpx.InvalidURL, ValueError):
                raise BflLandingError(
                    f"{_label(entry)}: the image URL redirected to an invalid location",
                    task_uuid=_task_uuid(entry),
                ) from None
            current = self._checked_url(following, entry, previous=current)
        else:
            response.close()
            raise BflLandingError(
                f"{_label(entry)}: the image URL redirected more than {self.max_redirects} time(s)",
                task_uuid=_task_uuid(entry),
            )
        if response.status_code >= 400:
            response.close()
            if response.status_code in (404, 410):
                raise BflImageExpiredError(
                    f"{_label(entry)}: the image URL answered HTTP {response.status_code}: it expired "
                    "(ttl) before it was downloaded",
                    task_uuid=_task_uuid(entry),
                    status_code=response.status_code,
                )
            raise BflLandingError(
                f"{_label(entry)}: downloading the image answered HTTP {response.status_code}",
                task_uuid=_task_uuid(entry),
                status_code=response.status_code,
            )
        if response.status_code != 200:
            response.close()
            raise BflLandingError(
                f"{_label(entry)}: downloading the image answered HTTP {response.status_code}, not 200",
                task_uuid=_task_uuid(entry),
                status_code=response.status_code,
            )
        return response

    def _checked_url(
        self, url: str | httpx.URL, entry: Mapping[str, Any], previous: httpx.URL | None
    ) -> httpx.URL:
        """``url`` if it is http(s), no downgrade from https, and on an allowed host; else a clear error."""
        hop = "redirected to" if previous is not None else "is"
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise BflLandingError(
                f"{_label(entry)}: the image URL {hop} an invalid URL", task_uuid=_task_uuid(entry)
            ) from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise BflLandingError(
                f"{_label(entry)}: the image URL {hop} a non-http(s) location (scheme {parsed.scheme[:20]!r})",
                task_uuid=_task_uuid(entry),
            )
        if previous is not None and previous.scheme == "https" and parsed.scheme == "http":
            raise BflLandingError(
                f"{_label(entry)}: the image URL redirected from https to plain http; refused",
                task_uuid=_task_uuid(entry),
            )
        if self.image_hosts is not None and not _host_allowed(parsed.host, self.image_hosts):
            raise BflLandingError(
                f"{_label(entry)}: the image URL {hop} host {parsed.host[:100]!r}, which is not in "
                f"image_hosts ({', '.join(self.image_hosts)})",
                task_uuid=_task_uuid(entry),
            )
        return parsed


class _Decoder:
    """
    Undo a ``Content-Encoding`` with bounded output: at most :data:`CHUNK` bytes per step.

    httpx would inflate a whole network read at once (a 64 KiB gzip read can become 64 MB), so
    landing reads raw bytes and inflates them here, where every piece is counted against the cap.
    """

    def __init__(self, encoding: str | None, label: str) -> None:
        name = (encoding or "identity").strip().lower()
        self._label = label
        self._name = name
        if name in ("", "identity"):
            self._inflate = None
        elif name in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif name == "deflate":
            self._inflate = zlib.decompressobj()
        else:
            raise BflImageIntegrityError(
                f"{label}: the image was sent with a Content-Encoding landing does not decode "
                "(allowed: gzip, deflate, identity)"
            )

    def feed(self, raw: bytes) -> Iterator[bytes]:
        if self._inflate is None:
            yield raw
            return
        data = raw
        try:
            while data:
                yield self._inflate.decompress(data, CHUNK)
                data = self._inflate.unconsumed_tail
        except zlib.error:
            raise self._broken() from None

    def finish(self) -> None:
        if self._inflate is not None and not self._inflate.eof:
            raise self._broken()

    def _broken(self) -> BflImageIntegrityError:
        return BflImageIntegrityError(
            f"{self._label}: the body does not decode as the {self._name} Content-Encoding it declares"
        )


def _abandon(file: Any) -> None:
    """
    Throw away a remote file that failed while being written.

    Closing it (what ``with`` does on an error) would upload what was written so far under the
    final key: a cut-short object where a verified image belongs. fsspec's buffered files discard
    their buffer and abort a multipart upload instead; any other file is closed as before.
    """
    from fsspec.spec import AbstractBufferedFile

    # ObjectStoragePath.open wraps fsspec's file for lineage (Airflow 3.1-3.3: ``_obj``).
    buffered = getattr(file, "_obj", file)
    if not isinstance(buffered, AbstractBufferedFile):
        file.close()
        return
    try:
        buffered.discard()
    except Exception as failure:  # the original error matters more; an aborted upload expires anyway
        log.warning("Discarding a half-written upload failed: %s: %s", type(failure).__name__, failure)
    buffered.closed = True  # never flushed: not by close(), not when garbage-collected


def landing_error(exc: BaseException, entry: Mapping[str, Any], attempts: int | None = None) -> BflError:
    """Any exception met while landing ``entry`` as a :class:`BflError` that quotes no response bytes."""
    if isinstance(exc, BflError):
        return exc
    task_uuid = _task_uuid(entry)
    tries = f" after {attempts} attempt(s)" if attempts else ""
    if isinstance(exc, httpx.DecodingError):
        return BflImageIntegrityError(
            f"{_label(entry)}: the body does not decode{tries}", task_uuid=task_uuid
        )
    if isinstance(exc, httpx.HTTPError):
        # httpx's messages name the URL and the protocol failure, never body bytes.
        return BflLandingError(
            f"{_label(entry)}: downloading the image failed{tries}: {type(exc).__name__}: {str(exc)[:300]}",
            task_uuid=task_uuid,
        )
    if isinstance(exc, OSError):
        return BflLandingError(
            f"{_label(entry)}: storing the image failed: {type(exc).__name__}: {str(exc)[:300]}",
            task_uuid=task_uuid,
        )
    return BflLandingError(f"{_label(entry)}: landing failed: {type(exc).__name__}", task_uuid=task_uuid)


def _host_patterns(hosts: Collection[str] | None) -> tuple[str, ...] | None:
    if hosts is None:
        return None
    if isinstance(hosts, str):
        hosts = [hosts]
    patterns = tuple(str(host).strip().lower().rstrip(".") for host in hosts)
    if not patterns or not all(_HOST_PATTERN.match(pattern) for pattern in patterns):
        raise BflInvalidRequestError(
            f"image_hosts: got {list(hosts)!r:.200}; allowed: host names such as 'im.runware.ai' or "
            "'*.runware.ai' (no scheme, port or path)",
            parameter="image_hosts",
        )
    return patterns


def _host_allowed(host: str, patterns: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(
        host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern for pattern in patterns
    )


def _size_of(requested: Requested) -> tuple[int, int] | None:
    width, height = requested.get("width"), requested.get("height")
    if isinstance(width, int) and isinstance(height, int):
        return width, height
    return None


def _task_uuid(entry: Mapping[str, Any]) -> str | None:
    task_uuid = entry.get("taskUUID")
    return task_uuid if isinstance(task_uuid, str) else None


def _label(entry: Mapping[str, Any]) -> str:
    return f"image {str(entry.get('imageUUID'))[:64]} of task {str(entry.get('taskUUID'))[:64]}"


def _record(
    entry: Mapping[str, Any],
    target: ObjectStoragePath,
    hashing: _Hashing,
    facts: ImageFacts,
    requested: Requested,
) -> dict[str, Any]:
    described = {name: requested[name] for name in ("prompt", "key") if requested.get(name) is not None}
    return {
        **entry,
        **described,
        "storedURI": stored_uri(target),
        "sha256": hashing.sha256.hexdigest(),
        "bytes": hashing.size,
        "contentType": facts.content_type,
        "format": facts.format,
        "width": facts.width,
        "height": facts.height,
        "requested": {key: requested[key] for key in ("width", "height", "outputFormat")},
    }


def requested_of(planned: Any) -> dict[str, Any]:
    """
    What landing and QA compare against, from a plan entry (or an ImageInferenceRequest).

    ``prompt`` and ``key`` (e.g. a SKU) are included when the plan has them: every record carries
    them, so an image can be tied back to its product in XCom, QA and review.
    """
    requested: dict[str, Any] = {
        "width": planned.width,
        "height": planned.height,
        "outputFormat": planned.output_format,
    }
    prompt = getattr(planned, "prompt", None)
    if prompt is None:
        prompt = getattr(planned, "positive_prompt", None)
    for name, value in (("prompt", prompt), ("key", getattr(planned, "key", None))):
        if isinstance(value, str) and value:
            requested[name] = value
    return requested
