"""Hostile answers on demand: foreign results, non-http(s) image URLs, corrupt and oversized image bodies."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from airflow_provider_bfl.testing.emulator import Fault, RunwareEmulator


def _finished_task(api: Any, make_task: Any, **overrides: Any) -> dict[str, Any]:
    task = make_task(**overrides)
    assert api.post([task]).status_code == 200  # sync delivery, zero latency: done at once
    return task


def test_foreign_result_adds_an_item_for_a_task_never_asked_about(api: Any, make_task: Any) -> None:
    task = _finished_task(api, make_task)
    api.emu.inject("foreign_result", only_task_type="getResponse")
    response = api.poll(task["taskUUID"])
    assert response.status_code == 200
    items = response.json()["data"]
    assert items[0]["taskUUID"] == task["taskUUID"]
    [foreign] = [item for item in items if item["taskUUID"] != task["taskUUID"]]
    assert uuid.UUID(foreign["taskUUID"]).version == 4
    assert foreign["status"] == "success" and foreign["imageURL"].startswith(api.emu.origin)
    assert api.emu.counters.snapshot().faults_triggered == {"foreign_result": 1}
    assert [item["taskUUID"] for item in api.poll(task["taskUUID"]).json()["data"]] == [task["taskUUID"]]


def test_foreign_result_with_a_chosen_uuid_over_the_control_api(api: Any, make_task: Any) -> None:
    task = _finished_task(api, make_task)
    chosen = str(uuid.uuid4())
    assert api.control("POST", "faults", {"kind": "foreign_result", "task_uuid": chosen}).status_code == 200
    items = api.poll(task["taskUUID"]).json()["data"]
    assert {item["taskUUID"] for item in items} == {task["taskUUID"], chosen}


def test_foreign_result_also_reaches_a_single_object_data_answer(api: Any, make_task: Any) -> None:
    api.emu.data_as_object = True
    task = _finished_task(api, make_task)
    api.emu.inject("foreign_result")
    data = api.poll(task["taskUUID"]).json()["data"]
    assert isinstance(data, list) and len(data) == 2


def test_foreign_result_leaves_failed_answers_alone(api: Any) -> None:
    api.emu.inject("foreign_result")
    response = api.post([{"taskType": "nonsense"}])
    assert response.status_code == 400 and "data" not in response.json()


@pytest.mark.parametrize("scheme", ["ftp", "file"])
def test_bad_image_url_moves_every_image_url_to_another_scheme(api: Any, make_task: Any, scheme: str) -> None:
    task = _finished_task(api, make_task, numberResults=2)
    api.emu.inject("bad_image_url", url_scheme=scheme)
    items = api.poll(task["taskUUID"]).json()["data"]
    assert len(items) == 2
    for item in items:
        assert item["imageURL"].startswith(f"{scheme}://127.0.0.1:{api.emu.port}/images/")
        assert item["imageURL"].endswith(f"{item['imageUUID']}.jpg")
    assert api.poll(task["taskUUID"]).json()["data"][0]["imageURL"].startswith("http://")


def test_bad_image_url_applies_to_sync_results_too(api: Any, make_task: Any) -> None:
    api.emu.inject("bad_image_url", only_task_type="imageInference")
    [item] = api.post([make_task()]).json()["data"]
    assert item["imageURL"].startswith("ftp://")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"url_scheme": "not a scheme"}, "url_scheme"),
        ({"url_scheme": ""}, "url_scheme"),
        ({"task_uuid": ""}, "task_uuid"),
        ({"task_uuid": 7}, "task_uuid"),
    ],
)
def test_tampering_fault_fields_are_validated(api: Any, fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Fault(kind="foreign_result", **fields)
    response = api.control("POST", "faults", {"kind": "bad_image_url", **fields})
    assert response.status_code == 400 and problem in response.json()["error"]


def _image_url(api: Any, make_task: Any) -> tuple[str, bytes]:
    [item] = api.post([make_task(outputFormat="PNG")]).json()["data"]
    real = api.http.get(item["imageURL"])
    assert real.status_code == 200 and real.content.startswith(b"\x89PNG")
    return item["imageURL"], real.content


def test_served_image_as_an_html_page(api: Any, make_task: Any) -> None:
    url, _ = _image_url(api, make_task)
    api.emu.image_corruption = "html"
    response = api.http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html"
    assert response.content.startswith(b"<html>")


def test_served_image_as_garbage_keeps_length_and_content_type(api: Any, make_task: Any) -> None:
    url, real = _image_url(api, make_task)
    api.control("POST", "config", {"image_corruption": "garbage"})
    response = api.http.get(url)
    assert response.headers["content-type"] == "image/png"
    assert len(response.content) == len(real) and response.content != real
    assert not response.content.startswith((b"\x89PNG", b"\xff\xd8\xff", b"RIFF"))


def test_served_image_truncated_is_the_first_half(api: Any, make_task: Any) -> None:
    url, real = _image_url(api, make_task)
    api.emu.image_corruption = "truncated"
    response = api.http.get(url)
    assert response.content == real[: len(real) // 2]


def test_served_image_extra_bytes_make_an_oversized_body(api: Any, make_task: Any) -> None:
    url, real = _image_url(api, make_task)
    extra = 3 * 1024 * 1024 + 5  # more than one padding chunk
    api.emu.image_extra_bytes = extra
    response = api.http.get(url)
    assert int(response.headers["content-length"]) == len(real) + extra == len(response.content)
    assert response.content.startswith(real) and response.content[len(real) :] == bytes(extra)
    head = api.http.head(url)
    assert int(head.headers["content-length"]) == len(real) + extra and head.content == b""


@pytest.mark.parametrize(
    ("setting", "value"),
    [("image_corruption", "sometimes"), ("image_extra_bytes", -1), ("image_extra_bytes", 1.5)],
)
def test_image_knobs_are_validated(api: Any, setting: str, value: Any) -> None:
    with pytest.raises(ValueError, match=setting):
        api.emu.configure(**{setting: value})
    assert api.control("POST", "config", {setting: value}).status_code == 400


def test_image_knobs_restore_on_reset(http: httpx.Client) -> None:
    with RunwareEmulator(image_corruption="truncated", image_extra_bytes=10) as emu:
        emu.configure(image_corruption="html", image_extra_bytes=0)
        emu.reset(restore_config=True)
        assert (emu.image_corruption, emu.image_extra_bytes) == ("truncated", 10)
        config = http.get(f"{emu.control_url}/config").json()["config"]
        assert (config["image_corruption"], config["image_extra_bytes"]) == ("truncated", 10)


# -- hostile sizes and contents (for the client's bounds) ------------------------------------------------------


def test_nested_json_and_huge_body_are_served_as_asked(api: Any, emu: RunwareEmulator) -> None:
    emu.inject("nested_json", depth=5)
    assert api.poll(str(uuid.uuid4())).content == b'{"data": [[[[[]]]]]}'
    emu.inject("huge_body", size=5_000)
    answer = api.poll(str(uuid.uuid4()))
    assert len(answer.content) == 5_000 and answer.content.startswith(b'{"data": [], "pad": "')


def test_gzip_bomb_is_small_on_the_wire_and_inflates_to_its_size(api: Any, emu: RunwareEmulator) -> None:
    import zlib

    emu.inject("gzip_bomb", size=64 * 1024 * 1024)
    with api.http.stream(
        "POST", emu.base_url, json=[], headers={"Authorization": f"Bearer {emu.api_key}"}
    ) as r:
        wire = b"".join(r.iter_raw())
    assert r.headers["content-encoding"] == "gzip" and len(wire) < 200_000
    assert len(zlib.decompressobj(zlib.MAX_WBITS | 32).decompress(wire)) >= 64 * 1024 * 1024


def test_missing_image_uuid_and_insane_cost_tamper_results(
    api: Any, emu: RunwareEmulator, make_task: Any
) -> None:
    emu.inject("missing_image_uuid")
    [item] = api.post([make_task(includeCost=True)]).json()["data"]
    assert "imageUUID" not in item and "imageURL" in item
    emu.inject("insane_cost")
    assert b'"cost":NaN' in api.post([make_task(includeCost=True)]).content


def test_slow_drip_sends_the_answer_one_byte_at_a_time(
    api: Any, emu: RunwareEmulator, make_task: Any
) -> None:
    emu.inject("slow_drip", interval=0.01)
    with api.http.stream(
        "POST", emu.base_url, json=[make_task()], headers={"Authorization": f"Bearer {emu.api_key}"}
    ) as r:
        chunks = list(r.iter_raw())
    assert len(chunks) > 50 and max(len(chunk) for chunk in chunks) <= 2


@pytest.mark.parametrize(
    ("fields", "problem"),
    [({"depth": 0}, "depth and size"), ({"size": -1}, "depth and size"), ({"interval": -1}, "interval")],
)
def test_hostile_size_fields_are_validated(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Fault(kind="huge_body", **fields)
