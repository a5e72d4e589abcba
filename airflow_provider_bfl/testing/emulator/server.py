"""The HTTP layer: a stdlib threading server with keep-alive, image downloads and fault playback.

The stdlib server is used on purpose: a thread per connection makes "read the body, then hang up" and
"stall before answering" trivial and exact, starts in milliseconds and needs no dependency. The accept
loop waits on the listening socket and a wake-up socket, so :meth:`EmulatorHTTPServer.stop_serving`
returns at once instead of after a poll interval, and every open keep-alive connection is shut down on
stop so no handler thread is left blocked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import selectors
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_bfl.testing.emulator import tampering
from airflow_provider_bfl.testing.emulator.api import ApiResponse, ParsedBody, PendingResponse, parse_body
from airflow_provider_bfl.testing.emulator.faults import Fault
from airflow_provider_bfl.testing.emulator.rendering import EXTENSIONS, MIME_TYPES
from airflow_provider_bfl.testing.emulator.wire import JSON_TYPE, ApiError, dumps, envelope

if TYPE_CHECKING:
    from airflow_provider_bfl.testing.emulator.emulator import RunwareEmulator

log = logging.getLogger(__name__)

API_PATHS = ("/v1", "/v1/")
CONTROL_PREFIX = "/_emulator/"
MAX_BODY_BYTES = 64 * 1024 * 1024
IDLE_TIMEOUT = 300.0
_IMAGE_PATH = re.compile(r"^/images/([0-9a-fA-F-]{36})\.([a-z]+)$")
TRUNCATED_JSON = b'{"data":[{"taskType":"imageInference","taskUUID":"'
_ZEROS = bytes(1024 * 1024)
NOT_AN_IMAGE_PAGE = (
    b"<html><head><title>Image unavailable</title></head>"
    b"<body><h1>This image is unavailable</h1></body></html>"
)
HTML_PAGE = (
    "<html>\r\n<head><title>{status} Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>{status} Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # the stdlib does not track daemon threads; see join_handlers
    request_queue_size = 4096
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: RunwareEmulator) -> None:
        self.emulator = emulator
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._handlers: list[threading.Thread] = []
        self._reap_at = 64
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._serving = threading.Event()
        try:
            super().__init__(address, EmulatorRequestHandler)
        except BaseException:
            self._wake_reader.close()
            self._wake_writer.close()
            raise

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def serve(self) -> None:
        """Accept connections until :meth:`stop_serving`; each one gets a daemon handler thread."""
        self.socket.setblocking(False)
        self._serving.set()
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_reader:
                        return
                    self._accept()

    def _accept(self) -> None:
        try:
            request, client_address = self.get_request()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            log.debug("Runware emulator accept failed", exc_info=True)
            return
        request.setblocking(True)
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def stop_serving(self) -> None:
        self._wake_writer.send(b"x")

    def process_request(self, request: Any, client_address: Any) -> None:
        """One daemon thread per connection, remembered so :meth:`join_handlers` can wait for it."""
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="runware-emulator-connection",
            daemon=True,
        )
        with self._connections_lock:
            self._connections.add(request)
            if len(self._handlers) >= self._reap_at:
                self._handlers = [handler for handler in self._handlers if handler.is_alive()]
                self._reap_at = max(64, 2 * len(self._handlers))
            self._handlers.append(thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up every open connection so handler threads blocked on reads or writes return."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout: float) -> None:
        """Wait for every connection thread (call after :meth:`close_connections`)."""
        deadline = time.monotonic() + timeout
        with self._connections_lock:
            handlers, self._handlers = self._handlers, []
        for handler in handlers:
            handler.join(max(0.0, deadline - time.monotonic()))

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("Runware emulator: error while handling %s", client_address, exc_info=True)


class EmulatorRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "RunwareEmulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    wbufsize = -1
    timeout = IDLE_TIMEOUT
    server: EmulatorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("Runware emulator %s - %s", self.address_string(), format % args)

    @property
    def emulator(self) -> RunwareEmulator:
        return self.server.emulator

    # -- routing -----------------------------------------------------------------------------------
    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path in API_PATHS:
            self._api()
        elif path.startswith(CONTROL_PREFIX):
            self._control("POST", path)
        else:
            self._read_body()
            self._send_json(404, {"errors": [{"code": "notFound", "message": f"No endpoint {path}"}]})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith(CONTROL_PREFIX):
            self._control("GET", path)
        elif path.startswith("/images/"):
            self._image(head=False)
        else:
            self._send_json(404, {"errors": [{"code": "notFound", "message": f"No endpoint {path}"}]})

    def do_HEAD(self) -> None:
        if urlsplit(self.path).path.startswith("/images/"):
            self._image(head=True)
        else:
            self._send(404, b"", "text/plain", head=True)

    def do_DELETE(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith(CONTROL_PREFIX):
            self._control("DELETE", path)
        else:
            self._send_json(404, {"errors": [{"code": "notFound", "message": f"No endpoint {path}"}]})

    # -- the task API ------------------------------------------------------------------------------
    def _api(self) -> None:
        """Serve one task-API POST; an emulator bug becomes a 500 ``internalServerError``, not a hang-up."""
        try:
            self._serve_api()
        except OSError:
            raise
        except Exception:
            log.exception("Runware emulator failed to handle a request")
            self.close_connection = True
            error = ApiError(code="internalServerError", message="The emulator failed on this request.")
            self._send_api(ApiResponse(500, envelope(None, [error], self.emulator.config)))

    def _serve_api(self) -> None:
        emulator = self.emulator
        raw = self._read_body()
        if raw is None:
            return
        parsed = parse_body(raw, emulator.config.max_tasks_per_request)
        emulator.counters.record_request(parsed.task_types, parsed.submitted_uuids)
        if parsed.tasks:
            emulator.journal.record(parsed.tasks)
        fault = emulator.faults.take(parsed.task_types)
        if fault is None:
            self._answer(self._submit(parsed))
            return
        emulator.counters.record_fault(fault.kind)
        self._play(fault, parsed)

    def _submit(self, parsed: ParsedBody) -> PendingResponse:
        return self.emulator.processor.submit(self.headers.get("Authorization"), parsed)

    def _answer(
        self,
        pending: PendingResponse,
        tamper: Callable[[ApiResponse], ApiResponse] | None = None,
        drip: float | None = None,
    ) -> None:
        """Wait (interruptibly) for the sync tasks of the request, then answer (through ``tamper``).

        ``drip``: write the body one byte every ``drip`` seconds (a slow-drip answer).
        """
        stopping = self.emulator.stopping
        while (delay := pending.wait_until - time.monotonic()) > 0:
            if stopping.wait(delay):
                self.close_connection = True
                break
        response = pending.finish()
        response = response if tamper is None else tamper(response)
        if drip is None:
            self._send_api(response)
            return
        body = dumps(response.body)
        self.close_connection = True
        self.send_response(response.status)
        self.send_header("Content-Type", JSON_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        for index in range(len(body)):
            if stopping.wait(drip):
                break
            self.wfile.write(body[index : index + 1])
            self.wfile.flush()

    def _play(self, fault: Fault, parsed: ParsedBody) -> None:
        config = self.emulator.config
        kind = fault.kind
        if kind == "status":
            error = ApiError(code=fault.error_code, message=fault.message or _reason(fault.http_status))
            headers = {} if fault.retry_after is None else {"Retry-After": format(fault.retry_after, "g")}
            self._send_api(ApiResponse(fault.http_status, envelope(None, [error], config), headers))
        elif kind == "invalid_json":
            self._send(200, TRUNCATED_JSON, JSON_TYPE)
        elif kind == "html":
            self._send(fault.http_status, HTML_PAGE.format(status=fault.http_status).encode(), "text/html")
        elif kind == "empty_envelope":
            self._send(200, b"{}", JSON_TYPE)
        elif kind == "drop":
            self._submit(parsed)  # accepted and running: only the answer is lost
            self.close_connection = True
        elif kind == "drop_before":
            self.close_connection = True
        elif kind == "foreign_result":
            origin = self.emulator.origin
            self._answer(
                self._submit(parsed), lambda r: tampering.with_foreign_result(r, origin, fault.task_uuid)
            )
        elif kind == "bad_image_url":
            self._answer(self._submit(parsed), lambda r: tampering.with_bad_image_urls(r, fault.url_scheme))
        elif kind == "missing_image_uuid":
            self._answer(self._submit(parsed), tampering.without_image_uuids)
        elif kind == "insane_cost":
            self._answer(self._submit(parsed), tampering.with_nan_costs)
        elif kind == "nested_json":
            self._send(200, tampering.nested_json(fault.depth), JSON_TYPE)
        elif kind == "huge_body":
            prefix = b'{"data": [], "pad": "'
            self._send(200, prefix, JSON_TYPE, padding=max(0, fault.size - len(prefix)))
        elif kind == "gzip_bomb":
            self._send(200, tampering.gzip_bomb(fault.size), JSON_TYPE, {"Content-Encoding": "gzip"})
        elif kind == "slow_drip":
            self._answer(self._submit(parsed), drip=fault.interval)
        else:
            self._stall(fault, parsed)

    def _stall(self, fault: Fault, parsed: ParsedBody) -> None:
        stopping = self.emulator.stopping
        pending = self._submit(parsed) if fault.process == "before" else None
        if stopping.wait(fault.seconds):
            self.close_connection = True
            return
        if fault.process == "after":
            pending = self._submit(parsed)
        if pending is not None:
            self._answer(pending)
            return
        error = ApiError(code=fault.code or "requestTimeout", message=fault.message or "Gateway timeout.")
        self._send_api(ApiResponse(504, envelope(None, [error], self.emulator.config)))

    def _send_api(self, response: ApiResponse) -> None:
        self._send(response.status, dumps(response.body), JSON_TYPE, response.headers)

    # -- images ------------------------------------------------------------------------------------
    def _image(self, head: bool) -> None:
        emulator = self.emulator
        match = _IMAGE_PATH.match(urlsplit(self.path).path)
        found = emulator.store.image(match.group(1).lower()) if match else None
        if match is None or found is None:
            self._send(404, b"Not Found", "text/plain", head=head)
            return
        record, index = found
        output_format = record.request.output_format
        now = time.monotonic()
        if (
            match.group(2) != EXTENSIONS[output_format]
            or record.outcome.failed
            or now < record.ready_at(index)
        ):
            self._send(404, b"Not Found", "text/plain", head=head)
            return
        if (
            now >= record.image_expires_at(index, emulator.config.default_ttl)
            or record.accepted_at < emulator.store.urls_lapsed_before
        ):
            self._send(410, b"Gone: the image URL expired", "text/plain", head=head)
            return
        data = emulator.results.image_bytes(record, index)
        if not head:
            emulator.counters.record_download()
        body, content_type = served_image(data, MIME_TYPES[output_format], emulator.config.image_corruption)
        headers = {"Cache-Control": "private, max-age=60"}
        self._send(200, body, content_type, headers, head=head, padding=emulator.config.image_extra_bytes)

    # -- control API -------------------------------------------------------------------------------
    def _control(self, method: str, path: str) -> None:
        payload: Any = None
        if method == "POST":
            raw = self._read_body()
            if raw is None:
                return
            try:
                payload = json.loads(raw) if raw.strip() else {}
            except ValueError:
                self._send_json(400, {"error": "the control body must be JSON"})
                return
        status, body = self.emulator.control(method, path[len(CONTROL_PREFIX) :], payload)
        self._send_json(status, body)

    # -- plumbing ----------------------------------------------------------------------------------
    def _read_body(self) -> bytes | None:
        """The request body, or ``None`` after answering an unusable one (or when the peer left)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(
                413 if length > 0 else 400,
                {"errors": [{"code": "invalidRequestBody", "message": "Bad Content-Length."}]},
            )
            return None
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            self.close_connection = True
            return None
        return data

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                return None
            total += size
            if total > MAX_BODY_BYTES:
                self.close_connection = True
                return None
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass
                return b"".join(chunks)
            chunk = self.rfile.read(size)
            self.rfile.readline(8)
            if len(chunk) < size:
                self.close_connection = True
                return None
            chunks.append(chunk)

    def _send_json(self, status: int, body: Any) -> None:
        self._send(status, dumps(body), JSON_TYPE)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        head: bool = False,
        padding: int = 0,
    ) -> None:
        """Answer; ``padding`` zero bytes follow ``body`` (streamed, to make oversized bodies cheaply)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) + padding))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        self.wfile.write(body)
        while padding > 0:
            chunk = min(padding, len(_ZEROS))
            self.wfile.write(_ZEROS[:chunk])
            padding -= chunk


def served_image(data: bytes, content_type: str, corruption: str) -> tuple[bytes, str]:
    """The body and Content-Type ``GET /images/...`` serves for an image, per ``image_corruption``."""
    if corruption == "html":  # a CDN's error page served with 200
        return NOT_AN_IMAGE_PAGE, "text/html"
    if corruption == "garbage":  # same length and Content-Type, but no image signature or structure
        return (b"\x00garbage" + random.Random(len(data)).randbytes(len(data)))[: len(data)], content_type
    if corruption == "truncated":
        return data[: len(data) // 2], content_type
    return data, content_type


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
