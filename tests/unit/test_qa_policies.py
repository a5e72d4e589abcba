"""Policies on real files: fail raises after everything, skip drops, quarantine moves, off ignores."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bfl.exceptions import BflError
from airflow_provider_bfl.qa import (
    QAConfig,
    QAFailedError,
    QAInputError,
    apply_policies,
    evaluate,
    passed_records,
    qa_images,
)
from airflow_provider_bfl.qa.storage import quarantine_uri
from tests.unit.qa_images import ImageSource, image_source, land, path_of


@pytest.fixture(scope="module")
def source() -> Iterator[ImageSource]:
    yield from image_source()


@pytest.fixture
def batch(source: ImageSource, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Landed records under ``tmp_path/landing``: good, blank, nsfw, duplicate, corrupt, wrong size."""
    root = tmp_path / "landing"
    good = source.generate("a lighthouse", seed=1)
    corrupt = source.generate("a harbour", seed=3)
    return {
        "good": land(root, good),
        "blank": land(root, source.generate("blank sky", seed=2)),
        "nsfw": land(root, source.generate("nsfw poster", seed=5, check_content=True)),
        "duplicate": land(root, source.generate("a lighthouse", seed=1, fresh=True)),
        "corrupt": land(root, corrupt, data=corrupt.data[:2000]),
        "wrong_size": land(root, source.generate("a quay", seed=4), requested_width=512),
    }


def test_default_policies_quarantine_skip_and_keep(batch: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    records = [batch[name] for name in ("good", "blank", "nsfw", "duplicate")]
    verdicts = qa_images(records)
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "quarantined", "quarantined", "skipped"]
    assert [v["qa"]["passed"] for v in verdicts] == [True, False, False, False]
    assert passed_records(verdicts) == [batch["good"]]
    # Quarantined: moved beside the landing root, under their taskUUID, bytes intact.
    for verdict in verdicts[1:3]:
        stored, moved = path_of(verdict["storedURI"]), path_of(verdict["quarantinedURI"])
        assert not stored.exists()
        assert moved == tmp_path / "landing" / "quarantine" / verdict["taskUUID"] / stored.name
        assert hashlib.sha256(moved.read_bytes()).hexdigest() == verdict["sha256"]
    # Skipped and kept images stay where they were.
    assert path_of(verdicts[0]["storedURI"]).exists() and path_of(verdicts[3]["storedURI"]).exists()
    assert "quarantinedURI" not in verdicts[0] and "quarantinedURI" not in verdicts[3]


def test_fail_raises_after_evaluating_everything_and_names_each_image_and_check(
    batch: dict[str, dict[str, Any]],
) -> None:
    records = [batch[name] for name in ("good", "corrupt", "nsfw", "wrong_size")]
    with pytest.raises(QAFailedError) as caught:
        qa_images(records)
    error = caught.value
    message = str(error)
    assert isinstance(error, BflError)
    assert message.startswith("Image QA failed for 2 of 4 image(s): ")
    assert (
        f"#2 (imageUUID {batch['corrupt']['imageUUID']}) at {batch['corrupt']['storedURI']}: decodes:"
        in message
    )
    assert f"#4 (imageUUID {batch['wrong_size']['imageUUID']})" in message
    assert "dimensions: decoded 256x256, requested 512x256" in message
    assert "#1 " not in message and "#3 " not in message
    # The quarantine of the NSFW image still happened before the task failed.
    assert [v["qa"]["action"] for v in error.verdicts] == ["kept", "failed", "quarantined", "failed"]
    assert path_of(error.verdicts[2]["quarantinedURI"]).exists()
    assert not path_of(batch["nsfw"]["storedURI"]).exists()
    # Airflow ships exceptions between processes: the verdicts survive pickling.
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is QAFailedError and copy.verdicts == error.verdicts and str(copy) == message


def test_skip_policy_excludes_without_moving(batch: dict[str, dict[str, Any]]) -> None:
    verdicts = qa_images([batch["good"], batch["blank"]], not_blank="skip")
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "skipped"]
    assert passed_records(verdicts) == [batch["good"]]
    assert path_of(batch["blank"]["storedURI"]).exists()
    assert "quarantinedURI" not in verdicts[1]


def test_off_policy_ignores_the_problem(batch: dict[str, dict[str, Any]]) -> None:
    verdicts = qa_images([batch["blank"], batch["nsfw"]], policies={"not_blank": "off", "nsfw": "off"})
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "kept"]
    assert "not_blank" not in verdicts[0]["qa"]["checks"] and "nsfw" not in verdicts[1]["qa"]["checks"]
    assert path_of(batch["blank"]["storedURI"]).exists()


def test_policy_override_turns_a_quarantine_into_a_failure(batch: dict[str, dict[str, Any]]) -> None:
    with pytest.raises(QAFailedError, match=r"#1 \(imageUUID .*\) at .*: nsfw: flagged NSFWContent"):
        qa_images([batch["nsfw"]], nsfw="fail")
    assert path_of(batch["nsfw"]["storedURI"]).exists()  # fail does not move


def test_most_severe_policy_wins_and_quarantine_still_moves(source: ImageSource, tmp_path: Path) -> None:
    # A blank image (quarantine) of the wrong size (fail): the task fails, the file is still moved.
    record = land(tmp_path, source.generate("blank", seed=6), requested_width=512)
    with pytest.raises(QAFailedError) as caught:
        qa_images([record])
    [verdict] = caught.value.verdicts
    assert verdict["qa"]["action"] == "failed"
    assert [reason.split(":")[0] for reason in verdict["qa"]["reasons"]] == ["dimensions", "not_blank"]
    assert path_of(verdict["quarantinedURI"]).exists() and not path_of(record["storedURI"]).exists()


def test_quarantine_prefix_and_idempotent_rerun(batch: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    prefix = f"file://{tmp_path}/held"
    records = [batch["good"], batch["blank"]]
    first = qa_images(records, quarantine_prefix=prefix)
    target = f"{prefix}/{batch['blank']['taskUUID']}/{path_of(batch['blank']['storedURI']).name}"
    assert first[1]["quarantinedURI"] == target
    # Re-running on the same upstream records: the original is gone, the object is found in quarantine.
    config = QAConfig(quarantine_prefix=prefix)
    again = evaluate(records, config)
    assert again[1]["quarantinedURI"] == target
    assert again[1]["qa"]["checks"]["not_blank"]["ok"] is False  # really read and checked again
    second = apply_policies(again, config)
    assert second == first
    assert path_of(target).exists()


def test_rerun_without_the_prefix_does_not_find_the_object(
    batch: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    qa_images([batch["blank"]], quarantine_prefix=str(tmp_path / "held"))
    # Another prefix points elsewhere: the object is honestly reported missing (and that fails).
    with pytest.raises(QAFailedError, match=r"cannot read .*FileNotFoundError"):
        qa_images([batch["blank"]], quarantine_prefix=str(tmp_path / "elsewhere"))


def test_a_failed_move_fails_the_task_after_the_other_moves(
    batch: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the quarantine folder should be")
    with pytest.raises(QAFailedError) as caught:
        qa_images([batch["blank"], batch["good"]], quarantine_prefix=str(blocker / "q"))
    message = str(caught.value)
    assert message.startswith("Image QA could not finish: could not quarantine #1 (imageUUID ")
    assert path_of(batch["blank"]["storedURI"]).exists()
    assert "quarantinedURI" not in caught.value.verdicts[0]


def test_apply_policies_refuses_records_that_are_not_verdicts(batch: dict[str, dict[str, Any]]) -> None:
    with pytest.raises(QAInputError, match="Verdict #1 has no 'qa' block"):
        apply_policies([batch["good"]])


@pytest.mark.parametrize(
    ("stored", "task_uuid", "prefix", "expected"),
    [
        ("file:///data/run/T1/a.png", "T1", None, "file:///data/run/quarantine/T1/a.png"),
        ("file:///data/run/a.png", "T1", None, "file:///data/run/quarantine/T1/a.png"),
        ("/data/run/T1/a.png", "T1", None, "file:///data/run/quarantine/T1/a.png"),
        ("s3://bucket/nightly/T1/a.png", "T1", None, "s3://bucket/nightly/quarantine/T1/a.png"),
        ("s3://bucket/T1/a.png", "T1", None, "s3://bucket/quarantine/T1/a.png"),
        ("s3://T1/a.png", "T1", None, "s3://T1/quarantine/T1/a.png"),  # never above the bucket
        ("s3://bucket/x/T1/a.png", "T1", "s3://bucket/held/", "s3://bucket/held/T1/a.png"),
        ("s3://bucket/x/a.png", None, "s3://bucket/held", "s3://bucket/held/a.png"),
    ],
)
def test_quarantine_location_is_deterministic(
    stored: str, task_uuid: str | None, prefix: str | None, expected: str
) -> None:
    assert quarantine_uri(stored, task_uuid, prefix) == expected


@pytest.mark.parametrize("task_uuid", ["../escape", "a/b", ".."])
def test_quarantine_refuses_task_uuids_that_are_not_folder_names(task_uuid: str) -> None:
    with pytest.raises(QAInputError, match="cannot be used as a folder name"):
        quarantine_uri("s3://bucket/x/a.png", task_uuid, "s3://bucket/held")


def test_importing_the_package_does_not_import_pillow() -> None:
    code = "import airflow_provider_bfl.qa, sys; assert 'PIL' not in sys.modules, 'PIL imported'"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
