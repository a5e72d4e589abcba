"""BflImageInferenceTrigger against the emulator over real HTTP, driven the way the triggerer drives it."""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from airflow_provider_bfl import events
from airflow_provider_bfl.exceptions import BflContentModeratedError, BflTaskFailedError, BflWaitTimeoutError
from airflow_provider_bfl.hooks._coalescer import active_coalescers
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger
from tests.submissions import submit

PROMPT = "a red bicycle"
KWARGS = {"task_uuids", "bfl_conn_id", "deadline", "poll_interval", "poll_max_interval", "max_poll_failures"}


async def fire(trigger: BflImageInferenceTrigger) -> dict[str, Any]:
    """The single event's payload, and proof that the generator ends right after it."""
    run = trigger.run()
    event = await run.__anext__()
    with pytest.raises(StopAsyncIteration):
        await run.__anext__()
    payload: dict[str, Any] = event.payload
    return events.validate(payload)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    stop = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < stop, "condition not met in time"
        await asyncio.sleep(0.005)


def test_serialize_round_trip_holds_ids_and_settings_only(emulator: RunwareEmulator) -> None:
    """Kwargs land in the metadata DB and in repr: ids and settings, never the key or a prompt."""
    trigger = BflImageInferenceTrigger(
        task_uuids={"6bb2a3c4-0000-4000-8000-000000000001": 3},
        bfl_conn_id="bfl_nightly",
        deadline=1_900_000_000.5,
        poll_interval=2.0,
        poll_max_interval=20.0,
        max_poll_failures=7,
    )
    classpath, kwargs = trigger.serialize()
    assert set(kwargs) == KWARGS
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs["task_uuids"] == {"6bb2a3c4-0000-4000-8000-000000000001": 3}
    for text in (repr(trigger), json.dumps(kwargs)):
        assert emulator.api_key not in text
        assert PROMPT not in text
        assert "Authorization" not in text


def test_bare_uuid_list_means_one_image_each_and_bad_counts_are_refused() -> None:
    """A list of UUIDs is accepted (one image each); a count that cannot be numberResults is not."""
    first, second = "6bb2a3c4-0000-4000-8000-000000000001", "6bb2a3c4-0000-4000-8000-000000000002"
    trigger = BflImageInferenceTrigger([first, second])
    assert trigger.serialize()[1]["task_uuids"] == {first: 1, second: 1}
    with pytest.raises(ValueError, match="numberResults"):
        BflImageInferenceTrigger({first: 0})
    with pytest.raises(ValueError, match="not a taskUUID"):
        BflImageInferenceTrigger(["not-a-uuid"])
    with pytest.raises(ValueError, match="empty"):
        BflImageInferenceTrigger({})


@pytest.mark.parametrize("number_results", [1, 3])
async def test_success_reports_every_image(bfl_conn: RunwareEmulator, number_results: int) -> None:
    bfl_conn.latency = 0.05
    expected = submit(PROMPT, PROMPT, number_results=number_results)
    payload = await fire(BflImageInferenceTrigger(expected, deadline=time.time() + 10))
    assert payload["status"] == events.SUCCESS
    assert payload["task_uuids"] == list(expected)
    assert len(payload["results"]) == 2 * number_results
    assert len({r["imageUUID"] for r in payload["results"]}) == 2 * number_results
    assert {r["taskUUID"] for r in payload["results"]} == set(expected)
    assert all(r["imageURL"].startswith(bfl_conn.origin) for r in payload["results"])
    assert not any("imageBase64Data" in r or "imageDataURI" in r for r in payload["results"])
    assert bfl_conn.snapshot().requests_by_task_type.get("imageInference") == 2  # the submission only


async def test_partial_images_are_kept_until_the_last_one_arrives(bfl_conn: RunwareEmulator) -> None:
    """With numberResults=3 images arrive one by one; the early ones survive the later polls."""
    bfl_conn.latency = 1.5  # images at 0.5, 1.0, 1.5 s: a partial task is seen for a whole second
    expected = submit(PROMPT, number_results=3)
    (task_uuid,) = expected
    trigger = BflImageInferenceTrigger(expected, deadline=time.time() + 10)
    task = asyncio.ensure_future(fire(trigger))
    seen: set[int] = set()
    while not task.done():
        status = trigger.statuses.get(task_uuid)
        if status is not None and not status.done:
            seen.add(len(status.results))
        await asyncio.sleep(0.005)
    payload = task.result()
    assert seen & {1, 2}, f"never saw a partial task, only {seen}"
    assert payload["status"] == events.SUCCESS
    assert len({r["imageUUID"] for r in payload["results"]}) == 3


@pytest.mark.parametrize("shape", ["item", "envelope"])
@pytest.mark.parametrize(
    ("marker", "family", "code"),
    [
        ("fail-marker", BflTaskFailedError, "processingFailed"),
        ("moderation-marker", BflContentModeratedError, "contentPolicyViolation"),
    ],
)
async def test_failed_generation_gives_an_error_event_naming_uuid_and_code(
    bfl_conn: RunwareEmulator, shape: str, marker: str, family: type[Exception], code: str
) -> None:
    """Both shapes of an async failure; the healthy task's image is still reported (it is paid for)."""
    bfl_conn.latency = 0.05
    bfl_conn.async_error_shape = shape  # type: ignore[assignment]
    expected = submit(f"{PROMPT} {marker}", PROMPT)
    bad, good = expected
    payload = await fire(BflImageInferenceTrigger(expected, deadline=time.time() + 10))
    assert payload["status"] == events.ERROR
    assert [(f["taskUUID"], f["code"]) for f in payload["failures"]] == [(bad, code)]
    assert bad in payload["message"] and code in payload["message"]
    assert [r["taskUUID"] for r in payload["results"]] == [good]
    error = events.error_for(payload)
    assert type(error) is family
    assert error.task_uuid == bad and error.code == code


async def test_scripted_failure_of_one_uuid(bfl_conn: RunwareEmulator) -> None:
    """A failure scripted on the taskUUID itself (not the prompt) reaches the event with its code."""
    bfl_conn.latency = 0.3
    expected = submit(PROMPT)
    (task_uuid,) = expected
    bfl_conn.script_task(task_uuid, outcome="error", code="inferenceError", message="GPU fell over")
    payload = await fire(BflImageInferenceTrigger(expected, deadline=time.time() + 10))
    assert payload["failures"] == [
        {
            "taskUUID": task_uuid,
            "code": "inferenceError",
            "message": "GPU fell over",
            "error": "BflTaskFailedError",
        }
    ]


async def test_timeout_event_keeps_the_images_received_so_far(bfl_conn: RunwareEmulator) -> None:
    """Image 1 of 2 is ready at 0.6 s, image 2 at 1.2 s; the deadline falls in between."""
    bfl_conn.latency = 1.2
    expected = submit(PROMPT, number_results=2)
    (task_uuid,) = expected
    started = time.monotonic()
    payload = await fire(BflImageInferenceTrigger(expected, deadline=time.time() + 0.85))
    assert time.monotonic() - started < 1.15
    assert payload["status"] == events.TIMEOUT
    assert payload["pending"] == [task_uuid]
    assert [r["taskUUID"] for r in payload["results"]] == [task_uuid]
    error = events.error_for(payload)
    assert isinstance(error, BflWaitTimeoutError) and error.task_uuid == task_uuid


async def test_deadline_already_past_still_looks_once(bfl_conn: RunwareEmulator) -> None:
    """A trigger resumed after its deadline reports finished (paid-for) images, not a bare timeout."""
    expected = submit(PROMPT)
    await asyncio.sleep(0.05)
    payload = await fire(BflImageInferenceTrigger(expected, deadline=time.time() - 60))
    assert payload["status"] == events.SUCCESS
    assert len(payload["results"]) == 1


async def test_transient_poll_failures_are_tolerated(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.latency = 0.1
    expected = submit(PROMPT)
    bfl_conn.inject("status", count=2, status=503, retry_after=0, only_task_type="getResponse")
    bfl_conn.inject("drop", count=1, only_task_type="getResponse")
    bfl_conn.inject("html", count=1, only_task_type="getResponse")
    payload = await fire(BflImageInferenceTrigger(expected, deadline=time.time() + 10))
    assert payload["status"] == events.SUCCESS
    snapshot = bfl_conn.snapshot()
    assert snapshot.faults_triggered == {"status": 2, "drop": 1, "html": 1}
    assert snapshot.tasks_accepted == 1
    assert snapshot.requests_by_task_type["imageInference"] == 1


async def test_poll_overrides_replace_the_connection_schedule(bfl_conn: RunwareEmulator) -> None:
    """poll_interval/poll_max_interval kwargs win over the connection's fast extras (0.02-0.1 s)."""
    bfl_conn.latency = 0.5
    expected = submit(PROMPT)
    trigger = BflImageInferenceTrigger(
        expected, deadline=time.time() + 10, poll_interval=0.3, poll_max_interval=0.3
    )
    payload = await fire(trigger)
    assert payload["status"] == events.SUCCESS
    assert bfl_conn.snapshot().requests_by_task_type["getResponse"] <= 3  # at ~0, 0.3 and 0.6 s


async def test_exhausted_poll_budget_gives_an_error_event(bfl_conn: RunwareEmulator) -> None:
    """max_poll_failures=1: two failed polls of five attempts each (max_retries=4), then give up."""
    expected = submit(PROMPT)
    (task_uuid,) = expected
    bfl_conn.inject("status", count=100, status=503, only_task_type="getResponse")
    trigger = BflImageInferenceTrigger(expected, deadline=time.time() + 30, max_poll_failures=1)
    payload = await fire(trigger)
    assert payload["status"] == events.ERROR
    assert payload["failures"][0]["error"] == "BflServerError"
    assert payload["pending"] == [task_uuid]
    assert "503" in payload["message"]
    assert bfl_conn.snapshot().requests_by_task_type["getResponse"] == 10


async def test_unusable_connection_gives_an_error_event(
    bfl_conn: RunwareEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rejected key is not retried: the event says why, and the key is not in it."""
    expected = submit(PROMPT)
    conn = json.loads(os.environ["AIRFLOW_CONN_BFL_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", json.dumps({**conn, "password": "wrong-key-0000"}))
    payload = await fire(BflImageInferenceTrigger(expected, deadline=time.time() + 10))
    assert payload["status"] == events.ERROR
    assert payload["failures"][0]["code"] == "invalidApiKey"
    assert payload["failures"][0]["error"] == "BflAuthenticationError"
    assert "wrong-key-0000" not in json.dumps(payload)
    assert bfl_conn.snapshot().requests_by_task_type["getResponse"] == 1


async def test_restarted_trigger_resumes_polling_without_submitting(bfl_conn: RunwareEmulator) -> None:
    """Cancel mid-poll (triggerer restart), rebuild from serialize(): same UUIDs, nothing resubmitted."""
    bfl_conn.latency = 0.4
    expected = submit(PROMPT, number_results=2)
    (task_uuid,) = expected
    first = BflImageInferenceTrigger(expected, deadline=time.time() + 10)
    task = asyncio.ensure_future(fire(first))
    await until(lambda: bfl_conn.snapshot().requests_by_task_type.get("getResponse", 0) >= 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not active_coalescers()  # the shared client was closed when its last wait left
    accepted_before = bfl_conn.snapshot().tasks_accepted

    classpath, kwargs = first.serialize()
    module, _, name = classpath.rpartition(".")
    second = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    payload = await fire(second)

    assert payload["status"] == events.SUCCESS
    assert len(payload["results"]) == 2
    snapshot = bfl_conn.snapshot()
    assert snapshot.tasks_accepted == accepted_before == 1
    assert snapshot.task(task_uuid).submissions == 1
    assert snapshot.requests_by_task_type["imageInference"] == 1


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """
    Keep the test process's own heap out of the collector's reach while a lag is measured.

    A full collection walks every object of the pytest process (Airflow, the emulator, earlier
    tests) and pauses the loop for up to ~100 ms on a busy machine, whatever the trigger does;
    frozen, collections only walk what the test itself creates.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("frozen_heap")
async def test_polling_never_blocks_the_event_loop(bfl_conn: RunwareEmulator) -> None:
    """
    Slow answers (two getResponse calls held 0.5 s each) must not stall a neighbour coroutine.

    A client that blocked the loop would stall the neighbour for a whole held answer (>= 0.5 s).
    The bound is relative to the loop's own worst lag measured in this test while idle, so a busy
    machine's scheduling noise (a 0.1 s gap at a load of 30 on 2 cores) cannot fail it.
    """
    stall = 0.5

    async def worst_lag(until: asyncio.Future[Any]) -> tuple[float, int]:
        lags: list[float] = []
        while not until.done():
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)
        return max(lags), len(lags)

    idle, _ = await worst_lag(asyncio.ensure_future(asyncio.sleep(1.0)))
    bfl_conn.latency = 1.0  # still processing after the first held answer, even if polling starts late
    expected = submit(PROMPT)
    bfl_conn.inject("stall", count=2, seconds=stall, process="before", only_task_type="getResponse")
    polling = asyncio.ensure_future(fire(BflImageInferenceTrigger(expected, deadline=time.time() + 20)))
    busy, ticks = await worst_lag(polling)
    assert polling.result()["status"] == events.SUCCESS
    assert bfl_conn.snapshot().faults_triggered.get("stall", 0) >= 1  # the wait sat through a held answer
    assert ticks > 30
    assert busy < idle + stall / 2, f"event loop stalled for {busy:.3f}s (idle worst {idle:.3f}s)"


async def test_on_kill_logs_the_abandoned_generations(bfl_conn: RunwareEmulator) -> None:
    """Airflow 3.3 calls on_kill after cancelling run(): it names what was abandoned and calls nothing."""
    bfl_conn.latency = 30
    (running,) = submit(PROMPT)
    bfl_conn.latency = 0
    (done,) = submit(PROMPT)
    expected = {running: 1, done: 1}
    trigger = BflImageInferenceTrigger(expected, deadline=time.time() + 60)
    task = asyncio.ensure_future(fire(trigger))
    await until(lambda: done in trigger.statuses and trigger.statuses[done].done)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    requests_before = bfl_conn.snapshot().requests
    with capture_logs() as logs:
        await trigger.on_kill()
    assert bfl_conn.snapshot().requests == requests_before  # no cancel call exists: nothing is sent
    (record,) = [log for log in logs if log["log_level"] == "warning"]
    message = record["event"]
    abandoned, _, finished = message.partition("Already finished")
    assert running in abandoned and done not in abandoned
    assert done in finished
    assert "billed" in message and "no cancel endpoint" in message


async def test_on_kill_after_every_generation_finished_warns_of_nothing(bfl_conn: RunwareEmulator) -> None:
    """A trigger cancelled once its answers are all in (its event on the way) abandoned nothing: no warning."""
    expected = submit(PROMPT, PROMPT)
    trigger = BflImageInferenceTrigger(expected, deadline=time.time() + 60)
    await fire(trigger)
    assert all(status.done for status in trigger.statuses.values())
    requests_before = bfl_conn.snapshot().requests
    with capture_logs() as logs:
        await trigger.on_kill()
    assert bfl_conn.snapshot().requests == requests_before
    assert [log["log_level"] for log in logs] == ["info"]
    assert "nothing was abandoned" in logs[0]["event"] and "2 Runware generation(s)" in logs[0]["event"]


async def test_waiting_triggers_log_progress_at_a_bounded_rate(
    bfl_conn: RunwareEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """
    Each trigger logs its own progress (in its own log context) at most once per interval: the
    connection's, stretched for the loop's three waits (1.5 s with the default budget).
    """
    from airflow_provider_bfl._flows import PollSettings
    from tests.conftest import connection_json

    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(bfl_conn, progress_log_interval=0.3))
    interval = PollSettings(progress_interval=0.3).progress_every(3)
    bfl_conn.latency = interval + 1.5  # a line is due while the tasks run, even after a slow start
    expected = await asyncio.to_thread(submit, PROMPT, PROMPT + " again", PROMPT + " and again")
    caplog.set_level("INFO", logger="airflow_provider_bfl")
    started = time.monotonic()
    triggers = [BflImageInferenceTrigger({uuid: count}) for uuid, count in expected.items()]
    payloads = await asyncio.gather(*(fire(trigger) for trigger in triggers))
    took = time.monotonic() - started
    assert [payload["status"] for payload in payloads] == [events.SUCCESS] * 3
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Waiting for Runware:")]
    assert 3 <= len(lines) <= 3 * (took / interval + 1), lines
    assert all("of 1 generation(s) done" in line and "% progress" in line for line in lines)
