"""Accepted tasks and their images, with state derived lazily from timestamps.

No thread runs per task: a task records when it was accepted and its latency, and every reader
computes how many images are ready *now*. Image ``i`` of ``N`` is ready at
``accepted + latency * (i + 1) / N``; a scripted failure becomes visible at ``accepted + latency``.
Billing happens once per task when it completes successfully, via :meth:`TaskStore.settle`, which any
reader (or the scheduler thread) may call.

Seeds: with a request ``seed`` S, image ``i`` gets ``(S + i) mod 2**63`` (so S itself for the first);
without one, each image draws an independent seed in ``[0, 2**32)``.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import uuid
from dataclasses import dataclass, field

from airflow_provider_bfl.testing.emulator.config import EmulatorConfig
from airflow_provider_bfl.testing.emulator.counters import Counters
from airflow_provider_bfl.testing.emulator.faults import ScriptedOutcome
from airflow_provider_bfl.testing.emulator.validation import SEED_MAX, TASK_TYPE, ImageRequest
from airflow_provider_bfl.testing.emulator.wire import ApiError

SUCCESS = ScriptedOutcome(outcome="success")
SEED_MODULUS = SEED_MAX + 1
RANDOM_SEED_LIMIT = 2**32


@dataclass
class TaskRecord:
    """One accepted imageInference task; timestamps are ``time.monotonic()`` values."""

    request: ImageRequest
    accepted_at: float
    accepted_wall: float
    latency: float
    seeds: list[int]
    image_uuids: list[str]
    blank: list[bool]
    nsfw: bool
    outcome: ScriptedOutcome
    settled: bool = False
    delivered: set[int] = field(default_factory=set)

    @property
    def task_uuid(self) -> str:
        return self.request.task_uuid

    @property
    def count(self) -> int:
        return self.request.number_results

    @property
    def completes_at(self) -> float:
        return self.accepted_at + self.latency

    def ready_at(self, index: int) -> float:
        return self.accepted_at + self.latency * (index + 1) / self.count

    def ready_count(self, now: float) -> int:
        """Images finished by ``now`` (always 0 for a task scripted to fail)."""
        if self.outcome.failed:
            return 0
        return sum(1 for index in range(self.count) if self.ready_at(index) <= now)

    def done(self, now: float) -> bool:
        return now >= self.completes_at

    def progress(self, now: float) -> int:
        if self.latency <= 0:
            return 100
        return max(0, min(99, int(100 * (now - self.accepted_at) / self.latency)))

    def image_expires_at(self, index: int, default_ttl: float) -> float:
        ttl = self.request.ttl if self.request.ttl is not None else default_ttl
        return self.ready_at(index) + ttl


class TaskStore:
    """All tasks, image UUIDs and scripts, behind one short-held lock."""

    def __init__(self, config: EmulatorConfig, counters: Counters, rng: random.Random | None = None) -> None:
        self._config = config
        self._counters = counters
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskRecord] = {}
        self._images: dict[str, tuple[TaskRecord, int]] = {}
        self._scripts: dict[str, ScriptedOutcome] = {}
        self._due: list[tuple[float, int, str]] = []
        self._sequence = itertools.count()
        self._blank_next = 0
        #: Image URLs of tasks accepted before this monotonic time answer 410 (see :meth:`lapse_issued_urls`).
        self.urls_lapsed_before = float("-inf")
        #: Tasks getResponse no longer knows although a resubmission still conflicts (see :meth:`forget`).
        self._forgotten: set[str] = set()

    def accept(self, request: ImageRequest, now: float, wall: float) -> TaskRecord | ApiError:
        """Register a validated task, or return ``conflictTaskUUID`` if its UUID was already accepted."""
        config = self._config
        prompt = request.prompt.lower()
        with self._lock:
            if request.task_uuid in self._tasks:
                self._counters.record_conflict()
                return ApiError(
                    code="conflictTaskUUID",
                    message=f"A task with taskUUID {request.task_uuid} was already submitted.",
                    parameter="taskUUID",
                    type="string",
                    task_type=TASK_TYPE,
                    task_uuid=request.task_uuid,
                )
            outcome = self._scripts.get(request.task_uuid) or _marker_outcome(prompt, config)
            count = request.number_results
            if request.seed is not None:
                seeds = [(request.seed + index) % SEED_MODULUS for index in range(count)]
            else:
                seeds = [self._rng.randrange(RANDOM_SEED_LIMIT) for _ in range(count)]
            blank_prompt = _contains(prompt, config.blank_prompt_marker)
            blank = []
            for _ in range(count):
                forced = self._blank_next > 0
                self._blank_next -= int(forced)
                blank.append(blank_prompt or forced)
            record = TaskRecord(
                request=request,
                accepted_at=now,
                accepted_wall=wall,
                latency=outcome.latency if outcome.latency is not None else config.latency,
                seeds=seeds,
                image_uuids=[str(uuid.uuid4()) for _ in range(count)],
                blank=blank,
                nsfw=request.check_content and _contains(prompt, config.nsfw_marker),
                outcome=outcome,
            )
            self._tasks[request.task_uuid] = record
            for index, image_uuid in enumerate(record.image_uuids):
                self._images[image_uuid] = (record, index)
            heapq.heappush(self._due, (record.completes_at, next(self._sequence), request.task_uuid))
            self._counters.record_accepted(request.task_uuid)
        return record

    def get(self, task_uuid: str) -> TaskRecord | None:
        with self._lock:
            return self._tasks.get(task_uuid)

    def image(self, image_uuid: str) -> tuple[TaskRecord, int] | None:
        with self._lock:
            return self._images.get(image_uuid)

    def settle(self, now: float) -> None:
        """Finalize every task completed by ``now``: bill successful ones, exactly once."""
        cost = self._config.cost_per_image
        with self._lock:
            while self._due and self._due[0][0] <= now:
                _, _, task_uuid = heapq.heappop(self._due)
                record = self._tasks.get(task_uuid)
                if record is None or record.settled:
                    continue
                record.settled = True
                if not record.outcome.failed:
                    self._counters.record_billing(task_uuid, record.count, cost)

    def script(self, task_uuid: str, outcome: ScriptedOutcome) -> None:
        """Script a task's outcome; applies to a running task too, unless it already completed."""
        with self._lock:
            record = self._tasks.get(task_uuid)
            if record is not None:
                if record.settled:
                    raise ValueError(f"task {task_uuid} already completed")
                record.outcome = ScriptedOutcome(
                    outcome=outcome.outcome,
                    code=outcome.code,
                    message=outcome.message,
                    http_status=outcome.http_status,
                    latency=record.latency,
                )
            self._scripts[task_uuid] = outcome

    def blank_next_images(self, count: int) -> None:
        """Render the next ``count`` accepted images as uniform (blank) images."""
        with self._lock:
            self._blank_next = count

    def lapse_issued_urls(self, now: float) -> None:
        """Every image URL of the tasks accepted so far expires now (later tasks are unaffected)."""
        with self._lock:
            self.urls_lapsed_before = now

    def forget(self, task_uuids: set[str] | None) -> None:
        """getResponse stops knowing these tasks (all accepted so far for None); conflicts remain."""
        with self._lock:
            self._forgotten |= set(self._tasks) if task_uuids is None else task_uuids

    def forgotten(self, task_uuid: str) -> bool:
        with self._lock:
            return task_uuid in self._forgotten

    def reset(self) -> None:
        with self._lock:
            self._tasks.clear()
            self._images.clear()
            self._scripts.clear()
            self._due.clear()
            self._blank_next = 0
            self.urls_lapsed_before = float("-inf")
            self._forgotten.clear()


def _contains(prompt_lower: str, marker: str) -> bool:
    return bool(marker) and marker.lower() in prompt_lower


def _marker_outcome(prompt_lower: str, config: EmulatorConfig) -> ScriptedOutcome:
    if _contains(prompt_lower, config.fail_marker):
        return ScriptedOutcome(outcome="error")
    if _contains(prompt_lower, config.moderation_marker):
        return ScriptedOutcome(outcome="moderated")
    return SUCCESS
