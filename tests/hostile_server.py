"""
A real, hostile HTTP server on loopback: each POST is answered by a script that writes raw bytes.

The emulator behaves; this server lies, drips, bombs and echoes. A test gives it an
:data:`Answer` (a function of the request that yields the bytes to send, headers included), so a
case is a few lines and any byte sequence is possible::

    with HostileServer(drip(envelope([]), every=0.5)) as server:
        ...  # point a connection at server.base_url

Helpers build the usual answers: :func:`respond` (status, headers, body), :func:`drip` (one byte
at a time), :func:`huge` (a body streamed in chunks, never held in memory), :func:`gzip_bomb`
(a small gzip body that inflates enormously), :func:`nested` (deeply nested JSON) and
:func:`envelope` / :func:`result` for Runware-shaped payloads.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    """What the provider sent: the parsed JSON body (a task array) and the headers."""

    tasks: Any
    headers: dict[str, str]

    @property
    def task_uuids(self) -> list[str]:
        return [task.get("taskUUID") for task in self.tasks if isinstance(task, dict)]


#: A script: given the request, the byte chunks to write (status line and headers included).
Answer = Callable[[Request], Iterable[bytes]]


def head(status: int = 200, headers: dict[str, str] | None = None, length: int | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} Hostile", "Content-Type: application/json", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def respond(body: bytes | Callable[[Request], bytes], status: int = 200, **headers: str) -> Answer:
    def answer(request: Request) -> Iterator[bytes]:
        data = body(request) if callable(body) else body
        yield head(status, {k.replace("_", "-"): v for k, v in headers.items()}, len(data))
        yield data

    return answer


def drip(body: bytes | Callable[[Request], bytes], every: float = 0.5) -> Answer:
    """Headers at once, then the body one byte every ``every`` seconds (defeats per-read timeouts)."""

    def answer(request: Request) -> Iterator[bytes]:
        data = body(request) if callable(body) else body
        yield head(200, length=len(data))
        for byte in data:
            time.sleep(every)
            yield bytes([byte])

    return answer


def huge(size: int, chunk: int = 1 << 20, prefix: bytes = b'{"data": [{"pad": "') -> Answer:
    """A ``size``-byte JSON-ish body streamed chunk by chunk (the server never holds it whole)."""

    def answer(request: Request) -> Iterator[bytes]:
        yield head(200, length=size)
        yield prefix
        sent = len(prefix)
        block = b"x" * chunk
        while sent < size:
            part = block[: min(chunk, size - sent)]
            sent += len(part)
            yield part

    return answer


def gzip_bomb(inflated: int) -> Answer:
    """A gzip body (about a thousandth of ``inflated``) that inflates to ``inflated`` bytes.

    Built in milliseconds: after a full flush the compressor's output for another megabyte of
    spaces is always the same segment, so it is made once and repeated (no trailer: a client
    that reads to the end of a bomb has already lost).
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    start = compressor.compress(b'{"data": [], "pad": "') + compressor.flush(zlib.Z_FULL_FLUSH)
    segment = compressor.compress(b" " * (1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    body = start + segment * max(1, inflated >> 20)

    def answer(request: Request) -> Iterator[bytes]:
        yield head(200, {"Content-Encoding": "gzip"}, len(body))
        yield body

    answer.compressed_size = len(body)  # type: ignore[attr-defined]
    return answer


def nested(depth: int) -> bytes:
    """``{"data": [[[[...]]]]}`` nested ``depth`` lists deep."""
    return b'{"data": ' + b"[" * depth + b"]" * depth + b"}"


def envelope(data: list[dict[str, Any]] | None = None, errors: list[dict[str, Any]] | None = None) -> bytes:
    payload: dict[str, Any] = {"data": data or []}
    if errors is not None:
        payload["errors"] = errors
    return json.dumps(payload).encode()


def result(task_uuid: str, image_uuid: str | None = "auto", **fields: Any) -> dict[str, Any]:
    """One finished image item for ``task_uuid`` (``image_uuid=None`` leaves imageUUID out)."""
    item: dict[str, Any] = {
        "taskType": "imageInference",
        "taskUUID": task_uuid,
        "status": "success",
        "imageURL": "https://im.example.com/image.jpg",
    }
    if image_uuid is not None:
        item["imageUUID"] = image_uuid if image_uuid != "auto" else f"img-{task_uuid}"
    item.update(fields)
    return item


@dataclass
class HostileServer:
    """A threaded HTTP server on 127.0.0.1 answering every POST with ``answer``."""

    answer: Answer
    requests: list[Request] = field(default_factory=list)
    #: Bytes the script managed to write (the client may hang up early).
    bytes_sent: int = 0

    def __post_init__(self) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    tasks = json.loads(raw)
                except ValueError:
                    tasks = None
                request = Request(tasks, dict(self.headers.items()))
                owner.requests.append(request)
                try:
                    for chunk in owner.answer(request):
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        owner.bytes_sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass  # the client gave up: exactly what a bounded client should do
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
