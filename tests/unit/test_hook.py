"""BflHook over real HTTP against the emulator: every error family, retry rule and envelope variant."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_bfl import _flows
from airflow_provider_bfl import exceptions as exc
from airflow_provider_bfl._flows import PollSettings
from airflow_provider_bfl._retry import RetryPolicy
from airflow_provider_bfl.hooks.bfl import BflHook
from airflow_provider_bfl.models import ImageInferenceRequest, TaskState, TaskStatus
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from tests.conftest import API_KEY, connection_json

PROMPT: dict[str, Any] = {"positivePrompt": "a red bicycle", "width": 256, "height": 256}
ASYNC = {**PROMPT, "deliveryMethod": "async"}


@pytest.fixture(params=["sync", "async"])
def generate(request: pytest.FixtureRequest, bfl_conn: RunwareEmulator) -> Callable[..., Any]:
    """Run ``BflHook().generate`` or its async twin: every behaviour must hold for both."""

    def run(requests: list[Any], **kwargs: Any) -> Any:
        hook = BflHook(**kwargs)
        if request.param == "sync":
            return hook.generate(requests, timeout=10)
        return asyncio.run(_agenerate(hook, requests))

    return run


async def _agenerate(hook: BflHook, requests: list[Any]) -> Any:
    try:
        return await hook.agenerate(requests, timeout=10)
    finally:
        await hook.aclose()


def test_sync_delivery_returns_images(bfl_conn: RunwareEmulator, generate: Callable[..., Any]) -> None:
    [result] = generate([{**PROMPT, "includeCost": True, "seed": 11}])
    assert result.seed == 11 and result.cost == 0.04
    assert result.image_url.startswith(bfl_conn.origin)
    assert bfl_conn.snapshot().requests_by_task_type == {"imageInference": 1}


def test_async_delivery_polls_until_all_images_arrive(
    bfl_conn: RunwareEmulator, generate: Callable[..., Any]
) -> None:
    bfl_conn.latency = 0.3
    results = generate([{**ASYNC, "numberResults": 3}])
    assert len(results) == 3 and len({r.image_uuid for r in results}) == 3
    snapshot = bfl_conn.snapshot()
    assert snapshot.requests_by_task_type["getResponse"] >= 2  # saw processing, then success
    assert snapshot.images_billed == 3


def test_many_tasks_share_one_submission_and_one_poll(bfl_conn: RunwareEmulator) -> None:
    hook = BflHook()
    outcome = hook.submit([{**ASYNC, "positivePrompt": f"prompt {i}"} for i in range(7)])
    assert len(outcome.accepted) == 7 and outcome.pending == dict.fromkeys(outcome.accepted, 1)
    requests_before = bfl_conn.snapshot().requests
    statuses = hook.get_status(outcome.accepted)
    assert bfl_conn.snapshot().requests == requests_before + 1
    assert all(status.state is TaskState.SUCCESS for status in statuses.values())


def test_batches_are_split_by_max_tasks_per_request(
    bfl_conn: RunwareEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    bfl_conn.max_tasks_per_request = 3
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(bfl_conn, max_tasks_per_request=3))
    results = BflHook().generate([{**ASYNC, "positivePrompt": f"prompt {i}"} for i in range(7)])
    assert len(results) == 7
    assert bfl_conn.snapshot().requests_by_task_type["imageInference"] == 7


# -- error families ---------------------------------------------------------------------------


def test_wrong_key_is_an_authentication_error_and_not_retried(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.api_key = "another-key-entirely"
    with pytest.raises(exc.BflAuthenticationError) as caught:
        BflHook().generate([PROMPT])
    assert caught.value.code == "invalidApiKey" and caught.value.status_code == 401
    assert bfl_conn.snapshot().requests == 1


@pytest.mark.parametrize(
    ("status", "code", "family"),
    [
        (402, "insufficientCredits", exc.BflInsufficientCreditsError),
        (403, "permissionDenied", exc.BflAuthenticationError),
        (400, "invalidWidth", exc.BflInvalidRequestError),
    ],
)
def test_permanent_errors_are_never_retried(
    bfl_conn: RunwareEmulator, status: int, code: str, family: type[exc.BflError]
) -> None:
    bfl_conn.inject("status", count=10, status=status, code=code, message="refused")
    with pytest.raises(family) as caught:
        BflHook().generate([PROMPT])
    assert caught.value.code == code
    assert bfl_conn.snapshot().requests == 1
    assert bfl_conn.snapshot().images_billed == 0


def test_moderation_fails_with_the_task_uuid(generate: Callable[..., Any]) -> None:
    request = ImageInferenceRequest(**{**ASYNC, "positivePrompt": "moderation-marker please"})
    with pytest.raises(exc.BflContentModeratedError) as caught:
        generate([request])
    assert caught.value.task_uuid == request.task_uuid
    assert request.task_uuid in str(caught.value) and "contentPolicyViolation" in str(caught.value)


def test_task_failure_fails_with_code_and_uuid(
    bfl_conn: RunwareEmulator, generate: Callable[..., Any]
) -> None:
    request = ImageInferenceRequest(**ASYNC)
    bfl_conn.script_task(request.task_uuid, "error", code="processingFailed", message="GPU on fire")
    with pytest.raises(exc.BflTaskFailedError, match="GPU on fire") as caught:
        generate([request])
    assert caught.value.task_uuid == request.task_uuid


@pytest.mark.parametrize("shape", ["item", "envelope"])
def test_both_async_failure_shapes_are_understood(bfl_conn: RunwareEmulator, shape: str) -> None:
    bfl_conn.async_error_shape = shape
    request = ImageInferenceRequest(**{**ASYNC, "positivePrompt": "fail-marker portrait"})
    with pytest.raises(exc.BflTaskFailedError) as caught:
        BflHook().generate([request])
    assert caught.value.task_uuid == request.task_uuid


def test_unknown_task_uuid_is_not_found(bfl_conn: RunwareEmulator) -> None:
    unknown = "5c7a9c23-6866-4003-93b9-d3f52e15111b"
    statuses = BflHook().get_status([unknown])
    assert statuses[unknown].state is TaskState.ERROR
    assert isinstance(statuses[unknown].error, exc.BflTaskNotFoundError)


def test_a_task_the_api_never_mentions_becomes_not_found(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.unknown_task_mode = "empty"
    unknown = "5c7a9c23-6866-4003-93b9-d3f52e15111b"
    statuses = BflHook().poll_until_done([unknown], timeout=10)
    assert isinstance(statuses[unknown].error, exc.BflTaskNotFoundError)
    assert bfl_conn.snapshot().requests == 5  # MAX_MISSING_POLLS, then it gives up


def test_exhausted_rate_limit_budget_names_the_cause(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.inject("status", count=100, status=429, code="rateLimitExceeded")
    with pytest.raises(exc.BflRateLimitError, match="gave up after 5 attempts") as caught:
        BflHook().generate([PROMPT])
    assert caught.value.status_code == 429
    assert bfl_conn.snapshot().requests == 5  # 1 try + max_retries (4 in the test connection)


@pytest.mark.parametrize("kind", ["html", "invalid_json", "empty_envelope"])
def test_garbled_responses_are_retried_then_reported_clearly(bfl_conn: RunwareEmulator, kind: str) -> None:
    bfl_conn.inject(kind, count=100)
    with pytest.raises((exc.BflServerError, exc.BflMalformedResponseError)) as caught:
        BflHook().generate([PROMPT])
    assert "gave up after 5 attempts" in str(caught.value)
    assert not isinstance(caught.value, KeyError)


def test_html_page_with_a_client_status_is_final(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.inject("html", count=5, status=401)
    with pytest.raises(exc.BflAuthenticationError, match="not JSON"):
        BflHook().generate([PROMPT])
    assert bfl_conn.snapshot().requests == 1


# -- retries ----------------------------------------------------------------------------------


def test_transient_statuses_and_dropped_connections_are_retried(
    bfl_conn: RunwareEmulator, generate: Callable[..., Any]
) -> None:
    for status in (502, 503, 504):
        bfl_conn.inject("status", status=status)
    bfl_conn.inject("drop_before")  # 4 failures: exactly the test connection's retry budget
    [result] = generate([PROMPT])
    assert result.image_uuid
    snapshot = bfl_conn.snapshot()
    assert snapshot.requests == 5 and snapshot.images_billed == 1


def test_retry_after_is_honoured(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.inject("status", status=429, retry_after=0.4, code="rateLimitExceeded")
    started = time.monotonic()
    BflHook().generate([PROMPT])
    assert time.monotonic() - started >= 0.4


def test_total_retry_time_is_bounded(bfl_conn: RunwareEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_BFL_DEFAULT", connection_json(bfl_conn, max_retries=50, retry_max_elapsed=0.5)
    )
    bfl_conn.inject("status", count=1000, status=503, retry_after=0.2)
    started = time.monotonic()
    with pytest.raises(exc.BflServerError):
        BflHook().generate([PROMPT])
    assert time.monotonic() - started < 1.5
    assert bfl_conn.snapshot().requests <= 4


@pytest.mark.parametrize("delivery", ["sync", "async"])
def test_response_lost_after_acceptance_reattaches_without_paying_twice(
    bfl_conn: RunwareEmulator, generate: Callable[..., Any], delivery: str
) -> None:
    """The server accepts, then the connection drops: the retry meets conflictTaskUUID."""
    bfl_conn.inject("drop", only_task_type="imageInference")
    request = ImageInferenceRequest(**{**PROMPT, "deliveryMethod": delivery, "numberResults": 2})
    results = generate([request])
    assert {r.task_uuid for r in results} == {request.task_uuid} and len(results) == 2
    counters = bfl_conn.snapshot().tasks[request.task_uuid]
    assert counters.submissions == 2 and counters.accepted == 1 and counters.images_billed == 2


def test_timeout_after_acceptance_reattaches_without_paying_twice(
    bfl_conn: RunwareEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(bfl_conn, timeout=0.3))
    bfl_conn.inject("stall", seconds=1.0, process="before", only_task_type="imageInference")
    request = ImageInferenceRequest(**ASYNC)
    [result] = BflHook().generate([request])
    assert result.task_uuid == request.task_uuid
    assert bfl_conn.billed_for(request.task_uuid) == 1
    assert bfl_conn.snapshot().tasks[request.task_uuid].submissions == 2


def test_resubmitting_the_same_task_reattaches(bfl_conn: RunwareEmulator) -> None:
    hook = BflHook()
    request = ImageInferenceRequest(**ASYNC)
    first = hook.submit([request])
    second = hook.submit([request])
    assert first.accepted == [request.task_uuid] and second.reattached == [request.task_uuid]
    hook.poll_until_done(second.pending, timeout=5)
    assert bfl_conn.billed_for(request.task_uuid) == 1


def test_partial_success_keeps_accepted_tasks_and_reports_rejected(bfl_conn: RunwareEmulator) -> None:
    hook = BflHook()
    used = ImageInferenceRequest(**ASYNC)
    hook.submit([used])
    fresh = ImageInferenceRequest(**ASYNC)
    outcome = hook.submit([fresh, used])
    assert outcome.accepted == [fresh.task_uuid] and outcome.reattached == [used.task_uuid]


# -- envelope variants ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting",
    [
        {"legacy_error_key": True},
        {"data_as_object": True},
        {"processing_status_word": "pending"},
        {"async_error_shape": "envelope"},
    ],
    ids=lambda s: next(iter(s)),
)
def test_every_envelope_variant_round_trips(bfl_conn: RunwareEmulator, setting: dict[str, Any]) -> None:
    bfl_conn.configure(**setting)
    bfl_conn.latency = 0.1
    [result] = BflHook().generate([ASYNC])
    assert result.image_uuid
    bfl_conn.api_key = "wrong-key-for-variant"
    with pytest.raises(exc.BflAuthenticationError):
        BflHook().generate([ASYNC])


# -- connection -------------------------------------------------------------------------------


def test_test_connection_is_one_free_call(bfl_conn: RunwareEmulator) -> None:
    ok, message = BflHook().test_connection()
    assert ok and bfl_conn.base_url in message and "balance" in message
    snapshot = bfl_conn.snapshot()
    assert snapshot.requests == 1 and snapshot.images_billed == 0


def test_test_connection_reports_a_bad_key_without_showing_it(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.api_key = "the-right-key-is-different"
    ok, message = BflHook().test_connection()
    assert not ok and "invalidApiKey" in message and API_KEY not in message


@pytest.mark.parametrize(
    ("conn", "base_url"),
    [
        ({"conn_type": "bfl", "password": "k" * 10}, "https://api.runware.ai/v1"),
        (
            {"conn_type": "bfl", "password": "k" * 10, "host": "http://127.0.0.1:9/v1/"},
            "http://127.0.0.1:9/v1",
        ),
        ({"conn_type": "bfl", "password": "k" * 10, "host": "api.example.com"}, "https://api.example.com/v1"),
        (
            {
                "conn_type": "bfl",
                "password": "k" * 10,
                "host": "127.0.0.1",
                "port": 8080,
                "schema": "v2",
                "extra": {"scheme": "http"},
            },
            "http://127.0.0.1:8080/v2",
        ),
    ],
)
def test_base_url_from_connection_forms(
    monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any], base_url: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", json.dumps(conn))
    assert BflHook().settings.base_url == base_url


def test_uri_connection_with_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_BFL_DEFAULT",
        "bfl://:s3cr3t%2Fkey@127.0.0.1:8123/v1?scheme=http&timeout=7&max_retries=2",
    )
    settings = BflHook().settings
    assert (settings.base_url, settings.api_key, settings.timeout) == (
        "http://127.0.0.1:8123/v1",
        "s3cr3t/key",
        7.0,
    )
    assert settings.retry.max_retries == 2
    assert "s3cr3t" not in repr(settings)


def test_missing_key_and_bad_extras_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", json.dumps({"conn_type": "bfl", "host": "http://x/v1"}))
    with pytest.raises(exc.BflAuthenticationError, match="has no API key"):
        BflHook().settings  # noqa: B018
    monkeypatch.setenv(
        "AIRFLOW_CONN_BFL_DEFAULT",
        json.dumps({"conn_type": "bfl", "password": "k" * 10, "extra": {"timeout": "soon"}}),
    )
    with pytest.raises(exc.BflError, match="'timeout' must be a number, got 'soon'"):
        BflHook().settings  # noqa: B018


def test_connection_form_metadata() -> None:
    behaviour = BflHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["password"] == "API Key"
    assert behaviour["placeholders"]["host"] == "https://api.runware.ai/v1"
    assert {"login", "port", "schema"} <= set(behaviour["hidden_fields"])


# -- the key stays secret ---------------------------------------------------------------------


def test_the_key_appears_in_no_log_line(bfl_conn: RunwareEmulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bfl_conn.inject("status", status=503)
    bfl_conn.inject("drop", only_task_type="imageInference")
    hook = BflHook()
    hook.generate([ASYNC, {**ASYNC, "positivePrompt": "fail-marker"}][:1])
    with pytest.raises(exc.BflTaskFailedError) as caught:
        hook.generate([{**ASYNC, "positivePrompt": "fail-marker"}])
    assert caplog.records, "the hook logged nothing, so this test proves nothing"
    assert all(API_KEY not in record.getMessage() for record in caplog.records)
    assert API_KEY not in str(caught.value) and API_KEY not in repr(hook.settings)


class _EchoingServer(http.server.BaseHTTPRequestHandler):
    """A careless server that echoes the Authorization header into its error message."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps(
            {"errors": [{"code": "invalidApiKey", "message": f"bad {self.headers['Authorization']}"}]}
        )
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echoing_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_key_echoed_by_the_server_is_redacted(echoing_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_BFL_DEFAULT",
        json.dumps({"conn_type": "bfl", "password": API_KEY, "host": echoing_server}),
    )
    with pytest.raises(exc.BflAuthenticationError) as caught:
        BflHook().generate([PROMPT])
    assert API_KEY not in str(caught.value) and "Bearer ***" in str(caught.value)


# -- the poll schedule ------------------------------------------------------------------------


def test_default_poll_schedule_holds_the_first_interval_then_backs_off() -> None:
    """Polls at 0, 1, 2, 3, 4.5, 6.75 ... s: a 2 s generation is seen at 2 s, not 2.5 s."""
    poll = PollSettings()
    delays = [poll.delay_after(polls) for polls in range(1, 11)]
    assert delays[:6] == [1.0, 1.0, 1.0, 1.5, 2.25, 3.375]
    assert delays[-1] == 10.0  # capped
    previous = PollSettings(steady_polls=1)  # the TypeScript client's 1 s, x1.5 from the start
    assert [previous.delay_after(polls) for polls in range(1, 4)] == [1.0, 1.5, 2.25]
    assert PollSettings(interval=30.0).delay_after(1) == 30.0  # an interval above the cap is kept


def test_poll_schedule_extras_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_BFL_DEFAULT",
        json.dumps({"conn_type": "bfl", "password": "k" * 10, "extra": {"poll_steady_polls": 1}}),
    )
    assert BflHook().settings.poll.steady_polls == 1
    assert BflHook(poll_steady_polls=5).settings.poll.steady_polls == 5


def test_waiting_sleeps_follow_the_schedule_and_end_at_the_deadline() -> None:
    """The wait flow, driven without I/O: four 'processing' answers, then the image."""
    task_uuid = "6bb2a3c4-0000-4000-8000-000000000001"
    processing = json.dumps(
        {"data": [{"taskType": "imageInference", "taskUUID": task_uuid, "status": "processing"}]}
    )
    done = json.dumps(
        {
            "data": [
                {
                    "taskType": "imageInference",
                    "taskUUID": task_uuid,
                    "status": "success",
                    "imageUUID": "6bb2a3c4-0000-4000-8000-0000000000ff",
                    "imageURL": "https://im.runware.ai/image.jpg",
                }
            ]
        }
    )
    answers = iter([processing] * 4 + [done])
    statuses = {task_uuid: TaskStatus(task_uuid)}
    flow = _flows.wait(statuses, RetryPolicy(), PollSettings(), deadline=None)
    sleeps, action = [], next(flow)
    with pytest.raises(StopIteration):
        while True:
            if isinstance(action, _flows.Sleep):
                sleeps.append(action.seconds)
                action = flow.send(None)
            else:
                action = flow.send(httpx.Response(200, content=next(answers).encode()))
    assert sleeps == [1.0, 1.0, 1.0, 1.5]  # polls at 0, 1, 2, 3, 4.5 s
    assert statuses[task_uuid].state is TaskState.SUCCESS


def test_the_key_rides_in_the_client_headers_not_in_reprs(bfl_conn: RunwareEmulator) -> None:
    hook = BflHook()
    try:
        client = hook.get_conn()
        assert client.headers["Authorization"] == f"Bearer {API_KEY}"
        assert API_KEY not in repr(client.headers)
        hook.generate([PROMPT])
    finally:
        hook.close()
    assert bfl_conn.snapshot().requests == 1


# -- progress while waiting, the connection form ---------------------------------------------------------------


def _progress_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Waiting for Runware:")]


def test_a_long_wait_logs_progress_at_a_bounded_rate(
    bfl_conn: RunwareEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 500-task batch is one wait: a line every progress_log_interval, never one per task or poll."""
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(bfl_conn, progress_log_interval=0.3))
    bfl_conn.latency = 1.5
    hook = BflHook()
    try:
        outcome = hook.submit([{**ASYNC, "positivePrompt": f"prompt {i}"} for i in range(500)])
        caplog.set_level(logging.INFO, logger="airflow_provider_bfl")
        started = time.monotonic()
        statuses = hook.poll_until_done(outcome.pending, timeout=30)
        took = time.monotonic() - started
    finally:
        hook.close()
    assert all(status.done for status in statuses.values())
    lines = _progress_lines(caplog)
    polls = bfl_conn.snapshot().requests_by_task_type["getResponse"] / 5  # 100 tasks per request
    assert 1 <= len(lines) <= took / 0.3 + 1, lines
    assert len(lines) < polls  # fewer lines than polls: rate-limited, not one per poll
    assert re.fullmatch(
        r"Waiting for Runware: \d+ of 500 generation\(s\) done, \d+ pending, \d+ image\(s\) received, "
        r"\d+% progress, \d+s elapsed",
        lines[0],
    )


def test_a_short_wait_logs_no_progress_line(
    bfl_conn: RunwareEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="airflow_provider_bfl")
    BflHook().generate([ASYNC], timeout=10)
    assert _progress_lines(caplog) == []


def test_the_connection_form_offers_every_documented_extra() -> None:
    """README documents the extras; the form (conn-fields) offers them all, with the real defaults."""
    from pathlib import Path

    from airflow_provider_bfl import defaults
    from airflow_provider_bfl.get_provider_info import get_provider_info
    from airflow_provider_bfl.hooks import _transport

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith("| extra |")]
    documented = set(re.findall(r"`(\w+)`", row))
    [conn_type] = get_provider_info()["connection-types"]
    offered = conn_type["conn-fields"]
    assert len(documented) >= 8
    assert documented <= set(offered), f"missing from the form: {sorted(documented - set(offered))}"
    assert set(_transport._MINIMUMS) <= set(offered)  # every extra the hook reads
    assert offered["timeout"]["schema"]["default"] == defaults.REQUEST_TIMEOUT
    assert (
        offered["max_response_bytes_per_image"]["schema"]["default"] == defaults.MAX_RESPONSE_BYTES_PER_IMAGE
    )
    assert offered["progress_log_interval"]["schema"]["default"] == defaults.PROGRESS_LOG_INTERVAL
    assert offered["max_tasks_per_request"]["schema"]["default"] == defaults.MAX_TASKS_PER_REQUEST
