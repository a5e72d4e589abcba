"""
One getResponse poller per event loop and connection, shared by every wait in that loop.

A triggerer runs hundreds or thousands of triggers in one event loop. Polled one by one, each
trigger sends its own getResponse request every few seconds, and with a client per trigger opens
its own connections too. Here every shared wait registers its pending taskUUIDs with the
:class:`PollCoalescer` of its (event loop, connection settings); one poller task sends batched
getResponse requests (``max_tasks_per_request`` tasks each) on one ``httpx.AsyncClient``, merges
each answer into the statuses of the waits that asked, and wakes a wait once it is over.

Sharing changes how many requests are sent, never what a wait reports. Each wait keeps its own
:class:`~airflow_provider_bfl._flows.Waiting`: its poll schedule, failure budget, missing-task
count and wall-clock deadline (with the last poll at the deadline), exactly as a wait polling
alone. Each wait's deadline holds even while a batch it rides in is slow: the batch leaves for the
latest deadline among its waits, and a wait whose own deadline passes first ends its round there
(the batch goes on for the others). A batch that fails (after the call's own retries) counts as one failed poll for the waits
in it; a wait that is cancelled leaves without disturbing the others; the client is closed when
the last wait leaves. Logging is shared too: the waits' lines are paced, one per loop iteration
(:mod:`airflow_provider_bfl._paced_log`), and each wait's progress interval stretches with the
number of waits in the loop (``PollSettings.progress_every``), so together they log a bounded
number of progress lines a second.

Batching: a wait whose next poll is due within ``COALESCE_EARLY_FRACTION`` of its interval joins a
batch leaving now, so waits started at slightly different times fall into step, and batches leave
at most every ``COALESCE_ROUND_SPACING`` seconds, so a burst of new triggers shares a few requests.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
import weakref
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from airflow_provider_bfl import _flows, defaults
from airflow_provider_bfl._envelope import ApiError, Envelope
from airflow_provider_bfl._flows import PollSettings, Waiting
from airflow_provider_bfl._status import check_scope, merge
from airflow_provider_bfl.exceptions import BflError, BflServerError
from airflow_provider_bfl.hooks._transport import (
    OFF_LOOP_ITEMS,
    ConnectionSettings,
    arun_flow,
    new_async_client,
    off_loop,
)

if TYPE_CHECKING:
    from airflow_provider_bfl.models.results import TaskStatus

log = logging.getLogger(__name__)

#: Coalescers alive per event loop, keyed by their connection settings (poll settings excluded:
#: those are per wait). The settings object's repr hides the key; it is never logged.
_REGISTRY: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ConnectionSettings, PollCoalescer]] = (
    weakref.WeakKeyDictionary()
)


def coalescer_for(settings: ConnectionSettings) -> PollCoalescer:
    """The coalescer of the running event loop for these connection settings (created if needed)."""
    loop = asyncio.get_running_loop()
    key = dataclasses.replace(settings, poll=PollSettings())
    per_loop = _REGISTRY.setdefault(loop, {})
    coalescer = per_loop.get(key)
    if coalescer is None:
        coalescer = per_loop[key] = PollCoalescer(key, loop)
    return coalescer


def active_coalescers() -> list[PollCoalescer]:
    """The coalescers alive in the running event loop (one per connection in use)."""
    return list(_REGISTRY.get(asyncio.get_running_loop(), {}).values())


@dataclasses.dataclass(eq=False, slots=True)
class _Round:
    """One poll of one wait, possibly spread over several batches."""

    asked: dict[str, TaskStatus]
    batches: int = 0
    mentioned: set[str] = dataclasses.field(default_factory=set)
    error: BflError | None = None
    #: Ends the round at the wait's own deadline if its batches are still out then.
    expiry: asyncio.TimerHandle | None = None


@dataclasses.dataclass(eq=False, slots=True)
class _Wait:
    waiting: Waiting
    future: asyncio.Future[None]
    #: The registering task's context: log lines about this wait carry its trigger's log context.
    context: contextvars.Context
    #: Loop time of the next poll, and the earliest loop time it may join a batch leaving anyway.
    due: float
    earliest: float
    round: _Round | None = None


class PollCoalescer:
    """Batched getResponse polling for every shared wait of one event loop and connection."""

    def __init__(self, settings: ConnectionSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self._loop = loop
        self._client = new_async_client(settings)
        #: Registered waits by ``id()`` (a wait is registered until it leaves, so ids stay unique).
        self._waits: dict[int, _Wait] = {}
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._last_batch_at = float("-inf")
        self.closed = False
        #: getResponse HTTP calls sent (retries included in one call), for tests and benchmarks.
        self.batches_sent = 0

    def __repr__(self) -> str:  # never the key
        return f"PollCoalescer(base_url={self.settings.base_url!r}, waits={len(self._waits)})"

    @property
    def waits(self) -> int:
        return len(self._waits)

    # -- waits come and go -----------------------------------------------------------------

    async def wait(self, statuses: dict[str, TaskStatus], poll: PollSettings, deadline: float | None) -> None:
        """
        Wait until every task in ``statuses`` is terminal or ``deadline`` passes (see ``_flows.wait``).

        ``statuses`` is updated in place as answers arrive. Raises the polling error once the
        wait's failure budget is spent; cancelling the caller only removes this wait.
        """
        wait = self.join(statuses, poll, deadline)
        try:
            await wait.future
        finally:
            await self.leave(wait)

    def join(self, statuses: dict[str, TaskStatus], poll: PollSettings, deadline: float | None) -> _Wait:
        """
        Register a wait; await its ``future``, then always :meth:`leave` (what :meth:`wait` does).

        Split from :meth:`wait` so a caller can await the future in its own frame: one coroutine
        fewer per waiting trigger for the garbage collector to walk.
        """
        waiting = Waiting(statuses, poll, deadline, _flows.paced_log)
        now = self._loop.time()
        wait = _Wait(waiting, self._loop.create_future(), contextvars.copy_context(), due=now, earliest=now)
        if not waiting.pending():
            wait.future.set_result(None)
            return wait
        self._waits[id(wait)] = wait
        if self._poller is None:
            self._poller = self._spawn(self._poll_forever())
            self._poller.add_done_callback(self._poller_ended)
        self._wake.set()
        return wait

    async def leave(self, wait: _Wait) -> None:
        """Forget a wait (finished, failed or cancelled); the last one out closes the poller."""
        self._waits.pop(id(wait), None)
        if wait.future.done() and not wait.future.cancelled():
            wait.future.exception()  # retrieved, even when the caller was cancelled meanwhile
        elif not wait.future.done():
            wait.future.cancel()
        if not self._waits:
            await self.close()

    async def close(self) -> None:
        """Stop polling and close the connection pool (when the last wait has left)."""
        if self.closed:
            return
        self.closed = True
        per_loop = _REGISTRY.get(self._loop, {})
        if per_loop.get(self.settings) is self:
            del per_loop[self.settings]
        for wait in self._waits.values():
            if not wait.future.done():
                wait.future.cancel()
        tasks = [task for task in (self._poller, *self._batches) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()

    def _poller_ended(self, poller: asyncio.Task[None]) -> None:
        """The poller only ends by cancellation; if a bug ends it, fail the waits instead of stranding them."""
        if poller.cancelled() or poller.exception() is None:
            return
        self._poller = None  # the next wait starts a new one
        error = BflError(f"The Runware poller failed: {poller.exception()!r}")
        for wait in self._waits.values():
            if not wait.future.done():
                wait.future.set_exception(error)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # A fresh context: the poller serves every trigger, so it must not carry the log context
        # (trigger id, task instance) of whichever trigger happened to start it.
        return contextvars.Context().run(self._loop.create_task, coroutine)

    # -- the poller ------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        spacing = defaults.COALESCE_ROUND_SPACING
        while True:
            now = self._loop.time()
            not_before = self._last_batch_at + spacing
            if now < not_before:
                await asyncio.sleep(not_before - now)
                continue
            # A finished wait stays registered until its caller resumes: never poll for it again.
            idle = [wait for wait in self._waits.values() if wait.round is None and not wait.future.done()]
            if idle and (fire_at := min(wait.due for wait in idle)) <= now:
                self._dispatch([wait for wait in idle if wait.earliest <= now])
                self._last_batch_at = now
                continue
            self._wake.clear()
            timer = None if not idle else self._loop.call_at(fire_at, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    def _dispatch(self, waits: list[_Wait]) -> None:
        """Send one poll for each of ``waits``: their pending UUIDs, deduplicated, in batches."""
        owners: dict[str, list[_Wait]] = {}
        for wait in waits:
            asked = wait.waiting.pending()
            if not asked:  # nothing left to ask (cannot normally happen): the wait is over
                if not wait.future.done():
                    wait.future.set_result(None)
                continue
            wait.round = _Round(asked)
            self._arm_expiry(wait, wait.round)
            for uuid in asked:
                owners.setdefault(uuid, []).append(wait)
        uuids = list(owners)
        size = max(1, self.settings.max_tasks_per_request)
        for start in range(0, len(uuids), size):
            chunk = {uuid: owners[uuid] for uuid in uuids[start : start + size]}
            rounds: dict[int, _Round] = {}
            for wait in {id(w): w for ws in chunk.values() for w in ws}.values():
                assert wait.round is not None
                wait.round.batches += 1
                rounds[id(wait)] = wait.round
            task = self._spawn(self._poll(chunk, rounds))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    def _arm_expiry(self, wait: _Wait, current: _Round) -> None:
        """End ``current`` when the wait's deadline (plus the last poll's grace) passes first."""
        deadline = wait.waiting.deadline
        if deadline is None:
            return  # the batch's own call deadline (the ``timeout`` extra) bounds the round
        seconds = deadline - time.time()
        if seconds < defaults.LAST_POLL_WINDOW:
            seconds = defaults.LAST_POLL_GRACE  # the last poll, made at the deadline
        if seconds < self.settings.timeout:
            current.expiry = self._loop.call_later(seconds, self._expire, wait, current)

    def _expire(self, wait: _Wait, current: _Round) -> None:
        if wait.round is not current or wait.future.done():
            return
        current.error = current.error or BflServerError(
            "The poll was still unanswered at the wait's deadline", code="requestTimeout"
        )
        self._end_round(wait, current)

    async def _poll(self, chunk: dict[str, list[_Wait]], rounds: dict[int, _Round]) -> None:
        members = {id(wait): wait for owners in chunk.values() for wait in owners}.values()
        deadlines = [wait.waiting.deadline for wait in members]
        latest = None if None in deadlines else max(d for d in deadlines if d is not None)
        images = sum(rounds[id(owners[0])].asked[uuid].expected_images for uuid, owners in chunk.items())
        flow = _flows.call(_flows.poll_tasks(chunk), self.settings.retry, images=images, deadline=latest)
        self.batches_sent += 1
        envelope: Envelope | None = None
        error: BflError | None = None
        try:
            envelope = await arun_flow(self._client, self.settings, flow)
            check_scope(envelope, chunk)
        except BflError as failure:
            error = failure
        except Exception as unexpected:  # a bug must end the waits with an error, never strand them
            log.exception("Runware poll batch failed unexpectedly")
            error = BflError(f"Polling failed unexpectedly: {type(unexpected).__name__}: {unexpected}")
        merged: dict[int, _Merged] = {}
        if envelope is not None and error is None:
            large = len(envelope.data) >= OFF_LOOP_ITEMS
            merged = await off_loop(large, _merge_per_wait, _asked_per_wait(chunk), rounds, envelope)
        self._answered(chunk, rounds, merged, error)

    def _answered(
        self,
        chunk: dict[str, list[_Wait]],
        rounds: dict[int, _Round],
        merged: dict[int, _Merged],
        error: BflError | None,
    ) -> None:
        """Apply a batch's outcome to the rounds still waiting for it (on the loop: cheap)."""
        for wait, uuids in _asked_per_wait(chunk).values():
            current = rounds[id(wait)]
            if wait.round is not current or wait.future.done():  # left, or its round expired
                continue
            outcome = merged.get(id(wait))
            if error is not None or outcome is None:
                current.error = current.error or error
            elif isinstance(outcome, BflError):
                current.error = current.error or outcome
            else:
                updated, mentioned = outcome
                for uuid in uuids:
                    _adopt(current.asked[uuid], updated[uuid])
                current.mentioned |= mentioned
            current.batches -= 1
            if current.batches == 0:
                self._end_round(wait, current)

    def _end_round(self, wait: _Wait, finished: _Round) -> None:
        wait.round = None
        if finished.expiry is not None:
            finished.expiry.cancel()
        waiting = wait.waiting
        try:
            # In the wait's own context, so its log lines (progress, failures) reach its trigger's log.
            if finished.error is not None:
                wait.context.run(waiting.failed, finished.error)
            else:
                waits = sum(coalescer.waits for coalescer in _REGISTRY.get(self._loop, {}).values())
                wait.context.run(waiting.polled, finished.asked, finished.mentioned, waits)
        except BflError as error:
            wait.future.set_exception(error)
            return
        if waiting.over():
            wait.future.set_result(None)
            return
        delay = waiting.next_delay()
        now = self._loop.time()
        wait.due = now + delay
        full_delay = waiting.poll.delay_after(waiting.polls)
        # A poll cut short by the deadline is the last one: it must not leave before the deadline.
        early = (
            0.0
            if delay < full_delay
            else min(defaults.COALESCE_EARLY_MAX, delay * defaults.COALESCE_EARLY_FRACTION)
        )
        wait.earliest = wait.due - early
        self._wake.set()


#: One wait's share of a batch answer: its statuses merged (copies) and the UUIDs mentioned, or the error.
_Merged = tuple[dict[str, "TaskStatus"], set[str]] | BflError


def _asked_per_wait(chunk: dict[str, list[_Wait]]) -> dict[int, tuple[_Wait, list[str]]]:
    """The UUIDs of ``chunk`` each wait asked about, keyed by ``id(wait)``."""
    asked: dict[int, tuple[_Wait, list[str]]] = {}
    for uuid, waits in chunk.items():
        for wait in waits:
            asked.setdefault(id(wait), (wait, []))[1].append(uuid)
    return asked


def _merge_per_wait(
    asked: dict[int, tuple[_Wait, list[str]]], rounds: dict[int, _Round], envelope: Envelope
) -> dict[int, _Merged]:
    """
    Merge a batch answer into *copies* of each wait's statuses (safe in a worker thread).

    Copies, because the loop may end a round meanwhile (its deadline passed): its statuses are then
    reported as they were, and this answer is dropped, exactly as an answer arriving after the end.
    """
    items: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, list[ApiError]] = {}
    for item in envelope.data:
        items.setdefault(item["taskUUID"], []).append(item)
    for api_error in envelope.errors:
        if api_error.task_uuid is not None:
            errors.setdefault(api_error.task_uuid, []).append(api_error)
    merged: dict[int, _Merged] = {}
    for key, (_wait, uuids) in asked.items():
        statuses = rounds[key].asked
        copies = {
            uuid: dataclasses.replace(statuses[uuid], results=list(statuses[uuid].results)) for uuid in uuids
        }
        mine = Envelope(
            envelope.status_code,
            data=[item for uuid in uuids for item in items.get(uuid, ())],
            errors=[api_error for uuid in uuids for api_error in errors.get(uuid, ())],
        )
        try:
            merged[key] = copies, merge(copies, mine)
        except BflError as failure:
            merged[key] = failure
        except Exception as unexpected:  # never strand a wait on a bug: end it with the error
            log.exception("Merging a Runware poll answer failed unexpectedly")
            merged[key] = BflError(
                f"Reading the poll answer failed: {type(unexpected).__name__}: {unexpected}"
            )
    return merged


def _adopt(status: TaskStatus, merged: TaskStatus) -> None:
    status.state, status.results = merged.state, merged.results
    status.progress, status.error = merged.progress, merged.error
