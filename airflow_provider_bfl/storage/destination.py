"""
Is a landing ``destination`` usable? Answered before any request is sent, so a bad one costs nothing.

Checked: the form (a ``scheme://`` URI or an absolute local path, no ``.``/``..`` segment, no
control characters), that Airflow has a filesystem for the scheme and its library imports (a
``gs://`` without ``gcsfs`` is refused here, not after the images are paid for), and for local
destinations that the folder can be created and written. Remote stores are not contacted: their
credentials and permissions are only known when the first object is written.

The segments landing adds below the destination are confined separately
(:func:`airflow_provider_bfl.storage.landing.safe_segment`).
"""

from __future__ import annotations

import importlib
import re
import tempfile
from pathlib import Path
from typing import NoReturn

from airflow_provider_bfl.exceptions import BflInvalidRequestError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LOCAL_SCHEMES = ("file", "local")
_ALLOWED_FORMS = "an absolute local path, file:///path, or an object store URI such as s3://bucket/prefix"


def validate_destination(uri: str, conn_id: str | None = None) -> None:
    """
    Raise :class:`BflInvalidRequestError` (``parameter="destination"``) unless images can land at ``uri``.

    ``conn_id`` is the storage connection the destination will be used with; it is not looked up
    here (that needs the metadata database), only named in the message of a remote destination.
    """
    if not isinstance(uri, str) or not uri.strip():
        _refuse(uri, "it is empty")
    if _CONTROL.search(uri):
        _refuse(uri, "it contains control characters")
    match = _SCHEME.match(uri)
    scheme, path = (match.group(1).lower(), match.group(2)) if match else ("", uri)
    segments = path.split("/")
    if any(segment in (".", "..") for segment in segments):
        _refuse(uri, "it has a '.' or '..' segment (images could land outside the folder it names)")
    if scheme in ("", *_LOCAL_SCHEMES):
        _check_local(uri, path)
        return
    _check_scheme(uri, scheme, conn_id)
    if not path.split("/", 1)[0]:
        _refuse(uri, f"it names no bucket or container after {scheme}://")


def _check_local(uri: str, path: str) -> None:
    if not path.startswith("/"):
        _refuse(uri, "a local destination must be an absolute path (a relative one depends on the worker)")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        _refuse(uri, f"{folder} exists and is not a folder")
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not existing.is_dir():
        _refuse(uri, f"{existing} is a file, so no folder can be created under it")
    try:
        # A real write (not os.access, which says yes to root on a read-only mount), removed at once.
        with tempfile.TemporaryFile(dir=existing, prefix=".bfl-write-check-"):
            pass
    except OSError as exc:
        _refuse(uri, f"{existing} is not writable by this worker ({exc.strerror or type(exc).__name__})")


def _check_scheme(uri: str, scheme: str, conn_id: str | None) -> None:
    from airflow.sdk.io.fs import has_fs

    if not has_fs(scheme):
        _refuse(
            uri,
            f"no filesystem is installed for {scheme}:// (installed: {', '.join(_installed_schemes())}); "
            "install the Airflow provider for that store (e.g. apache-airflow-providers-google[gcsfs] "
            "for gs://)",
        )
    _check_importable(uri, scheme, conn_id)


def _check_importable(uri: str, scheme: str, conn_id: str | None) -> None:
    """The fsspec library behind ``scheme`` imports (providers import it only when first used)."""
    from fsspec.registry import known_implementations

    known = known_implementations.get(scheme)
    if known is None:
        return
    module = known["class"].rpartition(".")[0]
    try:
        importlib.import_module(module)
    except ImportError:
        hint = known.get("err") or f"install {module.partition('.')[0]}"
        via = f" (connection {conn_id!r})" if conn_id else ""
        _refuse(
            uri,
            f"{scheme}://{via} needs the {module.partition('.')[0]} library, which is not installed: {hint}",
        )


def _installed_schemes() -> list[str]:
    from airflow.sdk.io.fs import _register_filesystems

    return sorted(f"{scheme}://" for scheme in _register_filesystems())


def _refuse(uri: object, why: str) -> NoReturn:
    shown = repr(uri) if len(repr(uri)) <= 200 else repr(uri)[:200] + "..."
    raise BflInvalidRequestError(
        f"destination {shown} cannot be used: {why}. Allowed: {_ALLOWED_FORMS}",
        parameter="destination",
    )
