"""
The one rule for a *total* deadline on an HTTP call, for the API clients (sync and async) and landing.

httpx's timeouts bound each socket operation, not the call: a server that sends one byte every
half second never trips a 60 s read timeout. Here every connect, TLS handshake, read and write of
a client built on :class:`DeadlineTransport` / :class:`AsyncDeadlineTransport` waits at most the
time left before the deadline set with :func:`total_deadline`, and fails at once when none is
left. So a call ends at its deadline whatever the server does, the header phase included, with no
watchdog thread and nothing cancelled from outside; on the async side every wait stays a socket
wait of the event loop, so the loop is never blocked.

The deadline lives in a context variable: it follows the code that set it (a thread, or an
asyncio task), never a pooled connection, so one client serves calls with different deadlines.
Proxies taken from the environment are mounted by httpx with its plain transport: through them,
the deadline holds only between body chunks (callers check :func:`deadline_passed` there too).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

_deadline: ContextVar[float | None] = ContextVar("bfl_http_deadline", default=None)
#: httpx's own default pool limits (what a client gets without a transport of its own).
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


@contextmanager
def total_deadline(seconds: float) -> Iterator[float]:
    """Every HTTP call through a deadline transport in this block ends ``seconds`` from now (monotonic end)."""
    end = time.monotonic() + seconds
    token = _deadline.set(end)
    try:
        yield end
    finally:
        _deadline.reset(token)


def deadline_passed() -> bool:
    end = _deadline.get()
    return end is not None and time.monotonic() >= end


def _clamped(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` cut to the time left before the deadline; ``error`` once none is left."""
    end = _deadline.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise error("the total deadline passed")
    return left if timeout is None else min(timeout, left)


# -- blocking ---------------------------------------------------------------------------------------


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamped(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamped(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _Stream:
        clamped = _clamped(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, clamped))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.SyncBackend):
    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        clamped = _clamped(timeout, httpcore.ConnectTimeout)
        return _Stream(super().connect_tcp(host, port, clamped, local_address, socket_options))


def _pool_options(limits: httpx.Limits, ssl_context: ssl.SSLContext) -> dict[str, Any]:
    """What httpx itself would give its connection pool (both transports rebuild theirs)."""
    return {
        "ssl_context": ssl_context,
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
    }


class DeadlineTransport(httpx.HTTPTransport):
    """
    httpx's own transport with a network backend that honours :func:`total_deadline`.

    httpx does not take a network backend, so the connection pool is rebuilt with one (the tests
    that drip a body or headers past the deadline guard this against httpx changes).
    """

    def __init__(self, *, limits: httpx.Limits = DEFAULT_LIMITS, verify: bool = True) -> None:
        ssl_context = httpx.create_ssl_context(verify=verify)  # made once, for the pool below
        super().__init__(limits=limits, verify=ssl_context)
        self._pool = httpcore.ConnectionPool(**_pool_options(limits, ssl_context), network_backend=_Backend())


# -- async ------------------------------------------------------------------------------------------


class _AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, _clamped(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, _clamped(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _AsyncStream:
        clamped = _clamped(timeout, httpcore.ConnectTimeout)
        return _AsyncStream(await self._inner.start_tls(ssl_context, server_hostname, clamped))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    """httpcore's asyncio backend (AnyIO) with every stream it opens clamped to the deadline."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        clamped = _clamped(timeout, httpcore.ConnectTimeout)
        return _AsyncStream(await self._inner.connect_tcp(host, port, clamped, local_address, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class AsyncDeadlineTransport(httpx.AsyncHTTPTransport):
    """Async twin of :class:`DeadlineTransport` (asyncio only: the triggerer's loop)."""

    def __init__(self, *, limits: httpx.Limits = DEFAULT_LIMITS, verify: bool = True) -> None:
        ssl_context = httpx.create_ssl_context(verify=verify)  # made once, for the pool below
        super().__init__(limits=limits, verify=ssl_context)
        self._pool = httpcore.AsyncConnectionPool(
            **_pool_options(limits, ssl_context), network_backend=_AsyncBackend()
        )
