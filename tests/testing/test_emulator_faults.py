"""Fault injection from Python and over the HTTP control API."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from airflow_provider_bfl.testing.emulator import Fault


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "rateLimitExceeded"),
        (500, "internalServerError"),
        (502, "serviceUnavailable"),
        (503, "serviceUnavailable"),
        (504, "requestTimeout"),
    ],
)
def test_status_fault_has_a_runware_error_body(api: Any, make_task: Any, status: int, code: str) -> None:
    api.emu.inject("status", status=status)
    task = make_task()
    response = api.post([task])
    assert response.status_code == status
    assert response.json()["errors"][0]["code"] == code
    assert "retry-after" not in response.headers
    assert api.emu.counters.tasks_accepted == 0, "a status fault does not process the request"
    assert api.post([task]).status_code == 200, "the fault was used up"


def test_status_fault_sends_retry_after_and_counts(api: Any) -> None:
    api.emu.inject(
        "status", count=2, status=429, retry_after=3, code="inferenceRateLimitExceeded", message="slow down"
    )
    responses = [api.post([{"taskType": "ping"}]) for _ in range(3)]
    assert [r.status_code for r in responses] == [429, 429, 200]
    assert responses[0].headers["retry-after"] == "3"
    assert responses[0].json() == {"errors": [{"code": "inferenceRateLimitExceeded", "message": "slow down"}]}
    snapshot = api.emu.counters.snapshot()
    assert snapshot.requests == 3 and snapshot.faults_triggered == {"status": 2}


def test_status_fault_respects_legacy_error_key(api: Any) -> None:
    api.emu.legacy_error_key = True
    api.emu.inject("status", status=503)
    assert api.post([{"taskType": "ping"}]).json()["error"]["code"] == "serviceUnavailable"


def test_invalid_json_fault(api: Any) -> None:
    api.emu.inject("invalid_json")
    response = api.post([{"taskType": "ping"}])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        response.json()


def test_html_fault(api: Any) -> None:
    api.emu.inject("html")
    response = api.post([{"taskType": "ping"}])
    assert response.status_code == 502
    assert response.headers["content-type"] == "text/html"
    assert response.text.lstrip().startswith("<html>")


def test_empty_envelope_fault(api: Any) -> None:
    api.emu.inject("empty_envelope")
    response = api.post([{"taskType": "ping"}])
    assert (response.status_code, response.json()) == (200, {})


def test_drop_fault_processes_then_hangs_up(api: Any, make_task: Any) -> None:
    api.emu.inject("drop")
    task = make_task(numberResults=2)
    with pytest.raises(httpx.RemoteProtocolError):
        api.post([task])
    snapshot = api.emu.counters.snapshot()
    assert snapshot.task(task["taskUUID"]).accepted == 1, "the dropped request was still processed"
    retry = api.post([task])
    assert retry.status_code == 400 and retry.json()["errors"][0]["code"] == "conflictTaskUUID"
    results = api.poll(task["taskUUID"]).json()["data"]
    assert [item["status"] for item in results] == ["success", "success"]
    assert api.emu.billed_for(task["taskUUID"]) == 2
    assert api.emu.counters.task(task["taskUUID"]).submissions == 2


def test_drop_before_fault_does_not_process(api: Any, make_task: Any) -> None:
    api.emu.inject("drop_before")
    task = make_task()
    with pytest.raises(httpx.RemoteProtocolError):
        api.post([task])
    assert api.emu.counters.task(task["taskUUID"]).accepted == 0
    assert api.post([task]).status_code == 200


def test_stall_fault_trips_client_timeouts_without_processing(api: Any, make_task: Any) -> None:
    api.emu.inject("stall", seconds=1.0)
    task = make_task()
    with pytest.raises(httpx.ReadTimeout):
        api.post([task], timeout=0.2)
    assert api.emu.counters.task(task["taskUUID"]).accepted == 0


def test_stall_fault_then_answers_504_when_not_processing(api: Any) -> None:
    api.emu.inject("stall", seconds=0.2)
    started = time.monotonic()
    response = api.post([{"taskType": "ping"}])
    assert time.monotonic() - started >= 0.19
    assert response.status_code == 504 and response.json()["errors"][0]["code"] == "requestTimeout"


@pytest.mark.parametrize("process", ["before", "after", True])
def test_stall_fault_can_process(api: Any, make_task: Any, process: Any) -> None:
    api.emu.inject("stall", seconds=0.2, process=process)
    task = make_task()
    started = time.monotonic()
    response = api.post([task])
    assert time.monotonic() - started >= 0.19
    assert response.status_code == 200 and response.json()["data"][0]["taskUUID"] == task["taskUUID"]
    assert api.emu.billed_for(task["taskUUID"]) == 1


def test_stall_before_processing_makes_a_timed_out_retry_conflict(api: Any, make_task: Any) -> None:
    api.emu.inject("stall", seconds=1.0, process="before")
    task = make_task()
    with pytest.raises(httpx.ReadTimeout):
        api.post([task], timeout=0.2)
    assert api.post([task]).json()["errors"][0]["code"] == "conflictTaskUUID"


def test_fault_restricted_to_a_task_type(api: Any, make_task: Any) -> None:
    api.emu.inject("status", status=503, only_task_type="getResponse")
    task = make_task(deliveryMethod="async")
    assert api.post([task]).status_code == 200
    assert api.post([{"taskType": "ping"}]).status_code == 200
    assert api.poll(task["taskUUID"]).status_code == 503
    assert api.poll(task["taskUUID"]).status_code == 200


def test_faults_are_consumed_in_order(api: Any) -> None:
    api.emu.inject("status", status=500)
    api.emu.inject("empty_envelope")
    assert api.post([{"taskType": "ping"}]).status_code == 500
    assert api.post([{"taskType": "ping"}]).json() == {}
    assert api.post([{"taskType": "ping"}]).json()["data"][0]["pong"] is True


def test_faults_do_not_touch_images_or_control(api: Any, make_task: Any) -> None:
    (item,) = api.post([make_task()]).json()["data"]
    api.emu.inject("status", status=500)
    assert api.http.get(item["imageURL"]).status_code == 200
    assert api.control("GET", "counters").status_code == 200
    assert api.post([{"taskType": "ping"}]).status_code == 500


def test_invalid_fault_options_are_rejected(api: Any) -> None:
    with pytest.raises(ValueError):
        api.emu.inject("explode")
    with pytest.raises(ValueError):
        api.emu.inject("status", count=0)
    with pytest.raises(ValueError):
        Fault.from_mapping({"kind": "status", "colour": "red"})


# -- control API -----------------------------------------------------------------------------------
def test_control_faults_over_http(api: Any) -> None:
    response = api.control("POST", "faults", {"kind": "status", "count": 2, "status": 503, "retry_after": 1})
    assert response.status_code == 200
    assert response.json()["pending"][0]["count"] == 2
    first = api.post([{"taskType": "ping"}])
    assert first.status_code == 503 and first.headers["retry-after"] == "1"
    assert api.control("GET", "faults").json()["pending"][0]["count"] == 1
    assert api.control("DELETE", "faults").json() == {"pending": []}
    assert api.post([{"taskType": "ping"}]).status_code == 200


def test_control_accepts_a_list_of_faults(api: Any) -> None:
    api.control("POST", "faults", [{"kind": "html"}, {"kind": "drop", "only_task_type": "imageInference"}])
    assert len(api.emu.faults.pending()) == 2


def test_control_rejects_bad_input(api: Any) -> None:
    assert api.control("POST", "faults", {"kind": "meteor"}).status_code == 400
    assert api.control("POST", "config", {"latency": "fast"}).status_code == 400
    assert api.control("POST", "script", {"outcome": "error"}).status_code == 400
    assert api.control("GET", "nothing-here").status_code == 404


def test_control_counters_config_reset_and_script(api: Any, make_task: Any) -> None:
    assert (
        api.control("POST", "config", {"latency": 0.2, "processing_status_word": "pending"}).status_code
        == 200
    )
    assert api.emu.latency == 0.2 and api.emu.processing_status_word == "pending"
    task = make_task(deliveryMethod="async")
    assert (
        api.control(
            "POST", "script", {"task_uuid": task["taskUUID"], "fail": ["taskFailed", "nope"]}
        ).status_code
        == 200
    )
    api.post([task])
    counters = api.control("GET", "counters").json()
    assert counters["requests"] == 1
    assert counters["tasks"][task["taskUUID"]] == {"submissions": 1, "accepted": 1, "images_billed": 0}
    time.sleep(0.25)
    assert api.poll(task["taskUUID"]).json()["data"][0]["error"] == {"code": "taskFailed", "message": "nope"}
    assert api.control("GET", "counters").json()["requests"] == 2, "control calls are not API requests"
    assert api.control("POST", "reset", {"restore_config": True}).json() == {"ok": True}
    assert api.control("GET", "counters").json()["requests"] == 0
    assert api.control("GET", "config").json()["config"]["latency"] == 0.0


def test_control_health_and_blank_next_images(api: Any, make_task: Any) -> None:
    health = api.control("GET", "health").json()
    assert health == {"ok": True, "baseUrl": api.emu.base_url, "apiKey": "test-key"}
    api.control("POST", "config", {"blank_next_images": 1})
    task = make_task(outputType="base64Data", outputFormat="PNG")
    api.post([task])
    assert api.emu.store.get(task["taskUUID"]).blank == [True]


def test_control_script_moderation(api: Any, make_task: Any) -> None:
    task = make_task()
    api.control("POST", "script", {"taskUUID": task["taskUUID"], "outcome": "moderated"})
    response = api.post([task])
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == "contentPolicyViolation"
    assert str(uuid.UUID(response.json()["errors"][0]["taskUUID"])) == task["taskUUID"]
