"""
Logging off the loop (``_paced_log``): the lines of hundreds of triggers in one event loop are written
by a thread of their own, never by the loop.

In Airflow's trigger-runner every log line is a synchronous write (a file, the supervisor's socket),
and on a busy disk one write can take hundreds of milliseconds: written on the loop, a burst of lines
blocks every trigger of the triggerer. Asserted by the thread each line is written on and by counting
loop iterations (a callback that reschedules itself once per iteration), never by timing.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import pytest
from structlog.contextvars import bind_contextvars, get_contextvars, merge_contextvars
from structlog.testing import capture_logs

from airflow_provider_bfl import _paced_log, defaults, events
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger
from tests.conftest import connection_json
from tests.submissions import submit

N = 300
#: Airflow's structlog loggers format a line before any processor sees it.
START = "Waiting for 1 Runware generation(s) on connection 'bfl_default': "
END = "Runware wait ended with status success: "
PROGRESS = "Waiting for Runware:"


@dataclass
class Line:
    message: str
    iteration: int
    #: The ``trigger_id`` Airflow's triggerer binds per trigger task, as seen when the line was emitted.
    trigger_id: int | None
    #: The thread that wrote it.
    thread: int


class Recording:
    """
    The provider's lines (stdlib records and the triggers' structlog events), each with the loop
    iteration it was emitted in (a callback rescheduling itself counts them) and its trigger.
    """

    def __init__(self) -> None:
        self.stdlib: list[Line] = []
        self.triggers: list[Line] = []
        self.iteration = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.call_soon(self._tick)

    def stop(self) -> None:
        self._loop = None

    def _tick(self) -> None:
        self.iteration += 1
        if self._loop is not None:
            self._loop.call_soon(self._tick)

    def structlog_event(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        if getattr(logger, "name", "").startswith("airflow_provider_bfl"):
            self.triggers.append(
                Line(event["event"], self.iteration, event.get("trigger_id"), threading.get_ident())
            )
        return event


class Recorder(logging.Handler):
    def __init__(self, recording: Recording) -> None:
        super().__init__(logging.INFO)
        self.recording = recording

    def emit(self, record: logging.LogRecord) -> None:
        trigger_id = get_contextvars().get("trigger_id")
        self.recording.stdlib.append(
            Line(record.getMessage(), self.recording.iteration, trigger_id, threading.get_ident())
        )


@pytest.fixture
def recording(bfl_conn: RunwareEmulator) -> Iterator[Recording]:
    recording = Recording()
    handler = Recorder(recording)
    provider = logging.getLogger("airflow_provider_bfl")
    level = provider.level
    provider.setLevel(logging.INFO)
    provider.addHandler(handler)
    try:
        with capture_logs(processors=[merge_contextvars, recording.structlog_event]):
            yield recording
    finally:
        provider.removeHandler(handler)
        provider.setLevel(level)


async def run_triggers(uuids: list[str], recording: Recording) -> dict[str, int]:
    """Run one trigger per task in one loop as the triggerer does; ``{taskUUID: trigger_id}``."""
    owners = {uuid: trigger_id for trigger_id, uuid in enumerate(uuids, start=1)}

    async def run(trigger_id: int, uuid: str) -> str:
        bind_contextvars(trigger_id=trigger_id)  # what the triggerer's run_trigger does
        run = BflImageInferenceTrigger([uuid], deadline=time.time() + 60).run()
        event = await run.__anext__()
        # Airflow closes a trigger's log once it has finished: its last line is out before its event.
        assert any(
            line.message.startswith(END) and line.trigger_id == trigger_id for line in recording.triggers
        )
        with pytest.raises(StopAsyncIteration):
            await run.__anext__()
        return str(events.validate(event.payload)["status"])

    recording.start(asyncio.get_running_loop())
    try:
        # One task each, in a copy of the current context, as the triggerer runs them.
        statuses = await asyncio.gather(*(run(owners[uuid], uuid) for uuid in uuids))
    finally:
        recording.stop()
    assert statuses == [events.SUCCESS] * len(uuids)
    return owners


async def test_three_hundred_triggers_log_every_line_off_the_loop_in_its_own_context(
    bfl_conn: RunwareEmulator,
    monkeypatch: pytest.MonkeyPatch,
    recording: Recording,
) -> None:
    """
    Adopted at once, 300 triggers log their start lines, progress lines and end lines, none of them
    written by the event loop's thread, each in its own trigger's log context, none dropped.
    """
    # A progress line at every poll, stretched only by the budget: 300 waits at 300 lines a second
    # make every wait due for a line each second, all answered by the same batches.
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(bfl_conn, progress_log_interval=0.001))
    monkeypatch.setattr(defaults, "PROGRESS_LINES_PER_SECOND", float(N))
    bfl_conn.latency = 3.0
    uuids = list(await asyncio.to_thread(submit, *(f"a red bicycle {i}" for i in range(N)), size=256))

    owners = await run_triggers(uuids, recording)
    assert _paced_log.flush(timeout=30)

    stdlib, triggers = recording.stdlib, recording.triggers
    assert threading.get_ident() not in {
        line.thread for line in stdlib + triggers
    }  # none written by the loop
    starts = [line for line in triggers if line.message.startswith(START)]
    assert Counter((line.trigger_id, line.message.removeprefix(START)) for line in starts) == Counter(
        (trigger_id, uuid) for uuid, trigger_id in owners.items()
    )  # every start line, once, each in its own trigger's context
    ends = [line for line in triggers if line.message.startswith(END)]
    assert Counter(line.trigger_id for line in ends) == Counter(owners.values())
    progress = [line for line in stdlib if line.message.startswith(PROGRESS)]
    assert len(progress) >= N  # a burst of progress lines happened, off the loop too
    assert all(line.trigger_id in owners.values() for line in progress)


async def test_a_stalled_log_write_never_holds_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    """A handler stuck 100 ms in each write (a busy disk): the loop goes on iterating meanwhile."""
    logger = logging.getLogger("airflow_provider_bfl.test_stall")
    recording = Recording()
    during: list[tuple[int, int]] = []

    class Stalled(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            before = recording.iteration
            time.sleep(0.1)
            during.append((before, recording.iteration))

    handler = Stalled(logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    recording.start(asyncio.get_running_loop())
    try:
        for number in range(5):
            _paced_log.log(logger.info, "line %d", number)
        await _paced_log.alog(logger.info, "last line")
    finally:
        recording.stop()
        logger.removeHandler(handler)
    assert len(during) == 6
    assert all(after > before for before, after in during)  # the loop iterated through every write


async def test_many_waits_keep_their_progress_lines_within_the_budget(
    bfl_conn: RunwareEmulator,
    monkeypatch: pytest.MonkeyPatch,
    recording: Recording,
) -> None:
    """
    Waits that would each log at every poll (progress_log_interval=0.001) log, together, at most the
    budget's lines a second: each wait's interval is stretched to waits / budget.
    """
    budget = 100.0  # 300 waits: one line per wait every 3 s
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(bfl_conn, progress_log_interval=0.001))
    monkeypatch.setattr(defaults, "PROGRESS_LINES_PER_SECOND", budget)
    bfl_conn.latency = N / budget + 2.0  # each task still running when its first line falls due
    uuids = list(await asyncio.to_thread(submit, *(f"a blue bicycle {i}" for i in range(N)), size=256))

    started = time.monotonic()
    await run_triggers(uuids, recording)
    elapsed = time.monotonic() - started

    progress = [line for line in recording.stdlib if line.message.startswith(PROGRESS)]
    polls = bfl_conn.snapshot().requests_by_task_type["getResponse"]
    assert progress  # the waits do log progress
    assert polls > 3 * len(progress)  # unstretched, every one of these polls would have logged
    # Each wait's interval is stretched to the waits of the loop at that time: while triggers are
    # still arriving or already leaving there are fewer, so each wait may log one line early.
    assert len(progress) <= budget * elapsed + N


def test_outside_an_event_loop_a_line_is_emitted_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """A worker's blocking wait has no loop to pace by: its lines are logged as they come."""
    caplog.set_level(logging.INFO, logger="airflow_provider_bfl")
    paced = _paced_log.PacedLogger(logging.getLogger("airflow_provider_bfl.test"))
    paced.info("first %s", "line")
    assert caplog.messages == ["first line"]
    paced.warning("second %s", "line")
    assert caplog.messages == ["first line", "second line"]


def test_lines_queued_in_a_closed_loop_are_written_in_order_and_do_not_keep_it_alive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loop closed with lines still queued frees itself, and its lines are written, in order, each in its context."""
    caplog.set_level(logging.INFO, logger="airflow_provider_bfl")
    logger = logging.getLogger("airflow_provider_bfl.test")
    trigger = contextvars.ContextVar[int]("trigger")
    seen: list[tuple[str, int]] = []
    release = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            release.wait(timeout=30)  # held until the loop is gone
            seen.append((record.getMessage(), trigger.get(-1)))

    handler = Seen()
    logger.addHandler(handler)
    loop = asyncio.new_event_loop()

    async def burst(number: int) -> None:
        trigger.set(number)
        for i in range(3):
            _paced_log.log(logger.info, "line %d of %d", i, number)

    async def both() -> None:
        await asyncio.gather(burst(1), burst(2))

    try:
        loop.run_until_complete(both())
        alive = weakref.ref(loop)
        loop.close()
        del loop
        gc.collect()
        assert alive() is None
        assert seen == []  # every line was still queued when the loop went
        release.set()
        assert _paced_log.flush(timeout=30)
    finally:
        release.set()
        logger.removeHandler(handler)
    assert seen == [(f"line {i} of {n}", n) for n in (1, 2) for i in range(3)]


def test_a_forked_child_writes_its_lines_with_a_writer_of_its_own(tmp_path: Any) -> None:
    """Airflow forks the trigger runner from its supervisor: the parent's writer thread is not there."""
    import os

    logger = logging.getLogger("airflow_provider_bfl.test_fork")
    out = tmp_path / "child.log"

    async def parent_line() -> None:
        await _paced_log.alog(logger.info, "parent")

    asyncio.run(parent_line())  # the parent's writer thread is running now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        import signal

        signal.alarm(30)  # a child stuck on a lock inherited from another thread dies: never a hung test
        code = 1
        try:
            handler = logging.FileHandler(out)
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)

            async def child_line() -> None:
                await asyncio.wait_for(_paced_log.alog(logger.info, "child line"), timeout=10)

            asyncio.run(child_line())
            handler.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.read_text().strip() == "child line"
