"""
Log lines of the many waits and triggers of one event loop, emitted at most one per loop iteration.

In Airflow's trigger-runner a log line is shipped synchronously to the supervisor: when it reads
slowly, one line blocks the event loop for tens of milliseconds, and a triggerer adopting hundreds
of triggers at once (each logging its start), or one poll answer ending a round for hundreds of
waits, blocked it for seconds. Lines logged here are queued per event loop and emitted one per
iteration by a self-rescheduling ``call_soon``, so a burst costs the loop one line at a time,
between its other callbacks. Each line is emitted in the :mod:`contextvars` context it was logged
in, so Airflow's structlog context (trigger id, task instance) still routes it to its trigger's
log. Outside a running loop (a worker's blocking wait) a line is emitted at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import weakref
from collections.abc import Callable
from typing import Any, Protocol


class Lines(Protocol):
    """What a wait logs through: a logger, or a :class:`PacedLogger`."""

    def info(self, msg: str, *args: Any) -> None: ...

    def warning(self, msg: str, *args: Any) -> None: ...


#: A queued line: its context, the bound logging method (``logger.info``), its arguments and the
#: future of a caller waiting for it to be out (or None).
_Line = tuple[contextvars.Context, Callable[..., object], str, tuple[Any, ...], "asyncio.Future[None] | None"]


class _Pump:
    """One loop's queue of lines. It holds no reference to its loop, so it never keeps one alive."""

    __slots__ = ("lines", "scheduled")

    def __init__(self) -> None:
        self.lines: collections.deque[_Line] = collections.deque()
        self.scheduled = False

    def push(self, loop: asyncio.AbstractEventLoop, line: _Line) -> None:
        self.lines.append(line)
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self.emit_one, context=contextvars.Context())

    def emit_one(self) -> None:
        try:
            _emit(self.lines.popleft())
        finally:
            if self.lines:
                asyncio.get_running_loop().call_soon(self.emit_one, context=contextvars.Context())
            else:
                self.scheduled = False

    def flush(self) -> None:
        """Emit every line still queued (the loop is gone: lines are never dropped)."""
        while self.lines:
            with contextlib.suppress(Exception):  # a broken handler (stdout closed at exit) loses one line
                _emit(self.lines.popleft())


def _emit(line: _Line) -> None:
    context, method, msg, args, done = line
    try:
        context.run(method, msg, *args)
    finally:
        if done is not None and not done.done():
            done.set_result(None)


_PUMPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pump] = weakref.WeakKeyDictionary()


def _push(loop: asyncio.AbstractEventLoop, line: _Line) -> None:
    pump = _PUMPS.get(loop)
    if pump is None:
        pump = _PUMPS[loop] = _Pump()
        weakref.finalize(loop, pump.flush)  # a closed loop drops its callbacks, not our lines
    pump.push(loop, line)


def log(method: Callable[..., object], msg: str, *args: Any) -> None:
    """``method(msg, *args)`` (e.g. ``logger.info``), paced in a running loop, at once outside one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        method(msg, *args)
        return
    _push(loop, (contextvars.copy_context(), method, msg, args, None))


async def alog(method: Callable[..., object], msg: str, *args: Any) -> None:
    """
    :func:`log`, returning once the line (and every line queued before it) is out.

    For a trigger's last line: Airflow closes a trigger's log once the trigger has finished, so
    its lines must be emitted before it yields its event.
    """
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    _push(loop, (contextvars.copy_context(), method, msg, args, done))
    await done  # a cancelled caller stops waiting; its line still goes out


class PacedLogger:
    """A logger whose ``info`` and ``warning`` lines are paced (see :func:`log`)."""

    __slots__ = ("_logger",)

    def __init__(self, logger: Lines) -> None:
        self._logger = logger

    def info(self, msg: str, *args: Any) -> None:
        log(self._logger.info, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        log(self._logger.warning, msg, *args)
