"""Real, deterministic placeholder images, so download/decode/QA code paths see genuine files.

Each image is a seeded smooth gradient with a few seeded shapes: never near-uniform, identical for the
same (seed, size, format, quality) and perceptually distinct across seeds. A request with reference
images gets the first one as a framed thumbnail in the bottom-right corner, so an edit visibly
derives from its product. Pillow is imported only when
an image is actually rendered, and encoded bytes are kept in a byte-bounded LRU because benchmarks ask
for the same sizes over and over.
"""

from __future__ import annotations

import io
import random
import threading
from collections import OrderedDict
from typing import Any, NamedTuple

MIME_TYPES = {"JPG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
EXTENSIONS = {"JPG": "jpg", "PNG": "png", "WEBP": "webp"}
BLANK_COLOR = (128, 128, 128)


class RenderKey(NamedTuple):
    seed: int
    width: int
    height: int
    output_format: str
    quality: int
    blank: bool
    #: A small PNG of the request's first reference image, drawn into the corner (None: none).
    reference: bytes | None = None


class ImageRenderer:
    """Thread-safe renderer with an LRU cache bounded by total encoded bytes."""

    def __init__(self, max_cache_bytes: int = 256 * 1024 * 1024) -> None:
        self._max_bytes = max_cache_bytes
        self._cache: OrderedDict[RenderKey, bytes] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self.renders = 0
        """Images actually drawn and encoded (cache misses); useful to check caching works."""

    def render(self, key: RenderKey) -> bytes:
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        data = _encode(key)
        with self._lock:
            self.renders += 1
            if key not in self._cache and len(data) <= self._max_bytes:
                self._cache[key] = data
                self._cached_bytes += len(data)
                while self._cached_bytes > self._max_bytes:
                    _, evicted = self._cache.popitem(last=False)
                    self._cached_bytes -= len(evicted)
        return data


def _encode(key: RenderKey) -> bytes:
    from PIL import Image

    if key.blank:
        image = Image.new("RGB", (key.width, key.height), BLANK_COLOR)
    else:
        image = _draw(key.seed, key.width, key.height)
    if key.reference is not None:
        _paste_reference(image, key.reference)
    buffer = io.BytesIO()
    options: dict[str, Any]
    if key.output_format == "JPG":
        options = {"format": "JPEG", "quality": key.quality}
    elif key.output_format == "PNG":
        options = {"format": "PNG", "compress_level": 1}
    else:
        options = {"format": "WEBP", "quality": key.quality, "method": 0}
    image.save(buffer, **options)
    return buffer.getvalue()


def _draw(seed: int, width: int, height: int) -> Any:
    """A seeded two-colour gradient at a seeded angle, plus seeded ellipses, boxes and triangles."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    # The gradient is smooth, so it is built at 1/8 scale and upsampled: rotation at full size is slow.
    small_w, small_h = max(width // 8, 8), max(height // 8, 8)
    side = int((small_w**2 + small_h**2) ** 0.5) + 2
    ramp = Image.linear_gradient("L").resize((side, side), Image.Resampling.BILINEAR)
    ramp = ramp.rotate(rng.uniform(0.0, 360.0), resample=Image.Resampling.BILINEAR, expand=False)
    left, top = (side - small_w) // 2, (side - small_h) // 2
    mask = ramp.crop((left, top, left + small_w, top + small_h)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    start = Image.new("RGB", (width, height), _color(rng))
    end = Image.new("RGB", (width, height), _color(rng))
    image = Image.composite(end, start, mask)
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    for _ in range(rng.randint(4, 7)):
        cx, cy = rng.randrange(width), rng.randrange(height)
        radius = int(short * rng.uniform(0.08, 0.3))
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        shape = rng.randrange(3)
        if shape == 0:
            draw.ellipse(box, fill=_color(rng))
        elif shape == 1:
            draw.rectangle(box, fill=_color(rng))
        else:
            draw.polygon(
                [(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=_color(rng)
            )
    return image


def _paste_reference(image: Any, thumbnail: bytes) -> None:
    """The reference, a quarter of the short side, framed in white in the bottom-right corner."""
    from PIL import Image

    side = max(min(image.width, image.height) // 4, 16)
    with Image.open(io.BytesIO(thumbnail)) as opened:
        reference = opened.convert("RGB")
    scale = side / max(reference.size)
    reference = reference.resize(
        (max(int(reference.width * scale), 1), max(int(reference.height * scale), 1))
    )
    frame = Image.new("RGB", (reference.width + 8, reference.height + 8), (255, 255, 255))
    frame.paste(reference, (4, 4))
    margin = max(side // 10, 4)
    image.paste(frame, (image.width - frame.width - margin, image.height - frame.height - margin))


def _color(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))
