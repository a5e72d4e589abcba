"""
Target 2, triggerer scale: 2,000 concurrent ``BflImageInferenceTrigger``s in one event loop, run the
way Airflow's triggerer runs them (created one by one with a yield in between, each consumed with
``async for event in trigger.run()`` in its own task, ``cleanup()`` afterwards), against the
emulator in its own process at 5 s generation latency.

Each variant runs in a fresh child process (so CPU seconds and peak RSS are its own):

- ``coalesced``: the provider's trigger (one shared poller and connection pool per event loop,
  batched getResponse requests);
- ``per_trigger``: the provider's previous trigger design, kept here for comparison: each trigger
  with its own hook, client and poll loop;
- ``baseline``: what a generic HTTP sensor trigger does: a fixed 1 s interval and a new client
  (new connection) per poll. Implemented here, not in the product. Its clients share one SSL
  context, as aiohttp's do: httpx's default loads the CA bundle for every client (~19 ms of CPU
  each), which would make the baseline a strawman.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from benchmarks._common import (
    API_KEY,
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

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

VARIANTS = ("coalesced", "per_trigger", "baseline", "idle")


def _trigger_class(variant: str) -> type[BaseTrigger]:
    from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger

    if variant == "coalesced":
        return BflImageInferenceTrigger
    if variant == "baseline":
        from benchmarks._naive_trigger import NaiveHttpPollingTrigger

        return NaiveHttpPollingTrigger
    if variant == "idle":
        from benchmarks._naive_trigger import IdleTrigger

        return IdleTrigger

    class PerTriggerClientTrigger(BflImageInferenceTrigger):
        """The previous design: every trigger polls alone, with its own hook and client."""

        async def _wait(self) -> dict[str, Any]:
            from airflow_provider_bfl import events
            from airflow_provider_bfl.exceptions import BflError
            from airflow_provider_bfl.hooks.bfl import BflHook

            hook = BflHook(self.bfl_conn_id)
            try:
                await hook.apoll_until_done(self.statuses, deadline=self.deadline)
            except BflError as error:
                return events.from_error(error, list(self.statuses), self.statuses)
            finally:
                await hook.aclose()
            return events.from_statuses(self.statuses)

    return PerTriggerClientTrigger


async def _heap_census(after: float) -> dict[str, float]:
    """Once every trigger waits: how many objects the collector tracks and how long a full collection takes."""
    await asyncio.sleep(after)
    tracked = len(gc.get_objects())
    return {"census_objects": tracked, "census_full_gc": full_gc_seconds()}


async def _run_like_the_triggerer(
    cls: type[BaseTrigger], kwargs_list: list[dict[str, Any]], census_after: float | None = None
) -> dict[str, Any]:
    """
    Create triggers one by one (yielding in between, as TriggerRunner.create_triggers does).

    ``census_after``: also take a heap census that many seconds after the last trigger started
    (it pauses the loop itself, so lags of such a run are not reported).
    """
    loop = asyncio.get_running_loop()
    probe = LoopLagProbe(period=0.01)
    probe.start()
    payloads: list[dict[str, Any]] = []

    async def run_trigger(trigger: BaseTrigger) -> None:
        try:
            async for event in trigger.run():
                payloads.append(event.payload)
        finally:
            await trigger.cleanup()

    started = loop.time()
    tasks = []
    for kwargs in kwargs_list:
        await asyncio.sleep(0)
        tasks.append(loop.create_task(run_trigger(cls(**kwargs))))
    created = loop.time()
    census = None if census_after is None else loop.create_task(_heap_census(census_after))
    await asyncio.gather(*tasks)
    wall = loop.time() - started
    await probe.stop()
    return {
        **({} if census is None else await census),
        "wall": wall,
        "create_seconds": created - started,
        "events": len(payloads),
        "succeeded": sum(payload["status"] == "success" for payload in payloads),
        "images": sum(len(payload["results"]) for payload in payloads),
        "lag_max": probe.worst,
        "lag_max_outside_gc": probe.worst_outside_gc,
        "lag_max_busy": probe.worst_busy,
        "full_gc_max": probe.worst_full_gc,
        "full_gcs": probe.full_gcs,
        "lag_p99": probe.percentile(0.99),
        "lag_samples": len(probe.lags),
        "worst_lags": probe.worst_samples(),
        "rss_peak_mb": probe.peak_rss_mb,
    }


def _submit(count: int, prefix: str) -> list[str]:
    from airflow_provider_bfl.hooks.bfl import BflHook

    hook = BflHook()
    try:
        outcome = hook.submit(
            {"positivePrompt": f"{prefix} {i}", "width": 1024, "height": 1024, "deliveryMethod": "async"}
            for i in range(count)
        )
    finally:
        hook.close()
    return list(outcome.pending)


def _kwargs(uuids: list[str], **extra: Any) -> list[dict[str, Any]]:
    deadline = time.time() + 600
    return [
        {"task_uuids": {uuid: 1}, "bfl_conn_id": "bfl_default", "deadline": deadline, **extra}
        for uuid in uuids
    ]


def child(
    variant: str, count: int, base_url: str, freeze: bool = False, census: bool = False
) -> dict[str, Any]:
    """
    One variant in this (fresh) process, like a triggerer that has been up for a while.

    Warm-up first: one trigger on a zero-latency task pays the one-off costs (lazy imports, the
    secrets backend, the first connection) and its worst lag is reported as the cold start. Then
    ``count`` tasks are submitted at the emulator's configured latency and awaited by ``count``
    triggers; CPU, RSS, lag and requests are measured over that phase only. ``freeze`` moves the
    start-up heap out of the collector's reach first (``gc.freeze()``), to show how much of the lag
    is the full collection of Airflow's own heap.
    """
    import logging

    import httpx

    logging.disable(logging.INFO)  # 4,000 trigger log lines would measure the log handler, not polling
    use_connection(base_url)
    cls = _trigger_class(variant)
    control = base_url.rsplit("/", 1)[0] + "/_emulator/"
    latency = httpx.get(control + "config").json()["config"]["latency"]
    extra = {"seconds": latency} if variant == "idle" else {}

    def steer(route: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.request("GET" if payload is None else "POST", control + route, json=payload)
        body: dict[str, Any] = response.json()
        return body

    async def session() -> dict[str, Any]:
        # Set-up calls block, on purpose: nothing is measured while they run.
        await asyncio.to_thread(steer, "config", {"latency": 0.0})
        warm_up = _kwargs(
            await asyncio.to_thread(_submit, 1, "warm-up"), **({"seconds": 0.0} if extra else {})
        )
        cold = await _run_like_the_triggerer(cls, warm_up)
        await asyncio.to_thread(steer, "config", {"latency": latency})
        uuids = await asyncio.to_thread(_submit, count, "catalogue image")
        before = await asyncio.to_thread(steer, "counters")
        idle_full_gc = full_gc_seconds()  # the floor: a full collection of the heap before any trigger
        if freeze:
            gc.freeze()
        rss_before, cpu_before = rss_mb(), cpu_seconds()
        measured = await _run_like_the_triggerer(
            cls, _kwargs(uuids, **extra), census_after=latency / 2 if census else None
        )
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
            "poll_tasks": after["requests_by_task_type"].get("getResponse", 0)
            - before["requests_by_task_type"].get("getResponse", 0),
        }

    return {"variant": variant, "count": count, "frozen": freeze, **asyncio.run(session())}


def run(quick: bool = False) -> BenchResult:
    count = 40 if quick else 2000
    latency = 1.0 if quick else 5.0
    repeats = 1 if quick else 3
    result = BenchResult(
        name="triggerer_scale",
        title="2. Triggerer scale",
        setup=(
            f"{count} triggers (1 task each) in one event loop, created one by one as Airflow's "
            f"TriggerRunner does, emulator latency {latency:g} s (own process); every variant in a fresh "
            "child process after a one-trigger warm-up; loop lag from a 10 ms ticker; provider trigger "
            f"run {repeats}x (median shown), baseline = fixed 1 s polls with a new client per poll"
        ),
    )
    runs: dict[str, Any] = {}
    with EmulatorProcess(latency=latency) as emu:

        def variant(name: str, *extra: str) -> dict[str, Any]:
            emu.reset()
            args = ["--child", name, "--count", str(count), "--base-url", emu.base_url, *extra]
            return run_child("benchmarks.triggerer_scale", args)

        runs["coalesced_runs"] = [variant("coalesced") for _ in range(repeats)]
        runs["baseline"] = variant("baseline")
        runs["per_trigger"] = variant("per_trigger")
        runs["coalesced_frozen"] = variant("coalesced", "--freeze")
        runs["idle"] = variant("idle")
        runs["coalesced_census"] = variant("coalesced", "--census")
        runs["idle_census"] = variant("idle", "--census")
    result.raw = runs
    coalesced = runs["coalesced_runs"]
    new = sorted(coalesced, key=lambda run: run["lag_max"])[len(coalesced) // 2]
    base, per_trigger, frozen = runs["baseline"], runs["per_trigger"], runs["coalesced_frozen"]
    idle, census, idle_census = runs["idle"], runs["coalesced_census"], runs["idle_census"]

    def per_image(run: dict[str, Any]) -> float:
        return float(run["poll_requests"]) / max(1, run["images"])

    def growth(run: dict[str, Any]) -> float:
        return float(run["rss_peak_mb"] - run["rss_before_mb"])

    worst = [run["lag_max"] for run in coalesced]
    all_done = all(run["succeeded"] == count and run["events"] == count for run in coalesced)
    result.rows = [
        Row(
            "triggers completed (success events)",
            f"{new['succeeded']}/{count}",
            f"{base['succeeded']}/{count}",
            target=f"{count}/{count}",
            met=all_done,
        ),
        Row(
            "worst event-loop lag (ticker)",
            fmt_ms(new["lag_max"])
            + ("" if repeats == 1 else f" (runs: {', '.join(fmt_ms(w) for w in worst)})"),
            fmt_ms(base["lag_max"]),
            ratio(new["lag_max"], base["lag_max"]),
            "< 100 ms",
            new["lag_max"] < 0.1,
        ),
        Row(
            "  of which outside garbage-collector pauses",
            fmt_ms(new["lag_max_outside_gc"]),
            fmt_ms(base["lag_max_outside_gc"]),
            ratio(new["lag_max_outside_gc"], base["lag_max_outside_gc"]),
        ),
        Row(
            "  longest full GC pause during the run (vs one full GC before any trigger)",
            fmt_ms(new["full_gc_max"]),
            fmt_ms(new["idle_full_gc"]) + " idle",
            ratio(new["full_gc_max"], new["idle_full_gc"]),
        ),
        Row(
            f"  one full GC while {count} triggers wait (objects tracked)",
            f"{fmt_ms(census['census_full_gc'])} ({census['census_objects']:,})",
            f"{fmt_ms(idle_census['census_full_gc'])} ({idle_census['census_objects']:,}) with do-nothing triggers",
            ratio(census["census_full_gc"], idle_census["census_full_gc"]),
        ),
        Row(
            f"  {count} do-nothing triggers (sleep, one event): worst lag, full GCs during the run",
            f"{fmt_ms(idle['lag_max'])}, {idle['full_gcs']}",
            f"{fmt_ms(new['lag_max'])}, {new['full_gcs']} provider",
        ),
        Row(
            "  worst lag with the start-up heap frozen (gc.freeze())",
            fmt_ms(frozen["lag_max"]),
            fmt_ms(new["lag_max"]) + " not frozen",
            ratio(frozen["lag_max"], new["lag_max"]),
        ),
        Row(
            "event-loop lag p99",
            fmt_ms(new["lag_p99"]),
            fmt_ms(base["lag_p99"]),
            ratio(new["lag_p99"], base["lag_p99"]),
        ),
        Row(
            "getResponse HTTP requests per image",
            f"{per_image(new):.3f} ({new['poll_requests']} for {new['poll_tasks']} task polls)",
            f"{per_image(base):.2f} ({base['poll_requests']})",
            ratio(per_image(new), per_image(base)),
            "low",
            per_image(new) < 0.5,
        ),
        Row(
            "CPU seconds (trigger process, measured phase)",
            fmt_s(new["cpu_seconds"]),
            fmt_s(base["cpu_seconds"]),
            ratio(new["cpu_seconds"], base["cpu_seconds"]),
        ),
        Row(
            "peak RSS growth during the phase (peak RSS)",
            f"{growth(new):.0f} MiB ({new['rss_peak_mb']:.0f} MiB)",
            f"{growth(base):.0f} MiB ({base['rss_peak_mb']:.0f} MiB)",
            ratio(max(growth(new), 0.5), max(growth(base), 0.5)),
        ),
        Row(
            "wall time until the last event",
            fmt_s(new["wall"]),
            fmt_s(base["wall"]),
            ratio(new["wall"], base["wall"]),
        ),
        Row(
            "previous provider design (client per trigger): requests/image, CPU, worst lag",
            f"{per_image(new):.3f}, {fmt_s(new['cpu_seconds'])}, {fmt_ms(new['lag_max'])}",
            f"{per_image(per_trigger):.2f}, {fmt_s(per_trigger['cpu_seconds'])}, {fmt_ms(per_trigger['lag_max'])}",
            ratio(new["cpu_seconds"], per_trigger["cpu_seconds"]),
        ),
        Row(
            "cold start: worst lag of the first trigger in a fresh process (one-off)",
            fmt_ms(new["cold_start_lag_max"]),
        ),
    ]
    result.notes.append(
        "A full garbage collection walks the whole heap of the triggerer process, Airflow's own objects "
        "included, and blocks the loop for as long as it takes, whatever code triggered it; the rows "
        "'outside GC pauses' and 'start-up heap frozen' separate that from the triggers' own work."
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=VARIANTS, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() the start-up heap first")
    parser.add_argument("--census", action="store_true", help="time a full collection mid-wait")
    args = parser.parse_args(argv)
    prepare_airflow_env()
    print(json.dumps(child(args.child, args.count, args.base_url, args.freeze, args.census)))
    return 0


if __name__ == "__main__":
    assert API_KEY  # the child uses the same key as the emulator the parent started
    sys.exit(main())
