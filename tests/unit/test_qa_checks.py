"""Each QA check on real emulator images: one that passes and one that fails, with the reason."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from airflow_provider_bfl.exceptions import BflError
from airflow_provider_bfl.qa import CHECKS, QAConfig, QAInputError, evaluate
from airflow_provider_bfl.qa.checks import near_duplicates
from tests.unit.qa_images import ImageSource, image_source, land, reencoded_jpeg


@pytest.fixture(scope="module")
def source() -> Iterator[ImageSource]:
    yield from image_source()


def only(records: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    [verdict] = evaluate(records, QAConfig.from_kwargs(**config))
    return verdict


def failed(verdict: dict[str, Any]) -> list[str]:
    return [name for name, result in verdict["qa"]["checks"].items() if not result["ok"]]


@pytest.mark.parametrize(
    ("output_format", "width", "height"),
    [("PNG", 256, 256), ("JPG", 1440, 256), ("WEBP", 512, 768)],
)
def test_normal_images_pass_every_check_and_verdicts_are_small_json(
    source: ImageSource, tmp_path: Path, output_format: str, width: int, height: int
) -> None:
    records = [
        land(tmp_path, source.generate(seed=seed, output_format=output_format, width=width, height=height))
        for seed in (1, 2, 3)
    ]
    verdicts = evaluate(records)
    for record, verdict in zip(records, verdicts, strict=True):
        assert verdict["qa"]["passed"] is True, verdict["qa"]
        assert verdict["qa"]["action"] == "kept"
        assert verdict["qa"]["reasons"] == []
        assert list(verdict["qa"]["checks"]) == list(CHECKS)
        assert {key: verdict[key] for key in record} == record  # the input record, untouched
    encoded = json.dumps(verdicts)
    assert len(encoded) < 1500 * len(verdicts)  # XCom-sized
    assert json.loads(encoded) == verdicts


def test_decodes_fails_for_a_truncated_file_and_skips_the_pixel_checks(
    source: ImageSource, tmp_path: Path
) -> None:
    generated = source.generate(seed=4)
    verdict = only([land(tmp_path, generated, data=generated.data[: len(generated.data) // 2])])
    assert verdict["qa"]["checks"]["decodes"]["ok"] is False
    assert "does not decode" in verdict["qa"]["checks"]["decodes"]["detail"]
    assert "truncated" in verdict["qa"]["checks"]["decodes"]["detail"]
    # Without pixels, format/dimensions/not_blank/near_duplicate cannot run; size and nsfw can.
    assert set(verdict["qa"]["checks"]) == {"decodes", "file_size", "nsfw"}
    assert verdict["qa"]["action"] == "failed"
    assert verdict["qa"]["reasons"][0].startswith("decodes: does not decode")


def test_decodes_fails_for_bytes_that_are_not_an_image(source: ImageSource, tmp_path: Path) -> None:
    html = b"<html><body>403 Forbidden</body></html>" * 40
    verdict = only([land(tmp_path, source.generate(seed=4), data=html)])
    assert failed(verdict) == ["decodes"]
    assert "UnidentifiedImageError" in verdict["qa"]["checks"]["decodes"]["detail"]


def test_a_missing_object_is_reported_not_raised(source: ImageSource, tmp_path: Path) -> None:
    record = land(tmp_path, source.generate(seed=5))
    Path(record["storedURI"].removeprefix("file://")).unlink()
    verdict = only([record])
    assert failed(verdict) == ["decodes"]
    assert verdict["qa"]["checks"]["decodes"]["detail"].startswith(f"cannot read {record['storedURI']}")
    assert "FileNotFoundError" in verdict["qa"]["checks"]["decodes"]["detail"]


def test_format_treats_jpg_and_jpeg_as_one_and_catches_a_mismatch(
    source: ImageSource, tmp_path: Path
) -> None:
    jpeg = source.generate(seed=6, output_format="JPG")
    good = only([land(tmp_path, jpeg)])
    assert good["qa"]["checks"]["format"] == {"ok": True, "detail": "JPEG as requested"}
    # JPEG bytes landed for a request that asked for PNG.
    wrong = only([land(tmp_path, jpeg, requested_format="PNG", image_uuid="mislabelled")])
    assert failed(wrong) == ["format"]
    assert wrong["qa"]["checks"]["format"]["detail"] == "decoded format JPEG, requested PNG"
    assert wrong["qa"]["action"] == "failed"


def test_dimensions_catch_an_image_of_another_size(source: ImageSource, tmp_path: Path) -> None:
    wide = source.generate(seed=7, width=512, height=256)
    assert only([land(tmp_path, wide)])["qa"]["checks"]["dimensions"]["ok"] is True
    verdict = only([land(tmp_path, wide, requested_width=256, requested_height=256, image_uuid="wrong-size")])
    assert failed(verdict) == ["dimensions"]
    # More pixels than requested: judged from the header, never decoded.
    assert (
        verdict["qa"]["checks"]["dimensions"]["detail"]
        == "not decoded, the header declares 512x256, requested 256x256"
    )
    assert "decodes" not in verdict["qa"]["checks"] and "not_blank" not in verdict["qa"]["checks"]
    narrow = only([land(tmp_path, wide, requested_width=1024, requested_height=256, image_uuid="narrow")])
    assert narrow["qa"]["checks"]["dimensions"]["detail"] == "decoded 512x256, requested 1024x256"
    assert narrow["qa"]["checks"]["decodes"]["ok"] is True


@pytest.mark.parametrize("output_format", ["PNG", "JPG", "WEBP"])
def test_not_blank_fails_the_emulators_blank_images(
    source: ImageSource, tmp_path: Path, output_format: str
) -> None:
    blank = source.generate("a blank canvas", seed=8, output_format=output_format)
    verdict = only([land(tmp_path, blank)])
    assert "not_blank" in failed(verdict)
    assert verdict["qa"]["checks"]["not_blank"]["detail"].startswith("near-uniform: stddev 0.0")
    assert verdict["qa"]["action"] == "quarantined"


def test_not_blank_normal_images_pass_across_many_seeds(source: ImageSource, tmp_path: Path) -> None:
    records = [land(tmp_path, source.generate(seed=seed, output_format="JPG")) for seed in range(10, 40)]
    verdicts = evaluate(records, QAConfig(policies={"near_duplicate": "off"}))
    assert [v["qa"]["checks"]["not_blank"]["ok"] for v in verdicts] == [True] * len(records)


def test_not_blank_dominant_colour_catches_a_flat_frame_with_a_small_mark(
    source: ImageSource, tmp_path: Path
) -> None:
    blank = source.generate("blank", seed=9)
    with Image.open(io.BytesIO(blank.data)) as image:
        marked = image.convert("RGB")
    ImageDraw.Draw(marked).rectangle((100, 100, 119, 119), fill=(0, 0, 0))
    buffer = io.BytesIO()
    marked.save(buffer, format="PNG")
    record = land(tmp_path, blank, data=buffer.getvalue(), image_uuid="marked")
    detail = only([record])["qa"]["checks"]["not_blank"]["detail"]
    # The mark lifts the deviation above the stddev threshold; the dominant-colour share still fails it.
    assert "dominant colour above 97%" in detail
    stddev = float(detail.split("stddev ")[1].split(",")[0])
    assert stddev > QAConfig().min_stddev
    assert only([record], max_dominant_share=1.0)["qa"]["checks"]["not_blank"]["ok"] is True


def test_file_size_bounds(source: ImageSource, tmp_path: Path) -> None:
    record = land(tmp_path, source.generate(seed=11))
    size = record["bytes"]
    assert only([record])["qa"]["checks"]["file_size"] == {"ok": True, "detail": f"{size} bytes"}
    too_small = only([record], min_bytes=size + 1, max_bytes=size + 10)
    assert (
        too_small["qa"]["checks"]["file_size"]["detail"] == f"{size} bytes, below the minimum of {size + 1}"
    )
    too_large = only([record], max_bytes=size - 1)
    assert (
        too_large["qa"]["checks"]["file_size"]["detail"] == f"{size} bytes, above the maximum of {size - 1}"
    )
    assert failed(too_small) == failed(too_large) == ["file_size"]


def test_nsfw_flag_from_the_safety_check(source: ImageSource, tmp_path: Path) -> None:
    flagged = only([land(tmp_path, source.generate("nsfw beach scene", seed=12, check_content=True))])
    assert failed(flagged) == ["nsfw"]
    assert flagged["NSFWContent"] is True
    assert flagged["qa"]["action"] == "quarantined"
    clean = only([land(tmp_path, source.generate("a beach scene", seed=12, check_content=True))])
    assert clean["NSFWContent"] is False
    assert clean["qa"]["checks"]["nsfw"] == {"ok": True, "detail": "not flagged by the API's safety check"}
    unchecked = only([land(tmp_path, source.generate("a beach scene", seed=12))])
    assert "NSFWContent" not in unchecked
    assert unchecked["qa"]["checks"]["nsfw"]["detail"] == "not checked (safety.checkContent was off)"


def test_near_duplicate_same_prompt_and_seed_twice(source: ImageSource, tmp_path: Path) -> None:
    first = source.generate("a red bicycle", seed=21, fresh=True)
    again = source.generate("a red bicycle", seed=21, fresh=True)
    other = source.generate("a red bicycle", seed=22)
    assert first.result["imageUUID"] != again.result["imageUUID"] and first.data == again.data
    verdicts = evaluate([land(tmp_path, g) for g in (first, other, again)])
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "kept", "skipped"]
    detail = verdicts[2]["qa"]["checks"]["near_duplicate"]["detail"]
    assert detail.startswith(
        f"near-duplicate of #1 (imageUUID {first.result['imageUUID']}) (Hamming distance 0/128"
    )
    assert verdicts[1]["qa"]["checks"]["near_duplicate"]["ok"] is True


@pytest.mark.parametrize("quality", [90, 40])
def test_near_duplicate_catches_a_reencoded_copy(source: ImageSource, tmp_path: Path, quality: int) -> None:
    original = source.generate("a teapot", seed=23)
    copy = reencoded_jpeg(original.data, quality)
    records = [
        land(tmp_path, original),
        land(tmp_path, source.generate("a teapot", seed=24)),
        land(tmp_path, original, data=copy, image_uuid="copy", requested_format="JPG"),
    ]
    assert records[2]["sha256"] != records[0]["sha256"]
    verdicts = evaluate(records)
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "kept", "skipped"]
    detail = verdicts[2]["qa"]["checks"]["near_duplicate"]["detail"]
    assert "near-duplicate of #1" in detail
    distance = int(detail.split("distance ")[1].split("/")[0])
    assert distance <= QAConfig().max_duplicate_distance
    # With a zero threshold only bit-identical hashes count: a heavier re-encode then passes.
    strict = evaluate(records, QAConfig(max_duplicate_distance=0))
    assert strict[2]["qa"]["checks"]["near_duplicate"]["ok"] is (distance > 0)


def test_near_duplicates_names_the_closest_earlier_image() -> None:
    labels = ["#1", "#2", "#3", "#4"]
    hashes = [0b0000, 0b1111_0000, 0b1111_0001, None]
    results = near_duplicates(hashes, labels, max_distance=2)
    assert results[0] is not None and results[0].ok
    assert results[1] is not None and results[1].ok  # 4 bits from #1
    assert results[2] is not None and not results[2].ok
    assert results[2].detail.startswith("near-duplicate of #2 (Hamming distance 1/128")
    assert results[3] is None


def test_disabled_checks_do_not_run(source: ImageSource, tmp_path: Path) -> None:
    blank = land(tmp_path, source.generate("blank wall", seed=25))
    verdict = only([blank], not_blank="off", nsfw="off", near_duplicate="off")
    assert set(verdict["qa"]["checks"]) == {"decodes", "format", "dimensions", "file_size"}
    assert verdict["qa"]["action"] == "kept"


def test_records_without_what_a_check_needs_are_refused_up_front(source: ImageSource, tmp_path: Path) -> None:
    record = land(tmp_path, source.generate(seed=26))
    no_request = {key: value for key, value in record.items() if key != "requested"}
    with pytest.raises(QAInputError) as caught:
        evaluate([record, no_request, {"imageUUID": "x"}])
    message = str(caught.value)
    assert "#2 (imageUUID" in message and "format='off'" in message and "dimensions='off'" in message
    assert "#3 (imageUUID x): no storedURI" in message
    assert isinstance(caught.value, BflError)
    # With those checks off, the same record is fine.
    assert only([no_request], format="off", dimensions="off")["qa"]["action"] == "kept"
    with pytest.raises(QAInputError, match="expected a list of landed image records"):
        evaluate(record)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policies": {"sharpness": "fail"}}, "Unknown QA check 'sharpness'"),
        ({"nsfw": "delete"}, "Policy of 'nsfw': got 'delete'; expected one of: fail, quarantine, skip, off"),
        ({"min_stddev": -1}, "min_stddev: got -1; allowed: a number from 0.0 to 255.0"),
        (
            {"max_duplicate_distance": 200},
            "max_duplicate_distance: got 200; allowed: an integer from 0 to 128",
        ),
        ({"min_bytes": 10, "max_bytes": 5}, "min_bytes (10) is larger than max_bytes (5)"),
        ({"nsfw": "skip", "policies": {"nsfw": "skip"}}, "The policy of 'nsfw' is given twice"),
        ({"treshold": 3}, "Unknown QA setting 'treshold'"),
    ],
)
def test_config_errors_name_the_setting_and_the_allowed_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(QAInputError) as caught:
        QAConfig.from_kwargs(**kwargs)
    assert message in str(caught.value)


def test_config_defaults_and_overrides() -> None:
    config = QAConfig.from_kwargs(nsfw="fail", policies={"near_duplicate": "off"}, min_bytes=10)
    assert config.policies == {
        "decodes": "fail",
        "format": "fail",
        "dimensions": "fail",
        "not_blank": "quarantine",
        "file_size": "quarantine",
        "nsfw": "fail",
        "near_duplicate": "off",
    }
    assert config.min_bytes == 10 and config.max_bytes == 25 * 1024 * 1024
