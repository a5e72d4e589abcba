"""The gallery's record merging, thumbnails, page and plugin registration (no server needed)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from airflow_provider_bfl.ui import page, records, thumbnails, urls
from airflow_provider_bfl.ui.records import RecordSet


def _record(uuid: str, uri: str, **extra: Any) -> dict[str, Any]:
    return {"imageUUID": uuid, "storedURI": uri, "width": 1024, "height": 768, "cost": 0.04, **extra}


def _qa(action: str, *reasons: str) -> dict[str, Any]:
    return {"passed": action == "kept", "action": action, "reasons": list(reasons), "checks": {}}


def test_run_images_merge_generation_qa_and_publish_records_in_first_recorded_order() -> None:
    sets = [
        RecordSet("generate", -1, [_record("a", "file:///x/a.png"), _record("b", "file:///x/b.png")]),
        RecordSet("variants", -1, [_record("c", "file:///x/c.png")]),
        RecordSet(
            "qa",
            -1,
            [
                _record("a", "file:///x/a.png", qa=_qa("kept")),
                _record(
                    "b",
                    "file:///x/b.png",
                    qa=_qa("quarantined", "not_blank: flat"),
                    quarantinedURI="file:///q/b.png",
                ),
                _record("c", "file:///x/c.png", qa=_qa("kept")),
            ],
        ),
        RecordSet("publish", -1, [_record("a", "file:///x/a.png", publishedURI="file:///p/a.png")]),
    ]
    images = records.gallery_images(sets)
    assert [(i.image_id, i.task_id, i.verdict) for i in images] == [
        ("a", "generate", "kept"),
        ("b", "generate", "quarantined"),
        ("c", "variants", "kept"),
    ]
    assert images[0].locations() == ["file:///x/a.png", "file:///p/a.png"]
    assert images[1].locations() == ["file:///q/b.png", "file:///x/b.png"]  # moved: quarantine first
    totals = records.totals(images)
    assert (totals.images, totals.cost, dict(totals.verdicts)) == (3, 0.12, {"kept": 2, "quarantined": 1})
    only_generate = records.gallery_images(sets, task_id="generate", map_index=-1)
    assert [i.image_id for i in only_generate] == ["a", "b"]
    assert only_generate[1].verdict == "quarantined"  # the QA verdict is merged in for the task view


def test_record_sets_accept_mapped_lists_and_ignore_everything_else() -> None:
    value = [[_record("a", "s3://b/a.png")], [_record("b", "s3://b/b.png"), {"no": "uri"}]]
    assert [len(s.records) for s in records.record_sets("t", 0, value)] == [1, 1]
    for junk in (None, "text", {"storedURI": "x"}, [1, 2], [{"storedURI": 3}], []):
        assert records.record_sets("t", -1, junk) == []


def test_image_without_uuid_is_named_by_a_digest_not_its_path() -> None:
    image_id = records.image_id({"storedURI": "file:///secret/place.png"})
    assert image_id.startswith("uri-") and "secret" not in image_id


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((width, height), 60).convert("RGB").save(out, "PNG")
    return out.getvalue()


def test_thumbnail_is_small_webp_made_once_and_cached_next_to_the_image(tmp_path: Path) -> None:
    original = tmp_path / "run" / "task" / "img.png"
    original.parent.mkdir(parents=True)
    original.write_bytes(_png(1440, 960))
    uri = f"file://{original}"
    first = thumbnails.cached_thumbnail(uri)
    with Image.open(io.BytesIO(first)) as thumb:
        assert thumb.format == "WEBP" and max(thumb.size) == thumbnails.THUMBNAIL_SIZE
        assert thumb.size == (320, 213)
    assert len(first) < original.stat().st_size / 10
    cached = tmp_path / "run" / "task" / ".thumbnails" / "img.png.webp"
    assert cached.read_bytes() == first
    original.unlink()  # the second view reads the cache only
    assert thumbnails.cached_thumbnail(uri) == first


def test_thumbnail_is_served_when_the_cache_cannot_be_written(tmp_path: Path, mocker: Any) -> None:
    original = tmp_path / "img.png"
    original.write_bytes(_png(400, 400))
    mocker.patch.object(thumbnails, "_write", autospec=True, side_effect=PermissionError("read-only"))
    assert thumbnails.cached_thumbnail(f"file://{original}").startswith(b"RIFF")
    assert not (tmp_path / ".thumbnails").exists()


def test_page_escapes_records_and_paginates() -> None:
    hostile = _record("a", "file:///x/a.png", prompt="<script>alert(1)</script>", key="<b>SKU</b>")
    images = records.gallery_images(
        [RecordSet("g", -1, [hostile] + [_record(f"i{n}", f"file:///x/{n}.png") for n in range(150)])]
    )
    html = page.render("t", images, records.totals(images), "dag", "run", page=1)
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "&lt;b&gt;SKU" in html
    assert html.count("<figure") == page.PAGE_SIZE and '?page=2"' in html
    second = page.render("t", images, records.totals(images), "dag", "run", page=2)
    assert second.count("<figure") == 51 and 'id="image-151"' in second


def test_urls_quote_run_ids_and_follow_the_base_url() -> None:
    run = "manual__2026-01-01T00:00:00+00:00"
    assert urls.run_page("d", run) == "/bfl-gallery/run/d/manual__2026-01-01T00%3A00%3A00%2B00%3A00"
    assert (
        urls.under_base("/bfl-gallery/x", "https://airflow.example.com/airflow/") == "/airflow/bfl-gallery/x"
    )
    assert urls.under_base("/bfl-gallery/x", "") == "/bfl-gallery/x"


def test_extra_link_opens_the_task_instance_gallery() -> None:
    from airflow.models.taskinstancekey import TaskInstanceKey

    from airflow_provider_bfl.links import BflImageLink

    key = TaskInstanceKey(dag_id="d", task_id="gen", run_id="r1", try_number=1, map_index=3)
    assert BflImageLink().get_link(None, ti_key=key).endswith("/bfl-gallery/ti/d/r1/gen/3")  # type: ignore[arg-type]


@pytest.mark.parametrize("lazy", [True, False])
def test_plugin_is_offered_by_exactly_one_registration_path(lazy: bool, mocker: Any) -> None:
    """Entry point by default; provider metadata when Airflow discovers provider plugins eagerly."""
    import importlib

    from airflow import settings

    from airflow_provider_bfl.get_provider_info import get_provider_info
    from airflow_provider_bfl.ui import entry_point
    from airflow_provider_bfl.ui.plugin import BflGalleryPlugin

    mocker.patch.object(settings, "LAZY_LOAD_PROVIDERS", lazy)
    offered = importlib.reload(entry_point).plugin
    (declared,) = get_provider_info()["plugins"]
    assert declared["plugin-class"] == "airflow_provider_bfl.ui.plugin.BflGalleryPlugin"
    assert (offered is BflGalleryPlugin) is lazy
    destinations = {view["destination"] for view in BflGalleryPlugin.external_views}
    assert destinations == {"task_instance", "dag_run"}


def test_plugin_module_does_not_import_fastapi_or_pillow() -> None:
    import subprocess
    import sys

    code = (
        "import sys, airflow_provider_bfl.ui.plugin, airflow_provider_bfl.links, airflow_provider_bfl.review.body\n"
        "print(sorted(m for m in ('PIL', 'airflow_provider_bfl.ui.app') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_run_records_are_read_once_while_the_runs_record_rows_are_unchanged() -> None:
    reads: list[tuple[str, str]] = []
    stamps = {("d", "r1"): (2, "t1"), ("d", "r2"): (1, "t1")}

    def read(dag_id: str, run_id: str) -> list[RecordSet]:
        reads.append((dag_id, run_id))
        return [RecordSet("qa", -1, [_record(f"{run_id}-{len(reads)}", "file:///x/a.png")])]

    cache = records.RunRecordsCache(read, lambda dag_id, run_id: stamps[(dag_id, run_id)], runs=1)
    first = cache.get("d", "r1")
    assert cache.get("d", "r1") is first and reads == [("d", "r1")]  # a page of thumbnails: one read
    stamps[("d", "r1")] = (3, "t2")  # a task pushed (or a retry replaced) records
    assert cache.get("d", "r1").sets[0].records[0]["imageUUID"] == "r1-2"
    cache.get("d", "r2")  # bounded: r1 falls out
    cache.get("d", "r1")
    assert reads == [("d", "r1"), ("d", "r1"), ("d", "r2"), ("d", "r1")]


@pytest.mark.usefixtures("airflow_db")
def test_run_stamp_and_records_of_a_run_without_records_read_from_the_metadata_db() -> None:
    """The two queries against the real XCom table (columns as the installed Airflow has them)."""
    assert records.xcom_stamp("no_such_dag", "no_such_run") == (0, None)
    assert records.read_xcom_records("no_such_dag", "no_such_run") == []
