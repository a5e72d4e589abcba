"""
Target 1, batch latency: 200 prompts x 1 image at 2 s generation latency, submitted and awaited the
way the operator does it (``hook.submit`` then ``hook.poll_until_done``), against the same images
generated one at a time. The API works in parallel, so the batch should take about as long as one
generation; a client that serialises would take N times as long.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks._common import BenchResult, EmulatorProcess, Row, fmt_s, median, ratio, use_connection

#: Job-length ranges (s) for the poll-schedule comparison: FLUX.1.1 [pro]'s usual 1.5-6 s, and
#: slow or queued jobs.
SCHEDULE_RANGES = ((1.5, 6.0), (10.0, 120.0))


def _request(index: int) -> dict[str, Any]:
    # What the operator sends by default: async delivery, cost reported.
    return {
        "positivePrompt": f"studio product photo of item {index}, white background",
        "width": 1024,
        "height": 1024,
        "deliveryMethod": "async",
        "includeCost": True,
    }


def _generate(emu: EmulatorProcess, requests: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """Submit then poll until done, as the operator does; wall time and requests split by phase."""
    from airflow_provider_bfl.hooks.bfl import BflHook
    from airflow_provider_bfl.models import TaskState

    hook = BflHook(**overrides)
    try:
        hook.settings  # noqa: B018  (resolve the connection outside the timed part, as a warm worker has)
        before = emu.counters()["requests"]
        started = time.perf_counter()
        outcome = hook.submit(requests)
        submitted = emu.counters()["requests"]
        statuses = hook.poll_until_done(outcome.statuses, timeout=120)
        wall = time.perf_counter() - started
        after = emu.counters()["requests"]
    finally:
        hook.close()
    succeeded = sum(status.state is TaskState.SUCCESS for status in statuses.values())
    return {
        "wall": wall,
        "images": succeeded,
        "submit_requests": submitted - before,
        "poll_requests": after - submitted,
    }


def _noticed(poll: Any, job: float) -> tuple[float, int]:
    """When a job of ``job`` seconds is seen done, and how many polls that took (first poll at 0)."""
    at, polls = 0.0, 1
    while at < job:
        at += poll.delay_after(polls)
        polls += 1
    return at, polls


def schedule_summary(steady_polls: int, shortest: float, longest: float) -> tuple[float, float, float]:
    """
    Mean lag, worst lag and mean polls of the default schedule with ``steady_polls`` over job
    lengths spread log-uniformly from ``shortest`` to ``longest`` seconds (pure arithmetic).

    ``steady_polls=1`` is the previous default (1 s, then x1.5 from the second wait on).
    """
    from airflow_provider_bfl._flows import PollSettings

    poll = PollSettings(steady_polls=steady_polls)
    samples = 1000
    jobs = [shortest * (longest / shortest) ** (i / (samples - 1)) for i in range(samples)]
    seen = [_noticed(poll, job) for job in jobs]
    lags = [at - job for job, (at, _) in zip(jobs, seen, strict=True)]
    return sum(lags) / samples, max(lags), sum(polls for _, polls in seen) / samples


def run(quick: bool = False) -> BenchResult:
    images = 20 if quick else 200
    singles = 2 if quick else 10
    latency = 1.0 if quick else 2.0
    result = BenchResult(
        name="batch_latency",
        title="1. Batch latency",
        setup=(
            f"{images} prompts x 1 image, emulator latency {latency:g} s (own process); hook.submit + "
            f"hook.poll_until_done (the operator's path); baseline: {singles} images one at a time "
            "(submit + wait each), same hook settings"
        ),
    )
    with EmulatorProcess(latency=latency) as emu:
        use_connection(emu.base_url)
        # Warm-up: imports, connection, first TCP connection.
        _generate(emu, [_request(-1)])

        single_runs = [_generate(emu, [_request(i)]) for i in range(singles)]
        batch = _generate(emu, [_request(i) for i in range(images)])
        previous = _generate(emu, [_request(i) for i in range(images)], poll_steady_polls=1)

    single = median(run["wall"] for run in single_runs)
    single_requests = sum(r["submit_requests"] + r["poll_requests"] for r in single_runs) / singles
    batch_requests = (batch["submit_requests"] + batch["poll_requests"]) / images
    result.raw = {
        "images": images,
        "latency": latency,
        "single_walls": [run["wall"] for run in single_runs],
        "single_runs": single_runs,
        "batch": batch,
        "batch_previous_schedule": previous,
    }
    result.rows = [
        Row(
            f"batch of {images}: wall time vs one image",
            fmt_s(batch["wall"]),
            f"{fmt_s(single)} (median of {singles})",
            ratio(batch["wall"], single),
            "<= 1.5x",
            ratio(batch["wall"], single) <= 1.5,
        ),
        Row(
            f"batch of {images}: wall time vs the generation latency",
            fmt_s(batch["wall"]),
            fmt_s(latency),
            ratio(batch["wall"], latency),
            "<= 1.5x",
            ratio(batch["wall"], latency) <= 1.5,
        ),
        Row(
            f"batch of {images} vs one at a time ({images} x median single, extrapolated)",
            fmt_s(batch["wall"]),
            fmt_s(single * images),
            ratio(batch["wall"], single * images),
        ),
        Row(
            "HTTP requests per image (batch: submit + poll)",
            f"{batch_requests:.3f} ({batch['submit_requests']} + {batch['poll_requests']})",
            f"{single_requests:.1f} one at a time",
            ratio(batch_requests, single_requests),
        ),
        Row(
            f"batch of {images} with the previous poll schedule (1 s, x1.5)",
            fmt_s(previous["wall"]),
            fmt_s(batch["wall"]) + " new default",
            ratio(previous["wall"], batch["wall"]),
        ),
    ]
    if batch["images"] != images or previous["images"] != images:
        result.notes.append(f"only {batch['images']} / {previous['images']} of {images} images succeeded")
    for shortest, longest in SCHEDULE_RANGES:
        old, new = schedule_summary(1, shortest, longest), schedule_summary(3, shortest, longest)
        result.notes.append(
            f"Poll schedule for jobs of {shortest:g}-{longest:g} s (log-uniform): previous 1 s x1.5 "
            f"mean lag {old[0]:.2f} s, worst {old[1]:.2f} s, {old[2]:.1f} polls; new default (1 s for "
            f"3 waits, then x1.5) mean lag {new[0]:.2f} s, worst {new[1]:.2f} s, {new[2]:.1f} polls"
        )
    return result
