"""The contact sheet: a real PNG whose grid, thumbnails and coloured labels follow the verdicts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from airflow_provider_bfl.qa import QAInputError, qa_images
from airflow_provider_bfl.qa.contact_sheet import (
    BACKGROUND,
    CELL_BACKGROUND,
    GAP,
    LABEL_HEIGHT,
    LINE_HEIGHT,
    cell_origin,
    grid_size,
    header_lines,
    make_contact_sheet,
)
from tests.unit.qa_images import ImageSource, image_source, land, path_of


@pytest.fixture(scope="module")
def source() -> Iterator[ImageSource]:
    yield from image_source()


def header_of(sheet: Image.Image, count: int, cell: int = 256) -> int:
    """The header height the sheet was drawn with: what is left above the grid."""
    return sheet.height - grid_size(count, cell, header=0)[1]


def label_colours(sheet: Image.Image, index: int, count: int, cell: int = 256) -> tuple[int, int]:
    """(green-ish, red-ish) pixel counts in the first label line under cell ``index``."""
    left, top = cell_origin(index, count, cell, header=header_of(sheet, count, cell))
    band = sheet.crop((left, top + cell, left + cell, top + cell + LABEL_HEIGHT // 2)).convert("RGB")
    raw = band.tobytes()
    pixels = [(raw[i], raw[i + 1], raw[i + 2]) for i in range(0, len(raw), 3)]
    green = sum(1 for r, g, b in pixels if g > r + 60 and g > b + 60)
    red = sum(1 for r, g, b in pixels if r > g + 60 and r > b + 60)
    return green, red


def cell_stddev(sheet: Image.Image, index: int, count: int, cell: int = 256) -> float:
    left, top = cell_origin(index, count, cell, header=header_of(sheet, count, cell))
    return float(max(ImageStat.Stat(sheet.crop((left, top, left + cell, top + cell))).stddev))


def test_sheet_grid_thumbnails_and_label_colours(source: ImageSource, tmp_path: Path) -> None:
    corrupt = source.generate("a harbour", seed=3)
    records = [
        land(tmp_path, source.generate("a lighthouse", seed=1)),
        land(tmp_path, source.generate("nsfw poster", seed=2, check_content=True)),
        land(tmp_path, source.generate("a tall tower", seed=4, width=256, height=512)),
        land(tmp_path, corrupt, data=corrupt.data[:3000], image_uuid="corrupt"),
    ]
    verdicts = qa_images(records, decodes="skip")
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "quarantined", "kept", "skipped"]
    assert not path_of(records[1]["storedURI"]).exists()  # the sheet must read it from quarantine

    uri = make_contact_sheet(verdicts, str(tmp_path / "out" / "sheet.png"), title="nightly")
    assert uri == f"file://{tmp_path}/out/sheet.png"
    with Image.open(path_of(uri)) as sheet:
        assert sheet.format == "PNG"
        # 4 images: 4 columns of 256 px and 5 gaps of 8; title 32 + one row (256 + 34) + 2 gaps.
        assert sheet.size == (4 * 256 + 5 * 8, 32 + 256 + 34 + 2 * 8)
        sheet.load()
        assert label_colours(sheet, 0, 4)[0] > 20 and label_colours(sheet, 0, 4)[1] == 0  # PASS, green
        assert label_colours(sheet, 1, 4)[1] > 20 and label_colours(sheet, 1, 4)[0] == 0  # nsfw, red
        assert label_colours(sheet, 2, 4)[0] > 20
        assert label_colours(sheet, 3, 4)[1] > 20
        # Real thumbnails, including the quarantined one; the corrupt one is an empty labelled cell.
        assert cell_stddev(sheet, 0, 4) > 10 and cell_stddev(sheet, 1, 4) > 10
        left, top = cell_origin(2, 4)
        assert sheet.getpixel((left + 5, top + 128)) == CELL_BACKGROUND  # 128x256 thumbnail is centred
        assert sheet.getpixel((left + 128, top + 128)) != CELL_BACKGROUND
        left, top = cell_origin(3, 4)
        assert sheet.getpixel((left + 128, top + 200)) == CELL_BACKGROUND


@pytest.mark.parametrize(
    # One image: the 256 px wide header wraps the summary onto 2 lines (2 * 8 + 2 * 16 = 48 px).
    ("count", "size"),
    [(1, (256 + 16, 48 + 290 + 16)), (200, (8 * 256 + 72, 32 + 25 * 290 + 26 * 8))],
)
def test_sheet_size_follows_the_grid_from_one_to_two_hundred_images(
    source: ImageSource, tmp_path: Path, count: int, size: tuple[int, int]
) -> None:
    record = land(tmp_path, source.generate("a lighthouse", seed=7, output_format="JPG"))
    verdicts: list[dict[str, Any]] = [
        {**record, "qa": {"passed": True, "action": "kept", "reasons": [], "checks": {}}}
    ] * count
    uri = make_contact_sheet(verdicts, f"file://{tmp_path}/sheet.png")
    with Image.open(path_of(uri)) as sheet:
        assert sheet.size == size
        sheet.load()
        assert label_colours(sheet, count - 1, count)[0] > 20
        assert cell_stddev(sheet, count - 1, count) > 10


def test_sheet_refuses_an_empty_run(tmp_path: Path) -> None:
    with pytest.raises(QAInputError, match="needs 1 to 1000 verdicts; got 0"):
        make_contact_sheet([], str(tmp_path / "sheet.png"))


def band_ink(sheet: Image.Image, box: tuple[int, int, int, int]) -> int:
    """Pixels in ``box`` that are not the sheet's background (text, thumbnails)."""
    raw = sheet.crop(box).convert("RGB").tobytes()
    return sum(1 for i in range(0, len(raw), 3) if (raw[i], raw[i + 1], raw[i + 2]) != BACKGROUND)


@pytest.mark.parametrize("count", [1, 2])
def test_the_header_of_a_small_sheet_is_wrapped_whole_inside_the_sheet(
    source: ImageSource, tmp_path: Path, count: int
) -> None:
    record = land(tmp_path, source.generate("a lighthouse", seed=7, output_format="JPG"))
    verdicts: list[dict[str, Any]] = [
        {**record, "qa": {"passed": True, "action": "kept", "reasons": [], "checks": {}}}
    ] * count
    title = "nightly manual__2026-11-25T10:00:00+00:00"
    uri = make_contact_sheet(verdicts, f"file://{tmp_path}/sheet.png", title=title)
    heading = f"{title} - {count} image(s): {count} passed, 0 quarantined, 0 skipped, 0 failed"
    with Image.open(path_of(uri)) as sheet:
        sheet.load()
        lines = header_lines(heading, sheet.width - 2 * GAP)
        assert len(lines) >= 2  # too wide for one line at this width: it wraps instead of being cut
        assert "".join(lines).replace(" ", "") == heading.replace(" ", "")  # nothing dropped
        header = header_of(sheet, count)
        assert header == 2 * GAP + len(lines) * LINE_HEIGHT
        for number in range(len(lines)):  # every line was drawn, in its own band
            top = GAP + number * LINE_HEIGHT
            assert band_ink(sheet, (0, top, sheet.width, top + LINE_HEIGHT)) > 30, (
                f"line {number + 1} is empty"
            )
        # No text runs into the right margin, and the header ends above the first cell.
        assert band_ink(sheet, (sheet.width - GAP + 1, 0, sheet.width, header)) == 0
        first_cell_top = cell_origin(0, count, header=header)[1]
        assert band_ink(sheet, (0, GAP + len(lines) * LINE_HEIGHT, sheet.width, first_cell_top)) == 0
