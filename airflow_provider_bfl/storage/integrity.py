"""What makes landed bytes trustworthy: the format they claim, a structure Pillow accepts, a sane size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO

from airflow_provider_bfl.exceptions import BflImageIntegrityError

#: File signatures of the formats the model can produce.
MAGIC = {
    "JPG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "WEBP": (b"RIFF",),
}
CONTENT_TYPES = {"JPG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
EXTENSIONS = {"JPG": "jpg", "PNG": "png", "WEBP": "webp"}
_PILLOW_FORMATS = {"JPEG": "JPG", "PNG": "PNG", "WEBP": "WEBP"}
#: Smallest plausible encoded image: a flat 256x256 WEBP is ~40 bytes. Whether a tiny or blank
#: image is acceptable is QA's call (file_size/not_blank checks), not landing's.
MIN_BYTES = 32
#: Largest plausible one: a 1440x1440 PNG of noise is ~6 MB; anything far beyond is not ours.
MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class ImageFacts:
    format: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def sniff_format(head: bytes) -> str | None:
    """The format the first bytes announce, or None."""
    for name, signatures in MAGIC.items():
        if any(head.startswith(signature) for signature in signatures):
            if name == "WEBP" and head[8:12] != b"WEBP":
                continue
            return name
    return None


def verify(
    file: IO[bytes],
    size: int,
    expected_format: str,
    where: str,
    expected_size: tuple[int, int] | None = None,
) -> ImageFacts:
    """
    Check an image file before it is committed; raise :class:`BflImageIntegrityError` if it is off.

    Checks the size bounds, the magic bytes against the requested format, and that Pillow parses
    the header, whose format and dimensions must be what was asked for (``expected_size``): a
    small file declaring 13000x13000 would cost QA gigabytes to decode. Decoding every pixel is
    QA's ``decodes`` check: doing it here too would cost landing about a quarter of its
    throughput (``make bench``). Messages describe the bytes, never quote them.
    """
    if size < MIN_BYTES or size > MAX_BYTES:
        raise BflImageIntegrityError(
            f"{where}: {size} bytes is not a plausible image size ({MIN_BYTES}..{MAX_BYTES})"
        )
    file.seek(0)
    head = file.read(16)
    found = sniff_format(head)
    if found is None:
        raise BflImageIntegrityError(
            f"{where}: the bytes are not an image (no {', '.join(MAGIC)} signature at the start)"
        )
    if found != expected_format:
        raise BflImageIntegrityError(f"{where}: expected a {expected_format} image, got {found} bytes")
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise BflImageIntegrityError(
            "Verifying images needs Pillow: pip install 'airflow-provider-bfl[images]'"
        ) from None
    if not _ends_properly(file, size, found):
        raise BflImageIntegrityError(
            f"{where}: the image is damaged: its {found} data is truncated (no end marker)"
        )
    file.seek(0)
    try:
        with Image.open(
            file, formats=[name for name, ours in _PILLOW_FORMATS.items() if ours == found]
        ) as image:
            width, height = image.size
            pillow_format = image.format or ""
    except Image.DecompressionBombError:
        raise BflImageIntegrityError(
            f"{where}: the image header declares more pixels than any {expected_format} the model makes"
        ) from None
    except Exception as exc:
        # Pillow's messages can quote chunk bytes: name the failure, not the text.
        raise BflImageIntegrityError(
            f"{where}: the image is damaged (its {found} header does not parse: {type(exc).__name__})"
        ) from None
    facts = ImageFacts(_PILLOW_FORMATS.get(pillow_format, pillow_format), width, height)
    if facts.format != expected_format:
        raise BflImageIntegrityError(
            f"{where}: expected a {expected_format} image, its header says {facts.format}"
        )
    if expected_size is not None and (width, height) != tuple(expected_size):
        raise BflImageIntegrityError(
            f"{where}: the image header declares {width}x{height}, the request asked for "
            f"{expected_size[0]}x{expected_size[1]}"
        )
    return facts


def _ends_properly(file: IO[bytes], size: int, found: str) -> bool:
    """A cheap completeness check: the format's end marker is where it belongs (catches truncation)."""
    file.seek(max(0, size - 12))
    tail = file.read(12)
    if found == "PNG":
        return tail[4:8] == b"IEND"
    if found == "JPG":
        return tail.endswith(b"\xff\xd9")
    file.seek(4)
    declared = int.from_bytes(file.read(4), "little")  # RIFF size counts everything after its 8-byte header
    return declared + 8 == size
