"""
Everything the checks need to know about an image's pixels, measured in one decode.

Each image is decoded once and reduced to a few numbers (:class:`ImageFacts`), so the bytes and
pixels of one image are released before the next is read: memory stays flat for 500-image batches.
Pillow is imported inside the functions only: DAG parsing imports this package constantly.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Side of the thumbnail the statistics are computed on: blankness does not need full resolution.
STATS_SIZE = 128
#: Colour buckets per channel for the dominant-colour share (256 / 16 = 16 levels).
BUCKET_SHIFT = 4
#: The difference hash compares neighbours on a HASH_SIDE x HASH_SIDE grid, rows and columns.
HASH_SIDE = 8
HASH_BITS = 2 * HASH_SIDE * HASH_SIDE
#: Pixels of the largest image any registered model makes (FLUX1.1 [pro] Ultra, 2368x1792; a test
#: ties it to the registry): the decode limit when a record does not say what was requested.
MAX_MODEL_PIXELS = 2368 * 1792


PILLOW_MISSING = "Image QA needs Pillow: pip install 'airflow-provider-bfl[images]'"


def require_pillow() -> None:
    """Fail before reading a whole batch when the ``images`` extra is not installed."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise ImportError(PILLOW_MISSING) from None


@dataclass(frozen=True)
class ImageFacts:
    """
    What one decode of an image told us; ``error`` is set (and the rest empty) when it failed.

    ``not_decoded`` says why the pixels were refused (more than the request allows): then only
    the header's ``format``, ``width`` and ``height`` are known.
    """

    error: str | None = None
    not_decoded: str | None = None
    format: str | None = None
    width: int = 0
    height: int = 0
    stddev: float = 0.0
    dominant_share: float = 0.0
    dhash: int | None = None

    @property
    def decoded(self) -> bool:
        return self.error is None and self.not_decoded is None

    @property
    def header_read(self) -> bool:
        return self.error is None


def allowed_pixels(requested: Any) -> int:
    """Most pixels QA decodes for a record: what its request asked for, else the model's largest image."""
    if isinstance(requested, Mapping):
        width, height = requested.get("width"), requested.get("height")
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            return width * height
    return MAX_MODEL_PIXELS


def oversized(image: Any, max_pixels: int) -> str | None:
    """Why ``image`` (opened, header read, not decoded) must not be decoded, or None."""
    width, height = image.size
    if width * height > max_pixels:
        return (
            f"not decoded: the header declares {width}x{height} ({width * height} pixels), more than "
            f"the {max_pixels} the request allows"
        )
    return None


def measure(data: bytes, max_pixels: int = MAX_MODEL_PIXELS) -> ImageFacts:
    """
    Decode ``data`` completely and measure it; a decode failure is reported, not raised.

    The header is checked first: an image declaring more than ``max_pixels`` (what the request
    allows) is reported, never decoded, so a 481 KiB PNG declaring 13000x13000 costs nothing.
    Pillow's own bomb limit is process-wide and far higher (89 million pixels), so it is no guard.
    Relies on Pillow refusing truncated files, its default: code that sets the process-wide
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` makes truncated images decode (QA leaves it alone).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            too_big = oversized(image, max_pixels)
            if too_big is not None:
                return ImageFacts(
                    not_decoded=too_big, format=image.format, width=image.width, height=image.height
                )
            image.load()  # the header alone says nothing about a truncated or corrupt body
            decoded_format = image.format
            width, height = image.size
            small = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return ImageFacts(error=f"does not decode: {type(exc).__name__}: {exc}")
    small.thumbnail((STATS_SIZE, STATS_SIZE), Image.Resampling.BILINEAR)
    return ImageFacts(
        format=decoded_format,
        width=width,
        height=height,
        stddev=channel_stddev(small),
        dominant_share=dominant_share(small),
        dhash=difference_hash(small.convert("L")),
    )


def channel_stddev(rgb: Any) -> float:
    """The largest standard deviation of the R, G and B channels."""
    from PIL import ImageStat

    return float(max(ImageStat.Stat(rgb).stddev))


def dominant_share(rgb: Any) -> float:
    """Share of pixels in the most common colour bucket (each channel cut to 16 levels)."""
    lut = [value >> BUCKET_SHIFT << BUCKET_SHIFT for value in range(256)] * 3
    pixels = rgb.width * rgb.height
    colors = rgb.point(lut).getcolors(maxcolors=pixels)
    return max(count for count, _ in colors) / pixels


def difference_hash(gray: Any) -> int:
    """
    A 128-bit dHash: is each cell brighter than its right neighbour, and than the one below?

    Hand-rolled because the ``imagehash`` package pulls numpy, scipy and PyWavelets for this. Rows
    and columns together separate distinct images far better than the classic 64-bit row hash,
    which put some distinct emulator images within 3 bits of each other.
    """
    from PIL import Image

    side = HASH_SIDE
    rows = gray.resize((side + 1, side), Image.Resampling.LANCZOS).tobytes()
    columns = gray.resize((side, side + 1), Image.Resampling.LANCZOS).tobytes()
    bits = 0
    for y in range(side):
        for x in range(side):
            bits = (bits << 1) | (rows[y * (side + 1) + x] > rows[y * (side + 1) + x + 1])
    for y in range(side):
        for x in range(side):
            bits = (bits << 1) | (columns[y * side + x] > columns[(y + 1) * side + x])
    return bits


def hamming(first: int, second: int) -> int:
    return (first ^ second).bit_count()
