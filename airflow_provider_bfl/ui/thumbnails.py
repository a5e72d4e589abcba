"""
Thumbnails, made once on first view and cached next to the image.

``.../{taskUUID}/{imageUUID}.png`` gets ``.../{taskUUID}/.thumbnails/{imageUUID}.png.webp``: beside
the image on the same store, so a quarantined or published copy carries its own, and a hidden
folder, so nothing that lists image files picks it up. A cache that cannot be written (read-only
storage) is logged and the thumbnail is still served, made again next time.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile

log = logging.getLogger(__name__)

#: Longest side in pixels: sharp at the gallery's tile size on a 2x display.
THUMBNAIL_SIZE = 320
THUMBNAIL_QUALITY = 75
THUMBNAIL_DIR = ".thumbnails"
CONTENT_TYPE = "image/webp"


def thumbnail_uri(image_uri: str) -> str:
    folder, _, name = image_uri.rpartition("/")
    return f"{folder}/{THUMBNAIL_DIR}/{name}.webp"


def make_thumbnail(data: bytes) -> bytes:
    """A WEBP no larger than THUMBNAIL_SIZE on its longest side (decoding JPEGs at reduced scale)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))  # JPEG: decode at 1/2..1/8 scale
        converted = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
    converted.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    out = io.BytesIO()
    converted.save(out, "WEBP", quality=THUMBNAIL_QUALITY, method=4)
    return out.getvalue()


def cached_thumbnail(image_uri: str, conn_id: str | None = None) -> bytes:
    """The cached thumbnail of the object at ``image_uri``, made (and cached) if there is none."""
    from airflow_provider_bfl.qa.storage import path_of

    cache_uri = thumbnail_uri(image_uri)
    try:
        return path_of(cache_uri, conn_id).read_bytes()
    except FileNotFoundError:
        pass
    data = make_thumbnail(path_of(image_uri, conn_id).read_bytes())
    try:
        _write(cache_uri, data, conn_id)
    except OSError as exc:
        log.warning("Could not cache the thumbnail of %s at %s: %s", image_uri, cache_uri, exc)
    return data


def _write(uri: str, data: bytes, conn_id: str | None) -> None:
    """Atomic on local disks (a temporary file renamed into place); one PUT on object stores."""
    from airflow_provider_bfl.qa.storage import as_uri, path_of

    uri = as_uri(uri)
    if not uri.startswith("file://"):
        path_of(uri, conn_id).write_bytes(data)
        return
    local = uri.removeprefix("file://")
    os.makedirs(os.path.dirname(local), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(local), prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, local)
    except BaseException:
        os.unlink(temporary)
        raise
