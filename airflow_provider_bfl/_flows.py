"""
The hook's logic, written once as generators that *ask* for I/O instead of doing it.

A flow yields :class:`Send` (post these tasks, give me the :class:`Reply` or the transport error)
and :class:`Sleep` actions; the hook runs the same flow with a blocking driver (``httpx.Client``,
``time.sleep``) or an async one (``httpx.AsyncClient``, ``asyncio.sleep``). Retries, re-attachment,
envelope parsing and polling therefore behave identically in the worker and in the triggerer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from airflow_provider_bfl import defaults
from airflow_provider_bfl._envelope import (
    CONFLICT,
    Envelope,
    body_snippet,
    family_for_status,
    parse_envelope,
    to_exception,
)
from airflow_provider_bfl._paced_log import Lines, PacedLogger
from airflow_provider_bfl._retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after
from airflow_provider_bfl._status import merge
from airflow_provider_bfl.exceptions import (
    BflError,
    BflInvalidRequestError,
    BflMalformedResponseError,
    BflRateLimitError,
    BflServerError,
    BflTaskNotFoundError,
)
from airflow_provider_bfl.models.request import ImageInferenceRequest
from airflow_provider_bfl.models.results import TaskState, TaskStatus

log = logging.getLogger(__name__)
#: This module's lines about waits, paced in an event loop (see :mod:`airflow_provider_bfl._paced_log`).
paced_log = PacedLogger(log)

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """Post ``tasks``; the answer may hold up to ``images`` images; ``deadline`` is the wait's (time.time())."""

    tasks: list[dict[str, Any]]
    images: int = 0
    deadline: float | None = None


@dataclass(frozen=True)
class Reply:
    """An answer read whole (within its size budget) and redacted by the driver."""

    status_code: int
    headers: httpx.Headers
    content: bytes


@dataclass(frozen=True)
class Sleep:
    seconds: float


Action = Send | Sleep
#: A flow receives a :class:`Reply` (or anything shaped like it, e.g. an ``httpx.Response``) or the
#: ``httpx.TransportError`` the call raised after a Send.
Flow = Generator[Action, Any, T]


@dataclass(frozen=True)
class PollSettings:
    """
    When to ask getResponse again: ``interval`` for the first ``steady_polls`` waits, then
    ``x backoff`` per poll up to ``max_interval``.

    With the defaults the polls go out at 0, 1, 2, 3, 4.5, 6.75, 10.1 ... s: a FLUX.1.1 [pro]
    generation (typically 2-5 s) is seen within a second of finishing instead of up to 50% late,
    and a long wait still costs a logarithmic number of polls.
    """

    interval: float = defaults.POLL_INTERVAL
    backoff: float = defaults.POLL_BACKOFF
    max_interval: float = defaults.POLL_MAX_INTERVAL
    max_failures: int = defaults.MAX_POLL_FAILURES
    max_missing: int = defaults.MAX_MISSING_POLLS
    steady_polls: int = defaults.POLL_STEADY_POLLS
    #: Seconds between two progress lines of one wait (see :meth:`progress_every`).
    progress_interval: float = defaults.PROGRESS_LOG_INTERVAL

    def delay_after(self, polls: int) -> float:
        """Seconds between poll number ``polls`` (1-based) and the next one."""
        backoffs = max(0, polls - self.steady_polls)
        return min(self.interval * self.backoff**backoffs, max(self.max_interval, self.interval))

    def progress_every(self, waits: int = 1) -> float:
        """
        Seconds between two progress lines of one of ``waits`` waits sharing an event loop:
        stretched so that together they log at most ``PROGRESS_LINES_PER_SECOND`` lines a second.
        """
        return max(self.progress_interval, waits / defaults.PROGRESS_LINES_PER_SECOND)


@dataclass
class SubmitOutcome:
    """What one submission achieved, per taskUUID."""

    #: Newly accepted tasks.
    accepted: list[str] = field(default_factory=list)
    #: Tasks the API already had (``conflictTaskUUID``): re-attached, not paid again.
    reattached: list[str] = field(default_factory=list)
    #: Tasks the API refused, with the reason.
    rejected: dict[str, BflError] = field(default_factory=dict)
    #: Statuses known from the submission itself (complete for sync delivery).
    statuses: dict[str, TaskStatus] = field(default_factory=dict)

    @property
    def pending(self) -> dict[str, int]:
        """Tasks still to be polled, with the number of images each will produce."""
        return {uuid: status.expected_images for uuid, status in self.statuses.items() if not status.done}


def _failure(outcome: Reply | httpx.TransportError) -> tuple[BflError, float | None] | None:
    """The retryable failure an attempt ended in (with any Retry-After), or None if it is final."""
    if isinstance(outcome, httpx.TransportError):
        kind = "timed out" if isinstance(outcome, httpx.TimeoutException) else "failed"
        return BflServerError(f"The request {kind}: {type(outcome).__name__}: {outcome}"), None
    if outcome.status_code in RETRYABLE_STATUSES:
        family = BflRateLimitError if outcome.status_code == 429 else BflServerError
        error = family(
            f"The API answered HTTP {outcome.status_code}: {body_snippet(outcome.content)!r}",
            status_code=outcome.status_code,
        )
        return error, parse_retry_after(outcome.headers.get("retry-after"))
    return None


def call(
    tasks: list[dict[str, Any]], policy: RetryPolicy, *, images: int = 0, deadline: float | None = None
) -> Flow[Envelope]:
    """
    POST one task array, retrying transient failures; the parsed envelope.

    ``images`` is how many images the answer may carry (it sizes the answer's budget);
    ``deadline`` (time.time()) is the wait's: no retry is started that would end past it.
    """
    started = time.monotonic()
    retry = 0
    while True:
        outcome = yield Send(tasks, images=images, deadline=deadline)
        failure = _failure(outcome)
        if failure is None:
            try:
                return _checked(parse_envelope(outcome.status_code, outcome.content))
            except BflMalformedResponseError as malformed:
                if 400 <= outcome.status_code < 500:  # e.g. a proxy's HTML 401 page: final
                    raise family_for_status(outcome.status_code)(
                        malformed.message, status_code=outcome.status_code
                    ) from None
                # A garbled 200 is ambiguous: the tasks may have been accepted. Sending the same
                # taskUUIDs again is safe (a conflict re-attaches), so treat it as transient.
                failure = malformed, None
        error, retry_after = failure
        delay = policy.delay(retry, retry_after)
        retry += 1
        elapsed = time.monotonic() - started
        if (
            retry > policy.max_retries
            or elapsed + delay > policy.max_elapsed
            or (deadline is not None and time.time() + delay >= deadline)
        ):
            raise error.with_context(suffix=f"; gave up after {retry} attempts in {elapsed:.1f}s") from None
        log.warning(
            "Runware request failed (%s); retry %d/%d in %.2fs", error, retry, policy.max_retries, delay
        )
        yield Sleep(delay)


def _checked(envelope: Envelope) -> Envelope:
    """Raise request-level errors (auth, credits, ...); task-scoped ones stay in the envelope."""
    unscoped = [error for error in envelope.errors if error.task_uuid is None]
    if unscoped and (envelope.status_code >= 400 or not envelope.data):
        raise to_exception(unscoped[0], envelope.status_code)
    if envelope.status_code >= 400 and not envelope.errors:
        raise BflMalformedResponseError(
            f"The API answered HTTP {envelope.status_code} without saying why",
            status_code=envelope.status_code,
        )
    return envelope


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def submit(
    requests: Sequence[ImageInferenceRequest],
    policy: RetryPolicy,
    chunk_size: int = defaults.MAX_TASKS_PER_REQUEST,
) -> Flow[SubmitOutcome]:
    """Submit tasks (as few HTTP requests as allowed); a conflict means "already accepted"."""
    outcome = SubmitOutcome()
    uuids = [request.task_uuid for request in requests]
    if len(set(uuids)) != len(uuids):
        raise BflInvalidRequestError(
            "The same taskUUID appears twice in one submission", parameter="taskUUID"
        )
    for chunk in _chunks(list(requests), chunk_size):
        statuses = {r.task_uuid: TaskStatus(r.task_uuid, expected_images=r.number_results) for r in chunk}
        images = sum(request.number_results for request in chunk)
        envelope = yield from call([request.to_wire() for request in chunk], policy, images=images)
        conflicts = {error.task_uuid for error in envelope.errors if error.code == CONFLICT}
        envelope.errors = [error for error in envelope.errors if error.code != CONFLICT]
        merge(statuses, envelope)
        for task_uuid, status in statuses.items():
            if task_uuid in conflicts:
                log.info(
                    "taskUUID %s was already accepted by the API: re-attaching, not resubmitting", task_uuid
                )
                outcome.reattached.append(task_uuid)
            elif status.state is TaskState.ERROR and status.error is not None:
                outcome.rejected[task_uuid] = status.error
                continue
            else:
                outcome.accepted.append(task_uuid)
            outcome.statuses[task_uuid] = status
    return outcome


def poll_tasks(uuids: Iterable[str]) -> list[dict[str, Any]]:
    return [{"taskType": "getResponse", "taskUUID": uuid} for uuid in uuids]


def get_status(
    statuses: Mapping[str, TaskStatus],
    policy: RetryPolicy,
    chunk_size: int = defaults.MAX_TASKS_PER_REQUEST,
    deadline: float | None = None,
) -> Flow[set[str]]:
    """One getResponse round, merged into ``statuses`` in place; the UUIDs the API mentioned."""
    mentioned: set[str] = set()
    for chunk in _chunks(list(statuses), chunk_size):
        images = sum(statuses[uuid].expected_images for uuid in chunk)
        envelope = yield from call(poll_tasks(chunk), policy, images=images, deadline=deadline)
        mentioned |= merge({uuid: statuses[uuid] for uuid in chunk}, envelope)
    return mentioned


class Waiting:
    """
    The bookkeeping of one wait, between polls: what to ask about, when to stop, when to ask next.

    Sans-I/O and shared by :func:`wait` (one caller, one poll loop) and the hook's process-wide
    poll coalescer (many waits answered by the same batched getResponse requests), so both keep the
    same guarantees: results merged in place (partial results survive a failure), a bounded run of
    failed polls tolerated, tasks the API stops mentioning turned into ``taskNotFound``, and a last
    poll at the wall-clock ``deadline``. It logs through ``lines`` (:data:`paced_log` in an event
    loop, where many waits log at once).
    """

    __slots__ = (
        "_last_progress",
        "_lines",
        "_missing",
        "deadline",
        "failures",
        "poll",
        "polls",
        "started",
        "statuses",
    )

    def __init__(
        self, statuses: dict[str, TaskStatus], poll: PollSettings, deadline: float | None, lines: Lines
    ) -> None:
        self.statuses = statuses
        self._lines = lines
        self.poll = poll
        self.deadline = deadline
        self.polls = 0
        self.failures = 0
        #: Consecutive polls that did not mention a task, for the tasks at 1 or more (made on demand).
        self._missing: dict[str, int] | None = None
        self.started = self._last_progress = time.monotonic()

    def pending(self) -> dict[str, TaskStatus]:
        """The tasks to ask about in the next poll."""
        return {uuid: status for uuid, status in self.statuses.items() if not status.done}

    def polled(self, asked: Mapping[str, TaskStatus], mentioned: set[str], waits: int = 1) -> None:
        """
        A poll of ``asked`` succeeded (already merged); ``mentioned`` are the UUIDs it named.

        ``waits``: how many waits log progress from this event loop (see :meth:`PollSettings.progress_every`).
        """
        self.polls += 1
        self.failures = 0
        for uuid, status in asked.items():
            if uuid in mentioned:
                if self._missing:
                    self._missing.pop(uuid, None)
                continue
            if self._missing is None:
                self._missing = {}
            missing = self._missing[uuid] = self._missing.get(uuid, 0) + 1
            if missing >= self.poll.max_missing and not status.done:
                _not_found(status, f"The API has not mentioned this task in {missing} consecutive polls")
        self.log_progress(waits)

    def log_progress(self, waits: int = 1) -> None:
        """
        One progress line (pending / done / images / progress % / elapsed) at most every
        ``poll.progress_every(waits)`` seconds, and none for a wait that ends sooner.
        """
        now = time.monotonic()
        if now - self._last_progress < self.poll.progress_every(waits):
            return
        self._last_progress = now
        statuses = self.statuses.values()
        done = sum(1 for status in statuses if status.done)
        images = sum(len(status.results) for status in statuses)
        self._lines.info(
            "Waiting for Runware: %d of %d generation(s) done, %d pending, %d image(s) received, "
            "%d%% progress, %.0fs elapsed",
            done,
            len(self.statuses),
            len(self.statuses) - done,
            images,
            _percent(statuses),
            now - self.started,
        )

    def failed(self, error: BflError) -> None:
        """A poll failed after the call's own retries; re-raises once the failure budget is spent."""
        self.polls += 1
        if not error.retryable:
            raise error
        self.failures += 1
        if self.failures > self.poll.max_failures:
            raise error
        self._lines.warning(
            "Polling failed (%s); %d/%d consecutive failures tolerated",
            error,
            self.failures,
            self.poll.max_failures,
        )

    def over(self) -> bool:
        """
        True once every task is terminal or the deadline has passed.

        Asked after a poll, so the last poll happens at the deadline (also for a trigger resumed
        after its deadline passed: images finished meanwhile are paid for, report them).
        """
        if all(status.done for status in self.statuses.values()):
            return True
        return self.deadline is not None and time.time() >= self.deadline

    def next_delay(self) -> float:
        """Seconds until the next poll: the schedule, cut short so the last poll is at the deadline."""
        delay = self.poll.delay_after(self.polls)
        if self.deadline is None:
            return delay
        return max(0.0, min(delay, self.deadline - time.time()))


def _not_found(status: TaskStatus, message: str) -> None:
    status.state = TaskState.ERROR
    status.error = BflTaskNotFoundError(message, code="taskNotFound", task_uuid=status.task_uuid)


def mark_missing(statuses: Mapping[str, TaskStatus], mentioned: set[str]) -> None:
    """Tasks a getResponse round did not mention become ``taskNotFound`` (for tasks that must exist)."""
    for uuid, status in statuses.items():
        if uuid not in mentioned and not status.done:
            _not_found(status, "The API does not know this task (getResponse did not mention it)")


def _percent(statuses: Iterable[TaskStatus]) -> int:
    """Overall progress: 100 per finished task, else the most the API or the images so far say."""
    shares = []
    for status in statuses:
        if status.done:
            shares.append(100.0)
            continue
        reported = status.progress if isinstance(status.progress, int) and 0 <= status.progress <= 100 else 0
        shares.append(max(float(reported), 100.0 * len(status.results) / max(1, status.expected_images)))
    return int(sum(shares) / len(shares)) if shares else 100


def wait(
    statuses: dict[str, TaskStatus],
    policy: RetryPolicy,
    poll: PollSettings,
    deadline: float | None,
    chunk_size: int = defaults.MAX_TASKS_PER_REQUEST,
) -> Flow[dict[str, TaskStatus]]:
    """
    Poll until every task in ``statuses`` is terminal or ``deadline`` passes; returns them.

    ``statuses`` is updated in place, so a caller keeps the results received so far even when
    this flow raises. ``deadline`` is a wall-clock ``time.time()`` value so it survives a
    triggerer restart; tasks still processing at the deadline are returned as they are. A
    bounded run of failed polls is tolerated (see :class:`Waiting`).
    """
    waiting = Waiting(statuses, poll, deadline, paced_log)
    while True:
        pending = waiting.pending()
        if not pending:
            return statuses
        try:
            mentioned = yield from get_status(pending, policy, chunk_size, deadline)
        except BflError as error:
            waiting.failed(error)
        else:
            waiting.polled(pending, mentioned)
        if waiting.over():
            return statuses
        yield Sleep(waiting.next_delay())


def generate(
    requests: Sequence[ImageInferenceRequest],
    policy: RetryPolicy,
    poll: PollSettings,
    deadline: float | None,
    chunk_size: int = defaults.MAX_TASKS_PER_REQUEST,
) -> Flow[dict[str, TaskStatus]]:
    """Submit and wait: every task's final status (rejected tasks included, as errors)."""
    outcome = yield from submit(requests, policy, chunk_size)
    statuses = dict(outcome.statuses)
    yield from wait(statuses, policy, poll, deadline, chunk_size)
    for uuid, error in outcome.rejected.items():
        statuses[uuid] = TaskStatus(uuid, state=TaskState.ERROR, error=error)
    return statuses
