"""Thread-safe tallies of what the emulator saw and billed, so tests can assert on side effects.

Edge counters (``requests``, ``requests_by_task_type``, per-task ``submissions``) count everything that
reached the server, faulted requests included: they show what a client *sent*. Processing counters
(``tasks_accepted``, ``conflicts``, billing) count what the emulated backend *did*.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskCounters:
    """Per-taskUUID tallies of imageInference submissions."""

    submissions: int = 0
    accepted: int = 0
    images_billed: int = 0


@dataclass(frozen=True)
class CountersSnapshot:
    """An immutable copy of every counter, taken under the lock."""

    requests: int = 0
    requests_by_task_type: dict[str, int] = field(default_factory=dict)
    tasks_accepted: int = 0
    images_billed: int = 0
    cost_billed: float = 0.0
    conflicts: int = 0
    tasks: dict[str, TaskCounters] = field(default_factory=dict)
    image_downloads: int = 0
    webhook_deliveries: int = 0
    webhook_failures: int = 0
    uploads: int = 0
    upload_failures: int = 0
    faults_triggered: dict[str, int] = field(default_factory=dict)
    errors_by_code: dict[str, int] = field(default_factory=dict)

    def task(self, task_uuid: str) -> TaskCounters:
        return self.tasks.get(task_uuid, TaskCounters())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Counters:
    """Live counters. Attribute reads and :meth:`snapshot` first settle tasks whose time has come,
    so a test that slept past the latency sees the billing without having polled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._before_read: Callable[[], None] | None = None
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._requests = 0
        self._by_type: Counter[str] = Counter()
        self._accepted = 0
        self._images_billed = 0
        self._cost_micro = 0
        self._conflicts = 0
        self._tasks: dict[str, list[int]] = {}
        self._downloads = 0
        self._webhooks = 0
        self._webhook_failures = 0
        self._uploads = 0
        self._upload_failures = 0
        self._faults: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()

    def set_before_read(self, hook: Callable[[], None] | None) -> None:
        self._before_read = hook

    def reset(self) -> None:
        with self._lock:
            self._reset_locked()

    # -- recording -------------------------------------------------------------------------------
    def record_request(self, task_types: Iterable[str], submitted_uuids: Iterable[str]) -> None:
        with self._lock:
            self._requests += 1
            self._by_type.update(task_types)
            for task_uuid in submitted_uuids:
                self._task_locked(task_uuid)[0] += 1

    def record_accepted(self, task_uuid: str) -> None:
        with self._lock:
            self._accepted += 1
            self._task_locked(task_uuid)[1] = 1

    def record_conflict(self) -> None:
        with self._lock:
            self._conflicts += 1

    def record_billing(self, task_uuid: str, images: int, cost_per_image: float) -> None:
        with self._lock:
            self._images_billed += images
            self._cost_micro += round(images * cost_per_image * 1_000_000)
            self._task_locked(task_uuid)[2] += images

    def record_errors(self, codes: Iterable[str]) -> None:
        with self._lock:
            self._errors.update(codes)

    def record_fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def record_download(self) -> None:
        with self._lock:
            self._downloads += 1

    def record_webhook(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self._webhooks += 1
            else:
                self._webhook_failures += 1

    def record_upload(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self._uploads += 1
            else:
                self._upload_failures += 1

    def _task_locked(self, task_uuid: str) -> list[int]:
        entry = self._tasks.get(task_uuid)
        if entry is None:
            entry = self._tasks[task_uuid] = [0, 0, 0]
        return entry

    # -- reading ---------------------------------------------------------------------------------
    def snapshot(self) -> CountersSnapshot:
        if self._before_read is not None:
            self._before_read()
        with self._lock:
            return CountersSnapshot(
                requests=self._requests,
                requests_by_task_type=dict(self._by_type),
                tasks_accepted=self._accepted,
                images_billed=self._images_billed,
                cost_billed=self._cost_micro / 1_000_000,
                conflicts=self._conflicts,
                tasks={uuid: TaskCounters(*values) for uuid, values in self._tasks.items()},
                image_downloads=self._downloads,
                webhook_deliveries=self._webhooks,
                webhook_failures=self._webhook_failures,
                uploads=self._uploads,
                upload_failures=self._upload_failures,
                faults_triggered=dict(self._faults),
                errors_by_code=dict(self._errors),
            )

    def task(self, task_uuid: str) -> TaskCounters:
        return self.snapshot().task(task_uuid)

    def billed_for(self, task_uuid: str) -> int:
        """Images billed for one taskUUID (0 when unknown)."""
        return self.task(task_uuid).images_billed

    @property
    def requests(self) -> int:
        return self.snapshot().requests

    @property
    def requests_by_task_type(self) -> dict[str, int]:
        return self.snapshot().requests_by_task_type

    @property
    def tasks_accepted(self) -> int:
        return self.snapshot().tasks_accepted

    @property
    def images_billed(self) -> int:
        return self.snapshot().images_billed

    @property
    def cost_billed(self) -> float:
        return self.snapshot().cost_billed

    @property
    def conflicts(self) -> int:
        return self.snapshot().conflicts

    @property
    def image_downloads(self) -> int:
        return self.snapshot().image_downloads

    @property
    def webhook_deliveries(self) -> int:
        return self.snapshot().webhook_deliveries

    @property
    def uploads(self) -> int:
        return self.snapshot().uploads
