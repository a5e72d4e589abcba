"""
A contact sheet: one PNG that shows a reviewer a whole QA run at a glance.

A header with the title and run summary (wrapped onto as many lines as the sheet's width needs,
so a one-image sheet shows it whole), then a grid of thumbnails in input order, each with a
two-line label: ``#index`` and ``PASS`` in green or the failing check names in red, then the
action and the image's key (e.g. a SKU) or prompt when the record carries one. Images
are read one at a time (from ``quarantinedURI`` when they were moved) and shrunk before the next is
read, so only the sheet itself is held in memory: about 48 MB of pixels for 200 images at 256 px.

Layout, all in pixels (``columns`` defaults to ``min(n, 8)``)::

    width  = columns * cell_size + (columns + 1) * GAP
    height = header + rows * (cell_size + LABEL_HEIGHT) + (rows + 1) * GAP
    header = max(TITLE_HEIGHT, 2 * GAP + header lines * LINE_HEIGHT)
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_bfl.qa import storage
from airflow_provider_bfl.qa.errors import QAInputError
from airflow_provider_bfl.qa.imaging import allowed_pixels, oversized, require_pillow
from airflow_provider_bfl.qa.report import failed_checks, summary_line

GAP = 8
TITLE_HEIGHT = 32
#: Height of one line of 13 px text.
LINE_HEIGHT = 16
LABEL_HEIGHT = 34
DEFAULT_CELL_SIZE = 256
DEFAULT_COLUMNS = 8
MAX_IMAGES = 1000

BACKGROUND = (255, 255, 255)
CELL_BACKGROUND = (224, 224, 224)
TEXT_COLOR = (48, 48, 48)
PASS_COLOR = (0, 140, 0)
FAIL_COLOR = (204, 0, 0)


def grid_size(
    count: int, cell_size: int = DEFAULT_CELL_SIZE, columns: int | None = None, header: int = TITLE_HEIGHT
) -> tuple[int, int]:
    """``(width, height)`` of the sheet for ``count`` images under a ``header`` px header."""
    columns = _columns(count, columns)
    rows = math.ceil(count / columns)
    return (
        columns * cell_size + (columns + 1) * GAP,
        header + rows * (cell_size + LABEL_HEIGHT) + (rows + 1) * GAP,
    )


def cell_origin(
    index: int,
    count: int,
    cell_size: int = DEFAULT_CELL_SIZE,
    columns: int | None = None,
    header: int = TITLE_HEIGHT,
) -> tuple[int, int]:
    """Top-left corner of image ``index``'s cell; its label starts ``cell_size`` pixels lower."""
    columns = _columns(count, columns)
    row, column = divmod(index, columns)
    return GAP + column * (cell_size + GAP), header + GAP + row * (cell_size + LABEL_HEIGHT + GAP)


def header_height(lines: int) -> int:
    return max(TITLE_HEIGHT, 2 * GAP + lines * LINE_HEIGHT)


def header_lines(text: str, width: int, font: Any | None = None) -> list[str]:
    """``text`` wrapped to ``width`` px at spaces (a word wider than a line is cut): nothing is dropped."""
    require_pillow()
    font = font or _font()
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while font.getlength(word) > width and len(word) > 1:
            cut = len(word) - 1
            while cut > 1 and font.getlength(word[:cut]) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    return lines or [""]


def make_contact_sheet(
    verdicts: Sequence[Mapping[str, Any]],
    destination: str,
    *,
    conn_id: str | None = None,
    cell_size: int = DEFAULT_CELL_SIZE,
    columns: int | None = None,
    title: str | None = None,
) -> str:
    """
    Write the contact sheet of ``verdicts`` as one PNG at ``destination``; returns its URI.

    ``destination`` is a local path or an object storage URI (``s3://bucket/qa/sheet.png``);
    ``title`` goes before the run summary (e.g. the DAG run id).
    """
    require_pillow()
    from PIL import Image, ImageDraw

    count = len(verdicts)
    if not 1 <= count <= MAX_IMAGES:
        raise QAInputError(
            f"A contact sheet needs 1 to {MAX_IMAGES} verdicts; got {count}", parameter="verdicts"
        )
    if isinstance(cell_size, bool) or not isinstance(cell_size, int) or not 32 <= cell_size <= 1024:
        raise QAInputError(
            f"cell_size: got {cell_size!r}; allowed: an integer from 32 to 1024", parameter="cell_size"
        )
    font = _font()
    width = grid_size(count, cell_size, columns)[0]
    heading = f"{title} - {summary_line(verdicts)}" if title else f"Image QA - {summary_line(verdicts)}"
    lines = header_lines(heading, width - 2 * GAP, font)
    header = header_height(len(lines))
    sheet = Image.new("RGB", grid_size(count, cell_size, columns, header), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for number, line in enumerate(lines):
        draw.text((GAP, GAP + number * LINE_HEIGHT), line, fill=TEXT_COLOR, font=font)
    for index, verdict in enumerate(verdicts):
        left, top = cell_origin(index, count, cell_size, columns, header)
        draw.rectangle((left, top, left + cell_size - 1, top + cell_size - 1), fill=CELL_BACKGROUND)
        thumbnail = _thumbnail(verdict, cell_size, conn_id)
        if thumbnail is None:
            draw.text((left + 6, top + 6), "unreadable", fill=FAIL_COLOR, font=font)
        else:
            offset = ((cell_size - thumbnail.width) // 2, (cell_size - thumbnail.height) // 2)
            sheet.paste(thumbnail, (left + offset[0], top + offset[1]))
            thumbnail.close()
        failed = failed_checks(verdict)
        status, color = (", ".join(failed), FAIL_COLOR) if failed else ("PASS", PASS_COLOR)
        label_top = top + cell_size + 3
        draw.text(
            (left + 2, label_top),
            _fit(draw, f"#{index + 1} {status}", font, cell_size - 4),
            fill=color,
            font=font,
        )
        about = verdict.get("key") or verdict.get("prompt")
        second = (
            f"{verdict['qa']['action']} - {about}"
            if isinstance(about, str) and about
            else verdict["qa"]["action"]
        )
        draw.text(
            (left + 2, label_top + 15), _fit(draw, second, font, cell_size - 4), fill=TEXT_COLOR, font=font
        )
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    target = storage.path_of(destination, conn_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(buffer.getvalue())
    return storage.as_uri(destination)


def _columns(count: int, columns: int | None) -> int:
    if columns is None:
        return max(1, min(count, DEFAULT_COLUMNS))
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise QAInputError(f"columns: got {columns!r}; allowed: a positive integer", parameter="columns")
    return columns


def _thumbnail(verdict: Mapping[str, Any], cell_size: int, conn_id: str | None) -> Any | None:
    """The image shrunk to fit the cell, or None when it cannot be read or decoded."""
    from PIL import Image

    uri = verdict.get("quarantinedURI") or verdict.get("storedURI")
    if not isinstance(uri, str):
        return None
    try:
        with Image.open(io.BytesIO(storage.read_bytes(uri, conn_id))) as image:
            if oversized(image, allowed_pixels(verdict.get("requested"))):
                return None  # a header declaring more pixels than requested is never decoded
            image.draft("RGB", (cell_size, cell_size))  # JPEG decodes at a reduced scale: faster, smaller
            image.thumbnail((cell_size, cell_size), Image.Resampling.LANCZOS)
            return image.convert("RGB")
    except Exception:  # a corrupt or missing image still gets a cell, labelled by its verdict
        return None


def _font() -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
