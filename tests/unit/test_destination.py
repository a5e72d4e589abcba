"""validate_destination: every unusable destination is refused, naming the value and what is allowed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bfl.exceptions import BflInvalidRequestError
from airflow_provider_bfl.storage.destination import validate_destination

ALLOWED = "Allowed: an absolute local path, file:///path, or an object store URI"


def refused(uri: str, conn_id: str | None = None) -> str:
    with pytest.raises(BflInvalidRequestError) as caught:
        validate_destination(uri, conn_id)
    assert caught.value.parameter == "destination"
    message = str(caught.value)
    assert repr(uri)[:100] in message and ALLOWED in message
    return message


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("gs://bucket/images", "no filesystem is installed for gs://"),
        ("ftp://host/images", "no filesystem is installed for ftp://"),
        ("memory://x/images", "no filesystem is installed for memory://"),
        ("s3:///images", "names no bucket"),
        ("file:///srv/../etc/cron.d", "'..' segment"),
        ("/srv/images/./x", "has a '.' or '..' segment"),
        ("s3://bucket/a/../../other-bucket", "'..' segment"),
        ("images/out", "must be an absolute path"),
        ("file://relative/out", "must be an absolute path"),
        ("/srv/images\n", "control characters"),
        ("", "it is empty"),
        ("/etc/hostname/images", "/etc/hostname is a file"),
        ("/proc/images", "/proc is not writable"),
    ],
)
def test_unusable_destinations_are_refused_with_the_reason(uri: str, says: str) -> None:
    assert says in refused(uri)


def test_the_installed_schemes_are_listed_when_one_is_missing() -> None:
    assert "installed: file://, local://, s3://" in refused("gs://bucket/images")


def test_a_destination_that_is_an_existing_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "images").write_bytes(b"")
    assert "exists and is not a folder" in refused(f"file://{tmp_path}/images")


def test_an_s3_destination_without_s3fs_is_refused_before_anything_is_sent(monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs now raises ImportError
    message = refused("s3://bucket/images", "aws_default")
    assert "needs the s3fs library" in message and "'aws_default'" in message


def test_an_unwritable_folder_is_refused(tmp_path: Path, mocker: Any) -> None:
    # Root writes anywhere a mode allows, so the failing disk is a stand-in: the write check's OSError.
    mocker.patch(
        "airflow_provider_bfl.storage.destination.tempfile.TemporaryFile",
        autospec=True,
        side_effect=PermissionError(13, "Permission denied"),
    )
    assert f"{tmp_path} is not writable by this worker (Permission denied)" in refused(f"{tmp_path}/images")


@pytest.mark.parametrize(
    "uri",
    ["s3://bucket/images", "s3://bucket", "file:///{tmp}/new/deeper", "/{tmp}/images", "file:///{tmp}"],
)
def test_usable_destinations_pass_and_leave_nothing_behind(tmp_path: Path, uri: str) -> None:
    uri = uri.format(tmp=str(tmp_path).lstrip("/"))
    validate_destination(uri, None)
    assert list(tmp_path.iterdir()) == []  # the write check removed its probe, created no folder
