"""
Catalogue scale: 10,000 prompts in one ``BflImageInferenceOperator`` run, submitted, waited for in
the triggerer, fetched and landed, against the emulator in its own process at 5 s latency.

The DAG run is ``dag.test()`` in a fresh child process with its own SQLite metadata DB, so the
worker and the triggerer are that one process: the task defers, ``dag.test()`` runs the trigger
in line (its own event loop, the provider's shared poller) and resumes the task in the same
process (``benchmarks.triggerer_10k`` measures a triggerer process on its own). Images are
256x256 JPG (the smallest size FLUX.1.1 [pro] takes) with one seed, so the emulator renders one
image and serves it from its cache: landing costs HTTP, hashing, checking and the disk, not the
emulator's drawing. Destination: ``file://`` in a temp dir.

Measured in that child (the provider's functions wrapped with timers; nothing else changed):

- wall time from the first submission to the last image landed, against one generation latency
  plus the landing of the same images by :class:`ImageLander` alone in a fresh process after the
  DAG run (the landing time at the link limit of this machine: loopback, 2 cores); goal <= 1.2x;
  the same images are also landed alone at the task's concurrency if it differs from the default;
- the phases in between (submit, hand-off, wait in the trigger, resume, fetch, land, manifest)
  and the time Airflow spends rendering the templated fields (the prompts) at start and resume;
- HTTP requests per image by kind (counted where httpx sends them, checked against the
  emulator's counters);
- peak RSS of the process (worker and triggerer in one), and its peak in each phase;
- bytes written to the metadata DB: every INSERT/UPDATE's parameters by table (a SQLAlchemy
  cursor hook), the run's XCom, trigger and task-state rows as stored after the run, and the
  trigger event as ``dag.test()`` stores it in ``task_instance.next_kwargs``.

Baseline for the bytes: the same DAG with ``manifest_threshold`` above the batch (the list of
records through the event and XCom, as before manifests) at 1,000 prompts, scaled linearly.

    python -m benchmarks.catalogue_scale [--quick] [--count 2000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks._common import (
    BenchResult,
    EmulatorProcess,
    Row,
    fmt_s,
    peak_rss_mb,
    prepare_airflow_env,
    ratio,
    rss_mb,
    run_child,
)

DAG_ID = "bench_catalogue"
TASK_ID = "generate"
SIDE = 256
SEED = 7
GOAL = 1.2
#: "A few KiB": the most any one XCom value or trigger event of a big batch should weigh.
SMALL = 4096
#: Tasks per submission and per getResponse request (the provider's default).
PER_REQUEST = 100
#: The metadata tables a DAG run writes to (DAG parsing and syncing write others, once per version).
RUN_TABLES = ("xcom", "trigger", "task_instance", "task_state_store", "rendered_task_instance_fields")

DAG_FILE = """
import os
import pendulum
from airflow.sdk import DAG
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator

COUNT = int(os.environ["BFL_BENCH_COUNT"])
THRESHOLD = os.environ.get("BFL_BENCH_THRESHOLD")
extra = {{}} if not THRESHOLD else {{"manifest_threshold": int(THRESHOLD)}}

with DAG({dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
    BflImageInferenceOperator(
        task_id={task_id!r},
        prompts={{f"SKU-{{i:05d}}": f"studio photo of catalogue item {{i}}, white background" for i in range(COUNT)}},
        width={side},
        height={side},
        seed={seed},
        output_format="JPG",
        destination=os.environ["BFL_BENCH_DESTINATION"],
        deferrable=True,
        **extra,
    )
"""


# -- probes of the child --------------------------------------------------------------------------


class PhaseRss:
    """Samples RSS every ``period`` s in a thread; keeps the peak of each phase it is told about."""

    def __init__(self, period: float = 0.02) -> None:
        self.period = period
        self.phase = "start"
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-phases", daemon=True)

    def _note(self) -> None:
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss_mb())

    def _sample(self) -> None:
        while not self._stop.wait(self.period):
            self._note()

    def enter(self, phase: str) -> None:
        self._note()  # the end of the phase before
        self.phase = phase
        self._note()

    def __enter__(self) -> PhaseRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._note()


class GcPauses:
    """The garbage collector's pauses (``gc.callbacks``) while in use: seconds and full collections."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        self.full += info["generation"] == 2

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)


class WriteTally:
    """
    Bytes of the parameters of every INSERT and UPDATE, by table (a SQLAlchemy cursor hook).

    What the metadata DB is sent, before any page overhead: strings and bytes by their length,
    other values (numbers, dates, NULL) not counted. ``largest`` keeps each table's largest value.
    """

    _STATEMENT = re.compile(r'\s*(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|UPDATE)\s+"?(\w+)', re.IGNORECASE)

    def __init__(self) -> None:
        self.bytes: dict[str, int] = {}
        self.largest: dict[str, int] = {}
        self.statements: dict[str, int] = {}

    def __call__(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        match = self._STATEMENT.match(statement)
        if match is None:
            return
        table = match.group(1).lower()
        rows = parameters if many else [parameters]
        for row in rows:
            values = row.values() if isinstance(row, dict) else (row or ())
            for value in values:
                size = len(value) if isinstance(value, str | bytes | bytearray | memoryview) else 0
                self.bytes[table] = self.bytes.get(table, 0) + size
                self.largest[table] = max(self.largest.get(table, 0), size)
        self.statements[table] = self.statements.get(table, 0) + 1

    @contextmanager
    def listening(self) -> Iterator[WriteTally]:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", self)
        try:
            yield self
        finally:
            event.remove(Engine, "before_cursor_execute", self)


class RequestTally:
    """
    The HTTP requests this process sends to the emulator, by kind, counted where httpx sends them.

    ``imageInference`` and ``getResponse`` (the first task type in a POST's body) and ``download``
    (a GET of an image); the control API is left out. Counting costs no I/O, so the phases it is
    read between are timed as they run; the parent checks the totals against the emulator's.
    """

    _TASK_TYPE = re.compile(rb'"taskType"\s*:\s*"(\w+)"')

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _count(self, request: Any) -> None:
        url = str(request.url)
        if not url.startswith(self.origin) or "/_emulator/" in url:
            return
        if request.method == "GET":
            kind = "download"
        else:
            try:
                found = self._TASK_TYPE.search(request.content)
            except Exception:  # a streamed body: not one of the API's JSON posts
                found = None
            kind = found.group(1).decode() if found else "other"
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1

    @contextmanager
    def counting(self) -> Iterator[RequestTally]:
        import httpx

        sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send
        tally = self

        def send(client: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            tally._count(request)
            return sync_send(client, request, **kwargs)

        async def asend(client: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            tally._count(request)
            return await async_send(client, request, **kwargs)

        httpx.Client.send = send  # type: ignore[method-assign, assignment]
        httpx.AsyncClient.send = asend  # type: ignore[method-assign, assignment]
        try:
            yield self
        finally:
            httpx.Client.send = sync_send  # type: ignore[method-assign]
            httpx.AsyncClient.send = async_send  # type: ignore[method-assign]


class Timeline:
    """Wraps provider functions so each call records when it started and ended, and the requests sent so far."""

    def __init__(self, requests: RequestTally, rss: PhaseRss) -> None:
        self.requests = requests
        self.rss = rss
        self.marks: list[dict[str, Any]] = []
        self.started = time.perf_counter()

    def mark(self, name: str) -> None:
        self.marks.append(
            {"name": name, "at": time.perf_counter() - self.started, "requests": self.requests.counts()}
        )
        self.rss.enter(name)

    def wrap(self, owner: Any, attribute: str, phase: str) -> None:
        """Replace ``owner.attribute`` by a wrapper marking ``phase`` and ``phase:end`` around each call."""
        import inspect

        original = getattr(owner, attribute)
        if inspect.iscoroutinefunction(original):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                self.mark(phase)
                try:
                    return await original(*args, **kwargs)
                finally:
                    self.mark(f"{phase}:end")

            setattr(owner, attribute, timed_async)
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            self.mark(phase)
            try:
                return original(*args, **kwargs)
            finally:
                self.mark(f"{phase}:end")

        setattr(owner, attribute, timed)


# -- the children ---------------------------------------------------------------------------------


def _fresh_airflow_home(db_template: Path) -> Path:
    """
    A throw-away AIRFLOW_HOME beside ``db_template`` (in the parent's work folder, removed with it)
    with its own DAGs folder and SQLite DB; made before Airflow is imported.

    The DB is a copy of ``db_template`` (a freshly migrated DB), made by the first child that
    needs it: migrating takes a minute on a loaded machine and is no part of what is measured.
    """
    home = Path(tempfile.mkdtemp(prefix="airflow-home-", dir=db_template.parent))
    (home / "dags").mkdir()
    database = _enter_airflow_home(home)
    if db_template.exists():
        _copy_db(db_template, database)
    else:
        from airflow.utils.db import initdb

        initdb()
        _copy_db(database, db_template)
    return home


def _enter_airflow_home(home: Path) -> Path:
    """
    Point Airflow (not imported yet) at ``home``: its DAGs folder and SQLite DB, whose path is returned.

    A later child enters the home an earlier one made, to run the same DAG again in the same DB.
    """
    database = home / "airflow.db"
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{database}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )
    return database


def _copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite DB (its journal included), through SQLite's backup API."""
    import sqlite3

    with sqlite3.connect(source) as origin, sqlite3.connect(target) as copy:
        origin.backup(copy)


def _stored_sizes(run_id: str) -> dict[str, Any]:
    """What the run left in the metadata DB: XCom and task-state values by key, trigger kwargs, next_kwargs."""
    from airflow.utils.session import create_session
    from sqlalchemy import inspect, text

    with create_session() as session:
        has_state_store = inspect(session.get_bind()).has_table("task_state_store")  # Airflow 3.3+
        xcom = {
            str(key): int(size or 0)
            for key, size in session.execute(
                text("SELECT key, length(value) FROM xcom WHERE dag_id = :dag AND run_id = :run"),
                {"dag": DAG_ID, "run": run_id},
            )
        }
        triggers = [int(size or 0) for (size,) in session.execute(text("SELECT length(kwargs) FROM trigger"))]
        state_store = {
            str(key): int(size or 0)
            for key, size in (
                session.execute(
                    text(
                        'SELECT "key", length(value) FROM task_state_store WHERE dag_id = :dag AND run_id = :run'
                    ),
                    {"dag": DAG_ID, "run": run_id},
                )
                if has_state_store
                else ()
            )
        }
        next_kwargs = [
            int(size or 0)
            for (size,) in session.execute(
                text("SELECT length(next_kwargs) FROM task_instance WHERE dag_id = :dag AND run_id = :run"),
                {"dag": DAG_ID, "run": run_id},
            )
        ]
    return {
        "xcom": xcom,
        "trigger_kwargs": triggers,
        "task_state_store": state_store,
        "next_kwargs_after": next_kwargs,
    }


def dag_child(
    count: int, base_url: str, out_dir: str, threshold: int | None, db_template: Path
) -> dict[str, Any]:
    """One ``dag.test()`` of the catalogue DAG in this fresh process; the figures as a dict."""
    home = _fresh_airflow_home(db_template)
    os.environ.update(
        {
            "BFL_BENCH_COUNT": str(count),
            "BFL_BENCH_DESTINATION": Path(out_dir).as_uri(),
            **({"BFL_BENCH_THRESHOLD": str(threshold)} if threshold is not None else {}),
        }
    )
    from benchmarks._common import use_connection

    use_connection(base_url)
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor

    try:
        from airflow.sdk.serde import serialize
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serde import serialize

    from airflow_provider_bfl import _submission, events
    from airflow_provider_bfl.hooks._coalescer import PollCoalescer
    from airflow_provider_bfl.operators import _landing
    from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
    from airflow_provider_bfl.testing.dag_runs import load_dag_file
    from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger

    dag_file = home / "dags" / f"{DAG_ID}.py"
    dag_file.write_text(DAG_FILE.format(dag_id=DAG_ID, task_id=TASK_ID, side=SIDE, seed=SEED))
    parsing = time.perf_counter()
    dag = load_dag_file(dag_file, DAG_ID)  # literal arguments are checked here, as on every parse
    parse_seconds = time.perf_counter() - parsing
    trigger_sizes: dict[str, int] = {}
    real_inline = InProcessTestSupervisor.run_trigger_in_process.__func__  # type: ignore[attr-defined]

    def inline(cls: Any, *, trigger: Any, ti: Any) -> Any:
        # What dag.test() stores: the trigger's kwargs (a trigger row) and the event (next_kwargs).
        trigger_sizes["kwargs_plain"] = len(json.dumps(serialize(trigger.serialize()[1])))
        event = real_inline(cls, trigger=trigger, ti=ti)
        if event is not None:
            trigger_sizes["event"] = len(json.dumps({"event": serialize(event.payload)}))
        return event

    InProcessTestSupervisor.run_trigger_in_process = classmethod(inline)  # type: ignore[method-assign, assignment]
    used: dict[str, Any] = {}
    real_land = _landing.land

    def land(lander: Any, *args: Any, **kwargs: Any) -> Any:
        used["landing_concurrency"] = lander.concurrency
        with GcPauses() as pauses:
            try:
                return real_land(lander, *args, **kwargs)
            finally:
                used["landing_gc"] = {"seconds": pauses.seconds, "full": pauses.full}

    _landing.land = land
    tally = RequestTally(base_url.rsplit("/", 1)[0])
    writes = WriteTally()
    with PhaseRss() as rss, tally.counting():
        timeline = Timeline(tally, rss)
        timeline.wrap(BflImageInferenceOperator, "render_template_fields", "render")
        timeline.wrap(BflImageInferenceOperator, "execute", "execute")
        timeline.wrap(_submission, "submit", "submit")
        timeline.wrap(BflImageInferenceOperator, "execute_complete", "resumed")
        timeline.wrap(PollCoalescer, "_dispatch", "poll")
        timeline.wrap(BflImageInferenceTrigger, "_wait", "wait")
        timeline.wrap(events, "fetch_results", "fetch")
        timeline.wrap(_landing, "land", "land")
        timeline.wrap(BflImageInferenceOperator, "_finish", "finish")
        rss_before = rss_mb()
        started = time.perf_counter()
        timeline.mark("dag.test")
        with writes.listening():
            run = dag.test()
        timeline.mark("dag.test:end")
        dag_test_wall = time.perf_counter() - started
    stored = _stored_sizes(str(run.run_id))
    from airflow_provider_bfl.testing.dag_runs import xcom

    ref = xcom(run, TASK_ID, "manifest")
    images = 0 if not isinstance(ref, dict) else int(ref.get("images", 0))
    return {
        "count": count,
        "threshold": threshold,
        "state": str(run.state),
        "images": images,
        "manifest": None if not isinstance(ref, dict) else ref.get("bflManifest"),
        "marks": timeline.marks,
        "rss_peaks": rss.peaks,
        "rss_before_mb": rss_before,
        "process_peak_rss_mb": peak_rss_mb(),
        "dag_test_wall": dag_test_wall,
        "parse_seconds": parse_seconds,
        "db_bytes": writes.bytes,
        "db_largest": writes.largest,
        "db_statements": writes.statements,
        "stored": stored,
        "trigger_sizes": trigger_sizes,
        "landing_concurrency": used.get("landing_concurrency"),
        "landing_gc": used.get("landing_gc"),
    }


def land_child(manifest: str, out_dir: str, concurrency: int | None) -> dict[str, Any]:
    """Land the images a manifest names (the same URLs) with ImageLander alone (None: its default concurrency)."""
    import gc

    from PIL import Image, JpegImagePlugin  # noqa: F401  (imported before measuring, as in the task)

    from airflow_provider_bfl.storage.landing import ImageLander
    from airflow_provider_bfl.storage.manifest import iter_records

    records = list(iter_records({"bflManifest": manifest}))
    entries = [
        {"taskUUID": r["taskUUID"], "imageUUID": r["imageUUID"], "imageURL": r["imageURL"]} for r in records
    ]
    requested = {r["taskUUID"]: {"width": SIDE, "height": SIDE, "outputFormat": "JPG"} for r in records}
    del records
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lander = ImageLander(out.as_uri(), dag_id="bench", run_id="alone", concurrency=concurrency)
    gc.collect()
    with PhaseRss() as rss:
        rss.enter("land")
        started = time.perf_counter()
        with lander, GcPauses() as pauses:
            landed, failed = lander.land_urls(entries, requested)
        wall = time.perf_counter() - started
    return {
        "images": len(landed),
        "failures": [str(error) for _, error in failed][:3],
        "wall": wall,
        "concurrency": lander.concurrency,
        "rss_peak_mb": rss.peaks.get("land", 0.0),
        "gc": {"seconds": pauses.seconds, "full": pauses.full},
        "process_peak_rss_mb": peak_rss_mb(),
    }


# -- the parent -----------------------------------------------------------------------------------


@contextmanager
def bytecode_cache() -> Iterator[None]:
    """
    Let the child processes keep compiled bytecode, in a private cache (``PYTHONPYCACHEPREFIX``).

    With ``PYTHONDONTWRITEBYTECODE`` set and no ``__pycache__`` in site-packages, every fresh
    process compiles Airflow from source (half a minute of CPU here), which no deployed worker
    does. The parent's environment is restored afterwards: other benchmarks (the parse cost) see
    the machine as they did.
    """
    saved = {name: os.environ.get(name) for name in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "bfl-bench-pycache")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _named(marks: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    found = [mark for mark in marks if mark["name"] == name]
    if not found:  # e.g. no fetch: a batch at or below manifest_threshold has its results in the event
        raise LookupError(f"the DAG run has no {name!r} mark (marks: {sorted({m['name'] for m in marks})})")
    return found


def _first(marks: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return _named(marks, name)[0]


def _last(marks: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return _named(marks, name)[-1]


def _span(start: dict[str, Any], end: dict[str, Any]) -> float:
    return float(end["at"] - start["at"])


def _phases(marks: list[dict[str, Any]]) -> dict[str, float]:
    """
    Seconds of each phase of a DAG run, from the first submission to the end of the task.

    "resume (Airflow)" is from the trigger's end to ``execute_complete`` (the task started again,
    its templates rendered again); "resume (task)" from there to the first fetch.
    """
    return {
        "submit": _span(_first(marks, "submit"), _last(marks, "submit:end")),
        "hand-off": _span(_last(marks, "submit:end"), _first(marks, "wait")),
        "wait": _span(_first(marks, "wait"), _last(marks, "wait:end")),
        "resume (Airflow)": _span(_last(marks, "wait:end"), _first(marks, "resumed")),
        "resume (task)": _span(_first(marks, "resumed"), _first(marks, "fetch")),
        "fetch": _span(_first(marks, "fetch"), _last(marks, "fetch:end")),
        "to landing": _span(_last(marks, "fetch:end"), _first(marks, "land")),
        "land": _span(_first(marks, "land"), _last(marks, "land:end")),
        "manifest": _span(_last(marks, "land:end"), _last(marks, "finish:end")),
    }


def _spans(marks: list[dict[str, Any]], phase: str) -> list[float]:
    """Seconds of every call of ``phase`` (``phase`` to the next ``phase:end``)."""
    spans, opened = [], None
    for mark in marks:
        if mark["name"] == phase:
            opened = mark
        elif mark["name"] == f"{phase}:end" and opened is not None:
            spans.append(_span(opened, mark))
            opened = None
    return spans


def _between(marks: list[dict[str, Any]], start: str, end: str, kind: str) -> int:
    """Requests of ``kind`` sent from the first ``start`` mark to the last ``end`` mark."""
    return int(_last(marks, end)["requests"].get(kind, 0) - _first(marks, start)["requests"].get(kind, 0))


def _xcom_and_trigger_bytes(run: dict[str, Any]) -> dict[str, int]:
    xcom = run["stored"]["xcom"]
    return {
        "xcom_total": sum(xcom.values()),
        "xcom_largest": max(xcom.values(), default=0),
        "trigger_kwargs": sum(run["stored"]["trigger_kwargs"]),
        "event": int(run["trigger_sizes"].get("event", 0)),
        "state_store": sum(run["stored"]["task_state_store"].values()),
    }


def _gc_pauses(pauses: dict[str, Any] | None) -> str:
    if not pauses:
        return "not measured"
    return f"{fmt_s(pauses['seconds'])} ({pauses['full']} full)"


def _kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB"


def run(quick: bool = False, count: int | None = None) -> BenchResult:
    # Above the operator's default manifest_threshold (100) even when quick: the big-batch path.
    count = count or (150 if quick else 10_000)
    latency = 1.0 if quick else 5.0
    listed_count = min(count, 30 if quick else 1_000)
    scale = count / listed_count
    result = BenchResult(
        name="catalogue_scale",
        title="9. Catalogue scale",
        setup=(
            f"{count:,} prompts x 1 image ({SIDE}x{SIDE} JPG, one seed: the emulator renders once) in one "
            f"deferrable BflImageInferenceOperator, destination file://, emulator latency {latency:g} s in its "
            "own process; dag.test() in a fresh child process with its own SQLite DB, so worker and "
            "triggerer (the trigger run in line) are one process; baseline for the wall time: the latency "
            "plus the same images landed by ImageLander alone (its default concurrency; also at the "
            "operator's) in a fresh process right after; child processes keep bytecode in a private cache "
            f"(PYTHONDONTWRITEBYTECODE is set here); baseline for the DB bytes: manifest_threshold above the batch (the list of "
            f"records through event and XCom) at {listed_count:,} prompts, scaled x{scale:g}"
        ),
    )
    workdir = Path(tempfile.mkdtemp(prefix="bfl-bench-catalogue-"))
    try:
        with bytecode_cache(), EmulatorProcess(latency=latency) as emu:

            def dag_run(prompts: int, threshold: int | None, out: str) -> dict[str, Any]:
                emu.reset()
                args = ["--child", "dag", "--count", str(prompts), "--base-url", emu.base_url]
                args += ["--out", str(workdir / out), "--db-template", str(workdir / "migrated.db")]
                if threshold is not None:
                    args += ["--threshold", str(threshold)]
                measured = run_child("benchmarks.catalogue_scale", args, timeout=3600)
                measured["counters"] = {k: v for k, v in emu.counters().items() if k != "tasks"}
                measured["load"] = os.getloadavg()[0]
                return measured

            def land_alone(manifest: str, concurrency: int | None) -> dict[str, Any]:
                before = emu.counters()["image_downloads"]
                out = workdir / "alone"
                args = ["--child", "land", "--manifest", manifest, "--out", str(out)]
                if concurrency is not None:
                    args += ["--concurrency", str(concurrency)]
                try:
                    measured = run_child("benchmarks.catalogue_scale", args, timeout=3600)
                finally:
                    shutil.rmtree(out, ignore_errors=True)
                measured["downloads"] = emu.counters()["image_downloads"] - before
                measured["load"] = os.getloadavg()[0]
                return measured

            main = dag_run(count, None, "manifest")
            if main["manifest"] is None:
                raise RuntimeError(f"the DAG run ended {main['state']} without a manifest")
            alone = land_alone(main["manifest"], None)
            in_task = main["landing_concurrency"]
            alone_at_task = (
                alone if in_task == alone["concurrency"] else land_alone(main["manifest"], in_task)
            )
            listed = dag_run(listed_count, listed_count, "listed")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.raw = {
        "main": main,
        "alone": alone,
        "alone_at_task_concurrency": alone_at_task,
        "listed": listed,
        "latency": latency,
    }
    _report(result, main, alone, alone_at_task, listed, latency, scale)
    return result


def _report(
    result: BenchResult,
    main: dict[str, Any],
    alone: dict[str, Any],
    alone_at_task: dict[str, Any],
    listed: dict[str, Any],
    latency: float,
    scale: float,
) -> None:
    count = main["count"]
    marks = main["marks"]
    phases = _phases(marks)
    landed = _last(marks, "land:end")["at"]
    wall = landed - _first(marks, "submit")["at"]
    from_start = landed - _first(marks, "execute")["at"]
    renders = _spans(marks, "render")
    baseline = latency + alone["wall"]
    images = main["images"]
    submits = _between(marks, "submit", "submit:end", "imageInference")
    polls = _between(marks, "wait", "wait:end", "getResponse")
    fetches = _between(marks, "fetch", "fetch:end", "getResponse")
    downloads = _between(marks, "land", "land:end", "download")
    sent = _last(marks, "dag.test:end")["requests"]
    total = sum(sent.values())
    emulator = main["counters"]["requests"] + main["counters"]["image_downloads"]
    floor = 1 + 2 / PER_REQUEST  # one download, a share of one submission and one getResponse each
    per_image = total / max(1, images)
    new, old = _xcom_and_trigger_bytes(main), _xcom_and_trigger_bytes(listed)
    scaled = {key: value * scale for key, value in old.items()}
    new_total = new["xcom_total"] + new["trigger_kwargs"] + new["event"]
    old_total = scaled["xcom_total"] + scaled["trigger_kwargs"] + scaled["event"]
    run_bytes = sum(main["db_bytes"].get(table, 0) for table in RUN_TABLES)
    old_run_bytes = scale * sum(listed["db_bytes"].get(table, 0) for table in RUN_TABLES)
    rss_start = main["rss_peaks"].get("submit", main["rss_before_mb"])
    result.rows = [
        Row(
            "images landed (manifest records), task state",
            f"{images:,}/{count:,}, {main['state']}",
            f"{alone['images']:,}/{count:,} ImageLander alone",
            target="all",
            met=images == count and main["state"] == "success" and alone["images"] == count,
        ),
        Row(
            f"wall time, first submission to the last image landed ({count:,} images)",
            fmt_s(wall),
            f"{fmt_s(baseline)} ({latency:g} s latency + {fmt_s(alone['wall'])} landing alone)",
            ratio(wall, baseline),
            f"<= {GOAL}x",
            ratio(wall, baseline) <= GOAL,
        ),
        Row(
            "  from the task's start (execute: validation, taskUUIDs before the first submission)",
            fmt_s(from_start),
            fmt_s(baseline),
            ratio(from_start, baseline),
        ),
        Row(
            "  phases: " + ", ".join(phases),
            ", ".join(f"{seconds:.1f}" for seconds in phases.values()) + " s",
            f"{latency:g} s latency, {fmt_s(alone['wall'])} landing alone",
        ),
        Row(
            f"  rendering the templated fields ({count:,} prompts): at start, at resume",
            ", ".join(fmt_s(seconds) for seconds in renders),
            f"{', '.join(fmt_s(seconds) for seconds in _spans(listed['marks'], 'render'))} with "
            f"{listed['count']:,} prompts",
        ),
        Row(
            "  landing in the task vs ImageLander alone (same images)",
            f"{fmt_s(phases['land'])} (concurrency {main['landing_concurrency']})",
            f"{fmt_s(alone['wall'])} (concurrency {alone['concurrency']})",
            ratio(phases["land"], alone["wall"]),
        ),
        Row(
            "    of which garbage-collector pauses (full collections)",
            _gc_pauses(main.get("landing_gc")),
            f"{_gc_pauses(alone.get('gc'))} alone",
            ratio(
                (main.get("landing_gc") or {}).get("seconds", 0.0),
                (alone.get("gc") or {}).get("seconds", 0.0),
            ),
        ),
        Row(
            "  ImageLander alone at the task's concurrency vs at its default",
            f"{fmt_s(alone_at_task['wall'])} (concurrency {alone_at_task['concurrency']})",
            f"{fmt_s(alone['wall'])} (concurrency {alone['concurrency']})",
            ratio(alone_at_task["wall"], alone["wall"]),
        ),
        Row(
            "HTTP requests per image: submissions + getResponse (trigger, resume) + downloads",
            f"{per_image:.3f} ({submits} + {polls} + {fetches} + {downloads:,} = {total:,}; the emulator "
            f"counted {emulator:,})",
            f"{floor:.2f} (1 download, 1/{PER_REQUEST} submission, 1/{PER_REQUEST} getResponse)",
            ratio(per_image, floor),
        ),
        Row(
            "peak RSS of the process (worker + triggerer in one), growth from submit",
            f"{main['process_peak_rss_mb']:.0f} MiB (+{main['process_peak_rss_mb'] - rss_start:.0f} MiB)",
            f"{alone['process_peak_rss_mb']:.0f} MiB ImageLander alone",
            ratio(main["process_peak_rss_mb"], alone["process_peak_rss_mb"]),
        ),
        Row(
            "  peak RSS by phase: submit, wait (trigger), fetch, land, finish",
            ", ".join(
                f"{main['rss_peaks'].get(name, 0.0):.0f}"
                for name in ("submit", "wait", "fetch", "land", "finish")
            )
            + " MiB",
            f"{rss_start:.0f} MiB at submit",
        ),
        Row(
            "metadata DB: XCom rows + trigger row + trigger event (next_kwargs)",
            _kib(new_total),
            f"{_kib(old_total)} list of records (x{scale:g})",
            ratio(new_total, old_total),
        ),
        Row(
            "  XCom rows of the run (all keys; largest value)",
            f"{_kib(new['xcom_total'])} ({_kib(new['xcom_largest'])})",
            f"{_kib(scaled['xcom_total'])} ({_kib(scaled['xcom_largest'])})",
            ratio(new["xcom_total"], scaled["xcom_total"]),
            f"each < {SMALL // 1024} KiB",
            new["xcom_largest"] < SMALL,
        ),
        Row(
            "  trigger event (task_instance.next_kwargs)",
            _kib(new["event"]),
            _kib(scaled["event"]),
            ratio(new["event"], scaled["event"]),
            f"< {SMALL // 1024} KiB",
            new["event"] < SMALL,
        ),
        Row(
            "  trigger row kwargs (as stored)",
            _kib(new["trigger_kwargs"]),
            _kib(scaled["trigger_kwargs"]),
            ratio(new["trigger_kwargs"], scaled["trigger_kwargs"]),
        ),
        Row(
            "  task state store (the taskUUIDs a retry re-attaches to)",
            _kib(new["state_store"]),
            _kib(scaled["state_store"]),
            ratio(new["state_store"], scaled["state_store"]),
        ),
        Row(
            "  all INSERT/UPDATE parameters to " + ", ".join(RUN_TABLES),
            _kib(run_bytes),
            _kib(old_run_bytes),
            ratio(run_bytes, old_run_bytes),
        ),
    ]
    by_kind = ", ".join(
        f"{kind} {n:,}" for kind, n in sorted(main["counters"]["requests_by_task_type"].items())
    )
    result.notes.append(
        f"emulator: {main['counters']['requests']:,} API requests carrying {by_kind} task objects, "
        f"{main['counters']['image_downloads']:,} image downloads; images billed "
        f"{main['counters']['images_billed']:,}"
    )
    result.notes.append(
        f"the whole dag.test() took {fmt_s(main['dag_test_wall'])} (DAG sync and parse included); loading "
        f"the DAG file once took {fmt_s(main['parse_seconds'])} ({count:,} literal prompts are validated "
        f"at parse time; {fmt_s(listed['parse_seconds'])} with {listed['count']:,}); 1-minute load average after the DAG run "
        f"{main['load']:.1f}, after landing alone {alone['load']:.1f}, on {os.cpu_count()} CPUs"
    )
    others = {
        table: size
        for table, size in main["db_bytes"].items()
        if table not in RUN_TABLES and size > 64 * 1024
    }
    if others:
        result.notes.append(
            "written once per DAG version, not per run (DAG sync): "
            + ", ".join(f"{table} {_kib(size)}" for table, size in sorted(others.items()))
        )
    for failure in (*alone["failures"], *alone_at_task["failures"]):
        result.notes.append(f"landing alone failed: {failure}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=("dag", "land"))
    parser.add_argument("--count", type=int, help="prompts (default: 10,000; --quick 200)")
    parser.add_argument("--base-url")
    parser.add_argument("--out")
    parser.add_argument("--threshold", type=int, help="manifest_threshold (default: the operator's)")
    parser.add_argument("--manifest", help="the manifest whose images --child land lands")
    parser.add_argument(
        "--concurrency", type=int, help="--child land: downloads at once (default: the lander's)"
    )
    parser.add_argument("--db-template", type=Path, help="a migrated metadata DB to copy (made if missing)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (without --child)")
    args = parser.parse_args(argv)
    if args.child is None:
        prepare_airflow_env()
        from benchmarks.run import text

        print(text(run(quick=args.quick, count=args.count)))
        return 0
    if args.child == "land":
        if not (args.manifest and args.out):
            parser.error("--child land needs --manifest and --out")
        prepare_airflow_env()
        print(json.dumps(land_child(args.manifest, args.out, args.concurrency)))
        return 0
    if not (args.count and args.base_url and args.out and args.db_template):
        parser.error("--child dag needs --count, --base-url, --out and --db-template")
    print(json.dumps(dag_child(args.count, args.base_url, args.out, args.threshold, args.db_template)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
