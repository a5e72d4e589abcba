"""
The API client against a hostile server on loopback (tests/hostile_server.py): slow drips, huge and
compressed bodies, deep nesting, lying payloads, echoed keys. Each test names the promise it tries
to break; each failed on the code before the fix (numbers in the comments are what it did then).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_bfl import _envelope, _status, events
from airflow_provider_bfl import exceptions as exc
from airflow_provider_bfl.hooks.bfl import BflHook
from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger
from tests.conftest import API_KEY, FAST_EXTRAS
from tests.hostile_server import (
    HostileServer,
    Request,
    drip,
    envelope,
    gzip_bomb,
    huge,
    nested,
    respond,
    result,
)

TASK = "6bb2a3c4-0000-4000-8000-0000000000a1"
PROMPT = {"positivePrompt": "a red bicycle", "width": 256, "height": 256, "deliveryMethod": "async"}


def connect(monkeypatch: pytest.MonkeyPatch, server: HostileServer, key: str = API_KEY, **extra: Any) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_BFL_DEFAULT",
        json.dumps(
            {
                "conn_type": "bfl",
                "password": key,
                "host": server.base_url,
                "extra": {**FAST_EXTRAS, **extra},
            }
        ),
    )


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``serve(answer, **extras)``: a hostile server, with ``bfl_default`` pointing at it."""
    servers: list[HostileServer] = []

    def start(answer: Any, **extra: Any) -> HostileServer:
        server = HostileServer(answer).__enter__()
        servers.append(server)
        connect(monkeypatch, server, **extra)
        return server

    yield start
    for server in servers:
        server.__exit__()


def processing(request: Request) -> bytes:
    return envelope(
        [
            {"taskType": "imageInference", "taskUUID": uuid, "status": "processing"}
            for uuid in request.task_uuids
        ]
    )


async def one_event(trigger: BflImageInferenceTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def key_forms(key: str = API_KEY) -> list[str]:
    """The key as the provider could leak it: raw, escaped (repr/json) and cut (a 12-character piece)."""
    return [key, repr(key)[1:-1], json.dumps(key)[1:-1], key[:12], key[-12:], key[5:17]]


def assert_no_key(*texts: str) -> None:
    for text in texts:
        for form in key_forms():
            assert form not in text, f"the key leaks as {form!r} in {text[:300]!r}"


# -- a total deadline on every call -------------------------------------------------------------------------------


SLOW = drip(processing, every=0.5)  # ~70 bytes: 35 s to finish at one byte every 0.5 s


def test_slow_drip_cannot_stretch_poll_until_done_past_its_deadline(serve: Any) -> None:
    """Before: poll_until_done(timeout=2) returned after 12 s (httpx's timeout is per read)."""
    serve(SLOW)
    hook = BflHook()
    started = time.monotonic()
    try:
        statuses = hook.poll_until_done({TASK: 1}, timeout=2)
    finally:
        hook.close()
    took = time.monotonic() - started
    assert not statuses[TASK].done  # timed out, as a wait does, with the task still running
    assert 1.9 <= took < 2.9, f"the 2 s wait took {took:.2f} s"


async def test_slow_drip_cannot_stretch_the_async_wait_past_its_deadline(serve: Any) -> None:
    serve(SLOW)
    hook = BflHook()
    started = time.monotonic()
    try:
        statuses = await hook.apoll_until_done({TASK: 1}, deadline=time.time() + 2)
    finally:
        await hook.aclose()
    took = time.monotonic() - started
    assert not statuses[TASK].done
    assert 1.9 <= took < 2.9, f"the 2 s wait took {took:.2f} s"


async def test_slow_drip_cannot_stretch_the_trigger_past_its_deadline(serve: Any) -> None:
    """The shared poller (coalescer) also ends the wait at its deadline: a timeout event at ~2 s."""
    serve(SLOW)
    started = time.monotonic()
    fired = await one_event(BflImageInferenceTrigger({TASK: 1}, deadline=time.time() + 2))
    took = time.monotonic() - started
    assert [event["status"] for event in fired] == [events.TIMEOUT]
    assert 1.9 <= took < 2.9, f"the 2 s trigger deadline took {took:.2f} s"


def test_the_timeout_extra_is_a_total_deadline_per_call(serve: Any) -> None:
    """``timeout`` bounds a whole call, not each read: a drip fails the call after 1 s, not 35 s."""
    serve(SLOW, timeout=1, max_retries=0)
    hook = BflHook()
    started = time.monotonic()
    try:
        with pytest.raises(exc.BflServerError, match=r"total deadline of 1\.0s") as caught:
            hook.get_status({TASK: 1})
    finally:
        hook.close()
    assert time.monotonic() - started < 1.8
    assert_no_key(str(caught.value))


def drip_headers(request: Request) -> Iterator[bytes]:
    """A status line and a header that never end: one byte every 0.5 s (~80 min for all of it)."""
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
        time.sleep(0.5)
        yield bytes([byte])


def test_the_total_deadline_also_bounds_the_header_phase(serve: Any) -> None:
    """Before: the blocking client's watchdog started only once the headers were in, so headers
    dripped one byte every 0.5 s held the call as long as the server liked (each read < 1 s)."""
    serve(drip_headers, timeout=1, max_retries=0)
    hook = BflHook()
    started = time.monotonic()
    try:
        with pytest.raises(exc.BflServerError, match=r"total deadline of 1\.0s"):
            hook.get_status({TASK: 1})
    finally:
        hook.close()
    assert time.monotonic() - started < 1.8


async def test_the_async_total_deadline_also_bounds_the_header_phase(serve: Any) -> None:
    serve(drip_headers, timeout=1, max_retries=0)
    hook = BflHook()
    started = time.monotonic()
    try:
        with pytest.raises(exc.BflServerError, match=r"total deadline of 1\.0s"):
            await hook.aget_status({TASK: 1})
    finally:
        await hook.aclose()
    assert time.monotonic() - started < 1.8


# -- the decoded size of every answer is capped -------------------------------------------------------------------


def _read_bytes(error: exc.BflError) -> int:
    found = re.search(r"stopped after reading (\d+) bytes", str(error))
    assert found, str(error)
    return int(found.group(1))


def test_a_300_mb_answer_is_refused_without_reading_it(serve: Any) -> None:
    """Before: the body was read whole (1.6 GB RSS). Now: refused at the budget of one image."""
    server = serve(huge(300 * 1024 * 1024))
    hook = BflHook()
    try:
        with pytest.raises(exc.BflResponseTooLargeError) as caught:
            hook.get_status({TASK: 1})
    finally:
        hook.close()
    budget = hook.settings.max_response_bytes_per_image + 256 * 1024 + 16 * 1024
    assert f"larger than the {budget}-byte limit" in str(caught.value)
    assert isinstance(caught.value, exc.BflMalformedResponseError)
    assert _read_bytes(caught.value) <= budget + 1024 * 1024  # at most one chunk past the budget
    assert len(server.requests) == 1  # not retried: another try would read another budget
    assert server.bytes_sent < 100 * 1024 * 1024  # the server could not push the rest


def test_a_gzip_bomb_is_stopped_at_the_decoded_budget(serve: Any) -> None:
    """A ~256 KB gzip body inflating to 256 MB: refused after inflating the budget, not the bomb."""
    bomb = gzip_bomb(256 * 1024 * 1024)
    serve(bomb, max_response_bytes_per_image=1024 * 1024)
    hook = BflHook()
    try:
        with pytest.raises(exc.BflResponseTooLargeError, match="decoded size") as caught:
            hook.get_status({TASK: 1})
    finally:
        hook.close()
    assert _read_bytes(caught.value) <= bomb.compressed_size


def _twenty_padded_images(request: Request) -> bytes:
    """Twenty 150 KB results in all, spread over the tasks asked about."""
    uuids = request.task_uuids
    per_task = 20 // len(uuids)
    return envelope(
        [result(u, image_uuid=f"{u}-{i}", pad="x" * 150_000) for u in uuids for i in range(per_task)]
    )


def test_the_budget_grows_with_the_images_a_request_can_return(serve: Any) -> None:
    """Twenty tasks may carry twenty images: a 3 MB answer fits their budget, not one task's."""
    serve(respond(_twenty_padded_images), max_response_bytes_per_image=200_000)
    tasks = {str(uuid.uuid4()): 1 for _ in range(20)}
    hook = BflHook()
    try:
        statuses = hook.get_status(tasks)
        assert all(status.done for status in statuses.values())
        with pytest.raises(exc.BflResponseTooLargeError):
            hook.get_status({TASK: 1})
    finally:
        hook.close()


def test_an_encoding_that_was_not_offered_is_refused(serve: Any) -> None:
    serve(respond(b"\x00\x01", **{"Content_Encoding": "br"}))
    hook = BflHook()
    try:
        with pytest.raises(exc.BflMalformedResponseError, match="content encoding that was not offered"):
            hook.get_status({TASK: 1})
    finally:
        hook.close()


def test_the_client_offers_only_encodings_it_can_cap(serve: Any) -> None:
    server = serve(respond(lambda request: envelope([result(uuid) for uuid in request.task_uuids])))
    hook = BflHook()
    try:
        hook.get_status({TASK: 1})
    finally:
        hook.close()
    assert server.requests[0].headers["Accept-Encoding"] == "gzip, deflate"


# -- merging is linear and bounded by numberResults ---------------------------------------------------------------


def test_results_beyond_number_results_are_ignored_with_a_warning(
    serve: Any, mocker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """20,000 results for a task that makes 2: two kept, the rest never parsed (before: all kept)."""
    items = [result(TASK, image_uuid=f"img-{i}", cost=0.04) for i in range(20_000)]
    serve(respond(envelope(items)))
    parsed = mocker.spy(_status, "parse_result")
    hook = BflHook()
    try:
        statuses = hook.get_status({TASK: 2})
    finally:
        hook.close()
    assert [r.image_uuid for r in statuses[TASK].results] == ["img-0", "img-1"]
    assert statuses[TASK].done
    assert parsed.call_count == 2
    assert "Ignored 19998 result(s) for taskUUID" in caplog.text
    assert caplog.text.count("Ignored") == 1  # one warning per task, not one per item


async def test_the_trigger_reports_only_the_expected_images(serve: Any) -> None:
    serve(respond(envelope([result(TASK, image_uuid=f"img-{i}", cost=0.04) for i in range(5_000)])))
    [event] = await one_event(BflImageInferenceTrigger({TASK: 1}))
    assert event["status"] == events.SUCCESS
    assert [r["imageUUID"] for r in event["results"]] == ["img-0"]


# -- lying payloads become BflError families ---------------------------------------------------------------------


LIARS = [
    pytest.param(
        respond(nested(100_000)), exc.BflMalformedResponseError, "nested too deeply", id="nested_json"
    ),
    pytest.param(
        respond(lambda r: envelope([result(uuid, image_uuid=None) for uuid in r.task_uuids])),
        exc.BflMalformedResponseError,
        "imageUUID: Field required",
        id="result_without_image_uuid",
    ),
    pytest.param(
        respond(b'{"errors": [{"code": ' + b"[" * 50_000 + b"]" * 50_000 + b"}]}"),
        exc.BflMalformedResponseError,
        "nested too deeply",
        id="nested_error_code",
    ),
]


@pytest.mark.parametrize(("answer", "family", "says"), LIARS)
def test_a_lying_answer_through_the_hook_is_a_bfl_error(
    serve: Any, answer: Any, family: type[exc.BflError], says: str
) -> None:
    serve(answer, max_retries=0, max_poll_failures=0)
    hook = BflHook()
    try:
        with pytest.raises(family, match=says):
            hook.poll_until_done({TASK: 1}, timeout=10)
    finally:
        hook.close()


@pytest.mark.parametrize(("answer", "family", "says"), LIARS)
async def test_a_lying_answer_gives_the_trigger_one_clean_error_event(
    serve: Any, answer: Any, family: type[exc.BflError], says: str
) -> None:
    serve(answer, max_retries=0)
    fired = await one_event(BflImageInferenceTrigger({TASK: 1}, max_poll_failures=0))
    assert len(fired) == 1
    event = events.validate(fired[0])
    assert event["status"] == events.ERROR and says in event["message"]
    assert event["failures"][0]["error"] == family.__name__


@pytest.mark.parametrize("cost", [b"NaN", b"-Infinity", b"Infinity", b"-0.04"])
def test_an_insane_cost_never_becomes_a_number(serve: Any, cost: bytes) -> None:
    """Before: NaN and negative costs were summed into total_cost. Now: dropped (None), image kept."""
    body = envelope([result(TASK, cost=123456.0)]).replace(b"123456.0", cost)
    serve(respond(body))
    hook = BflHook()
    try:
        statuses = hook.get_status({TASK: 1})
    finally:
        hook.close()
    [image] = statuses[TASK].results
    assert image.cost is None and image.image_uuid == f"img-{TASK}"
    assert "cost" not in image.to_xcom()


# -- the key never leaks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_key",
    [API_KEY + "\n", API_KEY + "\r\n", "\t" + API_KEY, API_KEY[:10] + " " + API_KEY[10:], API_KEY + "\u00a0"],
    ids=["trailing_newline", "trailing_crlf", "leading_tab", "inner_space", "non_ascii_space"],
)
def test_a_key_with_control_characters_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, bad_key: str
) -> None:
    """Before: the key reached h11, whose escaped error text was retried and logged every time."""
    with HostileServer(respond(envelope([]))) as server:
        connect(monkeypatch, server, key=bad_key)
        with pytest.raises(exc.BflAuthenticationError) as caught:
            BflHook().get_status({TASK: 1})
    message = str(caught.value)
    assert "'bfl_default'" in message and "paste the key again" in message
    assert_no_key(message, repr(caught.value))
    assert bad_key.strip() not in message and repr(bad_key) not in message
    assert server.requests == []  # refused before any request


def _echo(kind: str) -> str:
    if kind == "raw":
        return f"key {API_KEY} is not allowed to use this model"
    if kind == "cut":
        return f"key {API_KEY[:14]}... is not allowed"
    return f"key {API_KEY[:6]}\\u{ord(API_KEY[6]):04x}{API_KEY[7:]} is not allowed"  # JSON-escaped echo


ECHOES = ["raw", "cut", "escaped"]


def _scoped_echo(kind: str) -> Any:
    def body(request: Request) -> bytes:
        errors = [
            {"code": "taskFailed", "message": "MESSAGE", "taskUUID": uuid, "parameter": "MESSAGE"}
            for uuid in request.task_uuids
        ]
        return json.dumps({"data": [], "errors": errors}).replace('"MESSAGE"', f'"{_echo(kind)}"').encode()

    return respond(body)


@pytest.mark.parametrize("kind", ECHOES)
def test_a_key_echoed_in_a_task_scoped_error_is_redacted_in_generate(serve: Any, kind: str) -> None:
    """Before: task-scoped errors skipped the redaction and reached generate()'s exception whole."""
    serve(_scoped_echo(kind))
    with pytest.raises(exc.BflTaskFailedError) as caught:
        BflHook().generate([PROMPT], timeout=5)
    assert "***" in str(caught.value)
    assert_no_key(str(caught.value), repr(caught.value), json.dumps(caught.value.message))


@pytest.mark.parametrize("kind", ECHOES)
def test_a_key_echoed_in_a_refusal_is_redacted(serve: Any, kind: str) -> None:
    """The operator's "refused" error is built from SubmitOutcome.rejected."""
    serve(_scoped_echo(kind))
    outcome = BflHook().submit([PROMPT])
    [refusal] = outcome.rejected.values()
    assert_no_key(str(refusal), repr(refusal), str(refusal.parameter))


@pytest.mark.parametrize("kind", ECHOES)
async def test_a_key_echoed_to_the_trigger_is_redacted_in_its_event(serve: Any, kind: str) -> None:
    serve(_scoped_echo(kind))
    [event] = await one_event(BflImageInferenceTrigger({TASK: 1}))
    assert event["status"] == events.ERROR
    assert_no_key(json.dumps(event), repr(event))


@pytest.mark.parametrize("kind", ECHOES)
def test_a_key_echoed_in_a_non_json_page_is_redacted(serve: Any, kind: str) -> None:
    serve(respond(f"<html>{_echo(kind)}</html>".encode(), status=502), max_retries=0)
    with pytest.raises(exc.BflServerError) as caught:
        BflHook().get_status({TASK: 1})
    assert_no_key(str(caught.value), repr(caught.value))


# -- the trigger always yields exactly one event; auth errors name the connection ----------------------------------


async def test_a_missing_connection_gives_the_trigger_one_clean_error_event() -> None:
    """Before: AirflowNotFoundException escaped the trigger (no event at all)."""
    fired = await one_event(BflImageInferenceTrigger({TASK: 1}, bfl_conn_id="no_such_connection"))
    assert len(fired) == 1
    event = events.validate(fired[0])
    assert event["status"] == events.ERROR
    assert "'no_such_connection' (bfl_conn_id)" in event["message"]
    assert event["failures"][0]["error"] == "BflAuthenticationError"
    assert event["pending"] == [TASK]


def test_an_authentication_error_names_the_connection_to_fix(serve: Any) -> None:
    serve(respond(envelope(errors=[{"code": "invalidApiKey", "message": "Invalid API key"}]), status=401))
    with pytest.raises(exc.BflAuthenticationError, match=r"connection 'bfl_default' \(bfl_conn_id\)"):
        BflHook().get_status({TASK: 1})


async def test_the_trigger_names_the_connection_on_an_authentication_error(serve: Any) -> None:
    serve(respond(envelope(errors=[{"code": "invalidApiKey", "message": "Invalid API key"}]), status=401))
    [event] = await one_event(BflImageInferenceTrigger({TASK: 1}))
    assert event["status"] == events.ERROR and "'bfl_default' (bfl_conn_id)" in event["message"]


async def test_a_bug_inside_polling_still_ends_in_one_event(mocker: Any, serve: Any) -> None:
    """Whatever escapes the hook (here a bug: a plain RuntimeError) becomes the one error event."""
    serve(respond(envelope([])))
    mocker.patch.object(BflHook, "apoll_until_done", autospec=True, side_effect=RuntimeError("boom"))
    fired = await one_event(BflImageInferenceTrigger({TASK: 1}))
    assert len(fired) == 1 and fired[0]["status"] == events.ERROR
    assert "RuntimeError" in fired[0]["message"]


# -- one large answer never stalls the event loop ----------------------------------------------------------------


def big_answer(request: Request) -> bytes:
    """20,000 finished items for the one task asked about (~4 MB): 10 it asked for, 19,990 beyond."""
    (task_uuid,) = request.task_uuids
    return envelope([result(task_uuid, image_uuid=f"img-{i:05d}", seed=i) for i in range(20_000)])


class Recorder:
    """Wraps a real function: which thread ran it, and how many heartbeats the loop made meanwhile."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.threads: list[int] = []
        self.busy = False
        self.beats_while_busy = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.threads.append(threading.get_ident())
        self.busy = True
        try:
            return self.real(*args, **kwargs)
        finally:
            self.busy = False


async def heartbeat(recorders: list[Recorder], stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(0.001)
        for recorder in recorders:
            recorder.beats_while_busy += recorder.busy


async def test_a_large_answer_is_parsed_and_merged_off_the_event_loop(mocker: Any, serve: Any) -> None:
    """Before: a 4 MB getResponse body was redacted, parsed (json.loads) and merged on the event loop,
    stalling every other trigger for the whole of it (0.76 s here). Now the loop goes on meanwhile."""
    serve(respond(big_answer))
    parse = Recorder(_envelope.parse_envelope)
    merge = Recorder(_status.merge)
    mocker.patch("airflow_provider_bfl._flows.parse_envelope", autospec=True, side_effect=parse)
    mocker.patch("airflow_provider_bfl._flows.merge", autospec=True, side_effect=merge)
    stop = asyncio.Event()
    beating = asyncio.ensure_future(heartbeat([parse, merge], stop))
    hook = BflHook()
    try:
        statuses = await hook.aget_status({TASK: 10})
    finally:
        await hook.aclose()
        stop.set()
        await beating
    assert statuses[TASK].done and len(statuses[TASK].results) == 10
    loop_thread = threading.get_ident()
    assert parse.threads and loop_thread not in parse.threads
    assert merge.threads and loop_thread not in merge.threads
    assert parse.beats_while_busy + merge.beats_while_busy >= 1, "the loop never ran during the parse"


async def test_the_shared_poller_merges_a_large_answer_off_the_event_loop(mocker: Any, serve: Any) -> None:
    serve(respond(big_answer))
    parse = Recorder(_envelope.parse_envelope)
    merge = Recorder(_status.merge)
    mocker.patch("airflow_provider_bfl._flows.parse_envelope", autospec=True, side_effect=parse)
    mocker.patch("airflow_provider_bfl.hooks._coalescer.merge", autospec=True, side_effect=merge)
    stop = asyncio.Event()
    beating = asyncio.ensure_future(heartbeat([parse, merge], stop))
    try:
        fired = await one_event(BflImageInferenceTrigger({TASK: 10}, deadline=time.time() + 60))
    finally:
        stop.set()
        await beating
    assert [event["status"] for event in fired] == [events.SUCCESS]
    assert len(fired[0]["results"]) == 10
    loop_thread = threading.get_ident()
    assert parse.threads and loop_thread not in parse.threads
    assert merge.threads and loop_thread not in merge.threads


async def test_a_small_answer_stays_on_the_event_loop(mocker: Any, serve: Any) -> None:
    """The hand-off is only for large answers: a poll of a few tasks costs no thread."""
    serve(respond(processing))
    parse = Recorder(_envelope.parse_envelope)
    mocker.patch("airflow_provider_bfl._flows.parse_envelope", autospec=True, side_effect=parse)
    hook = BflHook()
    try:
        await hook.aget_status({TASK: 1})
    finally:
        await hook.aclose()
    assert parse.threads == [threading.get_ident()]


async def test_cancelling_a_wait_while_its_answer_is_parsed_off_the_loop_is_clean(
    mocker: Any, serve: Any
) -> None:
    """The triggerer cancels a trigger whose answer is being parsed in a worker thread: the wait ends
    cancelled (not with 'generator already executing'), and the thread finishes on its own."""
    serve(respond(big_answer))
    entered, release = threading.Event(), threading.Event()

    def held(*args: Any) -> Any:
        entered.set()
        release.wait(10)
        return _envelope.parse_envelope(*args)

    mocker.patch("airflow_provider_bfl._flows.parse_envelope", autospec=True, side_effect=held)
    hook = BflHook()
    waiting = asyncio.ensure_future(hook.aget_status({TASK: 10}))
    try:
        assert await asyncio.to_thread(entered.wait, 10)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        release.set()
        await hook.aclose()
