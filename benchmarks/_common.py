"""Shared plumbing: result rows, the emulator in its own process, child processes, CPU/RSS/lag probes."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
#: Long enough for Airflow's secret masker (it skips secrets shorter than 5 characters).
API_KEY = "bench-key-7d41c0e2"


@dataclass
class Row:
    """One line of the results table: a measured value, its baseline and their ratio."""

    metric: str
    value: str
    baseline: str = ""
    ratio: float | None = None
    target: str = ""
    #: Whether the target is met (None: informational row).
    met: bool | None = None


@dataclass
class BenchResult:
    name: str
    title: str
    setup: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Raw numbers (JSON-serialisable), for ``--json`` and for the tests.
    raw: dict[str, Any] = field(default_factory=dict)
    #: Set when the benchmark could not run at all (the reason).
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline > 0 else float("inf")


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us"


# -- the environment ---------------------------------------------------------------------------


def prepare_airflow_env() -> dict[str, str]:
    """
    A throw-away AIRFLOW_HOME (unless one is set; inherited by child processes) before Airflow loads.

    Idempotent: returns the environment child processes should get.
    """
    if "AIRFLOW_HOME" not in os.environ:
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="bfl-bench-airflow-home-")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
    pythonpath = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in pythonpath.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), pythonpath) if p)
    return dict(os.environ)


def connection_json(base_url: str, api_key: str = API_KEY, **extra: Any) -> str:
    return json.dumps({"conn_type": "bfl", "password": api_key, "host": base_url, "extra": extra})


def use_connection(base_url: str, api_key: str = API_KEY, **extra: Any) -> None:
    """Point ``bfl_default`` at ``base_url`` (environment variable: no database needed)."""
    os.environ["AIRFLOW_CONN_BFL_DEFAULT"] = connection_json(base_url, api_key, **extra)


# -- the emulator in its own process -----------------------------------------------------------


class EmulatorProcess:
    """
    ``python -m airflow_provider_bfl.testing.emulator`` in a child process, steered over its control API.

    A separate process so the server's threads do not compete for the GIL with the client under test.
    """

    def __init__(self, latency: float = 0.0, api_key: str = API_KEY) -> None:
        self.latency = latency
        self.api_key = api_key
        self.base_url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._control: httpx.Client | None = None

    def __enter__(self) -> EmulatorProcess:
        command = [
            sys.executable,
            "-m",
            "airflow_provider_bfl.testing.emulator",
            "--port",
            "0",
            "--api-key",
            self.api_key,
            "--latency",
            str(self.latency),
        ]
        self._proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
        )
        assert self._proc.stdout is not None
        self.base_url = self._proc.stdout.readline().strip()
        self._proc.stdout.readline()  # the key: known already
        if not self.base_url.startswith("http"):
            self.__exit__(None, None, None)
            raise RuntimeError("the emulator process did not start")
        self.origin = self.base_url.rsplit("/", 1)[0]
        self._control = httpx.Client(base_url=f"{self.origin}/_emulator/", timeout=30)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def _call(self, method: str, route: str, payload: Any = None) -> dict[str, Any]:
        assert self._control is not None, "the emulator is not running"
        response = self._control.request(method, route, json=payload)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def configure(self, **settings: Any) -> None:
        self._call("POST", "config", settings)

    def counters(self) -> dict[str, Any]:
        return self._call("GET", "counters")

    def reset(self) -> None:
        self._call("POST", "reset", {})


# -- child processes ---------------------------------------------------------------------------


def run_child(module: str, args: Sequence[str], timeout: float = 900) -> dict[str, Any]:
    """Run ``python -m module args``; its last stdout line is a JSON object: return it."""
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=prepare_airflow_env(),
    )
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    if completed.returncode != 0 or not lines:
        tail = "\n".join(completed.stderr.splitlines()[-15:])
        raise RuntimeError(f"{module} {' '.join(args)} failed (exit {completed.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- probes ------------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class LoopLagProbe:
    """
    A coroutine that sleeps ``period`` over and over and records how late it wakes up.

    The lateness is how long the event loop was busy with something else: what a triggerer's
    "blocked main thread" watchdog looks at. Garbage-collector pauses are recorded alongside
    (``gc.callbacks``), so a lag can be split into the collector's share and the rest: a full
    collection walks the whole heap of the process (Airflow's included), whatever code triggered it.
    """

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.lags: list[float] = []
        #: (lag, lag minus the collector pauses in its window, lag bounded by the loop thread's CPU time)
        self._samples: list[tuple[float, float, float, float]] = []
        self._started = time.perf_counter()
        #: (generation, start, end) of every collection while the probe runs
        self.collections: list[tuple[int, float, float]] = []
        self._gc_started = 0.0
        #: Highest RSS seen while the probe ran (sampled every fifth tick).
        self.peak_rss_mb = rss_mb()
        self._task: asyncio.Task[None] | None = None
        self._stop = False

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        else:
            self.collections.append((int(info["generation"]), self._gc_started, now))

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        seen = 0
        while not self._stop:
            before, wall_before, cpu_before = loop.time(), time.perf_counter(), time.thread_time()
            await asyncio.sleep(self.period)
            lag = max(0.0, loop.time() - before - self.period)
            wall_after, cpu = time.perf_counter(), time.thread_time() - cpu_before
            paused = 0.0
            for _, start, end in self.collections[seen:]:
                paused += max(0.0, min(end, wall_after) - max(start, wall_before))
            seen = len(self.collections)
            self.lags.append(lag)
            # The loop thread's own CPU time bounds how much of the lag it caused itself; the rest
            # is the machine's other processes taking the CPU away (a shared, noisy machine).
            self._samples.append((lag, max(0.0, lag - paused), min(lag, cpu), wall_after - self._started))
            if len(self.lags) % 5 == 0:
                self.peak_rss_mb = max(self.peak_rss_mb, rss_mb())

    def start(self) -> None:
        self._started = time.perf_counter()
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            await self._task
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    @property
    def worst(self) -> float:
        return max(self.lags, default=0.0)

    @property
    def worst_outside_gc(self) -> float:
        """The worst lag once the collector's pauses inside its window are taken out."""
        return max((sample[1] for sample in self._samples), default=0.0)

    @property
    def worst_busy(self) -> float:
        """The worst lag the loop thread's own work can account for (CPU time, not wall time)."""
        return max((sample[2] for sample in self._samples), default=0.0)

    def worst_samples(self, count: int = 5) -> list[dict[str, float]]:
        """The largest lags: when (s after start), how long, the part outside GC, the CPU-bounded part."""
        ordered = sorted(self._samples, key=lambda sample: -sample[0])[:count]
        return [
            {"at": round(at, 3), "lag": round(lag, 4), "outside_gc": round(rest, 4), "busy": round(busy, 4)}
            for lag, rest, busy, at in ordered
        ]

    @property
    def worst_full_gc(self) -> float:
        return max(
            (end - start for generation, start, end in self.collections if generation == 2), default=0.0
        )

    @property
    def full_gcs(self) -> int:
        return sum(generation == 2 for generation, _, _ in self.collections)

    def percentile(self, fraction: float) -> float:
        if not self.lags:
            return 0.0
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def full_gc_seconds() -> float:
    """How long one full collection of this process's heap takes right now (median of 3)."""
    durations = []
    for _ in range(3):
        started = time.perf_counter()
        gc.collect()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def timed(started: float) -> float:
    return time.perf_counter() - started


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate a benchmark's server process (killed after 15 s) and close its output pipe."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
