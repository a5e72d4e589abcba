"""
Target 5, client overhead: one hook submission and its result (``hook.generate`` of one
sync-delivery request) against a hand-written ``httpx`` POST of the same body on a reused
connection (the response parsed as JSON), both against a zero-latency emulator in its own process.
Blocks of calls alternate between the two so machine noise hits both alike; the medians compare.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks._common import (
    API_KEY,
    BenchResult,
    EmulatorProcess,
    Row,
    fmt_us,
    median,
    use_connection,
)

REQUEST = {"positivePrompt": "a red bicycle", "width": 1024, "height": 1024, "deliveryMethod": "sync"}


def _per_call(function: Callable[[], Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


def run(quick: bool = False) -> BenchResult:
    import httpx

    blocks, calls = (3, 30) if quick else (15, 200)
    result = BenchResult(
        name="client_overhead",
        title="5. Client overhead",
        setup=(
            f"zero-latency emulator (own process); {blocks} alternating blocks of {calls} calls, ratio = median "
            "of each hook block over the raw block just before it; hook: "
            "BflHook().generate([request]) (validation, wire body, envelope, result model); raw: "
            "httpx.Client.post(json=same body) + response.json() on a kept-alive connection"
        ),
    )
    with EmulatorProcess(latency=0.0) as emu:
        use_connection(emu.base_url)
        from airflow_provider_bfl.hooks.bfl import BflHook

        hook = BflHook()
        raw = httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)

        def raw_call() -> Any:
            body = [
                {"taskType": "imageInference", "taskUUID": str(uuid.uuid4()), "model": "bfl:2@1", **REQUEST}
            ]
            return raw.post(emu.base_url, json=body).json()

        def hook_call() -> Any:
            return hook.generate([REQUEST])

        try:
            for function in (raw_call, hook_call):
                _per_call(function, calls)  # warm-up: connections, imports, caches
            raw_times, hook_times = [], []
            for _ in range(blocks):
                raw_times.append(_per_call(raw_call, calls))
                hook_times.append(_per_call(hook_call, calls))
        finally:
            raw.close()
            hook.close()
    raw_median, hook_median = median(raw_times), median(hook_times)
    # Each hook block ran right after a raw block: their ratio shares the machine's load of the moment.
    paired = median(hook / raw for raw, hook in zip(raw_times, hook_times, strict=True))
    result.raw = {"raw_per_call": raw_times, "hook_per_call": hook_times, "paired_ratio": paired}
    result.rows = [
        Row(
            "hook.generate (1 sync request) vs raw httpx POST, per call (median of paired blocks)",
            fmt_us(hook_median),
            fmt_us(raw_median),
            paired,
            "<= 1.3x",
            paired <= 1.3,
        ),
        Row("hook's own overhead per call", fmt_us(hook_median - raw_median)),
    ]
    return result
