"""
Log lines of the waits and triggers of an event loop, written one at a time by a thread of their own.

In Airflow's trigger-runner a log line is written synchronously (structlog to the trigger's log
file, or to the supervisor's socket). On a busy disk one write can take hundreds of milliseconds,
and a triggerer adopting hundreds of triggers (each logging its start), or one poll answer ending a
round for hundreds of waits, writes hundreds of lines at once: written on the event loop, they held
every trigger of the triggerer. Lines logged here from a running loop are queued and written in
order by one writer thread per process, each in the :mod:`contextvars` context it was logged in, so
Airflow's structlog context (trigger id, task instance) still routes it to its trigger's log. The
loop only queues. Outside a running loop (a worker's blocking wait) a line is written at once.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol


class Lines(Protocol):
    """What a wait logs through: a logger, or a :class:`PacedLogger`."""

    def info(self, msg: str, *args: Any) -> None: ...

    def warning(self, msg: str, *args: Any) -> None: ...


#: A queued line: its context, the bound logging method (``logger.info``), its arguments, and the
#: loop and future of a caller waiting for it to be out (or None).
_Line = tuple[
    contextvars.Context,
    Callable[..., object],
    str,
    tuple[Any, ...],
    "tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None",
]
#: How long the interpreter's exit waits for lines still queued.
EXIT_FLUSH_SECONDS = 5.0


class _Writer:
    """One daemon thread writing the queued lines of this process in order (started on first use)."""

    def __init__(self) -> None:
        self._lines: queue.SimpleQueue[_Line | threading.Event] | None = None
        self._lock = threading.Lock()

    def put(self, item: _Line | threading.Event) -> None:
        if self._lines is None:
            with self._lock:
                if self._lines is None:
                    lines: queue.SimpleQueue[_Line | threading.Event] = queue.SimpleQueue()
                    threading.Thread(
                        target=_write_forever, args=(lines,), name="bfl-log-writer", daemon=True
                    ).start()
                    self._lines = lines
        self._lines.put(item)

    def flush(self, timeout: float | None) -> bool:
        if self._lines is None:  # never started: nothing was queued
            return True
        written = threading.Event()
        self.put(written)
        return written.wait(timeout)


def _write_forever(lines: queue.SimpleQueue[_Line | threading.Event]) -> None:
    while True:
        item = lines.get()
        if isinstance(item, threading.Event):  # flush(): everything queued before it is out
            item.set()
            continue
        with contextlib.suppress(Exception):  # a broken handler (stdout closed at exit) loses one line
            _emit(item)


def _emit(line: _Line) -> None:
    context, method, msg, args, waiter = line
    try:
        context.run(method, msg, *args)
    finally:
        if waiter is not None:
            loop, done = waiter
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, done)


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


_WRITER = _Writer()


def _new_writer_after_fork() -> None:
    """A forked child (Airflow's trigger runner) has no writer thread: it starts its own."""
    global _WRITER
    _WRITER = _Writer()


os.register_at_fork(after_in_child=_new_writer_after_fork)


def flush(timeout: float | None = None) -> bool:
    """Wait until every line queued so far is written; False if ``timeout`` passed first."""
    return _WRITER.flush(timeout)


atexit.register(flush, EXIT_FLUSH_SECONDS)


def log(method: Callable[..., object], msg: str, *args: Any) -> None:
    """``method(msg, *args)`` (e.g. ``logger.info``): off the loop in a running loop, at once outside one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        method(msg, *args)
        return
    _WRITER.put((contextvars.copy_context(), method, msg, args, None))


async def alog(method: Callable[..., object], msg: str, *args: Any) -> None:
    """
    :func:`log`, returning once the line (and every line queued before it) is out.

    For a trigger's last line: Airflow closes a trigger's log once the trigger has finished, so
    its lines must be written before it yields its event.
    """
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    _WRITER.put((contextvars.copy_context(), method, msg, args, (loop, done)))
    await done  # a cancelled caller stops waiting; its line still goes out


class PacedLogger:
    """A logger whose ``info`` and ``warning`` lines are written off the event loop (see :func:`log`)."""

    __slots__ = ("_logger",)

    def __init__(self, logger: Lines) -> None:
        self._logger = logger

    def info(self, msg: str, *args: Any) -> None:
        log(self._logger.info, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        log(self._logger.warning, msg, *args)
