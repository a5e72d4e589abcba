"""The contact sheet: a real PNG whose grid, thumbnails and coloured labels follow the verdicts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from airflow_provider_bfl.qa import QAInputError, qa_images
from airflow_provider_bfl.qa.contact_sheet import (
    CELL_BACKGROUND,
    LABEL_HEIGHT,
    cell_origin,
    make_contact_sheet,
)
from tests.unit.qa_images import ImageSource, image_source, land, path_of


@pytest.fixture(scope="module")
def source() -> Iterator[ImageSource]:
    yield from image_source()


def label_colours(sheet: Image.Image, index: int, count: int, cell: int = 256) -> tuple[int, int]:
    """(green-ish, red-ish) pixel counts in the first label line under cell ``index``."""
    left, top = cell_origin(index, count, cell)
    band = sheet.crop((left, top + cell, left + cell, top + cell + LABEL_HEIGHT // 2)).convert("RGB")
    raw = band.tobytes()
    pixels = [(raw[i], raw[i + 1], raw[i + 2]) for i in range(0, len(raw), 3)]
    green = sum(1 for r, g, b in pixels if g > r + 60 and g > b + 60)
    red = sum(1 for r, g, b in pixels if r > g + 60 and r > b + 60)
    return green, red


def cell_stddev(sheet: Image.Image, index: int, count: int, cell: int = 256) -> float:
    left, top = cell_origin(index, count, cell)
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
    ("count", "size"), [(1, (256 + 16, 32 + 290 + 16)), (200, (8 * 256 + 72, 32 + 25 * 290 + 26 * 8))]
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
