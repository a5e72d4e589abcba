"""
A total deadline for blocking HTTP calls.

httpx's timeouts bound each socket operation, not the call: a server that sends one byte every
half second never trips a 60 s read timeout, and a 12-byte image takes as long as the server
likes. :class:`DeadlineTransport` gives every connect, read and write at most the time left
before the deadline set with :func:`total_deadline`, so the call fails at the deadline whatever
the server does (headers included).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

_deadline: ContextVar[float | None] = ContextVar("bfl_http_deadline", default=None)


@contextmanager
def total_deadline(seconds: float) -> Iterator[float]:
    """Every HTTP call through a :class:`DeadlineTransport` in this block ends ``seconds`` from now."""
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


class DeadlineTransport(httpx.HTTPTransport):
    """
    httpx's own transport with a network backend that honours :func:`total_deadline`.

    httpx does not take a network backend, so the connection pool is rebuilt with one (the test
    that drips a body past the deadline guards this against httpx changes). Proxies from the
    environment are mounted by httpx with its plain transport: through them, the deadline is
    checked between body chunks only.
    """

    def __init__(self, *, limits: httpx.Limits, verify: bool = True) -> None:
        super().__init__(limits=limits, verify=verify)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(),
        )
