"""
Triggerer at 10,000: the triggerer's event loop holding 10,000 waiting taskUUIDs, against the
emulator in its own process at 5 s generation latency; target 2's machinery
(:mod:`benchmarks.triggerer_scale`) at the catalogue's size.

Each variant runs in a fresh child process after the same one-trigger warm-up as target 2:

- ``one``: ONE ``BflImageInferenceTrigger`` with all 10,000 taskUUIDs and ``with_results=False``,
  as the operator defers a batch above ``manifest_threshold`` (the big-batch case); 3 runs, the
  median shown;
- ``one`` at 2,000 taskUUIDs: the same trigger at target 2's size, the scale baseline;
- ``idle``: one do-nothing trigger holding the same 10,000 taskUUIDs for the same 5 s: the lag
  of this process's event loop when nothing is polled (Airflow's heap, the machine's load);
- ``many``: 10,000 triggers of one task each, created one by one as Airflow's TriggerRunner does
  (target 2's ``_run_like_the_triggerer`` at 10,000).

Poll rounds are counted where the provider's shared poller sends them (``PollCoalescer._dispatch``
wrapped with a counter in the child: one call is one round, the batches it starts are its
getResponse requests); the emulator's counters give the HTTP requests actually sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

from benchmarks._common import (
    BenchResult,
    EmulatorProcess,
    LoopLagProbe,
    Row,
    cpu_seconds,
    fmt_ms,
    fmt_s,
    full_gc_seconds,
    peak_rss_mb,
    prepare_airflow_env,
    ratio,
    rss_mb,
    run_child,
    use_connection,
)
from benchmarks.catalogue_scale import bytecode_cache
from benchmarks.triggerer_scale import _kwargs, _run_like_the_triggerer, _submit

VARIANTS = ("one", "idle", "many")
COUNT = 10_000
#: target 2's size: the same single trigger there is the scale baseline.
BASELINE_COUNT = 2_000


def _one_kwargs(uuids: list[str], **extra: Any) -> dict[str, Any]:
    """One trigger for every taskUUID, as the operator defers a big batch (a summary event)."""
    (kwargs,) = _kwargs(uuids[:1])
    return {**kwargs, "task_uuids": dict.fromkeys(uuids, 1), **extra}


async def _hold_one(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run one provider trigger as the triggerer does (``async for`` its events, then ``cleanup``)."""
    from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger

    loop = asyncio.get_running_loop()
    probe = LoopLagProbe(period=0.01)
    probe.start()
    started = loop.time()
    trigger = BflImageInferenceTrigger(**kwargs)
    payloads = []
    try:
        async for event in trigger.run():
            payloads.append(event.payload)
    finally:
        await trigger.cleanup()
    wall = loop.time() - started
    await probe.stop()
    (payload,) = payloads
    return {
        "wall": wall,
        "events": len(payloads),
        "status": payload["status"],
        "summary": payload.get("summary"),
        "event_bytes": len(json.dumps(payload)),
        "lag_max": probe.worst,
        "lag_max_outside_gc": probe.worst_outside_gc,
        "lag_max_busy": probe.worst_busy,
        "lag_p99": probe.percentile(0.99),
        "full_gcs": probe.full_gcs,
        "worst_lags": probe.worst_samples(),
        "rss_peak_mb": probe.peak_rss_mb,
    }


def _count_rounds() -> list[dict[str, float]]:
    """Wrap the shared poller's dispatch: each call is a poll round; record when, and its batches."""
    from airflow_provider_bfl.hooks._coalescer import PollCoalescer

    rounds: list[dict[str, float]] = []
    dispatch = PollCoalescer._dispatch

    def counted(self: PollCoalescer, waits: list[Any]) -> None:
        before = len(self._batches)
        dispatch(self, waits)  # synchronous: none of the batches it starts can finish meanwhile
        rounds.append(
            {"at": time.perf_counter(), "waits": len(waits), "batches": len(self._batches) - before}
        )

    PollCoalescer._dispatch = counted  # type: ignore[method-assign]
    return rounds


def child(variant: str, count: int, base_url: str) -> dict[str, Any]:
    """One variant in this fresh process: warm up, submit ``count`` tasks, measure the wait."""
    import logging

    import httpx

    from benchmarks._naive_trigger import IdleTrigger

    logging.disable(logging.INFO)  # 10,000 trigger log lines would measure the log handler
    use_connection(base_url)
    control = base_url.rsplit("/", 1)[0] + "/_emulator/"
    latency = httpx.get(control + "config").json()["config"]["latency"]

    def steer(route: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.request("GET" if payload is None else "POST", control + route, json=payload)
        body: dict[str, Any] = response.json()
        body.pop("tasks", None)
        return body

    async def session() -> dict[str, Any]:
        from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger

        await asyncio.to_thread(steer, "config", {"latency": 0.0})
        warm_up = await asyncio.to_thread(_submit, 1, "warm-up")
        cold = await _run_like_the_triggerer(BflImageInferenceTrigger, _kwargs(warm_up))
        await asyncio.to_thread(steer, "config", {"latency": latency})
        if variant == "idle":
            uuids = [f"00000000-0000-4000-8000-{index:012d}" for index in range(count)]  # nothing is asked
        else:
            uuids = await asyncio.to_thread(_submit, count, "catalogue image")
        before = await asyncio.to_thread(steer, "counters")
        idle_full_gc = full_gc_seconds()
        rounds = _count_rounds()
        rss_before, cpu_before, started = rss_mb(), cpu_seconds(), time.perf_counter()
        if variant == "one":
            measured = await _hold_one(_one_kwargs(uuids, with_results=False))
        elif variant == "idle":
            measured = await _run_like_the_triggerer(IdleTrigger, [_one_kwargs(uuids, seconds=latency)])
        else:
            measured = await _run_like_the_triggerer(BflImageInferenceTrigger, _kwargs(uuids))
        cpu = cpu_seconds() - cpu_before
        after = await asyncio.to_thread(steer, "counters")
        return {
            **measured,
            "cold_start_lag_max": cold["lag_max"],
            "cpu_seconds": cpu,
            "idle_full_gc": idle_full_gc,
            "rss_before_mb": rss_before,
            "process_peak_rss_mb": peak_rss_mb(),
            "poll_requests": after["requests"] - before["requests"],
            "polled_tasks": after["requests_by_task_type"].get("getResponse", 0)
            - before["requests_by_task_type"].get("getResponse", 0),
            "rounds": [
                {"at": round(r["at"] - started, 3), "waits": r["waits"], "batches": r["batches"]}
                for r in rounds
            ],
        }

    return {"variant": variant, "count": count, **asyncio.run(session())}


def run(quick: bool = False) -> BenchResult:
    count = 200 if quick else COUNT
    baseline_count = 40 if quick else BASELINE_COUNT
    latency = 1.0 if quick else 5.0
    repeats = 1 if quick else 3
    result = BenchResult(
        name="triggerer_10k",
        title="2b. Triggerer at 10,000 taskUUIDs",
        setup=(
            f"{count:,} taskUUIDs waiting in one triggerer event loop, emulator latency {latency:g} s "
            "(own process); every variant in a fresh child process after a one-trigger warm-up; loop lag "
            f"from a 10 ms ticker; one trigger with all {count:,} (with_results=False, as the operator "
            f"defers a big batch) run {repeats}x (median shown); baselines in the same run: the same "
            f"trigger with {baseline_count:,}, and one do-nothing trigger holding the {count:,} for "
            f"{latency:g} s (the loop's own lag); also {count:,} triggers of one task each"
        ),
    )
    runs: dict[str, Any] = {}
    with bytecode_cache(), EmulatorProcess(latency=latency) as emu:

        def variant(name: str, size: int) -> dict[str, Any]:
            emu.reset()
            args = ["--child", name, "--count", str(size), "--base-url", emu.base_url]
            return run_child("benchmarks.triggerer_10k", args)

        runs["one_runs"] = [variant("one", count) for _ in range(repeats)]
        runs["one_baseline"] = variant("one", baseline_count)
        runs["idle"] = variant("idle", count)
        runs["many"] = variant("many", count)
    result.raw = runs
    _report(result, runs, count, baseline_count)
    return result


def _per_round(run: dict[str, Any]) -> tuple[float, int]:
    """Median and largest getResponse requests of one poll round."""
    batches = [r["batches"] for r in run["rounds"] if r["batches"]]
    return (statistics.median(batches) if batches else 0.0), max(batches, default=0)


def _report(result: BenchResult, runs: dict[str, Any], count: int, baseline_count: int) -> None:
    ones = runs["one_runs"]
    one = sorted(ones, key=lambda run: run["lag_max"])[len(ones) // 2]
    small, idle, many = runs["one_baseline"], runs["idle"], runs["many"]
    median_round, largest_round = _per_round(one)
    small_round = _per_round(small)[0]
    many_round = _per_round(many)[0]
    rounds = len([r for r in one["rounds"] if r["batches"]])

    def growth(run: dict[str, Any]) -> float:
        return float(run["rss_peak_mb"] - run["rss_before_mb"])

    done = all(run["summary"] and run["summary"]["done"] == count for run in ones)
    result.rows = [
        Row(
            f"one trigger, {count:,} taskUUIDs: done (summary event)",
            f"{one['summary']['done']:,}/{count:,}, {one['status']}",
            f"{small['summary']['done']:,}/{baseline_count:,}",
            target="all",
            met=done and small["summary"]["done"] == baseline_count,
        ),
        Row(
            f"one trigger, {count:,} taskUUIDs: worst event-loop lag"
            + ("" if len(ones) == 1 else f" (runs: {', '.join(fmt_ms(run['lag_max']) for run in ones)})"),
            fmt_ms(one["lag_max"]),
            f"{fmt_ms(idle['lag_max'])} do-nothing trigger",
            ratio(one["lag_max"], idle["lag_max"]),
            "< 100 ms",
            one["lag_max"] < 0.1,
        ),
        Row(
            f"  vs the same trigger with {baseline_count:,} taskUUIDs",
            fmt_ms(one["lag_max"]),
            fmt_ms(small["lag_max"]),
            ratio(one["lag_max"], small["lag_max"]),
        ),
        Row(
            "  of which outside garbage-collector pauses; the loop thread's own CPU in the worst gap",
            f"{fmt_ms(one['lag_max_outside_gc'])}; {fmt_ms(one['lag_max_busy'])}",
            f"{fmt_ms(idle['lag_max_outside_gc'])}; {fmt_ms(idle['lag_max_busy'])} do-nothing",
            ratio(one["lag_max_outside_gc"], idle["lag_max_outside_gc"]),
        ),
        Row(
            "  event-loop lag p99",
            fmt_ms(one["lag_p99"]),
            f"{fmt_ms(idle['lag_p99'])} do-nothing",
            ratio(one["lag_p99"], idle["lag_p99"]),
        ),
        Row(
            "getResponse requests per poll round (median; largest)",
            f"{median_round:g}; {largest_round} ({one['poll_requests']} requests in {rounds} rounds)",
            f"{small_round:g} with {baseline_count:,} taskUUIDs",
            ratio(median_round, small_round),
            f"<= {count // 100} ({count:,} / 100 per request)",
            largest_round <= count // 100,
        ),
        Row(
            "getResponse requests per taskUUID (whole wait)",
            f"{one['poll_requests'] / count:.3f}",
            f"{small['poll_requests'] / baseline_count:.3f} with {baseline_count:,}",
            ratio(one["poll_requests"] / count, small["poll_requests"] / baseline_count),
        ),
        Row(
            "CPU seconds of the trigger process (measured phase)",
            fmt_s(one["cpu_seconds"]),
            f"{fmt_s(small['cpu_seconds'])} with {baseline_count:,}",
            ratio(one["cpu_seconds"], small["cpu_seconds"]),
        ),
        Row(
            "peak RSS growth while waiting (process peak RSS)",
            f"{growth(one):.0f} MiB ({one['process_peak_rss_mb']:.0f} MiB)",
            f"{growth(idle):.0f} MiB ({idle['process_peak_rss_mb']:.0f} MiB) do-nothing",
            ratio(max(growth(one), 0.5), max(growth(idle), 0.5)),
        ),
        Row(
            "wall time until the event (summary event size)",
            f"{fmt_s(one['wall'])} ({one['event_bytes']:,} B)",
            f"{fmt_s(small['wall'])} with {baseline_count:,}",
            ratio(one["wall"], small["wall"]),
        ),
        Row(
            f"{count:,} triggers of one task: worst lag; requests per round (median); success events",
            f"{fmt_ms(many['lag_max'])}; {many_round:g}; {many['succeeded']:,}/{count:,}",
            f"{fmt_ms(one['lag_max'])}; {median_round:g}; one trigger",
            ratio(many["lag_max"], one["lag_max"]),
        ),
        Row(
            f"  {count:,} triggers: CPU seconds, peak RSS growth, wall time",
            f"{fmt_s(many['cpu_seconds'])}, {growth(many):.0f} MiB, {fmt_s(many['wall'])}",
            f"{fmt_s(one['cpu_seconds'])}, {growth(one):.0f} MiB, {fmt_s(one['wall'])} one trigger",
            ratio(many["cpu_seconds"], one["cpu_seconds"]),
        ),
    ]
    worst = one["worst_lags"][:3]
    result.notes.append(
        "worst lags of the median one-trigger run (s after start, lag, outside GC, loop CPU): "
        + "; ".join(
            f"{w['at']:.2f}: {w['lag'] * 1000:.0f}/{w['outside_gc'] * 1000:.0f}/{w['busy'] * 1000:.0f} ms"
            for w in worst
        )
    )
    result.notes.append(
        "poll rounds of the median one-trigger run (s after start: requests): "
        + ", ".join(f"{r['at']:.1f}: {r['batches']}" for r in one["rounds"] if r["batches"])
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=VARIANTS)
    parser.add_argument("--count", type=int)
    parser.add_argument("--base-url")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (without --child)")
    args = parser.parse_args(argv)
    prepare_airflow_env()
    if args.child is None:
        from benchmarks.run import text

        print(text(run(quick=args.quick)))
        return 0
    if not (args.count and args.base_url):
        parser.error("--child needs --count and --base-url")
    print(json.dumps(child(args.child, args.count, args.base_url)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
