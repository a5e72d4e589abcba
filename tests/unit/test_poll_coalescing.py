"""
The shared poller (``hooks._coalescer``): many triggers in one event loop, few getResponse requests.

Every trigger must still behave as if it polled alone: exactly one event, partial results kept,
its own failure budget and deadline, and leaving (cancellation) without disturbing the others.
Sharing is asserted with what the emulator received, over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_bfl import events
from airflow_provider_bfl.hooks._coalescer import active_coalescers
from airflow_provider_bfl.hooks.bfl import BflHook
from airflow_provider_bfl.models import TaskState
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger
from tests.conftest import API_KEY, connection_json
from tests.submissions import submit as submit_tasks

PROMPT = "a red bicycle"


def submit(*prompts: str, number_results: int = 1) -> list[str]:
    """Submit async tasks as an upstream operator would; their taskUUIDs in order."""
    return list(submit_tasks(*prompts, number_results=number_results, size=256))


async def fire(trigger: BflImageInferenceTrigger) -> dict[str, Any]:
    """The one event of a trigger, driven as the triggerer does, proving nothing follows it."""
    run = trigger.run()
    event = await run.__anext__()
    with pytest.raises(StopAsyncIteration):
        await run.__anext__()
    return events.validate(event.payload)


async def fire_all(triggers: list[BflImageInferenceTrigger]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(fire(trigger) for trigger in triggers)))


def poll_requests(emulator: RunwareEmulator) -> list[list[dict[str, Any]]]:
    return emulator.received_requests("getResponse")


def polled_tasks(emulator: RunwareEmulator, task_uuid: str | None = None) -> int:
    tasks = emulator.received_tasks("getResponse")
    return sum(task_uuid is None or task["taskUUID"] == task_uuid for task in tasks)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    stop = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < stop, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_fifty_triggers_share_a_few_batched_requests(bfl_conn: RunwareEmulator) -> None:
    # The generations run from their submission, the triggers poll (every 20-100 ms) only once
    # they are up: on a loaded machine that took longer than a 0.3 s latency, so every task was
    # polled once, already done. 2 s leaves a dozen polls per task even if start-up takes 1 s.
    bfl_conn.latency = 2.0
    uuids = submit(*(f"{PROMPT} {i}" for i in range(50)))
    triggers = [BflImageInferenceTrigger([uuid], deadline=time.time() + 30) for uuid in uuids]
    running = asyncio.ensure_future(fire_all(triggers))
    await until(lambda: len(poll_requests(bfl_conn)) >= 1)
    assert len(active_coalescers()) == 1  # one poller and one connection pool for all fifty
    payloads = await running

    assert [payload["status"] for payload in payloads] == [events.SUCCESS] * 50
    assert [payload["task_uuids"] for payload in payloads] == [[uuid] for uuid in uuids]
    assert all(len(payload["results"]) == 1 for payload in payloads)
    requests = poll_requests(bfl_conn)
    task_polls = polled_tasks(bfl_conn)
    # Alone, each trigger would send one request per poll: 50 x its polls.
    assert task_polls >= 2 * 50
    assert len(requests) * 5 <= task_polls, f"{len(requests)} requests for {task_polls} task polls"
    assert max(len(tasks) for tasks in requests) > 10
    assert not active_coalescers()  # the last trigger out closed the poller and its client


async def test_batches_respect_max_tasks_per_request(
    bfl_conn: RunwareEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    bfl_conn.latency = 0.2
    bfl_conn.max_tasks_per_request = 7
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(bfl_conn, max_tasks_per_request=7))
    uuids = submit(*(f"{PROMPT} {i}" for i in range(20)))
    payloads = await fire_all([BflImageInferenceTrigger([uuid], deadline=time.time() + 30) for uuid in uuids])
    assert all(payload["status"] == events.SUCCESS for payload in payloads)
    assert max(len(tasks) for tasks in poll_requests(bfl_conn)) <= 7


async def test_a_task_shared_by_two_triggers_is_asked_about_once_per_batch(bfl_conn: RunwareEmulator) -> None:
    """Two deferred tasks waiting for the same generation (e.g. an operator and a sensor)."""
    bfl_conn.latency = 0.2
    (shared,) = submit(PROMPT)
    first, second = (BflImageInferenceTrigger([shared], deadline=time.time() + 30) for _ in range(2))
    payloads = await fire_all([first, second])
    assert [payload["status"] for payload in payloads] == [events.SUCCESS] * 2
    assert payloads[0]["results"] == payloads[1]["results"]
    assert all(len(tasks) == len({task["taskUUID"] for task in tasks}) for tasks in poll_requests(bfl_conn))


async def test_partial_results_are_kept_per_trigger(bfl_conn: RunwareEmulator) -> None:
    """numberResults=3 arrive one by one while other triggers share the same batches."""
    bfl_conn.latency = 1.5  # images at 0.5, 1.0, 1.5 s: a partial task is seen even on a loaded machine
    (slow,) = submit(PROMPT, number_results=3)
    others = submit(*(f"{PROMPT} {i}" for i in range(5)))
    watched = BflImageInferenceTrigger({slow: 3}, deadline=time.time() + 30)
    triggers = [watched, *(BflImageInferenceTrigger([uuid], deadline=time.time() + 30) for uuid in others)]
    running = asyncio.ensure_future(fire_all(triggers))
    seen: set[int] = set()
    while not running.done():
        status = watched.statuses.get(slow)
        if status is not None and not status.done:
            seen.add(len(status.results))
        await asyncio.sleep(0.005)
    payloads = running.result()
    assert seen & {1, 2}, f"never saw a partial task, only {seen}"
    assert len({result["imageUUID"] for result in payloads[0]["results"]}) == 3
    assert all(payload["status"] == events.SUCCESS for payload in payloads)


async def test_one_failed_generation_fails_only_its_trigger(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.latency = 0.1
    bad, *good = submit(f"{PROMPT} fail-marker", *(f"{PROMPT} {i}" for i in range(4)))
    payloads = await fire_all(
        [BflImageInferenceTrigger([uuid], deadline=time.time() + 30) for uuid in (bad, *good)]
    )
    assert payloads[0]["status"] == events.ERROR
    assert [(f["taskUUID"], f["code"]) for f in payloads[0]["failures"]] == [(bad, "processingFailed")]
    assert [payload["status"] for payload in payloads[1:]] == [events.SUCCESS] * 4


async def test_transient_poll_failures_are_tolerated_for_every_trigger(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.latency = 0.1
    uuids = submit(*(f"{PROMPT} {i}" for i in range(5)))
    bfl_conn.inject("status", count=2, status=503, retry_after=0, only_task_type="getResponse")
    bfl_conn.inject("drop", count=1, only_task_type="getResponse")
    payloads = await fire_all([BflImageInferenceTrigger([uuid], deadline=time.time() + 30) for uuid in uuids])
    assert all(payload["status"] == events.SUCCESS for payload in payloads)
    snapshot = bfl_conn.snapshot()
    assert snapshot.faults_triggered == {"status": 2, "drop": 1}
    assert snapshot.requests_by_task_type["imageInference"] == 5  # nothing resubmitted


async def test_an_exhausted_poll_budget_ends_each_trigger_with_an_error_once(
    bfl_conn: RunwareEmulator,
) -> None:
    """max_poll_failures=1: two failed polls each, five attempts per poll; shared, not multiplied."""
    uuids = submit(*(f"{PROMPT} {i}" for i in range(5)))
    bfl_conn.inject("status", count=1000, status=503, only_task_type="getResponse")
    triggers = [
        BflImageInferenceTrigger([uuid], deadline=time.time() + 30, max_poll_failures=1) for uuid in uuids
    ]
    payloads = await fire_all(triggers)
    for uuid, payload in zip(uuids, payloads, strict=True):
        assert payload["status"] == events.ERROR
        assert payload["failures"][0]["error"] == "BflServerError"
        assert payload["pending"] == [uuid]
    # Alone: 5 triggers x 2 polls x 5 attempts = 50 requests. Shared batches send far fewer.
    assert len(poll_requests(bfl_conn)) <= 20
    assert not active_coalescers()


async def test_each_connection_has_its_own_poller_and_a_bad_key_fails_only_its_triggers(
    bfl_conn: RunwareEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    bfl_conn.latency = 0.1
    monkeypatch.setenv(
        "AIRFLOW_CONN_BFL_BROKEN",
        json.dumps({**json.loads(connection_json(bfl_conn)), "password": "not-the-key-0000"}),
    )
    uuids = submit(*(f"{PROMPT} {i}" for i in range(4)))
    broken = BflImageInferenceTrigger([uuids[0]], bfl_conn_id="bfl_broken", deadline=time.time() + 30)
    healthy = [BflImageInferenceTrigger([uuid], deadline=time.time() + 30) for uuid in uuids[1:]]
    running = asyncio.ensure_future(fire_all([broken, *healthy]))
    await until(lambda: len(active_coalescers()) == 2 or running.done())
    payloads = await running
    assert payloads[0]["status"] == events.ERROR
    assert payloads[0]["failures"][0]["code"] == "invalidApiKey"
    assert "not-the-key-0000" not in json.dumps(payloads[0])
    assert [payload["status"] for payload in payloads[1:]] == [events.SUCCESS] * 3


async def test_deadlines_are_per_trigger_with_a_last_poll_at_each(bfl_conn: RunwareEmulator) -> None:
    """Image 1 of 2 is ready at 0.6 s, image 2 at 1.2 s; one trigger gives up at 0.85 s."""
    bfl_conn.latency = 1.2
    (task_uuid,) = submit(PROMPT, number_results=2)
    started = time.monotonic()
    short = BflImageInferenceTrigger({task_uuid: 2}, deadline=time.time() + 0.85)
    long = BflImageInferenceTrigger({task_uuid: 2}, deadline=time.time() + 30)
    finished: dict[str, float] = {}

    async def timed(name: str, trigger: BflImageInferenceTrigger) -> dict[str, Any]:
        payload = await fire(trigger)
        finished[name] = time.monotonic() - started
        return payload

    short_payload, long_payload = await asyncio.gather(timed("short", short), timed("long", long))
    assert short_payload["status"] == events.TIMEOUT
    assert short_payload["pending"] == [task_uuid] and len(short_payload["results"]) == 1
    assert 0.8 <= finished["short"] < 1.15
    assert long_payload["status"] == events.SUCCESS and len(long_payload["results"]) == 2


async def test_a_deadline_already_past_still_looks_once(bfl_conn: RunwareEmulator) -> None:
    (task_uuid,) = submit(PROMPT)
    await asyncio.sleep(0.05)
    payload = await fire(BflImageInferenceTrigger([task_uuid], deadline=time.time() - 60))
    assert payload["status"] == events.SUCCESS
    assert polled_tasks(bfl_conn, task_uuid) == 1


async def test_cancelling_one_trigger_leaves_the_others_polling(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.latency = 0.6
    cancelled, *kept = submit(*(f"{PROMPT} {i}" for i in range(4)))
    victim = asyncio.ensure_future(fire(BflImageInferenceTrigger([cancelled], deadline=time.time() + 30)))
    others = asyncio.ensure_future(
        fire_all([BflImageInferenceTrigger([uuid], deadline=time.time() + 30) for uuid in kept])
    )
    await until(lambda: polled_tasks(bfl_conn, cancelled) >= 2)
    victim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await victim
    await asyncio.sleep(0.05)  # a batch already on the wire may still carry it
    asked_after_cancel = polled_tasks(bfl_conn, cancelled)
    payloads = await others
    assert [payload["status"] for payload in payloads] == [events.SUCCESS] * 3
    assert polled_tasks(bfl_conn, cancelled) == asked_after_cancel  # no longer asked about
    assert not active_coalescers()


async def test_the_last_trigger_out_closes_the_shared_client(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.latency = 0.3
    (task_uuid,) = submit(PROMPT)
    running = asyncio.ensure_future(fire(BflImageInferenceTrigger([task_uuid], deadline=time.time() + 30)))
    await until(lambda: bool(active_coalescers()))
    (coalescer,) = active_coalescers()
    assert coalescer.waits == 1
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert coalescer.closed and not active_coalescers()
    assert coalescer._client.is_closed
    # A new trigger after that starts a fresh poller.
    payload = await fire(BflImageInferenceTrigger([task_uuid], deadline=time.time() + 30))
    assert payload["status"] == events.SUCCESS


async def test_a_task_the_api_never_mentions_becomes_not_found(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.unknown_task_mode = "empty"
    unknown = "5c7a9c23-6866-4003-93b9-d3f52e15111b"
    payload = await fire(BflImageInferenceTrigger([unknown], deadline=time.time() + 30))
    assert payload["status"] == events.ERROR
    assert payload["failures"][0]["code"] == "taskNotFound"
    assert polled_tasks(bfl_conn, unknown) == 5  # MAX_MISSING_POLLS


async def test_shared_and_solo_waits_report_the_same(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.latency = 0.1
    uuids = submit(PROMPT, f"{PROMPT} fail-marker")
    hook = BflHook()
    try:
        solo = await hook.apoll_until_done(dict.fromkeys(uuids, 1), deadline=time.time() + 30)
        shared = await hook.apoll_until_done(dict.fromkeys(uuids, 1), deadline=time.time() + 30, shared=True)
    finally:
        await hook.aclose()
    assert [status.state for status in shared.values()] == [TaskState.SUCCESS, TaskState.ERROR]
    for uuid in uuids:
        assert shared[uuid].state is solo[uuid].state
        assert [r.image_uuid for r in shared[uuid].results] == [r.image_uuid for r in solo[uuid].results]
        assert type(shared[uuid].error) is type(solo[uuid].error)


async def test_the_key_is_in_no_repr_and_no_log_line(
    bfl_conn: RunwareEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    uuids = submit(PROMPT, PROMPT)
    bfl_conn.inject("status", count=1, status=503, only_task_type="getResponse")
    running = asyncio.ensure_future(
        fire_all([BflImageInferenceTrigger([uuid], deadline=time.time() + 30) for uuid in uuids])
    )
    await until(lambda: bool(active_coalescers()) or running.done())
    texts = [repr(coalescer) for coalescer in active_coalescers()]
    texts += [repr(coalescer.settings) for coalescer in active_coalescers()]
    await running
    texts += [record.getMessage() for record in caplog.records]
    assert texts and all(API_KEY not in text for text in texts)
