"""Webhook POSTs and upload PUTs, received by a tiny HTTP server started by the test."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image


@dataclass
class Received:
    method: str
    path: str
    content_type: str
    body: bytes


class Receiver:
    """Records every request; answers 500 to the first ``fail_first`` of them."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.fail_first = 0
        self._calls = 0
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver._calls += 1
                    failing = receiver._calls <= receiver.fail_first
                    if not failing:
                        receiver.received.append(
                            Received(self.command, self.path, self.headers.get("Content-Type", ""), body)
                        )
                    receiver._lock.notify_all()
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = _record
            do_PUT = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        with self._lock:
            assert self._lock.wait_for(lambda: len(self.received) >= count, timeout), self.received
            return list(self.received)

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls


def eventually(predicate: Any, timeout: float = 5.0) -> bool:
    """Counters are bumped after the receiver answered, so give the emulator a moment."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver._thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()
    receiver._thread.join()


def test_webhook_receives_one_post_per_image(api: Any, make_task: Any, receiver: Receiver) -> None:
    task = make_task(
        numberResults=2, seed=11, includeCost=True, webhookURL=f"{receiver.url}/hook?token=s3cret"
    )
    data = api.post([task]).json()["data"]
    received = receiver.wait_for(2)
    assert all(r.method == "POST" and r.path == "/hook?token=s3cret" for r in received)
    assert all(r.content_type == "application/json" for r in received)
    payloads = sorted((json.loads(r.body) for r in received), key=lambda body: body["data"][0]["seed"])
    assert [len(body["data"]) for body in payloads] == [1, 1]
    assert [body["data"][0] for body in payloads] == data
    assert eventually(lambda: api.emu.counters.webhook_deliveries == 2)


def test_async_webhook_fires_without_polling(api: Any, make_task: Any, receiver: Receiver) -> None:
    api.emu.latency = 0.3
    task = make_task(deliveryMethod="async", webhookURL=f"{receiver.url}/hook")
    api.post([task])
    assert receiver.calls == 0, "no push before the image is ready"
    (received,) = receiver.wait_for(1)
    item = json.loads(received.body)["data"][0]
    assert item["taskUUID"] == task["taskUUID"] and item["imageURL"]
    assert api.emu.counters.requests == 1, "nobody polled"


def test_webhook_is_retried_after_non_2xx(api: Any, make_task: Any, receiver: Receiver) -> None:
    api.emu.delivery_backoff = 0.01
    receiver.fail_first = 2
    api.post([make_task(webhookURL=f"{receiver.url}/hook")])
    receiver.wait_for(1)
    assert receiver.calls == 3
    assert eventually(lambda: api.emu.counters.webhook_deliveries == 1)


def test_webhook_gives_up_after_the_attempt_limit(api: Any, make_task: Any, receiver: Receiver) -> None:
    api.emu.configure(delivery_backoff=0.01, delivery_attempts=2)
    receiver.fail_first = 100
    api.post([make_task(webhookURL=f"{receiver.url}/hook")])
    assert eventually(lambda: api.emu.counters.snapshot().webhook_failures == 1)
    assert receiver.calls == 2
    assert api.emu.counters.webhook_deliveries == 0


def test_failed_task_webhook_carries_the_error(api: Any, make_task: Any, receiver: Receiver) -> None:
    task = make_task(positivePrompt="fail-marker", webhookURL=f"{receiver.url}/hook")
    api.post([task])
    (received,) = receiver.wait_for(1)
    error = json.loads(received.body)["errors"][0]
    assert error["code"] == "processingFailed" and error["taskUUID"] == task["taskUUID"]


@pytest.mark.parametrize(("output_format", "mime"), [("PNG", "image/png"), ("WEBP", "image/webp")])
def test_upload_endpoint_receives_raw_image_bytes(
    api: Any, make_task: Any, receiver: Receiver, output_format: str, mime: str
) -> None:
    task = make_task(
        outputFormat=output_format, width=288, height=320, uploadEndpoint=f"{receiver.url}/bucket/a.img"
    )
    api.post([task])
    (received,) = receiver.wait_for(1)
    assert received.method == "PUT" and received.path == "/bucket/a.img"
    assert received.content_type == mime
    image = Image.open(io.BytesIO(received.body))
    assert image.size == (288, 320) and image.format == output_format
    assert eventually(lambda: api.emu.counters.uploads == 1)


def test_webhook_and_upload_together_for_async_batches(api: Any, make_task: Any, receiver: Receiver) -> None:
    api.emu.latency = 0.1
    task = make_task(
        deliveryMethod="async",
        numberResults=3,
        webhookURL=f"{receiver.url}/hook",
        uploadEndpoint=f"{receiver.url}/upload",
    )
    api.post([task])
    received = receiver.wait_for(6)
    assert sorted(r.method for r in received) == ["POST"] * 3 + ["PUT"] * 3
    assert eventually(lambda: (api.emu.counters.webhook_deliveries, api.emu.counters.uploads) == (3, 3))
