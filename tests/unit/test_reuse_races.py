"""
Runs that race for the same content: one taskUUID per fingerprint, and at most one of them pays.

Threads and separate processes claim at once on a local folder and on S3 (served with S3's
atomic conditional writes, see ``atomic_s3_server``); racing runs then submit what they were told
through the hook's billing-safe path to the emulator, whose billing counters are the verdict.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bfl.hooks.bfl import BflHook
from airflow_provider_bfl.models.request import ImageInferenceRequest
from airflow_provider_bfl.storage.landing import ImageLander, requested_of
from airflow_provider_bfl.storage.reuse import Claim, ReuseIndex, fingerprint
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from tests.unit import test_reuse_index as stores
from tests.unit.test_reuse_index import Place, local_place, s3_place

# The stores of the index tests (an S3 server with S3's atomic conditional writes among them).
atomic_s3_server = stores.atomic_s3_server
reuse_bucket = stores.reuse_bucket
place = stores.place

THREADS = 8


def fingerprints(count: int, salt: str) -> list[str]:
    return [hashlib.sha256(f"{salt}-{n}-{uuid.uuid4()}".encode()).hexdigest() for n in range(count)]


def at_once(count: int, action: Callable[[int], Claim]) -> list[Claim]:
    """``action(i)`` in ``count`` threads released together, each with its own index (a run of its own)."""
    barrier = threading.Barrier(count)

    def racer(i: int) -> Claim:
        barrier.wait(timeout=60)
        return action(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(racer, range(count)))


def one_winner(claims: list[Claim]) -> str:
    """Exactly one claim won, and every racer was told the winner's taskUUID; that taskUUID."""
    winners = [claim for claim in claims if claim.won]
    assert len(winners) == 1, [(c.won, c.task_uuid) for c in claims]
    assert {claim.task_uuid for claim in claims} == {winners[0].task_uuid}
    return winners[0].task_uuid


@pytest.mark.parametrize("rounds", [5])
def test_threads_claiming_at_once_agree_on_one_winner(place: Place, rounds: int) -> None:
    indexes = [place.index() for _ in range(THREADS)]
    for fp in fingerprints(rounds, "claim"):
        proposals = [str(uuid.uuid4()) for _ in range(THREADS)]
        claims = at_once(
            THREADS, lambda i, fp=fp, proposals=proposals: indexes[i].claim(fp, proposals[i], f"run-{i}")
        )
        assert one_winner(claims) in proposals
        assert indexes[0].lookup(fp).task_uuid == one_winner(claims)


def test_threads_replacing_one_stale_entry_agree_on_one_new_task_uuid(place: Place) -> None:
    indexes = [place.index() for _ in range(THREADS)]
    for fp in fingerprints(3, "replace"):
        stale = str(uuid.uuid4())
        record = place.land(stale, b"deleted below")
        indexes[0].publish(fp, [record], owner="last-night")
        place.delete(record["storedURI"])
        assert not indexes[0].usable(indexes[0].lookup(fp))
        proposals = [str(uuid.uuid4()) for _ in range(THREADS)]
        claims = at_once(
            THREADS,
            lambda i, fp=fp, stale=stale, proposals=proposals: indexes[i].replace(
                fp, proposals[i], f"r{i}", stale=stale
            ),
        )
        assert one_winner(claims) != stale


def test_threads_claiming_over_one_corrupted_entry_agree_on_one_winner(tmp_path: Path) -> None:
    place = local_place(tmp_path / "images")
    indexes = [place.index() for _ in range(THREADS)]
    for fp in fingerprints(4, "corrupt"):
        place.write(place.entry_uri(fp), b'{"entryFormat": 1, "finger')  # a truncated object
        proposals = [str(uuid.uuid4()) for _ in range(THREADS)]
        one_winner(
            at_once(
                THREADS, lambda i, fp=fp, proposals=proposals: indexes[i].claim(fp, proposals[i], f"run-{i}")
            )
        )


def claim_in_process(jobs: list[tuple[str, str | None, str]], barrier: Any, results: Any) -> None:
    """One run in its own process: claims each (destination, fingerprint) as soon as its rival is ready too."""
    indexes: dict[str, ReuseIndex] = {}
    for destination, conn_id, fp in jobs:
        index = indexes.setdefault(destination, ReuseIndex(destination, conn_id=conn_id))
        barrier.wait(timeout=300)
        claim = index.claim(fp, str(uuid.uuid4()), owner=f"pid-{multiprocessing.current_process().pid}")
        results.put((destination, fp, claim.won, claim.task_uuid))


@pytest.mark.slow
@pytest.mark.timeout(300)  # two fresh interpreters import Airflow before they race
def test_two_processes_claiming_at_once_agree_on_one_winner(tmp_path: Path, reuse_bucket: Any) -> None:
    places = [local_place(tmp_path / "images"), s3_place(reuse_bucket)]
    jobs = [(where.uri, where.conn_id, fp) for where in places for fp in fingerprints(4, where.uri)]
    context = multiprocessing.get_context("spawn")  # no fork of a process running server threads
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=claim_in_process, args=(jobs, barrier, results)) for _ in range(2)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=600) for _ in range(2 * len(jobs))]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    for place in places:
        for uri, _, fp in jobs:
            if uri != place.uri:
                continue
            claims = [
                (won, task_uuid)
                for where, claimed, won, task_uuid in outcomes
                if (where, claimed) == (uri, fp)
            ]
            assert sorted(won for won, _ in claims) == [False, True]
            assert len({task_uuid for _, task_uuid in claims}) == 1
            assert place.index().lookup(fp).task_uuid == claims[0][1]


# -- against the emulator: who pays -----------------------------------------------------------------


def wire(prompt: str = "a mug on an oak table") -> dict[str, Any]:
    request = ImageInferenceRequest(
        positivePrompt=prompt, width=256, height=256, seed=11, deliveryMethod="async", includeCost=True
    )
    return request.to_wire()


def run_generation(task_uuid: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    """What a run does with the taskUUID it was given: submit it (billing-safe) and wait for its images."""
    hook = BflHook()
    try:
        outcome = hook.submit([{**request, "taskUUID": task_uuid}])
        assert not outcome.rejected
        done = hook.poll_until_done({task_uuid: 1}, timeout=60)
    finally:
        hook.close()
    return [result.to_xcom() for result in done[task_uuid].results]


def land_and_publish(place: Place, fp: str, request: dict[str, Any], results: list[dict[str, Any]]) -> None:
    planned = ImageInferenceRequest.model_validate(request)
    with ImageLander(place.uri, conn_id=place.conn_id, dag_id="nightly", run_id="run-1") as lander:
        records = [lander.land_url(result, requested_of(planned)) for result in results]
    ReuseIndex(place.uri, conn_id=place.conn_id).publish(
        fp, records, owner="nightly/run-1", origin={"dagId": "nightly", "runId": "run-1"}
    )


def test_two_runs_racing_for_the_same_request_pay_once_and_the_next_run_pays_nothing(
    bfl_conn: RunwareEmulator, place: Place
) -> None:
    request = wire()
    fp = fingerprint(request)

    def racer(i: int) -> tuple[Claim, list[dict[str, Any]]]:
        claim = place.index().claim(fp, str(uuid.uuid4()), owner=f"nightly/run-{i}")
        return claim, run_generation(claim.task_uuid, request)

    barrier = threading.Barrier(2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        raced = list(pool.map(lambda i: (barrier.wait(timeout=60), racer(i))[1], range(2)))
    task_uuid = one_winner([claim for claim, _ in raced])
    snapshot = bfl_conn.snapshot()
    assert snapshot.images_billed == 1 and snapshot.tasks_accepted == 1
    assert snapshot.task(task_uuid).submissions == 2 and snapshot.conflicts == 1  # both did submit
    assert raced[0][1][0]["imageUUID"] == raced[1][1][0]["imageUUID"]  # the same image for both runs

    land_and_publish(place, fp, request, raced[0][1])
    requests_before = bfl_conn.snapshot().requests
    index = place.index()
    found = index.lookup_many([fingerprint({**request, "taskUUID": str(uuid.uuid4())})])[fp]
    assert found.usable
    [reused] = found.entry.reused_records()  # tomorrow's run: nothing sent, nothing billed
    assert reused["imageUUID"] == raced[0][1][0]["imageUUID"] and reused["cost"] == 0
    assert reused["original"]["cost"] == pytest.approx(0.04)
    after = bfl_conn.snapshot()
    assert (after.requests, after.images_billed) == (requests_before, 1)


def test_without_the_index_two_runs_pay_twice(bfl_conn: RunwareEmulator) -> None:
    """The control: the same request under two taskUUIDs is two generations, billed twice."""
    request = wire()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda _: run_generation(str(uuid.uuid4()), request), range(2)))
    assert bfl_conn.snapshot().images_billed == 2


def test_a_claim_whose_winner_died_before_submitting_is_paid_once(
    bfl_conn: RunwareEmulator, tmp_path: Path
) -> None:
    place = local_place(tmp_path / "images")
    request = wire("a teapot")
    fp = fingerprint(request)
    winner = place.index().claim(fp, str(uuid.uuid4()), owner="run-1")  # ...and run-1 is killed here
    loser = place.index().claim(fp, str(uuid.uuid4()), owner="run-2")
    assert winner.won and not loser.won
    run_generation(loser.task_uuid, request)
    run_generation(winner.task_uuid, request)  # run-1's retry comes back later: re-attaches
    snapshot = bfl_conn.snapshot()
    assert snapshot.images_billed == 1 and snapshot.task(winner.task_uuid).submissions == 2


def test_runs_replacing_a_stale_entry_pay_once_for_the_new_generation(
    bfl_conn: RunwareEmulator, tmp_path: Path
) -> None:
    place = local_place(tmp_path / "images")
    request = wire("a kettle")
    fp = fingerprint(request)
    old = run_generation(str(uuid.uuid4()), request)
    land_and_publish(place, fp, request, old)
    place.delete(place.index().lookup(fp).images[0]["storedURI"])  # someone cleaned the bucket
    stale = place.index().lookup(fp)
    assert not place.index().usable(stale)

    def racer(i: int) -> Claim:
        claim = place.index().replace(fp, str(uuid.uuid4()), f"run-{i}", stale=stale.task_uuid)
        run_generation(claim.task_uuid, request)
        return claim

    new_uuid = one_winner(at_once(2, racer))
    snapshot = bfl_conn.snapshot()
    assert snapshot.images_billed == 2  # last night's generation and one replacement, not two
    assert snapshot.task(new_uuid).images_billed == 1 and snapshot.task(new_uuid).submissions == 2
