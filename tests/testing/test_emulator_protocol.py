"""Wire protocol of the emulator: auth, envelopes, delivery modes, polling, idempotency, counters."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from airflow_provider_bfl.testing.emulator import RunwareEmulator
from airflow_provider_bfl.testing.emulator.faults import ScriptedOutcome
from airflow_provider_bfl.testing.emulator.state import TaskRecord
from airflow_provider_bfl.testing.emulator.validation import validate_image_inference


def poll_until_done(api: Any, task_uuid: str, timeout: float = 5.0) -> list[list[dict[str, Any]]]:
    """Poll every 20 ms until a poll has no processing item; return every poll's data."""
    history: list[list[dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = api.poll(task_uuid)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        history.append(data)
        if not any(item.get("status") in ("processing", "pending") for item in data):
            return history
        time.sleep(0.02)
    raise AssertionError(f"task {task_uuid} did not finish: {history[-1]}")


# -- auth ------------------------------------------------------------------------------------------
def test_missing_api_key_is_401_missing_api_key(api: Any, make_task: Any) -> None:
    response = api.post([make_task()], key=None)
    assert response.status_code == 401
    assert response.json() == {
        "errors": [{"code": "missingApiKey", "message": response.json()["errors"][0]["message"]}]
    }
    assert api.emu.counters.tasks_accepted == 0


def test_wrong_api_key_is_401_invalid_api_key(api: Any, make_task: Any) -> None:
    response = api.post([make_task()], key="wrong-key")
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "invalidApiKey"
    assert api.emu.counters.tasks_accepted == 0


def test_non_bearer_scheme_is_rejected(api: Any) -> None:
    response = api.post([{"taskType": "ping"}], key=None, headers={"Authorization": "Basic dGVzdC1rZXk="})
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "invalidApiKey"


def test_authentication_task_in_body_is_accepted(api: Any) -> None:
    tasks = [{"taskType": "authentication", "apiKey": api.emu.api_key}, {"taskType": "ping", "ping": True}]
    response = api.post(tasks, key=None)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data[0]["taskType"] == "authentication" and uuid.UUID(data[0]["connectionSessionUUID"])
    assert data[1] == {"taskType": "ping", "pong": True}


def test_api_key_is_settable_at_runtime(api: Any) -> None:
    api.emu.api_key = "rotated"
    assert api.post([{"taskType": "ping"}], key="test-key").status_code == 401
    assert api.post([{"taskType": "ping"}], key="rotated").status_code == 200


# -- body and task types ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"taskType": "ping"}', b"[1, 2]", b"[]", b'["ping"]'],
    ids=["not-json", "object", "numbers", "empty", "strings"],
)
def test_body_must_be_a_json_array_of_objects(api: Any, body: bytes) -> None:
    response = api.http.post(
        api.emu.base_url,
        content=body,
        headers={"Authorization": "Bearer test-key", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "invalidRequestBody"
    assert "data" not in response.json()


def test_ping(api: Any) -> None:
    response = api.post([{"taskType": "ping", "ping": True}])
    assert response.status_code == 200
    assert response.json() == {"data": [{"taskType": "ping", "pong": True}]}


def test_unknown_task_type_is_unsupported(api: Any) -> None:
    response = api.post([{"taskType": "videoInference", "taskUUID": str(uuid.uuid4())}])
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["code"] == "unsupportedTaskType" and error["parameter"] == "taskType"
    assert "imageInference" in error["allowedValues"]


def test_account_details_report_balance_after_billing(api: Any, make_task: Any) -> None:
    task_uuid = str(uuid.uuid4())
    assert api.post([make_task(numberResults=2)]).status_code == 200
    response = api.post([{"taskType": "accountManagement", "taskUUID": task_uuid, "operation": "getDetails"}])
    assert response.status_code == 200
    item = response.json()["data"][0]
    assert item["taskType"] == "accountManagement" and item["taskUUID"] == task_uuid
    assert item["balance"] == {"amount": pytest.approx(1000.0 - 0.08), "freeBalance": 0.0, "currency": "USD"}
    assert api.emu.counters.images_billed == 2


def test_account_management_rejects_other_operations(api: Any) -> None:
    response = api.post([{"taskType": "accountManagement", "operation": "deleteEverything"}])
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "unsupportedOperation"


def test_get_task_details_returns_request_and_response(api: Any, make_task: Any) -> None:
    task = make_task(seed=5)
    api.post([task])
    response = api.post([{"taskType": "getTaskDetails", "taskUUID": task["taskUUID"]}])
    detail = response.json()["data"][0]
    assert detail["status"] == "success"
    assert detail["request"] == task
    assert [item["seed"] for item in detail["response"]] == [5]
    missing = api.post([{"taskType": "getTaskDetails", "taskUUID": str(uuid.uuid4())}])
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "taskNotFound"


# -- sync delivery ---------------------------------------------------------------------------------
def test_sync_returns_one_item_per_image_after_latency(api: Any, make_task: Any) -> None:
    api.emu.latency = 0.3
    task = make_task(numberResults=3, seed=100, includeCost=True)
    started = time.monotonic()
    response = api.post([task])
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed >= 0.29
    data = response.json()["data"]
    assert len(data) == 3
    assert {item["taskUUID"] for item in data} == {task["taskUUID"]}
    assert len({item["imageUUID"] for item in data}) == 3
    assert [item["seed"] for item in data] == [100, 101, 102]
    assert all(item["cost"] == 0.04 and "status" not in item and "NSFWContent" not in item for item in data)
    assert all(item["imageURL"].startswith(api.emu.origin + "/images/") for item in data)


def test_sync_waits_for_every_task_in_the_array(api: Any, make_task: Any) -> None:
    api.emu.latency = 0.2
    first, second = make_task(), make_task(numberResults=2)
    started = time.monotonic()
    data = api.post([first, second]).json()["data"]
    assert time.monotonic() - started >= 0.19
    assert [item["taskUUID"] for item in data] == [first["taskUUID"], second["taskUUID"], second["taskUUID"]]


def test_random_seeds_are_unsigned_32_bit_and_distinct(api: Any, make_task: Any) -> None:
    data = api.post([make_task(numberResults=5)]).json()["data"]
    seeds = [item["seed"] for item in data]
    assert all(0 <= seed < 2**32 for seed in seeds)
    assert len(set(seeds)) == 5


def test_seed_sequence_wraps_at_the_int63_limit(api: Any, make_task: Any) -> None:
    data = api.post([make_task(numberResults=2, seed=2**63 - 1)]).json()["data"]
    assert [item["seed"] for item in data] == [2**63 - 1, 0]


def test_include_cost_false_omits_cost(api: Any, make_task: Any) -> None:
    item = api.post([make_task()]).json()["data"][0]
    assert "cost" not in item


def test_nsfw_flag_only_with_check_content(api: Any, make_task: Any) -> None:
    checked = api.post([make_task(positivePrompt="an NSFW scene", safety={"checkContent": True})]).json()[
        "data"
    ]
    clean = api.post([make_task(safety={"checkContent": True})]).json()["data"]
    unchecked = api.post([make_task(positivePrompt="an nsfw scene")]).json()["data"]
    assert checked[0]["NSFWContent"] is True
    assert clean[0]["NSFWContent"] is False
    assert "NSFWContent" not in unchecked[0]
    api.emu.nsfw_marker = "forbidden"
    again = api.post([make_task(positivePrompt="forbidden fruit", safety={"checkContent": True})]).json()
    assert again["data"][0]["NSFWContent"] is True


# -- async delivery and getResponse -----------------------------------------------------------------
def test_async_acknowledges_at_once(api: Any, make_task: Any) -> None:
    api.emu.latency = 5.0
    task = make_task(deliveryMethod="async")
    started = time.monotonic()
    response = api.post([task])
    assert time.monotonic() - started < 1.0
    assert response.status_code == 200
    assert response.json() == {"data": [{"taskType": "imageInference", "taskUUID": task["taskUUID"]}]}


def test_get_response_goes_processing_partial_success(api: Any, make_task: Any) -> None:
    api.emu.latency = 0.75
    task = make_task(deliveryMethod="async", numberResults=3, seed=40, includeCost=True)
    api.post([task])
    history = poll_until_done(api, task["taskUUID"])
    ready_counts = [sum(1 for item in data if item.get("status") == "success") for data in history]
    assert ready_counts == sorted(ready_counts), "results must be cumulative"
    assert ready_counts[0] == 0 and ready_counts[-1] == 3
    assert {1, 2} <= set(ready_counts), f"partial results never seen: {ready_counts}"
    for data in history[:-1]:
        processing = [item for item in data if item.get("status") == "processing"]
        assert len(processing) == 1
        assert processing[0]["taskType"] == "imageInference" and processing[0]["taskUUID"] == task["taskUUID"]
        assert 0 <= processing[0]["progress"] <= 99
    progresses = [
        next(i["progress"] for i in data if i.get("status") == "processing") for data in history[:-1]
    ]
    assert progresses == sorted(progresses) and progresses[-1] > progresses[0]
    final = history[-1]
    assert [item["seed"] for item in final] == [40, 41, 42]
    assert all(item["status"] == "success" and item["cost"] == 0.04 and item["imageURL"] for item in final)
    assert api.emu.billed_for(task["taskUUID"]) == 3


def test_partial_results_keep_image_uuids_stable(api: Any, make_task: Any) -> None:
    api.emu.latency = 0.3
    task = make_task(deliveryMethod="async", numberResults=2)
    api.post([task])
    history = poll_until_done(api, task["taskUUID"])
    seen: dict[str, str] = {}
    for data in history:
        for item in data:
            if item.get("status") == "success":
                assert seen.setdefault(item["imageUUID"], item["imageURL"]) == item["imageURL"]
    assert len(seen) == 2


def test_image_readiness_schedule() -> None:
    validated = validate_image_inference(
        {
            "taskType": "imageInference",
            "taskUUID": str(uuid.uuid4()),
            "model": "bfl:2@1",
            "positivePrompt": "ok",
            "width": 256,
            "height": 256,
            "numberResults": 4,
        }
    )
    assert not hasattr(validated, "code")
    record = TaskRecord(
        request=validated,
        accepted_at=100.0,
        accepted_wall=0.0,
        latency=2.0,
        seeds=[1, 2, 3, 4],
        image_uuids=["a", "b", "c", "d"],
        blank=[False] * 4,
        nsfw=False,
        outcome=ScriptedOutcome(),
    )
    assert [record.ready_at(i) for i in range(4)] == [100.5, 101.0, 101.5, 102.0]
    assert [record.ready_count(t) for t in (100.4, 100.5, 101.2, 102.0)] == [0, 1, 2, 4]
    assert record.progress(101.0) == 50


def test_legacy_pending_status_word(api: Any, make_task: Any) -> None:
    api.emu.latency = 5.0
    api.emu.processing_status_word = "pending"
    task = make_task(deliveryMethod="async")
    api.post([task])
    (item,) = api.poll(task["taskUUID"]).json()["data"]
    assert {key: item[key] for key in ("taskType", "taskUUID", "status")} == {
        "taskType": "imageInference",
        "taskUUID": task["taskUUID"],
        "status": "pending",
    }
    assert set(item) == {"taskType", "taskUUID", "status", "progress"}
    assert 0 <= item["progress"] < 10


def test_many_get_response_tasks_share_one_request(api: Any, make_task: Any) -> None:
    tasks = [make_task(deliveryMethod="async") for _ in range(500)]
    assert api.post(tasks).status_code == 200
    started = time.monotonic()
    response = api.poll(*[task["taskUUID"] for task in tasks])
    assert time.monotonic() - started < 2.0
    data = response.json()["data"]
    assert [item["taskUUID"] for item in data] == [task["taskUUID"] for task in tasks]
    assert all(item["status"] == "success" for item in data)


def test_async_failure_as_item(api: Any, make_task: Any) -> None:
    task = make_task(deliveryMethod="async")
    api.emu.script_task(task["taskUUID"], fail=("processingFailed", "GPU on fire"))
    api.post([task])
    response = api.poll(task["taskUUID"])
    assert response.status_code == 200
    assert response.json() == {
        "data": [
            {
                "taskType": "imageInference",
                "taskUUID": task["taskUUID"],
                "status": "error",
                "error": {"code": "processingFailed", "message": "GPU on fire"},
            }
        ]
    }
    assert api.emu.billed_for(task["taskUUID"]) == 0


def test_async_failure_as_envelope_errors(api: Any, make_task: Any) -> None:
    api.emu.async_error_shape = "envelope"
    failing, fine = make_task(deliveryMethod="async"), make_task(deliveryMethod="async")
    api.emu.script_task(failing["taskUUID"], outcome="moderated")
    api.post([failing, fine])
    response = api.poll(failing["taskUUID"], fine["taskUUID"])
    assert response.status_code == 200
    body = response.json()
    assert [item["taskUUID"] for item in body["data"]] == [fine["taskUUID"]]
    assert body["errors"] == [
        {
            "code": "contentPolicyViolation",
            "message": body["errors"][0]["message"],
            "taskType": "imageInference",
            "taskUUID": failing["taskUUID"],
        }
    ]
    only_failing = api.poll(failing["taskUUID"])
    assert only_failing.status_code == 200 and only_failing.json()["data"] == []


def test_failure_appears_only_after_latency(api: Any, make_task: Any) -> None:
    api.emu.latency = 0.3
    task = make_task(deliveryMethod="async", positivePrompt="please fail-marker now")
    api.post([task])
    assert api.poll(task["taskUUID"]).json()["data"][0]["status"] == "processing"
    time.sleep(0.35)
    item = api.poll(task["taskUUID"]).json()["data"][0]
    assert item["status"] == "error" and item["error"]["code"] == "processingFailed"


def test_unknown_uuid_error_mode(api: Any) -> None:
    unknown = str(uuid.uuid4())
    response = api.poll(unknown)
    assert response.status_code == 200
    assert response.json()["data"] == []
    assert response.json()["errors"][0]["code"] == "taskNotFound"
    assert response.json()["errors"][0]["taskUUID"] == unknown


def test_unknown_uuid_empty_mode(api: Any) -> None:
    api.emu.unknown_task_mode = "empty"
    response = api.poll(str(uuid.uuid4()))
    assert response.status_code == 200 and response.json() == {"data": []}


def test_results_expire_after_retention(api: Any, make_task: Any) -> None:
    api.emu.result_retention = 60
    task = make_task(deliveryMethod="async")
    api.post([task])
    assert api.poll(task["taskUUID"]).json()["data"][0]["status"] == "success"
    api.emu.store.get(task["taskUUID"]).accepted_at -= 61  # age the task instead of sleeping a minute
    assert api.poll(task["taskUUID"]).json()["errors"][0]["code"] == "taskExpired"


def test_get_response_requires_task_uuid(api: Any) -> None:
    response = api.post([{"taskType": "getResponse"}])
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == "missingTaskUUID"


# -- envelopes --------------------------------------------------------------------------------------
def test_partial_success_envelope(api: Any, make_task: Any) -> None:
    good, bad = make_task(), make_task(width=300)
    response = api.post([good, bad])
    assert response.status_code == 200
    body = response.json()
    assert [item["taskUUID"] for item in body["data"]] == [good["taskUUID"]]
    assert [(e["code"], e["taskUUID"], e["parameter"]) for e in body["errors"]] == [
        ("invalidWidth", bad["taskUUID"], "width")
    ]


def test_all_tasks_invalid_is_400_with_only_errors(api: Any, make_task: Any) -> None:
    response = api.post([make_task(width=300), make_task(height=10)])
    assert response.status_code == 400
    assert set(response.json()) == {"errors"}
    assert [error["code"] for error in response.json()["errors"]] == ["invalidWidth", "invalidHeight"]


def test_sync_scripted_failure_uses_its_http_status(api: Any, make_task: Any) -> None:
    task = make_task()
    api.emu.script_task(task["taskUUID"], outcome="error", code="providerError", http_status=500)
    response = api.post([task])
    assert response.status_code == 500
    assert response.json()["errors"][0]["code"] == "providerError"
    assert response.json()["errors"][0]["taskUUID"] == task["taskUUID"]


def test_legacy_error_key(api: Any, make_task: Any) -> None:
    api.emu.legacy_error_key = True
    body = api.post([make_task(width=300)]).json()
    assert "errors" not in body
    assert isinstance(body["error"], dict) and body["error"]["code"] == "invalidWidth"


def test_data_as_object_for_single_items(api: Any, make_task: Any) -> None:
    api.emu.data_as_object = True
    single = api.post([make_task()]).json()
    assert isinstance(single["data"], dict) and single["data"]["taskType"] == "imageInference"
    several = api.post([make_task(numberResults=2)]).json()
    assert isinstance(several["data"], list) and len(several["data"]) == 2


# -- idempotency and billing -----------------------------------------------------------------------
def test_conflicting_task_uuid_is_rejected_and_not_billed(api: Any, make_task: Any) -> None:
    task = make_task(numberResults=2)
    first = api.post([task])
    second = api.post([task])
    assert first.status_code == 200
    assert second.status_code == 400
    error = second.json()["errors"][0]
    assert error["code"] == "conflictTaskUUID" and error["taskUUID"] == task["taskUUID"]
    snapshot = api.emu.counters.snapshot()
    assert snapshot.task(task["taskUUID"]).submissions == 2
    assert snapshot.task(task["taskUUID"]).accepted == 1
    assert snapshot.task(task["taskUUID"]).images_billed == 2
    assert snapshot.images_billed == 2 and snapshot.conflicts == 1 and snapshot.tasks_accepted == 1


def test_conflict_keeps_the_first_submission_running(api: Any, make_task: Any) -> None:
    api.emu.latency = 0.3
    task = make_task(deliveryMethod="async", seed=9)
    api.post([task])
    assert api.post([{**task, "seed": 10}]).json()["errors"][0]["code"] == "conflictTaskUUID"
    final = poll_until_done(api, task["taskUUID"])[-1]
    assert [item["seed"] for item in final] == [9]


def test_duplicate_uuid_inside_one_request(api: Any, make_task: Any) -> None:
    task = make_task()
    body = api.post([task, task]).json()
    assert len(body["data"]) == 1 and body["errors"][0]["code"] == "conflictTaskUUID"


def test_failed_validation_does_not_reserve_the_uuid(api: Any, make_task: Any) -> None:
    task = make_task(width=300)
    assert api.post([task]).status_code == 400
    assert api.post([{**task, "width": 320}]).status_code == 200


def test_billing_happens_without_polling(emu: RunwareEmulator, api: Any, make_task: Any) -> None:
    emu.latency = 0.3
    task = make_task(deliveryMethod="async", numberResults=4)
    api.post([task])
    assert emu.billed_for(task["taskUUID"]) == 0
    time.sleep(0.35)
    assert emu.billed_for(task["taskUUID"]) == 4
    assert emu.counters.cost_billed == pytest.approx(0.16)


@pytest.mark.parametrize("outcome", ["error", "moderated"])
def test_scripted_failures_are_not_billed(api: Any, make_task: Any, outcome: str) -> None:
    task = make_task(numberResults=3)
    api.emu.script_task(task["taskUUID"], outcome=outcome)
    api.post([task])
    assert api.emu.billed_for(task["taskUUID"]) == 0
    assert api.emu.counters.tasks_accepted == 1


def test_moderation_marker(api: Any, make_task: Any) -> None:
    response = api.post([make_task(positivePrompt="moderation-marker please")])
    assert response.json()["errors"][0]["code"] == "contentPolicyViolation"
    assert api.emu.counters.images_billed == 0


def test_script_applies_to_a_running_task(api: Any, make_task: Any) -> None:
    api.emu.latency = 0.2
    task = make_task(deliveryMethod="async")
    api.post([task])
    api.emu.script_task(task["taskUUID"], outcome="error", code="inferenceError", message="late failure")
    final = poll_until_done(api, task["taskUUID"])[-1]
    assert final[0]["error"] == {"code": "inferenceError", "message": "late failure"}


def test_scripted_latency_overrides_the_global_one(api: Any, make_task: Any) -> None:
    task = make_task()
    api.emu.script_task(task["taskUUID"], outcome="success", latency=0.25)
    started = time.monotonic()
    assert api.post([task]).status_code == 200
    assert time.monotonic() - started >= 0.24


def test_counters_record_requests_and_task_types(api: Any, make_task: Any) -> None:
    task = make_task(deliveryMethod="async")
    api.post([task, {"taskType": "ping"}])
    api.poll(task["taskUUID"], task["taskUUID"])
    api.post([make_task(width=1)])
    snapshot = api.emu.counters.snapshot()
    assert snapshot.requests == 3
    assert snapshot.requests_by_task_type == {"imageInference": 2, "ping": 1, "getResponse": 2}
    assert snapshot.errors_by_code == {"invalidWidth": 1}
    assert snapshot.to_dict()["tasks"][task["taskUUID"]] == {
        "submissions": 1,
        "accepted": 1,
        "images_billed": 1,
    }


def test_reset_clears_tasks_counters_and_scripts(api: Any, make_task: Any) -> None:
    task = make_task(deliveryMethod="async")
    api.post([task])
    api.emu.script_task(str(uuid.uuid4()), outcome="error")
    api.emu.inject("status", count=5)
    api.emu.latency = 0.5
    api.emu.reset()
    assert api.emu.counters.snapshot().requests == 0
    assert api.emu.latency == 0.5
    assert api.poll(task["taskUUID"]).json()["errors"][0]["code"] == "taskNotFound"
    assert api.post([task]).status_code == 200, "a reset forgets accepted UUIDs and pending faults"
    api.emu.reset(restore_config=True)
    assert api.emu.latency == 0.0


def test_settings_are_validated(emu: RunwareEmulator) -> None:
    with pytest.raises(ValueError):
        emu.unknown_task_mode = "maybe"  # type: ignore[assignment]
    with pytest.raises(ValueError):
        emu.latency = -1.0
    with pytest.raises(ValueError):
        emu.configure(latency=1.0, no_such_setting=True)
    assert emu.latency == 0.0, "configure is all-or-nothing"


def test_two_hundred_tasks_in_one_body(api: Any, make_task: Any) -> None:
    tasks = [make_task(seed=i) for i in range(200)]
    started = time.monotonic()
    response = api.post(tasks)
    assert time.monotonic() - started < 2.0
    assert [item["seed"] for item in response.json()["data"]] == list(range(200))
    assert api.emu.counters.images_billed == 200


def test_max_tasks_per_request(api: Any, make_task: Any) -> None:
    api.emu.max_tasks_per_request = 2
    response = api.post([make_task() for _ in range(3)])
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == "tooManyTasks"
    assert api.emu.counters.tasks_accepted == 0
    assert api.post([make_task(), make_task()]).status_code == 200


def test_emulator_bug_is_a_500_not_a_hang_up(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.emu.processor, "submit", explode)
    response = api.post([{"taskType": "ping"}])
    assert response.status_code == 500
    assert response.json()["errors"][0]["code"] == "internalServerError"


def test_other_paths_are_404(api: Any) -> None:
    assert api.http.get(api.emu.base_url).status_code == 404
    assert api.http.post(api.emu.origin + "/v2", json=[]).status_code == 404


def test_sync_timeout_then_retry_conflicts_and_reattaches_by_polling(api: Any, make_task: Any) -> None:
    """The recovery path clients rely on: same taskUUID on retry, conflict, then getResponse."""
    api.emu.latency = 0.5
    task = make_task(numberResults=2)
    with pytest.raises(httpx.ReadTimeout):
        api.post([task], timeout=0.1)
    retry = api.post([task])
    assert retry.status_code == 400 and retry.json()["errors"][0]["code"] == "conflictTaskUUID"
    final = poll_until_done(api, task["taskUUID"])[-1]
    assert [item["status"] for item in final] == ["success", "success"]
    assert api.emu.billed_for(task["taskUUID"]) == 2
    assert api.emu.counters.task(task["taskUUID"]).submissions == 2


def test_journal_records_what_was_sent_and_reset_clears_it(api: Any, make_task: Any) -> None:
    first, second = make_task(seed=1), make_task(seed=2)
    api.post([first, second])
    api.post([{"taskType": "getResponse", "taskUUID": first["taskUUID"]}])
    assert api.emu.received_tasks("imageInference") == [first, second]
    assert len(api.emu.received_requests()) == 2
    assert [len(r) for r in api.emu.received_requests("getResponse")] == [1]
    api.emu.reset()
    assert api.emu.received_requests() == []
