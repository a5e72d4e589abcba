"""
Landing throughput: downloads at once as configured and no more, kept-alive connections, bounded memory.

The image host (:mod:`benchmarks.image_host`) is a real HTTP/1.1 server on loopback that counts
the requests it answers at once and the TCP connections that carried them.
"""

from __future__ import annotations

import hashlib
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from tempfile import SpooledTemporaryFile
from typing import Any

import pytest

from airflow_provider_bfl.exceptions import BflError, BflInvalidRequestError
from airflow_provider_bfl.storage import landing
from airflow_provider_bfl.storage.landing import (
    DEFAULT_CONCURRENCY,
    MAX_CONCURRENCY,
    SPOOL_BUDGET,
    SPOOL_MEMORY,
    ImageLander,
    landing_concurrency,
)
from benchmarks import landing_throughput
from benchmarks.image_host import ImageHost, host_in_thread

ENV = "AIRFLOW__BFL__LANDING_CONCURRENCY"
SMALL = {"width": 64, "height": 64, "image_bytes": 4000}


@pytest.fixture(autouse=True)
def no_configured_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture
def slow_host() -> Iterator[tuple[ImageHost, str]]:
    """0.2 s before each answer and no bandwidth cap: every download the lander allows overlaps."""
    with host_in_thread(latency=0.2, per_connection=0, link=0, **SMALL) as pair:
        yield pair


def entries_for(origin: str, count: int) -> list[dict[str, Any]]:
    entries = []
    for _ in range(count):
        image_uuid = str(uuid.uuid4())
        entries.append(
            {
                "taskUUID": str(uuid.uuid4()),
                "imageUUID": image_uuid,
                "imageURL": f"{origin}/images/{image_uuid}.png",
            }
        )
    return entries


def requested(entries: list[dict[str, Any]], host: ImageHost) -> dict[str, dict[str, Any]]:
    wanted = {"width": host.width, "height": host.height, "outputFormat": "PNG"}
    return {entry["taskUUID"]: wanted for entry in entries}


def lander(destination: str, **kwargs: Any) -> ImageLander:
    return ImageLander(destination, dag_id="catalogue", run_id="nightly", **kwargs)


def land_all(lander_: ImageLander, host: ImageHost, origin: str, count: int) -> list[dict[str, Any]]:
    entries = entries_for(origin, count)
    records, failures = lander_.land_urls(entries, requested(entries, host))
    assert failures == []
    assert [record["imageUUID"] for record in records] == [entry["imageUUID"] for entry in entries]
    return records


# -- concurrency -----------------------------------------------------------------------------


def test_never_more_downloads_at_once_than_configured(
    slow_host: tuple[ImageHost, str], tmp_path: Path
) -> None:
    host, origin = slow_host
    with lander(tmp_path.as_uri(), concurrency=3) as landing_:
        land_all(landing_, host, origin, 15)
    assert host.stats.requests == 15
    assert host.stats.max_in_flight == 3  # all three used, never a fourth


def test_the_default_concurrency_is_used_in_full_and_no_more(tmp_path: Path) -> None:
    # A whole second a request, so that the 32 threads' first requests overlap on a loaded machine.
    with (
        host_in_thread(latency=1.0, per_connection=0, link=0, **SMALL) as (host, origin),
        lander(tmp_path.as_uri()) as landing_,
    ):
        assert landing_.concurrency == DEFAULT_CONCURRENCY
        land_all(landing_, host, origin, 2 * DEFAULT_CONCURRENCY + 3)
    assert host.stats.max_in_flight == DEFAULT_CONCURRENCY
    assert host.stats.connections == DEFAULT_CONCURRENCY


def test_the_config_sets_the_concurrency_and_an_argument_overrides_it(
    slow_host: tuple[ImageHost, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, origin = slow_host
    monkeypatch.setenv(ENV, " 5 ")
    with lander(tmp_path.as_uri()) as landing_:
        land_all(landing_, host, origin, 12)
    assert host.stats.max_in_flight == 5
    host.stats.max_in_flight = 0
    with lander(tmp_path.as_uri(), concurrency=2) as landing_:
        land_all(landing_, host, origin, 6)
    assert host.stats.max_in_flight == 2


def test_an_empty_config_value_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "")
    assert landing_concurrency() == DEFAULT_CONCURRENCY


@pytest.mark.parametrize("value", [0, -3, MAX_CONCURRENCY + 1, 2.5, True, "many", "", "4.0", [8]])
def test_a_bad_argument_is_a_clear_error_naming_the_setting(value: object, tmp_path: Path) -> None:
    with pytest.raises(BflInvalidRequestError) as raised:
        lander(tmp_path.as_uri(), concurrency=value)
    error = raised.value
    assert isinstance(error, BflError) and error.parameter == "landing_concurrency"
    message = str(error)
    assert message.startswith("landing_concurrency: got ")
    assert repr(value)[:20] in message
    assert f"from 1 to {MAX_CONCURRENCY}" in message


@pytest.mark.parametrize("value", ["0", "lots", str(MAX_CONCURRENCY + 1), "-1", "1e3", "²"])
def test_a_bad_config_value_is_a_clear_error_naming_the_config(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, value)
    with pytest.raises(BflInvalidRequestError) as raised:
        landing_concurrency()
    assert raised.value.parameter == "landing_concurrency"
    assert str(raised.value).startswith("[bfl] landing_concurrency in the Airflow configuration: got ")
    assert repr(value) in str(raised.value)


def test_an_argument_is_checked_even_when_the_config_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "8")
    assert landing_concurrency(MAX_CONCURRENCY) == MAX_CONCURRENCY and landing_concurrency("3") == 3
    with pytest.raises(BflInvalidRequestError, match=r"^landing_concurrency: got 0;"):
        landing_concurrency(0)


# -- connections -----------------------------------------------------------------------------


def test_connections_are_kept_alive_across_images_and_calls(
    slow_host: tuple[ImageHost, str], tmp_path: Path
) -> None:
    host, origin = slow_host
    with lander(tmp_path.as_uri(), concurrency=4) as landing_:
        land_all(landing_, host, origin, 40)
        assert (host.stats.requests, host.stats.connections) == (40, 4)
        land_all(landing_, host, origin, 8)  # a second batch reuses the pool
    assert (host.stats.requests, host.stats.connections) == (48, 4)


def test_a_host_that_closes_every_connection_still_lands_everything(
    slow_host: tuple[ImageHost, str], tmp_path: Path
) -> None:
    """The pool opens a new connection when the host will not keep one (keep-alive is never assumed)."""
    host, origin = slow_host
    host.keep_alive = False
    with lander(tmp_path.as_uri(), concurrency=2) as landing_:
        land_all(landing_, host, origin, 6)
    assert (host.stats.requests, host.stats.connections) == (6, 6)


# -- memory ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_host() -> Iterator[tuple[ImageHost, str]]:
    """1.5 MB images, answered at once."""
    with host_in_thread(latency=0.0, per_connection=0, link=0, width=1024, height=1024) as pair:
        yield pair


def test_memory_stays_bounded_while_many_large_images_stream(
    large_host: tuple[ImageHost, str], tmp_path: Path
) -> None:
    """8 downloads of 1.5 MB at once allocate a few KiB-sized chunks each, never a whole image."""
    host, origin = large_host
    with lander(tmp_path.as_uri(), concurrency=8) as landing_:
        land_all(landing_, host, origin, 2)  # connections, imports and caches first
        tracemalloc.start()
        try:
            records = land_all(landing_, host, origin, 24)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert all(record["bytes"] == len(host.body) > 1_400_000 for record in records)
    # Holding the images would take 8 x 1.5 MB = 12 MB; streaming takes ~0.3 MiB a download.
    assert peak < 8 * 512 * 1024, f"peak {peak / 2**20:.1f} MiB"


def test_remote_spools_share_one_memory_budget(
    large_host: tuple[ImageHost, str], s3_bucket: Any, mocker: Any
) -> None:
    host, origin = large_host
    spools = mocker.patch.object(
        landing, "SpooledTemporaryFile", autospec=True, side_effect=SpooledTemporaryFile
    )
    with lander(f"s3://{s3_bucket.bucket}/generated", conn_id="aws_default", concurrency=32) as landing_:
        records = land_all(landing_, host, origin, 3)
    sizes = [call.kwargs["max_size"] for call in spools.call_args_list]
    assert len(sizes) == 3 and all(size * 32 <= SPOOL_BUDGET for size in sizes)
    expected = hashlib.sha256(host.body).hexdigest()
    for record in records:  # spooled to disk past the budget, stored whole all the same
        key = record["storedURI"].removeprefix(f"s3://{s3_bucket.bucket}/")
        stored = s3_bucket.get_object(Bucket=s3_bucket.bucket, Key=key)["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == record["sha256"] == expected
    spools.reset_mock()
    with lander(f"s3://{s3_bucket.bucket}/few", conn_id="aws_default", concurrency=2) as landing_:
        land_all(landing_, host, origin, 1)
    assert [call.kwargs["max_size"] for call in spools.call_args_list] == [SPOOL_MEMORY]


# -- the benchmark ---------------------------------------------------------------------------


def test_the_benchmark_child_measures_a_landing(tmp_path: Path) -> None:
    settings = {"latency": 0.05, "per_connection": 1e6, "link": 0, **SMALL}
    with host_in_thread(**settings) as (host, origin):
        measured = landing_throughput.child(3, origin, 9, host.width, host.height, str(tmp_path))
        assert host.stats.max_in_flight == 3 and host.stats.requests == 9
    assert (measured["concurrency"], measured["images"], measured["failures"]) == (3, 9, [])
    assert measured["bytes"] == 9 * len(host.body) and measured["wall"] > 0.05 * 3
    assert len(list(tmp_path.rglob("*.png"))) == 9


def test_the_host_paces_each_connection_and_the_link(tmp_path: Path) -> None:
    """One connection gets at most its cap, many at most the link's: the limits the benchmark rests on."""
    import time

    from benchmarks.image_host import BURST

    def ceiling(rate: float, total: int) -> float:
        return rate * total / (total - BURST)  # one burst of credit, then the rate

    settings = {"latency": 0.0, "width": 256, "height": 256, "image_bytes": 100_000}
    with host_in_thread(per_connection=1e6, link=2e6, **settings) as (host, origin):
        size = len(host.body)
        with lander(tmp_path.as_uri(), concurrency=1) as landing_:
            started = time.perf_counter()
            land_all(landing_, host, origin, 8)
            one = 8 * size / (time.perf_counter() - started)
        with lander(tmp_path.as_uri(), concurrency=8) as landing_:
            started = time.perf_counter()
            land_all(landing_, host, origin, 16)
            many = 16 * size / (time.perf_counter() - started)
    assert one <= ceiling(1e6, 8 * size)
    assert many <= ceiling(2e6, 16 * size)  # the link's cap, not 8 x the connection's


def test_the_operator_refuses_a_bad_landing_concurrency_before_it_submits() -> None:
    """The operator's destination check (run before any request is sent) names the task."""
    from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator

    args = dict(task_id="t", positive_prompt="a lamp", width=1024, height=1024, destination="file:///x")
    operator = BflImageInferenceOperator(landing_concurrency=0, **args)  # type: ignore[arg-type]
    with pytest.raises(BflInvalidRequestError, match=r"^Task 't': landing_concurrency: got 0;"):
        operator._check_destination()
    assert BflImageInferenceOperator(**args).landing_concurrency is None  # type: ignore[arg-type]
