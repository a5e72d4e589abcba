"""
The catalogue-scale and triggerer-at-10,000 benchmarks measure what they say, at tiny sizes.

No timing is asserted (the machine is shared); what is checked is that each probe counts what
really happened: the bytes a real SQLite engine was sent, the requests a real emulator saw between
two marks, the images a manifest names landed, and the children as ``make bench`` runs them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from airflow_provider_bfl.hooks.bfl import BflHook
from airflow_provider_bfl.storage.manifest import write_manifest
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from benchmarks import catalogue_scale
from benchmarks._common import EmulatorProcess, run_child
from benchmarks.catalogue_scale import PhaseRss, RequestTally, Timeline, WriteTally, bytecode_cache

pytestmark = pytest.mark.slow  # `make test-slow`: children import Airflow and run dag.test()


def request(index: int) -> dict[str, Any]:
    return {
        "positivePrompt": f"catalogue item {index}",
        "width": 256,
        "height": 256,
        "outputFormat": "JPG",
        "deliveryMethod": "async",
    }


def test_write_tally_counts_the_parameters_of_inserts_and_updates_by_table() -> None:
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE xcom (key TEXT, value TEXT)"))
        conn.execute(text("CREATE TABLE trigger (kwargs TEXT)"))
    tally = WriteTally()
    with tally.listening(), engine.begin() as conn:
        conn.execute(text("INSERT INTO xcom VALUES (:k, :v)"), {"k": "ab", "v": "cdef"})
        conn.execute(text("INSERT INTO xcom VALUES (:k, :v)"), [{"k": "g", "v": "hi"}, {"k": "j", "v": "k"}])
        conn.execute(text("UPDATE xcom SET value = :v WHERE key = :k"), {"v": "lmnopq", "k": "ab"})
        conn.execute(text("INSERT INTO trigger VALUES (:kw)"), {"kw": "x" * 100})
        conn.execute(text("SELECT * FROM xcom")).all()  # reads are not writes
    with engine.begin() as conn:  # no longer listening
        conn.execute(text("INSERT INTO trigger VALUES (:kw)"), {"kw": "y" * 1000})
    assert tally.bytes == {"xcom": 2 + 4 + 1 + 2 + 1 + 1 + 6 + 2, "trigger": 100}
    assert tally.largest == {"xcom": 6, "trigger": 100}
    assert tally.statements == {"xcom": 3, "trigger": 1}


def test_request_tally_counts_what_the_emulator_saw_by_kind_between_the_marks(
    bfl_conn: RunwareEmulator, tmp_path: Path
) -> None:
    class Probed:
        @staticmethod
        def generate(count: int) -> list[dict[str, Any]]:
            hook = BflHook()
            try:
                outcome = hook.submit([request(i) for i in range(count)])
                statuses = hook.poll_until_done(outcome.statuses, timeout=60)
            finally:
                hook.close()
            return [result.to_xcom() for status in statuses.values() for result in status.results]

        @staticmethod
        async def wait(value: str) -> str:
            await asyncio.sleep(0)
            return value

    tally = RequestTally(bfl_conn.base_url.rsplit("/", 1)[0])
    with PhaseRss(period=0.005) as rss, tally.counting():
        timeline = Timeline(tally, rss)
        timeline.wrap(Probed, "generate", "generate")
        timeline.wrap(Probed, "wait", "wait")
        records = Probed.generate(3)
        assert asyncio.run(Probed.wait("done")) == "done"
        httpx.get(bfl_conn.base_url.rsplit("/", 1)[0] + "/_emulator/counters")  # control calls are left out
        landed = catalogue_scale.land_child(
            write_manifest(records, (tmp_path / "m.jsonl").as_uri(), conn_id=None)["bflManifest"],
            str(tmp_path / "out"),
            concurrency=2,
        )
    seen = bfl_conn.snapshot()
    assert [mark["name"] for mark in timeline.marks] == ["generate", "generate:end", "wait", "wait:end"]
    assert catalogue_scale._between(timeline.marks, "generate", "generate:end", "imageInference") == 1
    polls = catalogue_scale._between(timeline.marks, "generate", "generate:end", "getResponse")
    assert polls >= 1 and polls + 1 == seen.requests  # one submission, the rest polls
    assert tally.counts() == {"imageInference": 1, "getResponse": polls, "download": 3}
    assert seen.image_downloads == 3 and landed["images"] == 3
    assert set(rss.peaks) >= {"start", "generate", "wait:end"} and all(
        peak > 0 for peak in rss.peaks.values()
    )


def test_phases_split_the_run_at_the_marks_of_the_wrapped_calls() -> None:
    timeline = [
        ("render", 0.0),
        ("render:end", 0.5),
        ("execute", 0.6),
        ("submit", 1.0),
        ("submit:end", 2.0),
        ("wait", 3.5),
        ("wait:end", 9.0),
        ("render", 9.5),  # the resumed task renders its fields again
        ("render:end", 10.25),
        ("resumed", 11.0),
        ("fetch", 12.0),
        ("fetch:end", 13.0),
        ("land", 13.5),
        ("land:end", 20.0),
        ("finish:end", 21.0),
    ]
    marks = [{"name": name, "at": seconds} for name, seconds in timeline]
    assert catalogue_scale._phases(marks) == {
        "submit": 1.0,
        "hand-off": 1.5,
        "wait": 5.5,
        "resume (Airflow)": 2.0,
        "resume (task)": 1.0,
        "fetch": 1.0,
        "to landing": 0.5,
        "land": 6.5,
        "manifest": 1.0,
    }
    assert catalogue_scale._spans(marks, "render") == [0.5, 0.75]


def test_landing_alone_lands_every_image_a_manifest_names(bfl_conn: RunwareEmulator, tmp_path: Path) -> None:
    hook = BflHook()
    try:
        outcome = hook.submit([request(i) for i in range(3)])
        statuses = hook.poll_until_done(outcome.statuses, timeout=60)
    finally:
        hook.close()
    records = [result.to_xcom() for status in statuses.values() for result in status.results]
    ref = write_manifest(records, (tmp_path / "m.jsonl").as_uri(), conn_id=None)

    landed = catalogue_scale.land_child(ref["bflManifest"], str(tmp_path / "out"), concurrency=2)

    assert landed["images"] == 3 and landed["failures"] == [] and landed["concurrency"] == 2
    assert bfl_conn.snapshot().image_downloads == 3
    stored = sorted(path.stem for path in (tmp_path / "out").rglob("*.jpg"))
    assert stored == sorted(record["imageUUID"] for record in records)


@pytest.mark.timeout(600)
def test_triggerer_child_counts_poll_rounds_as_the_emulator_counts_requests() -> None:
    with bytecode_cache(), EmulatorProcess(latency=0.5) as emu:
        measured = run_child(
            "benchmarks.triggerer_10k", ["--child", "one", "--count", "5", "--base-url", emu.base_url]
        )
    assert measured["status"] == "success" and measured["summary"]["done"] == 5
    rounds = [r for r in measured["rounds"] if r["batches"]]
    assert rounds and all(r["batches"] == 1 for r in rounds)  # 5 taskUUIDs fit one request
    assert sum(r["batches"] for r in rounds) == measured["poll_requests"]
    assert measured["event_bytes"] < 4096


@pytest.mark.timeout(900)
def test_catalogue_dag_child_runs_a_tiny_batch_and_reports_what_it_wrote(tmp_path: Path) -> None:
    with bytecode_cache(), EmulatorProcess(latency=0.2) as emu:
        measured = run_child(
            "benchmarks.catalogue_scale",
            [
                "--child",
                "dag",
                "--count",
                "3",
                "--threshold",
                "0",
                "--base-url",
                emu.base_url,
                "--out",
                str(tmp_path / "images"),
                "--db-template",
                str(tmp_path / "migrated.db"),
            ],
            timeout=880,
        )
        counters = emu.counters()
    assert measured["state"] == "success" and measured["images"] == 3
    assert counters["images_billed"] == 3
    marks = measured["marks"]
    assert catalogue_scale._between(marks, "land", "land:end", "download") == 3
    assert catalogue_scale._between(marks, "submit", "submit:end", "imageInference") == 1
    sent = marks[-1]["requests"]  # what the child counted is what the emulator saw
    assert sent["download"] == counters["image_downloads"] == 3
    assert sent["imageInference"] + sent["getResponse"] == counters["requests"]
    assert len(catalogue_scale._spans(marks, "render")) == 2  # at the start and at the resume
    assert all(seconds >= 0 for seconds in catalogue_scale._phases(marks).values())
    stored = measured["stored"]
    assert {"manifest", "return_value", "task_uuids", "bfl_plan"} <= set(stored["xcom"])
    assert stored["trigger_kwargs"] and measured["trigger_sizes"]["event"] > 0
    assert measured["db_bytes"]["xcom"] >= sum(stored["xcom"].values())
    assert (tmp_path / "migrated.db").exists()  # the next child copies it instead of migrating
