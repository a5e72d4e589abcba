"""
ReuseIndex on real stores: local folders and an S3 server on loopback.

Claims, publishing, stale and corrupted entries, rebuilding from records. Races between
threads, processes and runs that pay are in ``test_reuse_races.py``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from airflow_provider_bfl.exceptions import BflInvalidRequestError, BflReuseError
from airflow_provider_bfl.storage.reuse import Claim, ReuseIndex, fingerprint
from airflow_provider_bfl.storage.reuse._store import Lost, S3Store

FP = fingerprint({"taskType": "imageInference", "model": "bfl:2@1", "positivePrompt": "a mug", "seed": 1})
OTHER_FP = fingerprint(
    {"taskType": "imageInference", "model": "bfl:2@1", "positivePrompt": "a lid", "seed": 1}
)


# -- an S3 server with S3's atomic conditional writes ------------------------------------------------


@pytest.fixture(scope="session")
def atomic_s3_server() -> Iterator[str]:
    """
    moto on loopback, its writes serialised: S3 applies ``If-None-Match``/``If-Match`` atomically,
    while moto checks the condition and then writes, so two racing writers could both pass it there.
    The race tests must exercise our code against S3's guarantee, not moto's gap.
    """
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    writes = threading.Lock()

    def serialised(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["REQUEST_METHOD"] in ("PUT", "POST", "DELETE"):
            with writes:
                return list(app(environ, start_response))
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, serialised, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def reuse_bucket(atomic_s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh bucket on the atomic S3 server and an ``aws_default`` connection to it; the boto3 client."""
    import boto3

    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    extra = {
        "endpoint_url": atomic_s3_server,
        "region_name": "us-east-1",
        "config_kwargs": {"s3": {"addressing_style": "path"}},
    }
    connection = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    client = boto3.client("s3", endpoint_url=atomic_s3_server, region_name="us-east-1")
    client.bucket = f"bfl-reuse-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=client.bucket)
    return client


@dataclass
class Place:
    """A destination on one kind of store, and how to reach its objects directly (as a test)."""

    uri: str
    conn_id: str | None
    write: Callable[[str, bytes], None]
    delete: Callable[[str], None]

    def index(self) -> ReuseIndex:
        return ReuseIndex(self.uri, conn_id=self.conn_id)

    def entry_uri(self, fp: str = FP) -> str:
        return f"{self.uri}/_bfl_index/{fp[:2]}/{fp}.json"

    def land(self, task_uuid: str, data: bytes, **extra: Any) -> dict[str, Any]:
        """Store ``data`` where landing would and return its record, as landing makes it."""
        image_uuid = extra.pop("imageUUID", str(uuid.uuid4()))
        stored = f"{self.uri}/nightly/manual__2026-12-01/{task_uuid}/{image_uuid}.png"
        self.write(stored, data)
        return {
            "taskType": "imageInference",
            "taskUUID": task_uuid,
            "imageUUID": image_uuid,
            "imageURL": f"https://im.runware.ai/{image_uuid}.png?sig=secret-signature",
            "seed": 1,
            "cost": 0.04,
            "prompt": "a mug",
            "storedURI": stored,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "contentType": "image/png",
            "format": "PNG",
            "width": 256,
            "height": 256,
            "requested": {"width": 256, "height": 256, "outputFormat": "PNG"},
            **extra,
        }


def local_place(root: Path) -> Place:
    def write(uri: str, data: bytes) -> None:
        path = Path(uri.removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return Place(root.as_uri(), None, write, lambda uri: Path(uri.removeprefix("file://")).unlink())


def s3_place(client: Any) -> Place:
    def key(uri: str) -> str:
        return uri.removeprefix(f"s3://{client.bucket}/")

    return Place(
        f"s3://{client.bucket}/images",
        "aws_default",
        lambda uri, data: client.put_object(Bucket=client.bucket, Key=key(uri), Body=data),
        lambda uri: client.delete_object(Bucket=client.bucket, Key=key(uri)),
    )


@pytest.fixture(params=["file", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "file":
        return local_place(tmp_path / "images")
    return s3_place(request.getfixturevalue("reuse_bucket"))


@pytest.fixture
def local(tmp_path: Path) -> Place:
    return local_place(tmp_path / "images")


def new_uuid() -> str:
    return str(uuid.uuid4())


def raw_entry(place: Place, fp: str = FP) -> bytes:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    path = ObjectStoragePath(place.entry_uri(fp), conn_id=place.conn_id) if place.conn_id else None
    if path is None:
        return Path(place.entry_uri(fp).removeprefix("file://")).read_bytes()
    path.fs.invalidate_cache(path.path)
    return path.read_bytes()


# -- claims and publishing ------------------------------------------------------------------------


def test_the_first_claim_wins_and_every_later_one_is_told_its_task_uuid(place: Place) -> None:
    index = place.index()
    first, second = new_uuid(), new_uuid()
    won = index.claim(FP, first, owner="nightly/run-1")
    lost = place.index().claim(FP, second, owner="nightly/run-2")
    assert (won.won, won.task_uuid) == (True, first)
    assert (lost.won, lost.task_uuid) == (False, first)
    assert lost.entry.owner == "nightly/run-1" and lost.entry.state == "claimed"
    again = index.claim(FP, first, owner="nightly/run-1")  # a retry of the winner: still its own
    assert (again.won, again.task_uuid) == (True, first)


def test_claim_many_claims_each_fingerprint_once(local: Place) -> None:
    index = local.index()
    theirs = new_uuid()
    index.claim(OTHER_FP, theirs, "run-1")
    ours = {FP: new_uuid(), OTHER_FP: new_uuid()}
    claims = index.claim_many(ours, owner="run-2")
    assert list(claims) == [FP, OTHER_FP]
    assert (claims[FP].won, claims[FP].task_uuid) == (True, ours[FP])
    assert (claims[OTHER_FP].won, claims[OTHER_FP].task_uuid) == (False, theirs)


def test_fingerprints_do_not_share_entries(place: Place) -> None:
    index = place.index()
    a, b = new_uuid(), new_uuid()
    assert index.claim(FP, a, "o").won and index.claim(OTHER_FP, b, "o").won
    assert (index.lookup(FP).task_uuid, index.lookup(OTHER_FP).task_uuid) == (a, b)


def test_publish_turns_the_claim_into_a_landed_entry_without_urls(place: Place) -> None:
    index = place.index()
    task_uuid = new_uuid()
    index.claim(FP, task_uuid, "nightly/run-1")
    record = place.land(task_uuid, b"\x89PNG the mug")
    index.publish(FP, [record], owner="nightly/run-1", origin={"dagId": "nightly", "runId": "run-1"})
    entry = index.lookup(FP)
    assert entry is not None and entry.landed and entry.task_uuid == task_uuid
    [image] = entry.images
    assert {k: image[k] for k in ("imageUUID", "storedURI", "sha256", "bytes", "seed", "cost")} == {
        k: record[k] for k in ("imageUUID", "storedURI", "sha256", "bytes", "seed", "cost")
    }
    assert dict(entry.origin) == {"dagId": "nightly", "runId": "run-1"}
    assert index.usable(entry) and index.usable(entry, verify=True)
    stored = raw_entry(place)
    assert b"imageURL" not in stored and b"secret-signature" not in stored  # URLs expire; presigned ones leak


def test_entries_are_small(place: Place) -> None:
    """Measured: a claim is a few hundred bytes, a landed one-image entry well under a kilobyte."""
    index = place.index()
    task_uuid = new_uuid()
    index.claim(FP, task_uuid, "nightly/manual__2026-12-01T00:00:00+00:00/generate/17")
    claim_bytes = len(raw_entry(place))
    index.publish(FP, [place.land(task_uuid, b"png")], owner="nightly/run/generate/17", origin={"dagId": "n"})
    landed_bytes = len(raw_entry(place))
    assert claim_bytes < 400 and landed_bytes < 900, (claim_bytes, landed_bytes)


def test_reused_records_cost_nothing_and_name_the_original_generation(local: Place) -> None:
    index = local.index()
    task_uuid = new_uuid()
    records = [local.land(task_uuid, b"first"), local.land(task_uuid, b"second")]  # numberResults 2
    index.publish(FP, records, owner="o", origin={"dagId": "nightly", "runId": "run-1"})
    reused = index.lookup(FP).reused_records()
    assert [r["imageUUID"] for r in reused] == [r["imageUUID"] for r in records]
    for record, original in zip(reused, records, strict=True):
        assert record["taskUUID"] == task_uuid and record["storedURI"] == original["storedURI"]
        assert record["reused"] is True and record["cost"] == 0 and record["fingerprint"] == FP
        assert record["original"]["cost"] == 0.04 and record["original"]["runId"] == "run-1"


def test_a_claimed_entry_has_no_images_to_reuse(local: Place) -> None:
    claim = local.index().claim(FP, new_uuid(), "o")
    with pytest.raises(BflReuseError) as caught:
        claim.entry.reused_records()
    assert caught.value.code == "indexConflict"


def test_publish_never_replaces_a_landed_entry_of_another_generation(place: Place) -> None:
    index = place.index()
    first, second = new_uuid(), new_uuid()
    index.publish(FP, [place.land(first, b"one")], owner="run-1")
    with pytest.raises(BflReuseError) as caught:
        index.publish(FP, [place.land(second, b"two")], owner="run-2")
    assert caught.value.code == "indexConflict" and caught.value.task_uuid == second
    assert first in str(caught.value)
    assert index.lookup(FP).task_uuid == first


def test_publish_over_a_claim_of_another_generation_is_a_conflict(local: Place) -> None:
    index = local.index()
    claimed = new_uuid()
    index.claim(FP, claimed, "run-1")
    with pytest.raises(BflReuseError) as caught:
        index.publish(FP, [local.land(new_uuid(), b"x")], owner="run-2")
    assert caught.value.code == "indexConflict"
    assert index.lookup(FP).task_uuid == claimed and index.lookup(FP).state == "claimed"


def test_publish_many_indexes_each_generation_and_reports_the_ones_it_could_not(local: Place) -> None:
    index = local.index()
    index.claim(OTHER_FP, new_uuid(), "run-1")  # another generation holds this one
    ours = {FP: [local.land(new_uuid(), b"a")], OTHER_FP: [local.land(new_uuid(), b"b")]}
    published = index.publish_many(ours, owner="run-2", origin={"runId": "run-2"})
    assert list(published) == [FP, OTHER_FP]
    landed, refused = published[FP], published[OTHER_FP]
    assert not isinstance(landed, BflReuseError) and landed.task_uuid == ours[FP][0]["taskUUID"]
    assert isinstance(refused, BflReuseError) and refused.code == "indexConflict"


def test_a_second_copy_of_the_same_generation_keeps_the_first(local: Place) -> None:
    """Two runs submitted the claimed taskUUID (one paid), each landed it in its own folder."""
    index = local.index()
    task_uuid = new_uuid()
    first = local.land(task_uuid, b"same image", imageUUID="6f1c2e1a-8e0b-4d5e-9c3a-2b7f0e9d1c44")
    index.publish(FP, [first], owner="run-1")
    second = {**first, "storedURI": first["storedURI"].replace("manual__2026-12-01", "manual__2026-12-02")}
    local.write(second["storedURI"], b"same image")
    assert index.publish(FP, [second], owner="run-2").images[0]["storedURI"] == first["storedURI"]
    local.delete(first["storedURI"])  # the first copy is gone: the second one takes its place
    assert index.publish(FP, [second], owner="run-2").images[0]["storedURI"] == second["storedURI"]


@pytest.mark.parametrize(
    ("problem", "code"),
    [
        ({"storedURI": "file:///etc/passwd"}, "invalidRecord"),
        ({"storedURI": None}, "invalidRecord"),
        ({"bytes": -1}, "invalidRecord"),
        ({"sha256": "abc"}, "invalidRecord"),
        ({"taskUUID": "not-a-uuid"}, "invalidRecord"),
    ],
)
def test_a_record_that_cannot_be_indexed_is_refused(local: Place, problem: dict[str, Any], code: str) -> None:
    record = {**local.land(new_uuid(), b"x"), **problem}
    with pytest.raises(BflReuseError) as caught:
        local.index().publish(FP, [record], owner="o")
    assert caught.value.code == code
    assert local.index().lookup(FP) is None


def test_one_entry_is_one_generation(local: Place) -> None:
    with pytest.raises(BflReuseError, match="2 taskUUIDs"):
        local.index().publish(FP, [local.land(new_uuid(), b"a"), local.land(new_uuid(), b"b")], owner="o")


# -- stale entries ------------------------------------------------------------------------------------


def test_an_entry_whose_image_is_gone_or_changed_is_not_usable(place: Place) -> None:
    index = place.index()
    task_uuid = new_uuid()
    record = place.land(task_uuid, b"0123456789")
    entry = index.publish(FP, [record], owner="o")
    assert index.usable(entry)
    place.write(record["storedURI"], b"9876543210")  # same size, other bytes
    assert index.usable(entry) and not index.usable(entry, verify=True)
    place.write(record["storedURI"], b"short")
    assert not index.usable(entry)
    place.delete(record["storedURI"])
    assert not index.usable(entry)
    found = index.lookup_many([FP])[FP]
    assert found.entry is not None and not found.usable


def test_an_image_recorded_without_its_hash_cannot_be_verified(local: Place) -> None:
    record = {**local.land(new_uuid(), b"x"), "sha256": None}
    entry = local.index().publish(FP, [record], owner="o")
    assert local.index().usable(entry) and not local.index().usable(entry, verify=True)


def test_replace_takes_over_the_stale_entry_once(place: Place) -> None:
    index = place.index()
    old = new_uuid()
    record = place.land(old, b"gone soon")
    index.publish(FP, [record], owner="run-1")
    place.delete(record["storedURI"])
    first, second = new_uuid(), new_uuid()
    swapped = index.replace(FP, first, "run-2", stale=old)
    late = index.replace(FP, second, "run-3", stale=old)  # saw the same stale entry, came second
    assert (swapped.won, swapped.task_uuid) == (True, first)
    assert (late.won, late.task_uuid) == (False, first)


def test_replace_never_takes_over_an_entry_it_did_not_name(local: Place) -> None:
    index = local.index()
    landed = new_uuid()
    index.publish(FP, [local.land(landed, b"fine")], owner="run-1")
    outcome = index.replace(FP, new_uuid(), "run-2", stale=None)
    assert (outcome.won, outcome.task_uuid) == (False, landed)
    assert index.lookup(FP).landed


def test_lookup_many_tells_usable_stale_and_absent_apart(local: Place) -> None:
    index = local.index()
    fresh = local.land(new_uuid(), b"fresh")
    stale = local.land(new_uuid(), b"stale")
    index.publish(FP, [fresh], owner="o")
    index.publish(OTHER_FP, [stale], owner="o")
    local.delete(stale["storedURI"])
    absent = "ab" * 32
    found = index.lookup_many([FP, OTHER_FP, absent, FP])
    assert list(found) == [FP, OTHER_FP, absent]
    assert (found[FP].usable, found[OTHER_FP].usable, found[absent].usable) == (True, False, False)
    assert found[OTHER_FP].entry is not None and found[absent].entry is None


# -- corrupted entries ----------------------------------------------------------------------------------


def valid_landed(place: Place, **changes: Any) -> bytes:
    task_uuid = new_uuid()
    record = place.land(task_uuid, b"png")
    body = {
        "entryFormat": 1,
        "fingerprint": FP,
        "taskUUID": task_uuid,
        "state": "landed",
        "owner": "o",
        "at": "2026-12-01T00:00:00+00:00",
        "images": [{k: record[k] for k in ("imageUUID", "storedURI", "sha256", "bytes")}],
        "origin": {},
    }
    body.update(changes)
    return json.dumps(body).encode()


CORRUPTIONS: dict[str, Callable[[Place], bytes]] = {
    "empty": lambda place: b"",
    "garbage": lambda place: b"\xff\xfe\x00garbage",
    "truncated": lambda place: valid_landed(place)[:-7],
    "array": lambda place: b"[1, 2, 3]",
    "nested to death": lambda place: b"[" * 100_000 + b"]" * 100_000,
    "oversized": lambda place: valid_landed(place, owner="x" * 300_000),
    "other fingerprint": lambda place: valid_landed(place, fingerprint=OTHER_FP),
    "future format": lambda place: valid_landed(place, entryFormat=2),
    "unknown state": lambda place: valid_landed(place, state="half-landed"),
    "bad taskUUID": lambda place: valid_landed(place, taskUUID="12"),
    "no images": lambda place: valid_landed(place, images=[]),
    "image outside the destination": lambda place: valid_landed(
        place, images=[{"imageUUID": "x", "storedURI": "file:///etc/passwd", "bytes": 10}]
    ),
    "image escaping with ..": lambda place: valid_landed(
        place, images=[{"imageUUID": "x", "storedURI": f"{place.uri}/../secrets/key.png", "bytes": 10}]
    ),
    "image size a string": lambda place: valid_landed(
        place, images=[{"imageUUID": "x", "storedURI": f"{place.uri}/a.png", "bytes": "10"}]
    ),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupted_entry_is_absent_and_claimed_over(
    local: Place, corruption: str, caplog: pytest.LogCaptureFixture
) -> None:
    local.write(local.entry_uri(), CORRUPTIONS[corruption](local))
    index = local.index()
    assert index.lookup(FP) is None
    assert "treated as absent" in caplog.text
    task_uuid = new_uuid()
    assert index.claim(FP, task_uuid, "o") == Claim(True, task_uuid, index.lookup(FP))


@pytest.mark.parametrize("corruption", ["truncated", "other fingerprint", "image outside the destination"])
def test_a_corrupted_entry_in_s3_is_absent_and_claimed_over(reuse_bucket: Any, corruption: str) -> None:
    place = s3_place(reuse_bucket)
    place.write(place.entry_uri(), CORRUPTIONS[corruption](place))
    index = place.index()
    assert index.lookup(FP) is None
    assert index.claim(FP, new_uuid(), "o").won


def test_publish_over_a_corrupted_entry_indexes_the_images(local: Place) -> None:
    local.write(local.entry_uri(), b'{"entryFormat": 1, "fingerp')
    record = local.land(new_uuid(), b"png")
    local.index().publish(FP, [record], owner="o")
    assert local.index().lookup(FP).task_uuid == record["taskUUID"]


# -- rebuilding ---------------------------------------------------------------------------------------


def wipe_index(place: Place, client: Any = None) -> None:
    import shutil

    if place.conn_id is None:
        shutil.rmtree(Path(place.uri.removeprefix("file://")) / "_bfl_index")
        return
    listed = client.list_objects_v2(Bucket=client.bucket, Prefix="images/_bfl_index/")
    for item in listed.get("Contents", []):
        client.delete_object(Bucket=client.bucket, Key=item["Key"])


def test_rebuild_restores_every_lookup_from_the_records(place: Place, request: pytest.FixtureRequest) -> None:
    index = place.index()
    fingerprints = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(6)]
    records = []
    for fp in fingerprints:
        record = {**place.land(new_uuid(), f"image {fp}".encode()), "fingerprint": fp}
        index.publish(fp, [record], owner="run-1")
        records.append(record)
    before = {fp: index.lookup(fp) for fp in fingerprints}
    client = request.getfixturevalue("reuse_bucket") if place.conn_id else None
    wipe_index(place, client)
    assert all(index.lookup(fp) is None for fp in fingerprints)
    counts = index.rebuild(records)
    assert counts == {"records": 6, "restored": 6, "kept": 0, "missing": 0, "skipped": 0}
    for fp in fingerprints:
        entry = index.lookup(fp)
        assert entry is not None and index.usable(entry, verify=True)
        assert (entry.task_uuid, entry.images) == (before[fp].task_uuid, before[fp].images)


def test_rebuild_counts_what_it_cannot_restore_and_leaves_good_entries_alone(local: Place) -> None:
    index = local.index()
    kept = {**local.land(new_uuid(), b"kept"), "fingerprint": FP}
    index.publish(FP, [kept], owner="run-1")
    gone = {**local.land(new_uuid(), b"gone"), "fingerprint": OTHER_FP}
    local.delete(gone["storedURI"])
    no_fingerprint = local.land(new_uuid(), b"older record")
    outside = {**local.land(new_uuid(), b"x"), "fingerprint": "cd" * 32, "storedURI": "file:///etc/passwd"}
    counts = index.rebuild([kept, gone, no_fingerprint, outside, {"not": "a record"}])
    assert counts == {"records": 5, "restored": 0, "kept": 1, "missing": 1, "skipped": 3}
    assert index.lookup(OTHER_FP) is None and index.lookup("cd" * 32) is None


def test_rebuild_uses_any_stored_copy_of_a_generation(local: Place) -> None:
    task_uuid, image_uuid = new_uuid(), new_uuid()
    first = {**local.land(task_uuid, b"img", imageUUID=image_uuid), "fingerprint": FP}
    second = {**first, "storedURI": first["storedURI"].replace("2026-12-01", "2026-12-02")}
    local.write(second["storedURI"], b"img")
    local.delete(first["storedURI"])
    assert local.index().rebuild([first, second])["restored"] == 1
    [image] = local.index().lookup(FP).images
    assert image["storedURI"] == second["storedURI"]


def test_rebuild_from_reused_records_keeps_what_the_generation_cost(local: Place) -> None:
    index = local.index()
    original = {**local.land(new_uuid(), b"img"), "fingerprint": FP}
    index.publish(FP, [original], owner="run-1")
    reused = index.lookup(FP).reused_records()
    wipe_index(local)
    assert index.rebuild(reused)["restored"] == 1
    assert index.lookup(FP).images[0]["cost"] == 0.04


def test_rebuild_lands_a_claim_it_has_the_images_of_and_leaves_other_claims_alone(local: Place) -> None:
    index = local.index()
    claimed = new_uuid()
    index.claim(FP, claimed, "run-1")
    index.claim(OTHER_FP, new_uuid(), "run-2")  # running now; the records know nothing of it
    records = [
        {**local.land(claimed, b"a"), "fingerprint": FP},
        {**local.land(new_uuid(), b"b"), "fingerprint": OTHER_FP},
    ]
    assert index.rebuild(records) == {"records": 2, "restored": 1, "kept": 1, "missing": 0, "skipped": 0}
    assert index.lookup(FP).landed and index.lookup(OTHER_FP).state == "claimed"


def test_rebuild_replaces_corrupted_and_stale_entries(local: Place) -> None:
    index = local.index()
    stale = local.land(new_uuid(), b"stale")
    index.publish(OTHER_FP, [stale], owner="run-1")
    local.delete(stale["storedURI"])
    local.write(local.entry_uri(FP), b"\x00\x01 not json")
    records = [
        {**local.land(new_uuid(), b"a"), "fingerprint": FP},
        {**local.land(new_uuid(), b"b"), "fingerprint": OTHER_FP},
    ]
    assert index.rebuild(records)["restored"] == 2
    assert index.usable(index.lookup(FP)) and index.usable(index.lookup(OTHER_FP))


# -- failures are the provider's errors -----------------------------------------------------------------


def test_an_unreachable_bucket_is_a_reuse_error_not_a_library_exception(reuse_bucket: Any) -> None:
    index = ReuseIndex(f"s3://{reuse_bucket.bucket}-missing/images", conn_id="aws_default")
    with pytest.raises(BflReuseError) as caught:
        index.claim(FP, new_uuid(), "o")
    assert caught.value.code == "indexUnavailable"


def test_an_index_folder_that_is_a_file_is_a_reuse_error(local: Place) -> None:
    local.write(f"{local.uri}/_bfl_index", b"not a folder")
    with pytest.raises(BflReuseError) as caught:
        local.index().claim(FP, new_uuid(), "o")
    assert caught.value.code == "indexUnavailable"


@pytest.mark.parametrize("bad", ["", "ABC", FP.upper(), FP[:-1], f"../{FP[3:]}", 42])
def test_a_malformed_fingerprint_is_refused(local: Place, bad: Any) -> None:
    with pytest.raises(BflInvalidRequestError) as caught:
        local.index().lookup(bad)
    assert caught.value.parameter == "fingerprint"


def test_a_claim_needs_a_task_uuid(local: Place) -> None:
    with pytest.raises(BflReuseError, match="not a UUID"):
        local.index().claim(FP, "run-1", "o")


def test_a_store_without_conditional_writes_is_refused_before_anything_is_paid(mocker: Any) -> None:
    """gs:// with gcsfs installed, say: its filesystem exists, but the index cannot race safely on it."""
    mocker.patch("airflow_provider_bfl.storage.destination.validate_destination", autospec=True)
    with pytest.raises(BflInvalidRequestError) as caught:
        ReuseIndex("memory://bucket/images")
    assert caught.value.parameter == "destination" and "memory://" in str(caught.value)


def test_a_claim_whose_answer_was_lost_is_still_won(reuse_bucket: Any, mocker: Any) -> None:
    """The PUT succeeded but its answer was lost and retried (412 on our own object): the entry is ours."""
    original = S3Store.create

    def succeeds_then_loses_the_answer(self: S3Store, key: str, data: bytes) -> None:
        original(self, key, data)
        raise Lost

    mocker.patch.object(S3Store, "create", autospec=True, side_effect=succeeds_then_loses_the_answer)
    task_uuid = new_uuid()
    outcome = s3_place(reuse_bucket).index().claim(FP, task_uuid, "o")
    assert (outcome.won, outcome.task_uuid) == (True, task_uuid)


# -- rebuilding from the manifests beside the images ----------------------------------------------------


def test_rebuild_from_manifests_restores_the_index_of_every_run(
    place: Place, request: pytest.FixtureRequest
) -> None:
    from airflow_provider_bfl.storage.manifest import manifest_uri, write_manifest
    from airflow_provider_bfl.storage.reuse import rebuild_from_manifests

    index = place.index()
    runs = {}
    for run_id, salt in (("manual__2026-11-30T00:00:00+00:00", "a"), ("scheduled__2026-12-01", "b")):
        records = []
        for n in range(3):
            fp = hashlib.sha256(f"{salt}{n}".encode()).hexdigest()
            record = {**place.land(new_uuid(), f"{salt}{n}".encode()), "fingerprint": fp}
            index.publish(fp, [record], owner=run_id)
            records.append(record)
        write_manifest(
            records, manifest_uri(place.uri, "nightly", run_id, "generate", -1), conn_id=place.conn_id
        )
        runs[run_id] = records
    damaged = manifest_uri(place.uri, "nightly", "manual__broken", "generate", 3)
    write_manifest(runs["scheduled__2026-12-01"][:1], damaged, conn_id=place.conn_id)
    place.write(damaged, b'{"taskUUID": "cut off mid-')  # truncated: no complete line left
    client = request.getfixturevalue("reuse_bucket") if place.conn_id else None
    wipe_index(place, client)
    counts = rebuild_from_manifests(place.uri, place.conn_id)
    assert counts == {
        "records": 6,
        "restored": 6,
        "kept": 0,
        "missing": 0,
        "skipped": 0,
        "manifests": 3,
        "damagedManifests": 1,
    }
    for records in runs.values():
        for record in records:
            entry = index.lookup(record["fingerprint"])
            assert entry is not None and entry.task_uuid == record["taskUUID"] and index.usable(entry)


def test_rebuild_from_manifests_of_an_empty_destination_finds_nothing(local: Place) -> None:
    from airflow_provider_bfl.storage.reuse import rebuild_from_manifests

    Path(local.uri.removeprefix("file://")).mkdir(parents=True)
    counts = rebuild_from_manifests(local.uri)
    assert counts["manifests"] == 0 and counts["restored"] == 0


def test_an_s3_entry_replaced_between_head_and_get_is_read_again(
    reuse_bucket: Any, mocker: MockerFixture
) -> None:
    """
    s3fs takes the object's ETag when it opens it and sends it as If-Match with the GET: an entry
    another run replaced in between comes back as FileExpired (a 412), which is a lost race to
    read again, never an unusable index.
    """
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_bfl.storage.reuse._store import S3Store

    place = s3_place(reuse_bucket)
    store = S3Store(ObjectStoragePath(place.uri, conn_id=place.conn_id))
    key = "_bfl_index/ab/entry.json"
    place.write(f"{place.uri}/{key}", b'{"generation": 1}')
    real_open = store.fs.open
    opened: list[str] = []

    def open_then_replace(path: str, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(path, *args, **kwargs)  # HEAD: the ETag of generation 1
        if not opened:
            place.write(f"{place.uri}/{key}", b'{"generation": 2}')  # another run's swap
        opened.append(path)
        return handle

    mocker.patch.object(store.fs, "open", side_effect=open_then_replace, autospec=True)
    stored = store.read(key)
    assert stored is not None
    assert stored.data == b'{"generation": 2}'
    assert len(opened) == 2  # the first read lost the race and was made again
