"""
A realistic image host on loopback: latency per request, a bandwidth cap per connection and for the link.

A CDN far from the worker answers each request after a round trip and some processing (``latency``),
sends each connection's bytes no faster than its TCP window allows (``per_connection``) and shares
the worker's link with every other connection (``link``). This server plays that host over real
HTTP/1.1 with keep-alive, so landing's concurrency and connection reuse are measured, not assumed::

    python -m benchmarks.image_host --latency 0.08 --per-connection 2e6 --link 40e6

Every ``GET /images/<name>.png`` is answered with the same ``width`` x ``height`` PNG of about
``image_bytes`` (valid, so landing verifies and stores it). ``GET /_stats`` returns the counters as
JSON (``connections``: TCP connections that carried an image request; ``max_in_flight``: most image
requests being answered at once; ``cpu``: the process's CPU seconds so far), ``POST /_reset``
zeroes them. Rates are in bytes per second (MB = 10**6 bytes).

Pacing is debt-based: a chunk reserves its bytes on the connection's bucket, then on the link's,
and waits out the debt, so the link is shared first come, first served and never idles while a
connection has bytes it may send.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from benchmarks._common import ROOT, prepare_airflow_env, stop_process

#: Bytes written (and paced) at a time.
SEND_CHUNK = 64 * 1024
#: What a bucket may send at once after idling: one chunk (no burst beyond the cap).
BURST = SEND_CHUNK
MAX_HEADER = 16 * 1024


def sized_png(width: int, height: int, image_bytes: int, seed: int = 0) -> bytes:
    """
    A ``width`` x ``height`` PNG of close to ``image_bytes`` bytes: noise rows (incompressible) over flat ones.

    The size is tuned from one trial encoding (noise costs ~3 bytes a pixel at compress level 1),
    then nudged a row at a time; deterministic for a given ``seed``.
    """
    from PIL import Image

    noise = random.Random(seed).randbytes(width * height * 3)

    def encode(rows: int) -> bytes:
        pixels = noise[: rows * width * 3] + bytes((height - rows) * width * 3)
        buffer = io.BytesIO()
        Image.frombytes("RGB", (width, height), pixels).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    full = encode(height)
    rows = max(0, min(height, round(height * image_bytes / len(full))))
    data = encode(rows)
    step = 1 if len(data) < image_bytes else -1
    while 0 < rows + step <= height:
        candidate = encode(rows + step)
        if abs(len(candidate) - image_bytes) >= abs(len(data) - image_bytes):
            break
        rows, data = rows + step, candidate
    return data


class Bucket:
    """A byte rate with a one-chunk burst; :meth:`debt` reserves bytes and says how long to wait for them."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.level = float(BURST)
        self.stamp: float | None = None

    def debt(self, size: int, now: float) -> float:
        if self.rate <= 0:  # unlimited
            return 0.0
        if self.stamp is not None:
            self.level = min(float(BURST), self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        self.level -= size
        return max(0.0, -self.level / self.rate)


@dataclass
class Stats:
    connections: int = 0
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    bytes_sent: int = 0


class ImageHost:
    """The server (asyncio): see the module docstring."""

    def __init__(
        self,
        *,
        latency: float = 0.08,
        per_connection: float = 2e6,
        link: float = 40e6,
        width: int = 1024,
        height: int = 1024,
        image_bytes: int = 1_500_000,
    ) -> None:
        self.latency = latency
        self.per_connection = per_connection
        self.link = Bucket(link)
        self.body = sized_png(width, height, image_bytes)
        self.width, self.height = width, height
        self.stats = Stats()
        #: False: every image is answered with ``Connection: close`` and its connection closed.
        self.keep_alive = True
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> str:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", port)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bucket = Bucket(self.per_connection)
        counted = False
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                method, path, closing = _request_line(head)
                if path.startswith("/images/"):
                    if not counted:
                        counted = True
                        self.stats.connections += 1
                    await self._image(writer, bucket)
                elif path == "/_stats":
                    stats = {**asdict(self.stats), "cpu": time.process_time()}
                    _answer(writer, 200, "application/json", json.dumps(stats).encode())
                elif path == "/_reset" and method == "POST":
                    self.stats = Stats(in_flight=self.stats.in_flight)
                    _answer(writer, 200, "application/json", b"{}")
                else:
                    _answer(writer, 404, "text/plain", b"not found")
                await writer.drain()
                if closing or not self.keep_alive:
                    return
        except ConnectionError:
            return
        finally:
            writer.close()

    async def _image(self, writer: asyncio.StreamWriter, bucket: Bucket) -> None:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(self.latency)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n%sContent-Length: %d\r\n\r\n"
                % (b"" if self.keep_alive else b"Connection: close\r\n", len(self.body))
            )
            view = memoryview(self.body)
            for start in range(0, len(view), SEND_CHUNK):
                chunk = view[start : start + SEND_CHUNK]
                await asyncio.sleep(bucket.debt(len(chunk), loop.time()))
                await asyncio.sleep(self.link.debt(len(chunk), loop.time()))
                writer.write(chunk)
                await writer.drain()
                stats.bytes_sent += len(chunk)
        finally:
            stats.in_flight -= 1


def _request_line(head: bytes) -> tuple[str, str, bool]:
    """(method, path, whether the client asked to close) from a request's head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
    closing = any(line.lower().replace(" ", "") == "connection:close" for line in lines[1:])
    return method, path, closing


def _answer(writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes) -> None:
    writer.write(
        b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (status, content_type.encode(), len(body), body)
    )


@contextlib.contextmanager
def host_in_thread(**settings: Any) -> Iterator[tuple[ImageHost, str]]:
    """An :class:`ImageHost` on its own event loop in a thread (for tests): (host, origin)."""
    host = ImageHost(**settings)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="image-host", daemon=True)
    thread.start()
    try:
        origin = asyncio.run_coroutine_threadsafe(host.start(), loop).result(timeout=30)
        yield host, origin
    finally:
        asyncio.run_coroutine_threadsafe(host.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


class ImageHostProcess:
    """``python -m benchmarks.image_host`` in a child process (its own GIL), read over ``/_stats``."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.origin = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> ImageHostProcess:
        args = [f"--{name.replace('_', '-')}={value}" for name, value in self.settings.items()]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.image_host", *args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=prepare_airflow_env(),
        )
        assert self._proc.stdout is not None
        self.origin = self._proc.stdout.readline().strip()
        if not self.origin.startswith("http"):
            self.__exit__()
            raise RuntimeError("the image host did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def stats(self) -> dict[str, int]:
        body: dict[str, int] = httpx.get(f"{self.origin}/_stats", timeout=30).json()
        return body

    def reset(self) -> None:
        httpx.post(f"{self.origin}/_reset", timeout=30).raise_for_status()


async def _serve(settings: dict[str, Any]) -> None:
    host = ImageHost(**settings)
    print(await host.start(), flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.08, help="seconds before each response")
    parser.add_argument("--per-connection", type=float, default=2e6, help="bytes/s per connection")
    parser.add_argument("--link", type=float, default=40e6, help="bytes/s for all connections")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--image-bytes", type=int, default=1_500_000)
    args = parser.parse_args(argv)
    asyncio.run(_serve(vars(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
