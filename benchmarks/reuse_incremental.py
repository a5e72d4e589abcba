"""
Incremental runs: a 10,000-request nightly catalogue where 2 % of the requests changed, run with
``reuse=True``, against the full run before it (issue: nightly catalogues at scale).

One ``BflImageInferenceOperator`` (deferrable, 256x256 JPG, each request its own seed so the
default ``reuse=True`` ('seeded') applies, a key per request) lands into a ``file://`` destination
in a temp dir, which holds the reuse index; the emulator runs in its own process at 5 s latency.
Each run is ``dag.test()`` in a fresh child process; the runs share one metadata DB (the child of
run A migrates or copies it, the others enter the same AIRFLOW_HOME) and the destination:

- run A, the full run (the baseline): every request is new, so everything is sent and billed;
- run B, the incremental run: the DAG file rewritten with 2 % of the prompts changed, a new DAG run;
- run C: run B's requests again with ``refresh=`` naming 1 % of the keys (unchanged ones).

Measured per run: images billed and imageInference tasks received (the emulator's counters,
before and after the child), the HTTP requests the child sent by kind (counted where httpx sends
them, checked against the emulator's totals), the wall time of the generate task (the first
``execute`` call to the end of the last ``_finish``: the trigger's wait and Airflow's resume
included, DAG sync and parse not) and of the whole ``dag.test()``, the time in the reuse index
(lookup and claims; publishing), and what the manifest the run's XCom ``manifest`` names holds:
records, those marked reused, each key present with its stored file, plus the ``total_cost`` and
``reused_cost`` XComs.

    python -m benchmarks.reuse_incremental [--quick] [--count 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import BenchResult, EmulatorProcess, Row, fmt_s, prepare_airflow_env, ratio, run_child
from benchmarks.catalogue_scale import (
    PhaseRss,
    RequestTally,
    Timeline,
    _enter_airflow_home,
    _first,
    _fresh_airflow_home,
    _last,
    _span,
    _spans,
    bytecode_cache,
)

DAG_ID = "bench_reuse"
TASK_ID = "generate"
SIDE = 256
#: The share of the requests run B changes, and the share of the rest run C refreshes.
CHANGED_SHARE = 0.02
REFRESHED_SHARE = 0.01
#: The kinds of request the child counts (RequestTally's), in the order the rows name them.
KINDS = ("imageInference", "getResponse", "download")

DAG_FILE = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator

COUNT = {count}
CHANGED = frozenset({changed!r})
REFRESH = {refresh!r}


def prompt(i):
    text = f"studio photo of catalogue item {{i}}, white background"
    return text + ", new angle" if i in CHANGED else text


with DAG({dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
    BflImageInferenceOperator(
        task_id={task_id!r},
        request=[
            {{"positivePrompt": prompt(i), "seed": 1000 + i, "width": {side}, "height": {side}, "outputFormat": "JPG"}}
            for i in range(COUNT)
        ],
        keys=[f"SKU-{{i:05d}}" for i in range(COUNT)],
        destination={destination!r},
        deferrable=True,
        reuse=True,
        refresh=REFRESH or None,
        {threshold}
    )
"""


def key(index: int) -> str:
    return f"SKU-{index:05d}"


def positions(count: int, changed: int, refreshed: int) -> tuple[list[int], list[int]]:
    """The 0-based indexes run B changes (spread evenly) and those run C refreshes (spread over the rest)."""
    step = count / changed if changed else 0
    altered = sorted({int((n + 0.5) * step) for n in range(changed)})
    rest = [i for i in range(count) if i not in set(altered)]
    every = len(rest) / refreshed if refreshed else 0
    return altered, sorted({rest[int(n * every)] for n in range(refreshed)})


# -- the child ------------------------------------------------------------------------------------


def dag_child(
    count: int,
    changed: int,
    refreshed: int,
    *,
    base_url: str,
    destination: str,
    home: Path | None,
    db_template: Path,
    threshold: int | None,
) -> dict[str, Any]:
    """One ``dag.test()`` of the catalogue DAG (rewritten for this run) in this fresh process."""
    if home is None:
        home = _fresh_airflow_home(db_template)
    else:
        _enter_airflow_home(home)
    altered, refresh = positions(count, changed, refreshed)
    from benchmarks._common import use_connection

    use_connection(base_url)
    from airflow_provider_bfl import _submission
    from airflow_provider_bfl.operators import _reuse
    from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
    from airflow_provider_bfl.storage.manifest import iter_records
    from airflow_provider_bfl.testing.dag_runs import load_dag_file, xcom

    dag_file = home / "dags" / f"{DAG_ID}.py"
    dag_file.write_text(
        DAG_FILE.format(
            count=count,
            changed=altered,
            refresh=[key(i) for i in refresh],
            dag_id=DAG_ID,
            task_id=TASK_ID,
            side=SIDE,
            destination=destination,
            threshold="" if threshold is None else f"manifest_threshold={threshold},",
        )
    )
    dag = load_dag_file(dag_file, DAG_ID)
    tally = RequestTally(base_url.rsplit("/", 1)[0])
    with PhaseRss(period=0.2) as rss, tally.counting():
        timeline = Timeline(tally, rss)
        timeline.wrap(BflImageInferenceOperator, "execute", "execute")
        timeline.wrap(_reuse, "apply", "reuse")
        timeline.wrap(_submission, "submit", "submit")
        timeline.wrap(BflImageInferenceOperator, "_finish", "finish")
        timeline.wrap(_reuse, "publish", "publish")
        started = time.perf_counter()
        run = dag.test()
        dag_test_wall = time.perf_counter() - started
    marks = timeline.marks
    ref = xcom(run, TASK_ID, "manifest")
    records = list(iter_records(ref)) if isinstance(ref, dict) else []
    by_key = {record.get("key"): record for record in records}
    new_prompts = {key(i) for i in altered}
    return {
        "home": str(home),
        "count": count,
        "changed": len(altered),
        "refreshed": len(refresh),
        "state": str(run.state),
        "requests": tally.counts(),
        "dag_test_wall": dag_test_wall,
        "task_wall": _last(marks, "finish:end")["at"] - _first(marks, "execute")["at"],
        "phases": _phases(marks),
        "reuse_seconds": sum(_spans(marks, "reuse")),
        "publish_seconds": sum(_spans(marks, "publish")),
        "records": len(records),
        "reused": sum(record.get("reused") is True for record in records),
        "present": sum(key(i) in by_key and _stored(by_key[key(i)].get("storedURI")) for i in range(count)),
        "changed_regenerated": sum(
            not by_key.get(name, {}).get("reused")
            and str(by_key.get(name, {}).get("prompt")).endswith("new angle")
            for name in new_prompts
        ),
        "refreshed_regenerated": sum(
            name in by_key and not by_key[name].get("reused") for name in map(key, refresh)
        ),
        "manifest": None if not isinstance(ref, dict) else {k: v for k, v in ref.items() if k != "conn_id"},
        "total_cost": xcom(run, TASK_ID, "total_cost"),
        "reused_cost": xcom(run, TASK_ID, "reused_cost"),
        "peak_rss_mb": max(rss.peaks.values(), default=0.0),
    }


def _phases(marks: list[dict[str, Any]]) -> dict[str, float]:
    """The generate task's wall time split at the submissions and at ``_finish`` (landing, publishing, manifest)."""
    return {
        "to the first submission": _span(_first(marks, "execute"), _first(marks, "submit")),
        "submit": _span(_first(marks, "submit"), _last(marks, "submit:end")),
        "wait + resume": _span(_last(marks, "submit:end"), _first(marks, "finish")),
        "finish": _span(_first(marks, "finish"), _last(marks, "finish:end")),
    }


def _stored(uri: Any) -> bool:
    """Whether a record's ``file://`` storedURI names a file that is there."""
    return isinstance(uri, str) and uri.startswith("file://") and Path(uri.removeprefix("file://")).is_file()


# -- the parent -----------------------------------------------------------------------------------


def _emulator_counts(emu: EmulatorProcess) -> dict[str, Any]:
    counters = emu.counters()
    return {
        "images_billed": counters["images_billed"],
        "requests": counters["requests"],
        "image_downloads": counters["image_downloads"],
        "image_inference_tasks": counters["requests_by_task_type"].get("imageInference", 0),
        "cost_billed": counters["cost_billed"],
    }


def _measure(
    count: int,
    changed: int,
    refreshed: int,
    latency: float,
    threshold: int | None,
    db_template: Path | None,
) -> dict[str, Any]:
    """Runs A, B and (``refreshed`` > 0) C against one emulator and one destination; their figures."""
    workdir = Path(tempfile.mkdtemp(prefix="bfl-bench-reuse-"))
    template = db_template or workdir / "migrated.db"
    runs: dict[str, Any] = {}
    try:
        with bytecode_cache(), EmulatorProcess(latency=latency) as emu:

            def dag_run(name: str, changes: int, refresh: int) -> dict[str, Any]:
                args = ["--child", "--count", str(count), "--changed", str(changes)]
                args += ["--refreshed", str(refresh), "--base-url", emu.base_url]
                args += ["--destination", (workdir / "catalogue").as_uri(), "--db-template", str(template)]
                if "A" in runs:
                    args += ["--home", runs["A"]["home"]]
                if threshold is not None:
                    args += ["--threshold", str(threshold)]
                before = _emulator_counts(emu)
                started = time.perf_counter()
                measured = run_child("benchmarks.reuse_incremental", args, timeout=3600)
                measured["child_wall"] = time.perf_counter() - started
                after = _emulator_counts(emu)
                measured["emulator"] = {k: after[k] - before[k] for k in after}
                measured["load"] = os.getloadavg()[0]
                if measured["state"] != "success":
                    raise RuntimeError(f"run {name} ended {measured['state']}")
                return measured

            runs["A"] = dag_run("A", 0, 0)
            runs["B"] = dag_run("B", changed, 0)
            if refreshed:
                runs["C"] = dag_run("C", changed, refreshed)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return runs


def run(
    quick: bool = False,
    count: int | None = None,
    *,
    changed: int | None = None,
    refreshed: int | None = None,
    latency: float | None = None,
    threshold: int | None = None,
    db_template: Path | None = None,
) -> BenchResult:
    # Above the operator's default manifest_threshold (100) even when quick: the big-batch path.
    count = count or (150 if quick else 10_000)
    changed = max(1, round(count * CHANGED_SHARE)) if changed is None else changed
    refreshed = max(1, round(count * REFRESHED_SHARE)) if refreshed is None else refreshed
    latency = (1.0 if quick else 5.0) if latency is None else latency
    result = BenchResult(
        name="reuse_incremental",
        title="9b. Incremental run (reuse)",
        setup=(
            f"{count:,} requests ({SIDE}x{SIDE} JPG, each its own seed and key) in one deferrable "
            "BflImageInferenceOperator with reuse=True, destination file:// (the reuse index in it) shared "
            f"by the runs, emulator latency {latency:g} s in its own process; each run dag.test() of a new "
            "DAG run in a fresh child process, one metadata DB; run A the full run (every request new), "
            f"run B the same DAG file rewritten with {changed:,} prompts changed, run C run B's requests "
            f"with refresh= naming {refreshed:,} unchanged keys; task wall time from the first execute() "
            "to the end of the last _finish() (trigger wait and resume included, DAG sync and parse not)"
        ),
    )
    started = time.perf_counter()
    runs = _measure(count, changed, refreshed, latency, threshold, db_template)
    result.raw = {"runs": runs, "latency": latency, "bench_wall": time.perf_counter() - started}
    _report(result, runs)
    return result


def _sent(measured: dict[str, Any]) -> tuple[int, str]:
    requests = measured["requests"]
    return sum(requests.values()), " + ".join(f"{requests.get(kind, 0):,}" for kind in KINDS)


def _report(result: BenchResult, runs: dict[str, Any]) -> None:
    a, b = runs["A"], runs["B"]
    count, changed = b["count"], b["changed"]
    billed_a, billed_b = a["emulator"]["images_billed"], b["emulator"]["images_billed"]
    sent_a, by_kind_a = _sent(a)
    sent_b, by_kind_b = _sent(b)
    result.rows = [
        Row(
            "full run A: images billed, records in its manifest (reused)",
            f"{billed_a:,} billed, {a['records']:,} records ({a['reused']:,} reused)",
            f"{count:,} requests",
            target="all billed, none reused",
            met=billed_a == count == a["records"] and a["reused"] == 0,
        ),
        Row(
            f"images billed: incremental run B ({changed:,} changed) vs full run A",
            f"{billed_b:,}",
            f"{billed_a:,}",
            ratio(billed_b, billed_a),
            f"{changed / count:.3g}x expected",
        ),
        Row(
            "  goal: billed == changed (the emulator's counter)",
            f"{billed_b:,}",
            f"{changed:,}",
            target="exact",
            met=billed_b == changed,
        ),
        Row(
            "imageInference tasks the emulator received, B vs A",
            f"{b['emulator']['image_inference_tasks']:,}",
            f"{a['emulator']['image_inference_tasks']:,}",
            ratio(b["emulator"]["image_inference_tasks"], a["emulator"]["image_inference_tasks"]),
        ),
        Row(
            "HTTP requests sent, B vs A: submissions + getResponse + downloads",
            f"{sent_b:,} ({by_kind_b}; the emulator counted {b['emulator']['requests'] + b['emulator']['image_downloads']:,})",
            f"{sent_a:,} ({by_kind_a}; the emulator counted {a['emulator']['requests'] + a['emulator']['image_downloads']:,})",
            ratio(sent_b, sent_a),
        ),
        Row(
            "wall time of the generate task (execute to the end of _finish), B vs A",
            fmt_s(b["task_wall"]),
            fmt_s(a["task_wall"]),
            ratio(b["task_wall"], a["task_wall"]),
        ),
        Row(
            "  the whole dag.test() (DAG sync and parse of the DAG file included), B vs A",
            fmt_s(b["dag_test_wall"]),
            fmt_s(a["dag_test_wall"]),
            ratio(b["dag_test_wall"], a["dag_test_wall"]),
        ),
        Row(
            "  phases: " + ", ".join(b["phases"]) + "; B vs A",
            ", ".join(f"{seconds:.1f}" for seconds in b["phases"].values()) + " s",
            ", ".join(f"{seconds:.1f}" for seconds in a["phases"].values()) + " s",
        ),
        Row(
            "  in the reuse index: lookup + claims, publishing; B vs A",
            f"{fmt_s(b['reuse_seconds'])}, {fmt_s(b['publish_seconds'])}",
            f"{fmt_s(a['reuse_seconds'])}, {fmt_s(a['publish_seconds'])}",
        ),
        Row(
            "records in B's manifest, each key with its stored file",
            f"{b['present']:,}/{count:,} ({b['records']:,} records)",
            target="all",
            met=b["present"] == b["records"] == count,
        ),
        Row(
            "records of B marked reused; changed ones generated anew",
            f"{b['reused']:,}; {b['changed_regenerated']:,}/{changed:,}",
            f"{count - changed:,}; {changed:,}",
            target="exact",
            met=b["reused"] == count - changed and b["changed_regenerated"] == changed,
        ),
        Row(
            "XCom total_cost / reused_cost, B vs A",
            f"{_usd(b['total_cost'])} / {_usd(b['reused_cost'])}",
            f"{_usd(a['total_cost'])} / {_usd(a['reused_cost'])}",
            ratio(b["total_cost"] or 0.0, a["total_cost"] or 0.0),
        ),
    ]
    c = runs.get("C")
    if c is not None:
        refreshed = c["refreshed"]
        sent_c, by_kind_c = _sent(c)
        billed_c = c["emulator"]["images_billed"]
        result.rows += [
            Row(
                f"run C (B's requests, refresh= {refreshed:,} keys): images billed, goal billed == refreshed",
                f"{billed_c:,}",
                f"{refreshed:,}",
                target="exact",
                met=billed_c == refreshed,
            ),
            Row(
                "  run C: records present, reused, refreshed ones generated anew",
                f"{c['present']:,}/{count:,}, {c['reused']:,}, {c['refreshed_regenerated']:,}/{refreshed:,}",
                f"{count:,}, {count - refreshed:,}, {refreshed:,}",
                target="exact",
                met=c["present"] == count
                and c["reused"] == count - refreshed
                and c["refreshed_regenerated"] == refreshed,
            ),
            Row(
                "  run C vs A: task wall time; HTTP requests sent",
                f"{fmt_s(c['task_wall'])}; {sent_c:,} ({by_kind_c})",
                f"{fmt_s(a['task_wall'])}; {sent_a:,}",
                ratio(c["task_wall"], a["task_wall"]),
            ),
        ]
    result.notes.append(
        "child process wall (Airflow start, DB copy, parse, dag.test()): "
        + ", ".join(f"{name} {fmt_s(m['child_wall'])}" for name, m in runs.items())
        + "; 1-minute load average after each: "
        + ", ".join(f"{name} {m['load']:.1f}" for name, m in runs.items())
        + f" on {os.cpu_count()} CPUs"
    )
    result.notes.append(
        "the emulator renders each seed's image once: run A pays its drawing for every image, "
        "B and C for the new ones only, as an API would in its own latency"
    )


def _usd(value: Any) -> str:
    return "none" if value is None else f"{float(value):,.2f} USD"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", action="store_true", help="one DAG run (the parent's children)")
    parser.add_argument("--count", type=int, help="requests (default: 10,000; --quick 150)")
    parser.add_argument("--changed", type=int, help="requests run B changes (default: 2 %%)")
    parser.add_argument("--refreshed", type=int, help="keys run C refreshes (default: 1 %%; 0: no run C)")
    parser.add_argument("--latency", type=float, help="emulator latency, s (default: 5; --quick 1)")
    parser.add_argument("--threshold", type=int, help="manifest_threshold (default: the operator's)")
    parser.add_argument("--base-url")
    parser.add_argument("--destination", help="--child: the destination URI the runs share")
    parser.add_argument("--home", type=Path, help="--child: the AIRFLOW_HOME of an earlier run to enter")
    parser.add_argument("--db-template", type=Path, help="a migrated metadata DB to copy (made if missing)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (without --child)")
    args = parser.parse_args(argv)
    if not args.child:
        prepare_airflow_env()
        from benchmarks.run import text

        started = time.perf_counter()
        result = run(
            quick=args.quick,
            count=args.count,
            changed=args.changed,
            refreshed=args.refreshed,
            latency=args.latency,
            threshold=args.threshold,
        )
        print(text(result))
        print(f"(the benchmark took {fmt_s(time.perf_counter() - started)})")
        return 0
    if not (args.count and args.base_url and args.destination and args.db_template):
        parser.error("--child needs --count, --base-url, --destination and --db-template")
    measured = dag_child(
        args.count,
        args.changed or 0,
        args.refreshed or 0,
        base_url=args.base_url,
        destination=args.destination,
        home=args.home,
        db_template=args.db_template,
        threshold=args.threshold,
    )
    print(json.dumps(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
