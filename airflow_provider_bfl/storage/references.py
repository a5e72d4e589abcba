"""
Reference images (the product in the picture): where they are named, checked before any money is
spent, and inlined into the request only as it is sent.

A reference is named by a *locator*: an http(s) URL (sent to the API as is: the server fetches it)
or an ``ObjectStoragePath`` URI (``file://``, ``s3://``...), which is read and sent as a data URI.
Plans, XCom, logs and derived taskUUIDs only ever see the locator, never the image bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from airflow_provider_bfl.exceptions import BflInvalidRequestError

#: Pillow format name -> the API's name for it. Runware's inference reference lists PNG, JPG and WEBP.
FORMATS = {"PNG": "PNG", "JPEG": "JPG", "WEBP": "WEBP"}
MEDIA_TYPES = {"PNG": "image/png", "JPG": "image/jpeg", "WEBP": "image/webp"}
#: The provider's own guards (no Runware limit is published; uploads are kept at <= 2048 px):
#: enough for any camera photo, small enough that a request body and a worker stay sane.
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
MIN_SIDE = 16
HTTP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Reference:
    """A reference image that passed the checks: its locator and what it is (never its bytes)."""

    locator: str
    format: str
    width: int
    height: int
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.locator,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


def locators(value: Any) -> list[str]:
    """
    The locators named by ``reference_images``: one URI, URL or path, an ``ObjectStoragePath``, a
    landed image record (its ``storedURI``), or a list of any of these (e.g. an upstream task's results).
    """
    if value is None:
        return []
    if isinstance(value, str | Path) or _is_storage_path(value):
        return [_locator(value)]
    if isinstance(value, Mapping):
        return [_record_locator(value)]
    if isinstance(value, Iterable):
        found: list[str] = []
        for item in value:  # nested lists too: a mapped upstream task gives one list per map index
            found.extend(locators(item))
        return found
    raise BflInvalidRequestError(
        f"reference_images: got {type(value).__name__}; give a URI (file://, s3://, https://), a local "
        "path, a landed image record (with storedURI) or a list of these",
        parameter="reference_images",
    )


def _is_storage_path(value: Any) -> bool:
    return type(value).__name__ == "ObjectStoragePath"


def _record_locator(record: Mapping[str, Any]) -> str:
    uri = record.get("storedURI")
    if not isinstance(uri, str) or not uri:
        raise BflInvalidRequestError(
            f"reference_images: an image record needs a storedURI (land it first, destination=); got keys "
            f"{sorted(map(str, record))[:10]}",
            parameter="reference_images",
        )
    return _locator(uri)


def _locator(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise BflInvalidRequestError("reference_images: got an empty string", parameter="reference_images")
    if text.lower().startswith("data:"):
        raise BflInvalidRequestError(
            "reference_images: give a URI or a path, not image data (bytes never go through XCom)",
            parameter="reference_images",
        )
    if "://" in text:
        return text
    return Path(text).expanduser().resolve().as_uri()


def is_http(locator: str) -> bool:
    return urlsplit(locator).scheme in ("http", "https")


def load(locator: str, *, conn_id: str | None = None, timeout: float = HTTP_TIMEOUT) -> bytes:
    """The reference's bytes (at most :data:`MAX_BYTES`, else a clear error)."""
    if is_http(locator):
        return _download(locator, timeout)
    path: Any
    if urlsplit(locator).scheme == "file":  # the common case needs no filesystem registry
        path = Path(url2pathname(urlsplit(locator).path))
    else:
        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath(locator, conn_id=conn_id) if conn_id else ObjectStoragePath(locator)
    try:
        with path.open("rb") as handle:
            data: bytes = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise _invalid(locator, "no such file") from None
    except OSError as exc:
        raise _invalid(locator, f"cannot be read ({type(exc).__name__}: {exc})") from None
    return _bounded(locator, data)


def _download(url: str, timeout: float) -> bytes:
    import httpx

    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            if response.status_code != 200:
                raise _invalid(url, f"answered HTTP {response.status_code}")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_BYTES:
                    raise _invalid(url, f"is larger than {MAX_BYTES} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise _invalid(url, f"could not be downloaded ({type(exc).__name__})") from None
    return b"".join(chunks)


def _bounded(locator: str, data: bytes) -> bytes:
    if len(data) > MAX_BYTES:
        raise _invalid(locator, f"is larger than {MAX_BYTES} bytes")
    return data


def check(locator: str, data: bytes) -> Reference:
    """What the image is, from its header; a clear error for anything the API would refuse."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - the images extra is part of dev
        raise BflInvalidRequestError(
            "reference_images need Pillow: pip install 'airflow-provider-bfl[images]'",
            parameter="reference_images",
        ) from None
    if not data:
        raise _invalid(locator, "is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            pillow_format, (width, height) = image.format, image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise _invalid(locator, "is not an image Pillow can read") from None
    api_format = FORMATS.get(str(pillow_format))
    if api_format is None:
        raise _invalid(locator, f"is {pillow_format}; references must be PNG, JPG or WEBP")
    if min(width, height) < MIN_SIDE or width * height > MAX_PIXELS:
        raise _invalid(
            locator,
            f"is {width}x{height}; references must be at least {MIN_SIDE} px a side and at most {MAX_PIXELS} pixels",
        )
    return Reference(locator, api_format, width, height, len(data), hashlib.sha256(data).hexdigest())


def checked(locators_: Sequence[str], *, conn_id: str | None = None) -> list[Reference]:
    """Every reference loaded and checked (all problems reported at once), before any request is sent."""
    found: list[Reference] = []
    problems: list[str] = []
    for locator in locators_:
        try:
            found.append(check(locator, load(locator, conn_id=conn_id)))
        except BflInvalidRequestError as exc:
            problems.append(exc.message)
    if problems:
        raise BflInvalidRequestError("; ".join(problems), parameter="reference_images", violations=problems)
    return found


def wire_value(locator: str, *, conn_id: str | None = None) -> str:
    """What the API receives for ``locator``: the URL itself, or the file as a data URI."""
    if is_http(locator):
        return locator
    data = load(locator, conn_id=conn_id)
    reference = check(locator, data)
    return f"data:{MEDIA_TYPES[reference.format]};base64,{base64.b64encode(data).decode('ascii')}"


def _invalid(locator: str, why: str) -> BflInvalidRequestError:
    return BflInvalidRequestError(f"reference image {_shown(locator)} {why}", parameter="reference_images")


def _shown(locator: str) -> str:
    """A locator fit for a message: a URL without its query (presigned URLs carry credentials)."""
    parts = urlsplit(locator)
    if parts.query:
        return repr(parts._replace(query="...").geturl())
    return repr(locator if len(locator) <= 200 else locator[:197] + "...")
