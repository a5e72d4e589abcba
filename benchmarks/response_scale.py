"""
Response scale: what one very large getResponse answer costs the triggerer's event loop.

Two answers of 20,000 result items each (~6 MB), served over loopback HTTP:

- ``1 task x 20,000``: one task asked for 10 images, the answer pads it to 20,000 (a lying server);
- ``2,000 tasks x 10``: 2,000 tasks of 10 images each in one answer (``max_tasks_per_request=2000``).

Each is read through the provider's async path (``BflHook.aget_status``: read, redact, parse and
merge, large answers off the loop) while a 5 ms ticker measures the worst event-loop lag. The
baseline is the same work done on the loop, as the provider did before (redact, ``json.loads``,
merge inline), in the same run. The merge time is compared with ``json.loads`` of the same body
alone, the floor any reader of the answer pays.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks._common import BenchResult, LoopLagProbe, Row, fmt_ms, median, ratio, use_connection

ITEMS = 20_000


def _item(task_uuid: str, index: int) -> dict[str, Any]:
    image = f"{index:08d}-0000-4000-8000-000000000000"
    return {
        "taskType": "imageInference",
        "taskUUID": task_uuid,
        "status": "success",
        "imageUUID": image,
        "imageURL": f"https://im.runware.ai/image/ws/2/ii/{image}.jpg",
        "seed": index,
        "cost": 0.04,
    }


def _task(index: int) -> str:
    return f"6bb2a3c4-0000-4000-8000-{index:012d}"


def scenarios(items: int) -> dict[str, tuple[dict[str, int], bytes]]:
    """name -> (``{taskUUID: images expected}``, the answer body)."""
    one = _task(0)
    tasks = [_task(index) for index in range(items // 10)]
    return {
        f"1 task x {items:,}": (
            {one: 10},
            json.dumps({"data": [_item(one, index) for index in range(items)]}).encode(),
        ),
        f"{len(tasks):,} tasks x 10": (
            dict.fromkeys(tasks, 10),
            json.dumps(
                {"data": [_item(task, k * 10 + i) for k, task in enumerate(tasks) for i in range(10)]}
            ).encode(),
        ),
    }


@contextmanager
def serving(body: bytes) -> Iterator[str]:
    """A loopback HTTP server answering every POST with ``body``; its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


async def _provider(expected: dict[str, int]) -> tuple[float, float]:
    """Worst loop lag while the provider reads the answer (``aget_status``), and the loop thread's own CPU in it."""
    from airflow_provider_bfl.hooks.bfl import BflHook

    hook = BflHook()
    await hook.asettings()  # the connection is read before the probe starts
    probe = LoopLagProbe(period=0.005)
    probe.start()
    try:
        statuses = await hook.aget_status(expected)
    finally:
        await probe.stop()
        await hook.aclose()
    assert all(status.done for status in statuses.values()), "the answer did not finish every task"
    return probe.worst, probe.worst_busy


async def _on_loop(expected: dict[str, int], body: bytes) -> tuple[float, float]:
    """Baseline: the same answer redacted, parsed and merged on the loop (worst lag, merge seconds)."""
    from airflow_provider_bfl._envelope import parse_envelope
    from airflow_provider_bfl._status import merge
    from airflow_provider_bfl.hooks.bfl import BflHook
    from airflow_provider_bfl.models.results import TaskStatus

    hook = BflHook()
    settings = await hook.asettings()
    statuses = {uuid: TaskStatus(uuid, expected_images=count) for uuid, count in expected.items()}
    probe = LoopLagProbe(period=0.005)
    probe.start()
    await asyncio.sleep(0.02)  # the ticker is asleep in the loop when the work starts
    envelope = parse_envelope(200, settings.redactor.body(body))
    started = time.perf_counter()
    merge(statuses, envelope)
    merged = time.perf_counter() - started
    await asyncio.sleep(0.02)
    await probe.stop()
    return probe.worst, merged


def _json_floor(body: bytes) -> float:
    started = time.perf_counter()
    json.loads(body)
    return time.perf_counter() - started


def run(quick: bool = False) -> BenchResult:
    import logging

    logging.getLogger("airflow_provider_bfl").setLevel(logging.ERROR)  # the padded answer warns
    items = 2_000 if quick else ITEMS
    repeats = 1 if quick else 3
    result = BenchResult(
        name="response_scale",
        title="7. Response scale",
        setup=(
            f"one getResponse answer of {items:,} result items over loopback HTTP, read by "
            "BflHook.aget_status while a 5 ms ticker measures the event-loop lag; baseline: the "
            f"same answer redacted, parsed and merged on the loop; median of {repeats} runs"
        ),
    )
    for name, (expected, body) in scenarios(items).items():
        with serving(body) as base_url:
            use_connection(base_url, max_tasks_per_request=len(expected), timeout=120)
            provider = [asyncio.run(_provider(expected)) for _ in range(repeats)]
            baseline = [asyncio.run(_on_loop(expected, body)) for _ in range(repeats)]
        floor = median(_json_floor(body) for _ in range(repeats))
        lag, inline_lag = median(lag for lag, _ in provider), median(lag for lag, _ in baseline)
        own_work = median(busy for _, busy in provider)
        merge_time = median(merged for _, merged in baseline)
        lag_ratio = ratio(lag, inline_lag)
        result.rows += [
            Row(
                f"{name} ({len(body) / 1e6:.1f} MB): worst event-loop lag vs the answer handled on the loop",
                fmt_ms(lag),
                fmt_ms(inline_lag),
                lag_ratio,
                "< 1x",
                lag_ratio < 1,
            ),
            Row(
                f"{name}: of which the loop thread's own work (its CPU time)",
                fmt_ms(own_work),
                fmt_ms(inline_lag),
                ratio(own_work, inline_lag),
            ),
            Row(
                f"{name}: merge time vs json.loads of the body",
                fmt_ms(merge_time),
                fmt_ms(floor),
                ratio(merge_time, floor),
            ),
        ]
        result.raw[name] = {
            "bytes": len(body),
            "provider_lag": [lag for lag, _ in provider],
            "provider_loop_cpu": [busy for _, busy in provider],
            "inline_lag": [lag for lag, _ in baseline],
            "merge": [merged for _, merged in baseline],
            "json_loads": floor,
        }
    result.notes.append(
        "in the provider's worst gap the loop thread itself ran only tens of ms (its CPU time): the "
        "rest it waited for the GIL while the worker thread parsed C-side (json.loads and the like); "
        "a Python object hook on json.loads, tried A/B, did not shorten it"
    )
    result.notes.append(
        "merge time is linear; for 20,000 real results it is pydantic validating each ImageResult "
        "(~100 us each), now off the loop"
    )
    return result
