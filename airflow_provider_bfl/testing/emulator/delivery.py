"""Webhook POSTs and upload PUTs, sent from a small lazily created thread pool with retries.

The stdlib HTTP client is used (Pillow is the emulator's only third-party dependency) through an
opener without proxy handling, since targets are usually test servers on loopback.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from airflow_provider_bfl.testing.emulator.config import EmulatorConfig
from airflow_provider_bfl.testing.emulator.counters import Counters

log = logging.getLogger(__name__)
MAX_WORKERS = 16
USER_AGENT = "runware-emulator/1.0"


class Deliverer:
    def __init__(self, config: EmulatorConfig, counters: Counters, stopping: threading.Event) -> None:
        self._config = config
        self._counters = counters
        self._stopping = stopping
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def webhook(self, url: str, body: Callable[[], bytes]) -> None:
        """POST a JSON body (built on the pool thread); counted in ``webhook_deliveries`` / ``_failures``."""
        self._submit("POST", url, body, "application/json", self._counters.record_webhook)

    def upload(self, url: str, body: Callable[[], bytes], content_type: str) -> None:
        """PUT raw bytes (rendered on the pool thread); counted in ``uploads`` / ``upload_failures``."""
        with self._lock:
            if self._config.lose_uploads > 0:  # lost on the way: counted nowhere, as a real loss would be
                self._config.lose_uploads -= 1
                return
        self._submit("PUT", url, body, content_type, self._counters.record_upload)

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _submit(
        self,
        method: str,
        url: str,
        body: Callable[[], bytes],
        content_type: str,
        record: Callable[[bool], None],
    ) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="runware-emulator-delivery")
            self._pool.submit(self._send, method, url, body, content_type, record)

    def _send(
        self,
        method: str,
        url: str,
        body: Callable[[], bytes],
        content_type: str,
        record: Callable[[bool], None],
    ) -> None:
        try:
            data = body()
        except Exception:
            log.exception("Runware emulator could not build the %s body for %s", method, url)
            record(False)
            return
        attempts = self._config.delivery_attempts
        for attempt in range(attempts):
            if self._attempt(method, url, data, content_type):
                record(True)
                return
            if attempt + 1 < attempts and self._stopping.wait(self._config.delivery_backoff * 2**attempt):
                break
        record(False)

    def _attempt(self, method: str, url: str, data: bytes, content_type: str) -> bool:
        request = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={"Content-Type": content_type, "User-Agent": USER_AGENT},
        )
        try:
            with self._opener.open(request, timeout=self._config.delivery_timeout) as response:
                response.read()
                return 200 <= response.status < 300
        except urllib.error.HTTPError as error:
            error.close()
            log.debug("Runware emulator %s %s answered %s", method, url, error.code)
        except (OSError, ValueError) as error:
            log.debug("Runware emulator %s %s failed: %s", method, url, error)
        return False
