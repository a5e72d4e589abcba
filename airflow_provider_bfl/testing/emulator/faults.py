"""Injected transport faults and scripted task outcomes: the failures tests need on demand.

Faults act on whole API POSTs (what a load balancer or a flaky network does); scripted outcomes act on
one task inside the "GPU" (what the model provider does). Both are plain data, so the HTTP control API
and the Python API build them through the same constructors and checks.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast, get_args

FaultKind = Literal[
    "status",
    "invalid_json",
    "html",
    "empty_envelope",
    "drop",
    "drop_before",
    "stall",
    "foreign_result",
    "bad_image_url",
    "nested_json",
    "huge_body",
    "gzip_bomb",
    "slow_drip",
    "missing_image_uuid",
    "insane_cost",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
StallProcessing = Literal["never", "before", "after"]
OutcomeKind = Literal["success", "error", "moderated"]

DEFAULT_STATUS_CODES = {
    401: "invalidApiKey",
    402: "insufficientCredits",
    403: "permissionDenied",
    429: "rateLimitExceeded",
    500: "internalServerError",
    502: "serviceUnavailable",
    503: "serviceUnavailable",
    504: "requestTimeout",
}
DEFAULT_STALL_SECONDS = 30.0
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")


@dataclass
class Fault:
    """The next ``count`` matching API POSTs get this fault.

    ``status``: answer ``status`` (default 503) with a Runware error body (``code``/``message``
    overridable) and a ``Retry-After: retry_after`` header when given. ``invalid_json``: 200 with a
    truncated JSON body. ``html``: ``status`` (default 502) with an HTML page. ``empty_envelope``: 200
    with ``{}``. ``drop``: read and process the request, then close without answering. ``drop_before``:
    close without processing. ``stall``: wait ``seconds``; ``process`` says whether the request is
    processed ``"before"`` or ``"after"`` the wait (then answered normally) or ``"never"`` (then
    answered 504 ``requestTimeout``). ``foreign_result``: process and answer normally, plus one
    finished image item for ``task_uuid`` (default: a fresh UUID), a task the request never asked
    about. ``bad_image_url``: process and answer normally, with every ``imageURL`` switched to the
    scheme ``url_scheme`` (default ``ftp``). The last two tamper only with answers that succeeded
    (HTTP 200). The hostile-size and hostile-content kinds: ``nested_json``: 200 with ``data`` nested
    ``depth`` lists deep. ``huge_body``: 200 with a ``size``-byte body (streamed, never held).
    ``gzip_bomb``: 200 with a small gzip body that inflates to ``size`` bytes. ``slow_drip``: process
    and answer normally, but one byte every ``interval`` seconds. ``missing_image_uuid`` /
    ``insane_cost``: process and answer normally, with ``imageUUID`` removed from every result /
    every ``cost`` set to NaN. ``only_task_type`` restricts the fault to POSTs carrying at least one task of that
    type.
    """

    kind: FaultKind
    count: int = 1
    status: int | None = None
    retry_after: float | None = None
    code: str | None = None
    message: str | None = None
    seconds: float = DEFAULT_STALL_SECONDS
    process: StallProcessing = "never"
    only_task_type: str | None = None
    task_uuid: str | None = None
    url_scheme: str = "ftp"
    depth: int = 100_000
    size: int = 300 * 1024 * 1024
    interval: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if not _is_int(self.count) or self.count < 1:
            raise ValueError("count must be a positive integer")
        if self.status is not None and (not _is_int(self.status) or not 100 <= self.status <= 599):
            raise ValueError("status must be an HTTP status code")
        if self.retry_after is not None and (not _is_number(self.retry_after) or self.retry_after < 0):
            raise ValueError("retry_after must be a non-negative number of seconds")
        if not _is_number(self.seconds) or self.seconds < 0:
            raise ValueError("seconds must be a non-negative number")
        if self.task_uuid is not None and (not isinstance(self.task_uuid, str) or not self.task_uuid):
            raise ValueError("task_uuid must be a non-empty string")
        if not _is_int(self.depth) or self.depth < 1 or not _is_int(self.size) or self.size < 1:
            raise ValueError("depth and size must be positive integers")
        if not _is_number(self.interval) or self.interval < 0:
            raise ValueError("interval must be a non-negative number of seconds")
        if not isinstance(self.url_scheme, str) or not _SCHEME.match(self.url_scheme):
            raise ValueError("url_scheme must be a URL scheme such as 'ftp' or 'file'")
        process: Any = self.process
        if process is True:
            self.process = "after"
        elif process is False:
            self.process = "never"
        elif process not in ("never", "before", "after"):
            raise ValueError("process must be 'never', 'before', 'after' or a boolean")

    @property
    def http_status(self) -> int:
        if self.status is not None:
            return self.status
        return 502 if self.kind == "html" else 503

    @property
    def error_code(self) -> str:
        return self.code or DEFAULT_STATUS_CODES.get(self.http_status, "unknownError")

    def matches(self, task_types: Iterable[str]) -> bool:
        return self.only_task_type is None or self.only_task_type in task_types

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Fault:
        """Build from a control-API JSON object (same field names as :meth:`RunwareEmulator.inject`)."""
        known = {name for name in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if "kind" not in data:
            raise ValueError("fault needs a 'kind'")
        return cls(**dict(data))


class FaultQueue:
    """FIFO of pending faults; each matching POST consumes one use of the first matching fault."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take(self, task_types: Iterable[str]) -> Fault | None:
        present = set(task_types)
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(present):
                    fault.count -= 1
                    if fault.count == 0:
                        del self._faults[index]
                    return fault
        return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return [Fault(**asdict(fault)) for fault in self._faults]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


@dataclass(frozen=True)
class ScriptedOutcome:
    """How one task ends: ``success``, ``error`` (``code``, default ``processingFailed``) or ``moderated``.

    ``http_status`` is the status of a sync response in which every task failed. ``latency``
    overrides the emulator latency for this task.
    """

    outcome: OutcomeKind = "success"
    code: str | None = None
    message: str | None = None
    http_status: int = 400
    latency: float | None = None

    def __post_init__(self) -> None:
        if self.outcome not in get_args(OutcomeKind):
            raise ValueError(f"outcome must be one of {get_args(OutcomeKind)}")
        if not _is_int(self.http_status) or not 400 <= self.http_status <= 599:
            raise ValueError("http_status must be a 4xx or 5xx status")
        if self.latency is not None and (not _is_number(self.latency) or self.latency < 0):
            raise ValueError("latency must be a non-negative number")

    @property
    def failed(self) -> bool:
        return self.outcome != "success"

    @property
    def error_code(self) -> str:
        if self.code:
            return self.code
        return "contentPolicyViolation" if self.outcome == "moderated" else "processingFailed"

    @property
    def error_message(self) -> str:
        if self.message:
            return self.message
        if self.outcome == "moderated":
            return "The request was blocked by the content moderation policy."
        return "The inference provider failed to process the task."

    @classmethod
    def build(
        cls,
        outcome: str = "error",
        *,
        code: str | None = None,
        message: str | None = None,
        fail: tuple[str, str] | None = None,
        http_status: int = 400,
        latency: float | None = None,
    ) -> ScriptedOutcome:
        """``fail=(code, message)`` is shorthand for ``outcome="error", code=..., message=...``."""
        if fail is not None:
            outcome, (code, message) = "error", fail
        return cls(
            outcome=cast(OutcomeKind, outcome),
            code=code,
            message=message,
            http_status=http_status,
            latency=latency,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
