"""``RunwareEmulator``: the public facade that wires config, state, server and scheduler together."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

from airflow_provider_bfl.testing.emulator import control
from airflow_provider_bfl.testing.emulator.api import TaskProcessor
from airflow_provider_bfl.testing.emulator.config import (
    AsyncErrorShape,
    EmulatorConfig,
    ImageCorruption,
    ProcessingWord,
    UnknownTaskMode,
)
from airflow_provider_bfl.testing.emulator.counters import Counters, CountersSnapshot
from airflow_provider_bfl.testing.emulator.delivery import Deliverer
from airflow_provider_bfl.testing.emulator.faults import (
    DEFAULT_STALL_SECONDS,
    Fault,
    FaultKind,
    FaultQueue,
    ScriptedOutcome,
    StallProcessing,
)
from airflow_provider_bfl.testing.emulator.journal import Journal
from airflow_provider_bfl.testing.emulator.rendering import ImageRenderer
from airflow_provider_bfl.testing.emulator.results import ResultBuilder
from airflow_provider_bfl.testing.emulator.scheduler import Scheduler
from airflow_provider_bfl.testing.emulator.server import EmulatorHTTPServer
from airflow_provider_bfl.testing.emulator.state import TaskStore

T = TypeVar("T")


class _Setting(Generic[T]):
    """Exposes one :class:`EmulatorConfig` field as a validated, runtime-settable attribute."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type) -> _Setting[T]: ...

    @overload
    def __get__(self, instance: RunwareEmulator, owner: type) -> T: ...

    def __get__(self, instance: RunwareEmulator | None, owner: type) -> T | _Setting[T]:
        if instance is None:
            return self
        value: T = getattr(instance.config, self._name)
        return value

    def __set__(self, instance: RunwareEmulator, value: T) -> None:
        instance.config.update(**{self._name: value})


class RunwareEmulator:
    """A loopback HTTP server speaking Runware's task API for ``bfl:2@1``.

    Use as a context manager (``with RunwareEmulator() as emu: ...``) or call :meth:`start` and
    :meth:`stop`. Every setting below is also a runtime-settable attribute (``emu.latency = 2.0``).
    """

    api_key = _Setting[str]()
    latency = _Setting[float]()
    nsfw_marker = _Setting[str]()
    fail_marker = _Setting[str]()
    moderation_marker = _Setting[str]()
    blank_prompt_marker = _Setting[str]()
    cost_per_image = _Setting[float]()
    default_ttl = _Setting[float]()
    result_retention = _Setting[float]()
    unknown_task_mode = _Setting[UnknownTaskMode]()
    processing_status_word = _Setting[ProcessingWord]()
    async_error_shape = _Setting[AsyncErrorShape]()
    legacy_error_key = _Setting[bool]()
    data_as_object = _Setting[bool]()
    max_tasks_per_request = _Setting[int | None]()
    initial_balance = _Setting[float]()
    delivery_attempts = _Setting[int]()
    delivery_backoff = _Setting[float]()
    delivery_timeout = _Setting[float]()
    image_corruption = _Setting[ImageCorruption]()
    image_extra_bytes = _Setting[int]()

    def __init__(
        self,
        api_key: str = "test-key",
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        nsfw_marker: str = "nsfw",
        fail_marker: str = "fail-marker",
        moderation_marker: str = "moderation-marker",
        blank_prompt_marker: str = "blank",
        cost_per_image: float = 0.04,
        default_ttl: float = 3600.0,
        result_retention: float = 86400.0,
        unknown_task_mode: UnknownTaskMode = "error",
        processing_status_word: ProcessingWord = "processing",
        async_error_shape: AsyncErrorShape = "item",
        legacy_error_key: bool = False,
        data_as_object: bool = False,
        max_tasks_per_request: int | None = None,
        initial_balance: float = 1000.0,
        delivery_attempts: int = 4,
        delivery_backoff: float = 0.2,
        delivery_timeout: float = 5.0,
        image_corruption: ImageCorruption = "none",
        image_extra_bytes: int = 0,
        random_seed: int | None = None,
        image_cache_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.config = EmulatorConfig()
        self._initial_settings: dict[str, Any] = {
            "api_key": api_key,
            "latency": latency,
            "nsfw_marker": nsfw_marker,
            "fail_marker": fail_marker,
            "moderation_marker": moderation_marker,
            "blank_prompt_marker": blank_prompt_marker,
            "cost_per_image": cost_per_image,
            "default_ttl": default_ttl,
            "result_retention": result_retention,
            "unknown_task_mode": unknown_task_mode,
            "processing_status_word": processing_status_word,
            "async_error_shape": async_error_shape,
            "legacy_error_key": legacy_error_key,
            "data_as_object": data_as_object,
            "max_tasks_per_request": max_tasks_per_request,
            "initial_balance": initial_balance,
            "delivery_attempts": delivery_attempts,
            "delivery_backoff": delivery_backoff,
            "delivery_timeout": delivery_timeout,
            "image_corruption": image_corruption,
            "image_extra_bytes": image_extra_bytes,
        }
        self.config.update(**self._initial_settings)
        self.host = host
        self._requested_port = port
        self.stopping = threading.Event()
        self.counters = Counters()
        self.journal = Journal()
        self.faults = FaultQueue()
        self.renderer = ImageRenderer(image_cache_bytes)
        self.store = TaskStore(self.config, self.counters, random.Random(random_seed))
        self.scheduler = Scheduler()
        self.deliverer = Deliverer(self.config, self.counters, self.stopping)
        self.results = ResultBuilder(self.config, self.renderer, lambda: self.origin)
        self.processor = TaskProcessor(
            self.config, self.store, self.counters, self.results, self.scheduler, self.deliverer
        )
        self.counters.set_before_read(lambda: self.store.settle(time.monotonic()))
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._lifecycle = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> RunwareEmulator:
        """Bind and serve in a daemon thread; returns once the port accepts connections."""
        with self._lifecycle:
            if self._server is not None:
                return self
            self.stopping.clear()
            server = EmulatorHTTPServer((self.host, self._port or self._requested_port), self)
            self._server = server
            self._port = int(server.server_address[1])
            self.scheduler.start()
            self._thread = threading.Thread(target=server.serve, name="runware-emulator-server", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, hang up open connections and join every thread the emulator started."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            if server is None:
                return
            self._server = self._thread = None
            self.stopping.set()
            server.stop_serving()
            if thread is not None:
                thread.join()
            server.close_connections()
            server.join_handlers(timeout=5.0)
            server.server_close()
            self.scheduler.stop()
            self.deliverer.shutdown()

    def __enter__(self) -> RunwareEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator has not been started")
        return self._port

    @property
    def origin(self) -> str:
        """``http://host:port``; image URLs are served from here."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The URL clients POST task arrays to."""
        return f"{self.origin}/v1"

    @property
    def control_url(self) -> str:
        return f"{self.origin}/_emulator"

    # -- steering ----------------------------------------------------------------------------------
    def configure(self, **settings: Any) -> None:
        """Change several settings at once (validated all-or-nothing)."""
        self.config.update(**settings)

    def inject(
        self,
        kind: FaultKind,
        count: int = 1,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        message: str | None = None,
        seconds: float | None = None,
        process: StallProcessing | bool = "never",
        only_task_type: str | None = None,
        task_uuid: str | None = None,
        url_scheme: str = "ftp",
        depth: int = 100_000,
        size: int = 300 * 1024 * 1024,
        interval: float = 0.5,
    ) -> Fault:
        """Make the next ``count`` matching ``POST /v1`` requests fail as ``kind`` (see :class:`Fault`)."""
        if isinstance(process, bool):
            process = "after" if process else "never"
        fault = Fault(
            kind=kind,
            count=count,
            status=status,
            retry_after=retry_after,
            code=code,
            message=message,
            only_task_type=only_task_type,
            seconds=DEFAULT_STALL_SECONDS if seconds is None else seconds,
            process=process,
            task_uuid=task_uuid,
            url_scheme=url_scheme,
            depth=depth,
            size=size,
            interval=interval,
        )
        self.faults.add(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def script_task(
        self,
        task_uuid: str,
        outcome: str = "error",
        *,
        code: str | None = None,
        message: str | None = None,
        fail: tuple[str, str] | None = None,
        http_status: int = 400,
        latency: float | None = None,
    ) -> None:
        """Decide how one task ends: ``"error"`` (default code ``processingFailed``), ``"moderated"``
        (``contentPolicyViolation``) or ``"success"``; none of the failures is billed."""
        scripted = ScriptedOutcome.build(
            outcome, code=code, message=message, fail=fail, http_status=http_status, latency=latency
        )
        self.store.script(task_uuid, scripted)

    def blank_next_images(self, count: int) -> None:
        """Render the next ``count`` accepted images as uniform (blank) images."""
        if count < 0:
            raise ValueError("count must be >= 0")
        self.store.blank_next_images(count)

    def lapse_issued_urls(self) -> None:
        """Every image URL issued so far answers 410, as if its ttl had passed; new tasks are unaffected."""
        self.store.lapse_issued_urls(time.monotonic())

    def forget_tasks(self, task_uuids: Iterable[str] | None = None) -> None:
        """
        getResponse stops knowing these tasks (every task so far for None) while a resubmission of
        the same taskUUID still answers ``conflictTaskUUID``: a server that lost a task's results.
        """
        self.store.forget(None if task_uuids is None else {str(uuid).lower() for uuid in task_uuids})

    def reset(self, restore_config: bool = False) -> None:
        """Forget counters, faults, tasks, scripts and images; optionally restore initial settings."""
        self.faults.clear()
        self.scheduler.clear()
        self.store.reset()
        self.counters.reset()
        self.journal.clear()
        if restore_config:
            self.config.update(**self._initial_settings)

    # -- inspection --------------------------------------------------------------------------------
    def snapshot(self) -> CountersSnapshot:
        return self.counters.snapshot()

    def received_requests(self, task_type: str | None = None) -> list[list[dict[str, Any]]]:
        """The task arrays of received API requests (those holding a ``task_type`` task when given)."""
        return self.journal.requests(task_type)

    def received_tasks(self, task_type: str | None = None) -> list[dict[str, Any]]:
        """Every received task object as sent on the wire (of ``task_type`` when given)."""
        return self.journal.tasks(task_type)

    def billed_for(self, task_uuid: str) -> int:
        """Images billed for ``task_uuid`` (0 if never billed)."""
        return self.counters.billed_for(task_uuid)

    def control(self, method: str, route: str, payload: Any) -> tuple[int, dict[str, Any]]:
        """Entry point of the HTTP control API (``/_emulator/<route>``)."""
        return control.handle(self, method, route, payload)

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"RunwareEmulator({where})"
