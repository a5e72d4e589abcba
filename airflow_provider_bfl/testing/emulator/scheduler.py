"""One timer thread over a heap of due callbacks, so thousands of async tasks cost no threads each.

Used to settle (bill) tasks and fire webhook/upload pushes when an image becomes ready even if nobody
polls. Callbacks must be short and must not raise; slow work is handed to the delivery pool.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._condition = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._condition:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name="runware-emulator-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._heap.clear()
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def clear(self) -> None:
        with self._condition:
            self._heap.clear()

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the scheduler thread at monotonic time ``when``."""
        with self._condition:
            heapq.heappush(self._heap, (when, next(self._sequence), callback))
            if self._heap[0][2] is callback:
                self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopping:
                    if not self._heap:
                        self._condition.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    self._condition.wait(delay)
                if self._stopping:
                    return
                _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except Exception:
                log.exception("Runware emulator scheduled callback failed")
