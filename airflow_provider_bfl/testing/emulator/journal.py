"""What the emulator received: the task arrays of recent API requests, for tests to inspect."""

from __future__ import annotations

import collections
import copy
import threading
from typing import Any


class Journal:
    """A bounded, thread-safe record of received task arrays (oldest dropped first)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._requests: collections.deque[list[dict[str, Any]]] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()

    def record(self, tasks: list[dict[str, Any]]) -> None:
        with self._lock:
            self._requests.append(copy.deepcopy(tasks))

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def requests(self, task_type: str | None = None) -> list[list[dict[str, Any]]]:
        """Received task arrays, in order; only those holding a task of ``task_type`` when given."""
        with self._lock:
            received = list(self._requests)
        if task_type is None:
            return received
        return [tasks for tasks in received if any(task.get("taskType") == task_type for task in tasks)]

    def tasks(self, task_type: str | None = None) -> list[dict[str, Any]]:
        """Every received task object, in order; only those of ``task_type`` when given."""
        return [
            task
            for tasks in self.requests(task_type)
            for task in tasks
            if task_type is None or task.get("taskType") == task_type
        ]
