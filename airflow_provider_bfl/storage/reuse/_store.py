"""
Conditional writes of small objects, the one primitive the reuse index is built on.

Three operations, each atomic against any number of threads, processes and machines sharing
the destination: :meth:`read` an object with a token naming its version, :meth:`create` it
only if it is absent, and :meth:`swap` it only if it is still the version read. A write that
loses raises :class:`Lost`; the index then reads again and decides again.

- Local (``file://``): create writes a hidden temporary file (``O_CREAT|O_EXCL``), fsyncs it and
  hard-links it to its name, which fails if the name exists (``link`` never replaces); swap
  holds an exclusive ``flock`` on a sidecar lock file, re-reads, and ``os.replace``-s the file
  (the name always exists, so a concurrent create still loses). The token is the content's sha256.
- S3: create is a PUT with ``If-None-Match: *``, swap a PUT with ``If-Match: <ETag>``, a read is
  a GET pinned by s3fs to the ETag it saw first: the bucket decides who wins. Sent through the
  destination's own ``ObjectStoragePath`` filesystem (s3fs), so it uses the same connection as landing.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_bfl.storage.reuse.entries import MAX_ENTRY_BYTES

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

#: A read that keeps meeting a changing object gives up after this many tries (each is a GET).
READ_ATTEMPTS = 5


class Lost(Exception):
    """A conditional write lost to another writer: read again, decide again (never leaves the index)."""


@dataclass(frozen=True)
class Stored:
    """An object as read, and the token a :meth:`Store.swap` of it must present."""

    data: bytes
    token: str


class Store(Protocol):
    def read(self, key: str) -> Stored | None: ...

    def create(self, key: str, data: bytes) -> None: ...

    def swap(self, key: str, data: bytes, token: str) -> None: ...

    def where(self, key: str) -> str: ...


class LocalStore:
    """Objects as files under ``root`` (a local folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def where(self, key: str) -> str:
        return f"file://{self.root / key}"

    def read(self, key: str) -> Stored | None:
        try:
            with open(self.root / key, "rb") as file:
                data = file.read(MAX_ENTRY_BYTES + 1)
        except FileNotFoundError:
            return None
        return Stored(data, hashlib.sha256(data).hexdigest())

    def create(self, key: str, data: bytes) -> None:
        final = self.root / key
        if final.exists():
            raise Lost  # saves writing a copy only to lose; the link below is what decides
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._written(final, data)
        try:
            os.link(temporary, final)
        except FileExistsError:
            raise Lost from None
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_folder(final.parent)

    def swap(self, key: str, data: bytes, token: str) -> None:
        final = self.root / key
        lock = os.open(final.with_name(f".{final.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.read(key)
            if current is None or current.token != token:
                raise Lost
            temporary = self._written(final, data)
            try:
                os.replace(temporary, final)
            finally:
                temporary.unlink(missing_ok=True)
            _fsync_folder(final.parent)
        finally:
            os.close(lock)  # releases the flock

    @staticmethod
    def _written(final: Path, data: bytes) -> Path:
        """A hidden, fsynced temporary copy of ``data`` beside ``final`` (created exclusively)."""
        temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        except BaseException:
            os.close(descriptor)
            temporary.unlink(missing_ok=True)
            raise
        os.close(descriptor)
        return temporary


class S3Store:
    """Objects under ``root`` in S3, through its ``ObjectStoragePath`` filesystem (s3fs)."""

    def __init__(self, root: ObjectStoragePath) -> None:
        self.root = root
        self.fs: Any = root.fs

    def where(self, key: str) -> str:
        return f"s3://{self._path(key)}"

    def _path(self, key: str) -> str:
        return f"{str(self.root.path).rstrip('/')}/{key}"

    def read(self, key: str) -> Stored | None:
        path = self._path(key)
        for _ in range(READ_ATTEMPTS):
            self.fs.invalidate_cache(path)  # a cached listing could name an older ETag
            try:
                with self.fs.open(path, "rb") as file:
                    token = str(file.details["ETag"])
                    data = file.read(MAX_ENTRY_BYTES + 1)  # s3fs sends If-Match: <that ETag>
            except FileNotFoundError:
                return None
            except OSError as exc:
                if not _precondition_failed(exc):
                    raise
                continue  # replaced between the HEAD and the GET: read the new one
            return Stored(data, token)
        raise OSError(errno.EAGAIN, f"{self.where(key)} kept changing while it was read")

    def create(self, key: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._path(key), data, mode="create")  # If-None-Match: *
        except FileExistsError:
            raise Lost from None
        except OSError as exc:
            if _precondition_failed(exc):
                raise Lost from None
            raise

    def swap(self, key: str, data: bytes, token: str) -> None:
        try:
            self.fs.pipe_file(self._path(key), data, IfMatch=token)
        except FileNotFoundError:
            raise Lost from None  # deleted meanwhile: read again (it is absent now)
        except OSError as exc:
            if _precondition_failed(exc):
                raise Lost from None
            raise


def _precondition_failed(exc: OSError) -> bool:
    """
    S3 refused a conditional request: 412 ``PreconditionFailed``, or 409
    ``ConditionalRequestConflict`` (another conditional write to the key was in flight).

    Read from the botocore error s3fs keeps in the cause chain: s3fs gives 412 the same ``EINVAL``
    as a malformed request, which must not pass for a lost race, and a read whose object was
    replaced after s3fs took its ETag comes back as ``FileExpired`` caused by that ``EINVAL``.
    """
    cause: BaseException | None = exc.__cause__
    while cause is not None:
        response = getattr(cause, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412
        cause = cause.__cause__
    return False


def _fsync_folder(folder: Path) -> None:
    """Make a new or renamed name durable (a crash must not forget a claim that was acted on)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
