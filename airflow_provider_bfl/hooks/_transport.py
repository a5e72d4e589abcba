"""
The connection's settings and the HTTP drivers that run a flow, with every call bounded.

Shared by :class:`~airflow_provider_bfl.hooks.bfl.BflHook` and the poll coalescer (so neither
imports the other). Each API call is bounded three ways, whatever the server does:

* **Time**: a *total* deadline per call (the ``timeout`` extra, and never past the wait's own
  deadline, see :func:`call_seconds`). httpx's timeouts are per read, so a server dripping one
  byte every half second would defeat them; both clients are built on the deadline transports
  of :mod:`airflow_provider_bfl._deadline` (landing's too), which cut every socket operation to
  the time left, headers included.
* **Size**: the body is read raw and inflated here, chunk by chunk, and the call fails with
  :class:`~airflow_provider_bfl.exceptions.BflResponseTooLargeError` as soon as the *decoded*
  size passes the budget of the request (:func:`response_budget`): a 1 MB gzip body that inflates
  to 1 GB is stopped at the budget, not after inflating it.
* **Secrets**: the body is redacted (any echo of the key, whole or cut) before anything parses it.

The async driver never blocks the event loop on one answer either: an answer of
``OFF_LOOP_BYTES`` or more is joined, redacted, parsed and merged in a worker thread
(:func:`off_loop`), so a 4 MB getResponse body costs the triggerer's loop a thread hand-off, not
the seconds its parse and merge take.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx

from airflow_provider_bfl import __version__, defaults
from airflow_provider_bfl._deadline import (
    AsyncDeadlineTransport,
    DeadlineTransport,
    deadline_passed,
    total_deadline,
)
from airflow_provider_bfl._flows import Flow, PollSettings, Reply, Send, Sleep
from airflow_provider_bfl._retry import RetryPolicy
from airflow_provider_bfl.exceptions import (
    BflAuthenticationError,
    BflError,
    BflInvalidRequestError,
    BflMalformedResponseError,
    BflResponseTooLargeError,
)
from airflow_provider_bfl.hooks._redact import Redactor

if TYPE_CHECKING:
    from airflow.sdk import Connection

T = TypeVar("T")
R = TypeVar("R")

#: Answers at least this large are read (joined, redacted), parsed and merged off the event loop.
#: Below it the hand-off to a thread (~0.1 ms) costs more than the work (~0.5 ms per 64 KiB).
OFF_LOOP_BYTES = 64 * 1024
#: The same threshold in getResponse items (about 300 bytes each), for the poll coalescer's merge.
OFF_LOOP_ITEMS = OFF_LOOP_BYTES // 320


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything the hook needs from an Airflow connection, resolved once."""

    base_url: str
    api_key: str
    timeout: float
    retry: RetryPolicy
    poll: PollSettings
    max_tasks_per_request: int
    max_response_bytes_per_image: int = defaults.MAX_RESPONSE_BYTES_PER_IMAGE

    def __repr__(self) -> str:  # the key must never reach a log line through a repr
        return f"ConnectionSettings(base_url={self.base_url!r}, api_key=***)"

    @functools.cached_property
    def redactor(self) -> Redactor:
        return Redactor(self.api_key)


def _number(extra: Mapping[str, Any], key: str, default: float) -> float:
    value = extra.get(key)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BflError(f"Connection extra {key!r} must be a number, got {value!r:.80}") from None


def _base_url(conn: Connection) -> str:
    host = (conn.host or "").strip()
    if not host:
        return defaults.DEFAULT_BASE_URL
    if "://" in host:
        return host.rstrip("/")
    scheme = str(conn.extra_dejson.get("scheme") or "https")
    port = f":{conn.port}" if conn.port else ""
    path = (conn.schema or "v1").strip("/")
    return f"{scheme}://{host}{port}/{path}"


def _checked_key(conn: Connection) -> str:
    """
    The API key, refused (never stripped) when it holds anything but visible ASCII.

    A pasted trailing newline or carriage return would otherwise reach the HTTP library, whose
    error text quotes the header (escaped, so Airflow's masker misses it). Stripping would hide
    a broken secret; refusing names the connection to fix. The message never shows the key.
    """
    key = conn.password or ""
    if not key:
        raise BflAuthenticationError(
            f"Connection {conn.conn_id!r} has no API key: put the Runware API key in its password field",
            code="missingApiKey",
        )
    bad = sum(1 for char in key if not "\x21" <= char <= "\x7e")
    if bad:
        raise BflAuthenticationError(
            f"Connection {conn.conn_id!r}: the API key holds {bad} character(s) that cannot be sent "
            "in an HTTP header (whitespace such as a trailing newline or carriage return, a control "
            "or non-ASCII character); paste the key again without them (the key is not shown here)",
            code="invalidApiKey",
        )
    return key


def settings_from_connection(conn: Connection, overrides: Mapping[str, Any]) -> ConnectionSettings:
    api_key = _checked_key(conn)
    extra = {**conn.extra_dejson, **{key: value for key, value in overrides.items() if value is not None}}
    base_url = _base_url(conn)
    if urlsplit(base_url).scheme not in ("http", "https"):
        raise BflError(f"Connection {conn.conn_id!r} has a base URL that is not http(s): {base_url!r}")
    _check_limits(conn.conn_id, extra)
    return ConnectionSettings(
        base_url=base_url,
        api_key=api_key,
        timeout=_number(extra, "timeout", defaults.REQUEST_TIMEOUT),
        retry=RetryPolicy(
            max_retries=int(_number(extra, "max_retries", defaults.MAX_RETRIES)),
            max_elapsed=_number(extra, "retry_max_elapsed", defaults.RETRY_MAX_ELAPSED),
            backoff_base=_number(extra, "retry_backoff_base", defaults.BACKOFF_BASE),
            backoff_max=_number(extra, "retry_backoff_max", defaults.BACKOFF_MAX),
        ),
        poll=PollSettings(
            interval=_number(extra, "poll_interval", defaults.POLL_INTERVAL),
            max_interval=_number(extra, "poll_max_interval", defaults.POLL_MAX_INTERVAL),
            max_failures=int(_number(extra, "max_poll_failures", defaults.MAX_POLL_FAILURES)),
            steady_polls=int(_number(extra, "poll_steady_polls", defaults.POLL_STEADY_POLLS)),
            progress_interval=_number(extra, "progress_log_interval", defaults.PROGRESS_LOG_INTERVAL),
        ),
        max_tasks_per_request=int(_number(extra, "max_tasks_per_request", defaults.MAX_TASKS_PER_REQUEST)),
        max_response_bytes_per_image=int(
            _number(extra, "max_response_bytes_per_image", defaults.MAX_RESPONSE_BYTES_PER_IMAGE)
        ),
    )


#: Connection extra -> (lowest allowed value, whether that value itself is allowed).
_MINIMUMS: dict[str, tuple[float, bool]] = {
    "timeout": (0, False),
    "poll_interval": (0, False),  # 0 would poll in a hot loop
    "poll_max_interval": (0, False),
    "retry_max_elapsed": (0, False),
    "max_retries": (0, True),
    "max_poll_failures": (0, True),
    "retry_backoff_base": (0, True),
    "retry_backoff_max": (0, True),
    "max_tasks_per_request": (1, True),
    "max_response_bytes_per_image": (1024, True),
    "progress_log_interval": (0, False),
}


def _check_limits(conn_id: str, extra: Mapping[str, Any]) -> None:
    """Refuse settings that would make the client misbehave, naming the extra and the rule."""
    for key, (lowest, inclusive) in _MINIMUMS.items():
        if extra.get(key) in (None, ""):
            continue
        value = _number(extra, key, lowest)
        if not math.isfinite(value) or value < lowest or (value == lowest and not inclusive):
            rule = f"{'>=' if inclusive else '>'} {lowest:g}"
            raise BflInvalidRequestError(
                f"Connection {conn_id!r}: {key} must be {rule}, got {extra[key]!r:.80}", parameter=key
            )


def client_options(settings: ConnectionSettings) -> dict[str, Any]:
    """
    Keyword arguments of the hook's HTTP clients (sync and async alike; see :func:`new_client`).

    The key rides in the client's default headers, set once (httpx shows it as ``[secure]`` in
    any repr), instead of being merged into every request. Only encodings this module can inflate
    under a size cap are offered.
    """
    return {
        "timeout": _timeout(settings.timeout),
        "headers": {
            "User-Agent": f"airflow-provider-bfl/{__version__}",
            "Content-Type": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "Authorization": f"Bearer {settings.api_key}",
        },
    }


def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(defaults.CONNECT_TIMEOUT, seconds))


# -- budgets ------------------------------------------------------------------------------------


def response_budget(settings: ConnectionSettings, send: Send) -> int:
    """
    Decoded bytes a request may legitimately get back: a fixed envelope allowance, a little per
    task, and ``max_response_bytes_per_image`` (connection extra) per image it can return.
    """
    per_task = defaults.RESPONSE_BYTES_PER_TASK * len(send.tasks)
    return defaults.RESPONSE_ENVELOPE_BYTES + per_task + send.images * settings.max_response_bytes_per_image


def call_seconds(settings: ConnectionSettings, send: Send) -> float:
    """
    Seconds this call may take in all (its total deadline, enforced by :mod:`airflow_provider_bfl._deadline`).

    At most ``timeout`` seconds, and never past the wait's deadline, except that a call starting
    at that deadline (within ``LAST_POLL_WINDOW`` of it, or after it) gets ``LAST_POLL_GRACE``
    seconds: the last poll of a wait is made at its deadline, to report the images finished
    meanwhile.
    """
    seconds = settings.timeout
    if send.deadline is not None:
        until_wait_deadline = send.deadline - time.time()
        if until_wait_deadline < defaults.LAST_POLL_WINDOW:
            until_wait_deadline = defaults.LAST_POLL_GRACE  # the last poll, made at the deadline
        seconds = min(seconds, until_wait_deadline)
    return seconds


class _Body:
    """A response body collected raw and inflated here, failing as soon as it passes ``limit``."""

    __slots__ = ("_inflater", "_parts", "limit", "size", "status_code", "wire_bytes")

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self.limit = limit
        self.status_code = response.status_code
        self.size = 0
        self.wire_bytes = 0
        self._parts: list[bytes] = []
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            self._inflater = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
        else:
            raise BflMalformedResponseError(
                f"The API answered with a content encoding that was not offered: {encoding[:40]!r}",
                status_code=response.status_code,
            )

    def feed(self, data: bytes) -> None:
        self.wire_bytes += len(data)
        if self._inflater is None:
            self._keep(data)
            return
        try:
            while data:
                # Never inflate more than one byte past the budget, whatever the ratio.
                self._keep(self._inflater.decompress(data, self.limit - self.size + 1))
                data = self._inflater.unconsumed_tail
        except zlib.error as exc:
            raise BflMalformedResponseError(
                f"The API answered with a compressed body that cannot be inflated: {exc}",
                status_code=self.status_code,
            ) from None

    def content(self) -> bytes:
        if self._inflater is not None:
            try:
                self._keep(self._inflater.flush())
            except zlib.error as exc:
                raise BflMalformedResponseError(
                    f"The API answered with a compressed body that cannot be inflated: {exc}",
                    status_code=self.status_code,
                ) from None
        return b"".join(self._parts)

    def _keep(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise BflResponseTooLargeError(
                f"The API's answer is larger than the {self.limit}-byte limit of this request (decoded "
                f"size; raise the connection extra max_response_bytes_per_image if it is legitimate); "
                f"stopped after reading {self.wire_bytes} bytes",
                status_code=self.status_code,
            )
        self._parts.append(data)


def _reply(response: httpx.Response, body: _Body, settings: ConnectionSettings) -> Reply:
    return Reply(response.status_code, response.headers, settings.redactor.body(body.content()))


# -- drivers ----------------------------------------------------------------------------------------


def new_client(settings: ConnectionSettings) -> httpx.Client:
    """The blocking API client: every call through it honours :func:`total_deadline`."""
    return httpx.Client(transport=DeadlineTransport(), **client_options(settings))


def new_async_client(settings: ConnectionSettings) -> httpx.AsyncClient:
    """The async API client (triggerer): every call through it honours :func:`total_deadline`."""
    return httpx.AsyncClient(transport=AsyncDeadlineTransport(), **client_options(settings))


def _timed_out(seconds: float) -> httpx.ReadTimeout:
    return httpx.ReadTimeout(f"no complete answer within the call's total deadline of {seconds:.1f}s")


def post(client: httpx.Client, settings: ConnectionSettings, send: Send) -> Reply:
    """
    One POST with blocking I/O, over by its total deadline (:func:`call_seconds`); raises
    ``httpx.TransportError`` (timeouts included). ``client`` is made by :func:`new_client`.
    """
    seconds = call_seconds(settings, send)
    budget = response_budget(settings, send)
    with total_deadline(seconds):
        try:
            request = client.build_request(
                "POST", settings.base_url, json=send.tasks, timeout=_timeout(seconds)
            )
            response = client.send(request, stream=True)
            try:
                body = _Body(response, budget)
                for chunk in response.iter_raw():
                    body.feed(chunk)
                    if deadline_passed():  # a proxied connection has no per-read clamp
                        raise _timed_out(seconds)
                return _reply(response, body, settings)
            finally:
                response.close()
        except httpx.TransportError:
            if deadline_passed():
                raise _timed_out(seconds) from None
            raise


async def apost(client: httpx.AsyncClient, settings: ConnectionSettings, send: Send) -> Reply:
    """Async twin of :func:`post` (``client`` made by :func:`new_async_client`); never blocks the loop."""
    seconds = call_seconds(settings, send)
    budget = response_budget(settings, send)
    with total_deadline(seconds):
        try:
            request = client.build_request(
                "POST", settings.base_url, json=send.tasks, timeout=_timeout(seconds)
            )
            response = await client.send(request, stream=True)
            try:
                body = _Body(response, budget)
                async for chunk in response.aiter_raw():
                    body.feed(chunk)
                    if deadline_passed():
                        raise _timed_out(seconds)
                return await off_loop(body.size >= OFF_LOOP_BYTES, _reply, response, body, settings)
            finally:
                await response.aclose()
        except httpx.TransportError:
            if deadline_passed():
                raise _timed_out(seconds) from None
            raise


def _cleaned(error: BflError, redactor: Redactor) -> BflError:
    """``error`` with any echo of the key removed from its message (a new error; never mutated)."""
    message = redactor.text(error.message)
    return error if message == error.message else error.with_context(message=message)


def run_flow(client: httpx.Client, settings: ConnectionSettings, flow: Flow[T]) -> T:
    """Run a flow with blocking I/O on ``client`` (made with :func:`new_client`)."""
    reply: Any = None
    try:
        while True:
            action = flow.send(reply)
            if isinstance(action, Sleep):
                time.sleep(action.seconds)
                reply = None
                continue
            try:
                reply = post(client, settings, action)
            except httpx.TransportError as exc:
                reply = exc
    except StopIteration as done:
        return done.value
    except BflError as exc:
        raise _cleaned(exc, settings.redactor) from exc.__cause__
    finally:
        flow.close()


async def off_loop(large: bool, work: Callable[..., R], *args: Any) -> R:
    """``work(*args)``: in a worker thread when ``large`` (the event loop goes on meanwhile), else inline."""
    if large:
        return await asyncio.to_thread(work, *args)
    return work(*args)


def _resume(flow: Flow[T], reply: Any) -> tuple[bool, Any]:
    """
    Send ``reply`` into ``flow``: ``(True, its result)`` once it returned, else ``(False, its next action)``.

    The flow's ``StopIteration`` is caught here because it cannot cross a thread's future.
    """
    try:
        return False, flow.send(reply)
    except StopIteration as done:
        return True, done.value


async def arun_flow(client: httpx.AsyncClient, settings: ConnectionSettings, flow: Flow[T]) -> T:
    """Run a flow with async I/O on ``client`` (made with :func:`new_async_client`); never blocks the loop."""
    reply: Any = None
    try:
        while True:
            large = isinstance(reply, Reply) and len(reply.content) >= OFF_LOOP_BYTES
            finished, action = await off_loop(large, _resume, flow, reply)
            if finished:
                return action
            if isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
                reply = None
                continue
            try:
                reply = await apost(client, settings, action)
            except httpx.TransportError as exc:
                reply = exc
    except BflError as exc:
        raise _cleaned(exc, settings.redactor) from exc.__cause__
    finally:
        # Cancelled while the flow runs in a worker thread: it stops at its next yield there.
        with contextlib.suppress(ValueError):
            flow.close()
