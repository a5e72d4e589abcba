"""
Landing against a hostile image server on loopback: every download is bounded, every failure typed.

The server (:class:`HostileImages`, a real threaded HTTP server) plays what a broken CDN or an
attacker could: bodies that never end, drip a byte at a time, stop early, redirect in circles or
to other hosts, lie about their length or encoding, are not images, inflate from 1 MiB to 1 GiB,
or are a 481 KiB PNG whose header declares 13000x13000. Each test states the promise it breaks.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import re
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from airflow_provider_bfl.exceptions import (
    BflImageExpiredError,
    BflImageIntegrityError,
    BflInvalidRequestError,
    BflLandingError,
    BflMalformedResponseError,
    BflUploadMissingError,
)
from airflow_provider_bfl.hooks.bfl import BflHook
from airflow_provider_bfl.operators import _landing
from airflow_provider_bfl.plan import PlannedGeneration
from airflow_provider_bfl.storage.landing import ImageLander, image_key

REQUESTED = {"width": 256, "height": 256, "outputFormat": "PNG"}
#: A marker in every non-image body: no error message may quote it, nor any other body byte.
BODY_MARKER = "BODY-BYTES-7f3a"
#: The gzip bomb: this many zero bytes, about 1 MiB compressed.
BOMB_INFLATED = 1024**3


def png(width: int = 256, height: int = 256, seed: int = 1) -> bytes:
    """A real, non-blank PNG (a gradient) of the given size."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    image.putpixel((seed % width, 0), (255, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` black RGB pixels: tiny on disk, huge once decoded."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def gzip_bomb(inflated: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\x00" * (1024 * 1024)
    return b"".join(compressor.compress(block) for _ in range(inflated // len(block))) + compressor.flush()


class HostileImages:
    """A threaded HTTP server on 127.0.0.1 whose paths each misbehave one way; counts requests per path."""

    def __init__(self, bomb_png: bytes, bomb_gzip: bytes) -> None:
        self.hits: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.bomb_png = bomb_png
        self.bomb_gzip = bomb_gzip
        self.good = png()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                owner.hits[path] += 1
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    owner.route(self, path)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def __enter__(self) -> HostileImages:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _send(
        self, handler: BaseHTTPRequestHandler, path: str, body: bytes, status: int = 200, **headers: str
    ) -> None:
        handler.send_response(status)
        named = {"Content-Type": "image/png", "Content-Length": str(len(body))}
        named.update({name.replace("_", "-"): value for name, value in headers.items()})
        for name, value in named.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)
        self.sent[path] += len(body)

    def _redirect(self, handler: BaseHTTPRequestHandler, location: str) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def route(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        if path.startswith("/good"):
            self._send(handler, path, self.good)
        elif path == "/bomb-png":
            self._send(handler, path, self.bomb_png)
        elif path == "/gzip-bomb":
            self._send(handler, path, self.bomb_gzip, Content_Encoding="gzip")
        elif path == "/gzip-good":
            self._send(handler, path, gzip.compress(self.good), Content_Encoding="gzip")
        elif path == "/gzip-lie":
            self._send(handler, path, self.good, Content_Encoding="gzip")
        elif path == "/brotli":
            self._send(handler, path, self.good, Content_Encoding="br")
        elif path == "/html":
            body = f"<html><body>{BODY_MARKER} gateway error</body></html>".encode() * 20
            self._send(handler, path, body, Content_Type="text/html")
        elif path == "/gone":
            self._send(handler, path, b"", status=410)
        elif path == "/missing":
            self._send(handler, path, b"", status=404)
        elif path == "/huge-declared":
            handler.send_response(200)
            handler.send_header("Content-Length", str(10 * 1024**3))
            handler.end_headers()
        elif path == "/endless":
            handler.send_response(200)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            block = self.good[:8] + b"\x00" * (64 * 1024 - 8)
            for _ in range(16 * 1024):  # up to 1 GiB, unless the client hangs up
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                self.sent[path] += len(block)
                block = b"\x00" * len(block)
        elif path == "/drip":
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(self.good)))
            handler.end_headers()
            for byte in self.good:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                self.sent[path] += 1
                time.sleep(0.5)
        elif path == "/drip-headers":
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(0.5)
        elif path == "/truncated":
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(self.good)))
            handler.end_headers()
            handler.wfile.write(self.good[: len(self.good) // 2])
            handler.wfile.flush()
            handler.close_connection = True
        elif path == "/short-length":
            self._send(handler, path, self.good, Content_Length=str(len(self.good) // 2))
            handler.close_connection = True
        elif path == "/loop":
            self._redirect(handler, "/loop")
        elif path.startswith("/hops/"):
            left = int(path.rsplit("/", 1)[1])
            self._redirect(handler, f"/hops/{left - 1}" if left > 1 else "/good")
        elif path == "/elsewhere":
            self._redirect(handler, self.url("/good", host="localhost"))
        elif path == "/to-file":
            self._redirect(handler, "file:///etc/passwd")
        else:
            self._send(handler, path, b"", status=500)


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    return png_declaring(13000, 13000)


@pytest.fixture(scope="module")
def server(bomb_png: bytes) -> Iterator[HostileImages]:
    with HostileImages(bomb_png, gzip_bomb(BOMB_INFLATED)) as hostile:
        yield hostile


def entry_for(url: str, **extra: Any) -> dict[str, Any]:
    return {"taskUUID": str(uuid.uuid4()), "imageUUID": str(uuid.uuid4()), "imageURL": url, **extra}


def lander(root: Path, **kwargs: Any) -> ImageLander:
    return ImageLander(
        f"file://{root}", dag_id="hostile", run_id="manual__2026-01-01T00:00:00+00:00", **kwargs
    )


def stored_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


def land_one(root: Path, url: str, requested: dict[str, Any] = REQUESTED, **kwargs: Any) -> dict[str, Any]:
    with lander(root, **kwargs) as landing:
        return landing.land_url(entry_for(url), requested)


# -- size and pixels --------------------------------------------------------------------------------


def test_a_png_declaring_13000x13000_is_refused_from_its_header_before_it_is_stored(
    server: HostileImages, tmp_path: Path, bomb_png: bytes
) -> None:
    assert 400_000 < len(bomb_png) < 600_000  # small on the wire ...
    with pytest.raises(
        BflImageIntegrityError, match="header declares 13000x13000, the request asked for 512x512"
    ):
        land_one(tmp_path, server.url("/bomb-png"), {**REQUESTED, "width": 512, "height": 512})
    assert stored_files(tmp_path) == []  # ... and nothing of it is kept


def test_an_image_of_another_size_than_requested_is_refused(server: HostileImages, tmp_path: Path) -> None:
    with pytest.raises(BflImageIntegrityError, match="declares 256x256, the request asked for 512x256"):
        land_one(tmp_path, server.url("/good"), {**REQUESTED, "width": 512})
    assert stored_files(tmp_path) == []


#: Peak RSS growth of what runs after ``start()``: Linux's high-water mark, reset to the current RSS.
MEASURE = """
import re
def _status(field):
    with open("/proc/self/status") as status:
        return int(re.search(field + r":\\s+(\\d+) kB", status.read()).group(1)) * 1024
def start():
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS
    return _status("VmRSS")
def grown(since):
    return _status("VmHWM") - since
"""

RSS_SCRIPT = (
    MEASURE
    + """
import json, sys
from pathlib import Path
mode, bomb, small, root = sys.argv[1:5]
requested = {"width": 512, "height": 512, "outputFormat": "PNG"}
if mode == "qa":
    from airflow_provider_bfl.qa import evaluate
    def run(path):
        return evaluate([{"taskUUID": "t", "imageUUID": Path(path).stem, "storedURI": "file://" + path,
                          "requested": requested}])
    run(small)  # warm up: imports, Pillow plugins, Airflow's object storage
    before = start()
    verdict = run(bomb)[0]["qa"]
    outcome = {"action": verdict["action"], "reasons": verdict["reasons"]}
else:
    from airflow_provider_bfl.storage.landing import ImageLander
    lander = ImageLander("file://" + root, dag_id="d", run_id="r")
    def run(path, uuid):
        try:
            return lander.land_bytes({"taskUUID": "t", "imageUUID": uuid}, Path(path).read_bytes(),
                                     dict(requested, width=256, height=256) if uuid == "small" else requested)
        except Exception as exc:
            return type(exc).__name__
    run(small, "small")
    before = start()
    outcome = run(bomb, "bomb")
print(json.dumps({"delta": grown(before), "outcome": outcome}))
"""
)


def peak_rss_delta(mode: str, tmp_path: Path, bomb_png: bytes) -> dict[str, Any]:
    """Peak RSS growth of a fresh interpreter while it lands or QA-checks the 13000x13000 PNG."""
    bomb, small = tmp_path / "bomb.png", tmp_path / "small.png"
    bomb.write_bytes(bomb_png)
    small.write_bytes(png())
    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, mode, str(bomb), str(small), str(tmp_path / "landed")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_qa_never_decodes_more_pixels_than_the_request_allows(tmp_path: Path, bomb_png: bytes) -> None:
    measured = peak_rss_delta("qa", tmp_path, bomb_png)
    print(f"QA of the 13000x13000 PNG: peak RSS +{measured['delta'] / 2**20:.1f} MiB")
    # Decoding it would take 13000 * 13000 * 3 bytes = 483 MiB at least.
    assert measured["delta"] < 32 * 2**20
    assert measured["outcome"]["action"] == "failed"
    assert measured["outcome"]["reasons"] == [
        "dimensions: not decoded, the header declares 13000x13000, requested 512x512"
    ]


def test_landing_the_13000x13000_png_stays_flat_in_memory(tmp_path: Path, bomb_png: bytes) -> None:
    measured = peak_rss_delta("landing", tmp_path, bomb_png)
    print(f"Landing the 13000x13000 PNG: peak RSS +{measured['delta'] / 2**20:.1f} MiB")
    assert measured["outcome"] == "BflImageIntegrityError"
    assert measured["delta"] < 32 * 2**20
    assert not list((tmp_path / "landed").rglob("bomb*"))


def test_an_endless_body_stops_at_the_size_cap(server: HostileImages, tmp_path: Path) -> None:
    cap = 1024 * 1024
    with pytest.raises(BflImageIntegrityError, match=f"larger than {cap} bytes"):
        land_one(tmp_path, server.url("/endless"), max_bytes=cap)
    time.sleep(0.2)
    print(
        f"endless body: the server got {server.sent['/endless']} bytes out before landing hung up (cap {cap})"
    )
    # The server could push at most the cap plus what the kernel buffers hold, never the full 1 GiB.
    assert server.sent["/endless"] < cap + 16 * 2**20
    assert stored_files(tmp_path) == []


def test_a_gzip_bomb_is_refused_after_inflating_no_more_than_the_cap(
    server: HostileImages, tmp_path: Path, mocker: Any
) -> None:
    from airflow_provider_bfl.storage import landing

    fed = mocker.spy(landing._Hashing, "feed")
    cap = 4 * 1024 * 1024
    with pytest.raises(BflImageIntegrityError, match=f"larger than {cap} bytes"):
        land_one(tmp_path, server.url("/gzip-bomb"), max_bytes=cap)
    pieces = [len(call.args[1]) for call in fed.call_args_list]
    print(f"gzip bomb: {sum(pieces)} bytes inflated before the cap, largest piece {max(pieces)}")
    assert max(pieces) <= landing.CHUNK  # inflated 64 KiB at a time, not a network read at once
    assert sum(pieces) <= cap + landing.CHUNK


def test_a_gzip_bomb_does_not_grow_the_worker(server: HostileImages, tmp_path: Path) -> None:
    script = (
        MEASURE
        + f"""
import json
from airflow_provider_bfl.storage.landing import ImageLander
lander = ImageLander("file://{tmp_path}", dag_id="d", run_id="r")
def land(path):
    try:
        lander.land_url({{"taskUUID": "t", "imageUUID": path.strip("/"), "imageURL": "{server.url("")}" + path}},
                        {{"width": 256, "height": 256, "outputFormat": "PNG"}})
    except Exception as exc:
        return type(exc).__name__
land("/good")
before = start()
outcome = land("/gzip-bomb")
print(json.dumps({{"outcome": outcome, "grew": grown(before)}}))
"""
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"gzip bomb (1 GiB inflated, 32 MiB cap): peak RSS +{measured['grew'] / 2**20:.1f} MiB")
    assert measured["outcome"] == "BflImageIntegrityError"
    assert measured["grew"] < 24 * 2**20


def test_a_declared_length_over_the_cap_is_refused_before_reading(
    server: HostileImages, tmp_path: Path
) -> None:
    with pytest.raises(BflImageIntegrityError, match="is 10737418240 bytes, larger than"):
        land_one(tmp_path, server.url("/huge-declared"))


# -- time -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/drip", "/drip-headers"])
def test_a_slow_drip_fails_at_the_total_deadline(server: HostileImages, tmp_path: Path, path: str) -> None:
    deadline = 2.0
    with (
        lander(tmp_path, download_deadline=deadline, timeout=30) as landing,
        pytest.raises(BflLandingError, match="did not finish within its 2s deadline"),
    ):
        started = time.monotonic()
        try:
            landing.land_url(entry_for(server.url(path)), REQUESTED)
        finally:
            elapsed = time.monotonic() - started
    print(f"{path}: failed after {elapsed:.2f}s for a {deadline:g}s deadline")
    # Each read returns within 0.5 s, so a per-read timeout (30 s here) never fires.
    assert deadline <= elapsed < deadline + 0.25
    assert stored_files(tmp_path) == []


# -- lies -------------------------------------------------------------------------------------------


def test_a_body_cut_short_of_its_content_length_is_a_landing_error(
    server: HostileImages, tmp_path: Path
) -> None:
    with pytest.raises(BflLandingError, match="RemoteProtocolError") as caught:
        land_one(tmp_path, server.url("/truncated"), download_deadline=30)
    assert not isinstance(caught.value, BflImageIntegrityError)
    assert server.hits["/truncated"] == 4  # transient: retried, then given up
    assert stored_files(tmp_path) == []


def test_a_content_length_shorter_than_the_body_gives_a_damaged_image(
    server: HostileImages, tmp_path: Path
) -> None:
    with pytest.raises(BflImageIntegrityError, match="damaged"):
        land_one(tmp_path, server.url("/short-length"))


def test_a_gzip_encoded_image_lands_decoded(server: HostileImages, tmp_path: Path) -> None:
    record = land_one(tmp_path, server.url("/gzip-good"))
    assert Path(record["storedURI"].removeprefix("file://")).read_bytes() == server.good
    assert record["bytes"] == len(server.good)


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/gzip-lie", "does not decode as the gzip Content-Encoding it declares"),
        ("/brotli", "Content-Encoding landing does not decode (allowed: gzip, deflate, identity)"),
    ],
)
def test_a_lying_or_unknown_content_encoding_is_refused(
    server: HostileImages, tmp_path: Path, path: str, says: str
) -> None:
    with pytest.raises(BflImageIntegrityError, match=re.escape(says)):
        land_one(tmp_path, server.url(path))
    assert stored_files(tmp_path) == []


def test_a_non_image_body_is_refused_without_quoting_a_byte_of_it(
    server: HostileImages, tmp_path: Path
) -> None:
    with pytest.raises(BflImageIntegrityError, match="the bytes are not an image") as caught:
        land_one(tmp_path, server.url("/html"))
    message = str(caught.value)
    assert BODY_MARKER not in message and "<html" not in message and "b'" not in message


@pytest.mark.parametrize(("path", "status"), [("/gone", 410), ("/missing", 404)])
def test_an_expired_url_is_an_image_expired_error(
    server: HostileImages, tmp_path: Path, path: str, status: int
) -> None:
    with pytest.raises(BflImageExpiredError) as caught:
        land_one(tmp_path, server.url(path))
    assert caught.value.status_code == status and "expired" in str(caught.value)


# -- redirects --------------------------------------------------------------------------------------


def test_a_redirect_loop_stops_after_the_redirect_limit(server: HostileImages, tmp_path: Path) -> None:
    before = server.hits["/loop"]
    with pytest.raises(BflLandingError, match="redirected more than 3 time"):
        land_one(tmp_path, server.url("/loop"))
    assert server.hits["/loop"] - before == 4  # the first request and 3 redirects, once: not retried


def test_three_redirects_are_followed_and_four_are_not(server: HostileImages, tmp_path: Path) -> None:
    assert land_one(tmp_path, server.url("/hops/3"))["bytes"] == len(server.good)
    with pytest.raises(BflLandingError, match="redirected more than 3 time"):
        land_one(tmp_path / "again", server.url("/hops/4"))


def test_redirects_to_other_hosts_follow_the_allow_list(server: HostileImages, tmp_path: Path) -> None:
    # Without an allow-list a CDN hop to another host is fine; with one, every hop must be on it.
    assert land_one(tmp_path / "open", server.url("/elsewhere"))["bytes"] == len(server.good)
    before = server.hits["/good"]
    with pytest.raises(BflLandingError, match="redirected to host 'localhost', which is not in image_hosts"):
        land_one(tmp_path / "closed", server.url("/elsewhere"), image_hosts=["127.0.0.1"])
    assert server.hits["/good"] == before  # the other host was never contacted
    record = land_one(tmp_path / "both", server.url("/elsewhere"), image_hosts=["127.0.0.1", "localhost"])
    assert record["bytes"] == len(server.good)


def test_an_image_url_off_the_allow_list_is_never_requested(server: HostileImages, tmp_path: Path) -> None:
    before = server.hits["/good"]
    with pytest.raises(BflLandingError, match=re.escape("is host '127.0.0.1', which is not in image_hosts")):
        land_one(tmp_path, server.url("/good"), image_hosts=["*.runware.ai"])
    assert server.hits["/good"] == before


def test_a_redirect_to_a_file_url_is_refused(server: HostileImages, tmp_path: Path) -> None:
    with pytest.raises(BflLandingError, match="non-http"):
        land_one(tmp_path, server.url("/to-file"))


@pytest.mark.parametrize(
    "hosts", [["https://im.runware.ai"], ["im.runware.ai/images"], ["im.runware.ai:443"], ["*."], ["*"], []]
)
def test_a_malformed_allow_list_is_refused(tmp_path: Path, hosts: list[str]) -> None:
    with pytest.raises(BflInvalidRequestError, match="image_hosts"):
        lander(tmp_path, image_hosts=hosts)


# -- a batch ----------------------------------------------------------------------------------------


def test_landed_records_survive_their_siblings_failures(server: HostileImages, tmp_path: Path) -> None:
    paths = ["/good/1", "/loop", "/gzip-lie", "/good/2", "/html", "/gone"]
    entries = [entry_for(server.url(path)) for path in paths]
    with lander(tmp_path) as landing:
        records, failures = landing.land_urls(entries, {e["taskUUID"]: REQUESTED for e in entries})
    assert [r["imageUUID"] for r in records] == [entries[0]["imageUUID"], entries[3]["imageUUID"]]
    assert [(entry["imageURL"].rsplit("/", 1)[1], type(error)) for entry, error in failures] == [
        ("loop", BflLandingError),
        ("gzip-lie", BflImageIntegrityError),
        ("html", BflImageIntegrityError),
        ("gone", BflImageExpiredError),
    ]
    assert all(Path(r["storedURI"].removeprefix("file://")).is_file() for r in records)


def planned(task_uuid: str, **fields: Any) -> PlannedGeneration:
    values: dict[str, Any] = {
        "task_uuid": task_uuid,
        "position": 1,
        "model": "bfl:2@1",
        "width": 256,
        "height": 256,
        "output_format": "PNG",
        "output_type": "URL",
        "number_results": 1,
        "prompt": "a red bicycle",
        "wire": {},
        **fields,
    }
    return PlannedGeneration(**values)


def test_land_with_a_plan_keeps_prompt_and_key_and_reports_unplaceable_results(
    server: HostileImages, tmp_path: Path, mocker: Any
) -> None:
    good, keyed, stranger = entry_for(server.url("/good/a")), entry_for(server.url("/good/b")), entry_for("x")
    nameless = {"taskUUID": good["taskUUID"], "imageURL": server.url("/good/c")}
    plan = {
        good["taskUUID"]: planned(good["taskUUID"]),
        keyed["taskUUID"]: planned(keyed["taskUUID"], position=2, key="SKU-17", prompt="a blue kettle"),
    }
    hook = mocker.create_autospec(BflHook, instance=True)
    with lander(tmp_path) as landing:
        records, failures = _landing.land(landing, hook, [good, stranger, keyed, nameless], plan)
    assert [(r["imageUUID"], r["prompt"], r.get("key")) for r in records] == [
        (good["imageUUID"], "a red bicycle", None),
        (keyed["imageUUID"], "a blue kettle", "SKU-17"),
    ]
    assert [(entry, type(error)) for entry, error in failures] == [
        (stranger, BflMalformedResponseError),
        (nameless, BflMalformedResponseError),
    ]
    assert "did not submit" in str(failures[0][1]) and "without an imageUUID" in str(failures[1][1])
    hook.get_status.assert_not_called()  # URL outputs are downloaded, not fetched again


def test_an_upload_that_never_arrived_is_an_upload_missing_error(tmp_path: Path) -> None:
    task_uuid = str(uuid.uuid4())
    entry = {"taskUUID": task_uuid, "imageUUID": str(uuid.uuid4())}
    with lander(tmp_path) as landing:
        records, failures = _landing.verify_uploads(
            landing, [entry], {task_uuid: planned(task_uuid)}, timeout=0.2
        )
    assert records == []
    [(failed, error)] = failures
    assert failed is entry and isinstance(error, BflUploadMissingError)
    assert error.task_uuid == task_uuid and "did not upload it" in str(error)


def test_an_arrived_upload_is_verified_and_carries_the_prompt(tmp_path: Path) -> None:
    task_uuid = str(uuid.uuid4())
    entry = {"taskUUID": task_uuid, "imageUUID": str(uuid.uuid4())}
    plan = {task_uuid: planned(task_uuid, key="SKU-9")}
    with lander(tmp_path) as landing:
        target = _landing.upload_target(landing, plan[task_uuid])
        Path(target.path).parent.mkdir(parents=True)
        Path(target.path).write_bytes(png())
        [record], failures = _landing.verify_uploads(landing, [entry], plan, timeout=0.2)
    assert failures == [] and record["key"] == "SKU-9" and record["prompt"] == "a red bicycle"


def test_total_cost_sums_only_real_amounts() -> None:
    entries: list[dict[str, Any]] = [
        {"cost": 0.04},
        {"cost": 0.01},
        {"cost": math.nan},
        {"cost": -5.0},
        {"cost": math.inf},
        {"cost": True},
        {"cost": "0.5"},
        {"cost": None},
        {},
    ]
    assert _landing.total_cost(entries) == 0.05
    assert _landing.total_cost([{"cost": math.nan}, {"cost": -1}]) is None


# -- keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dag_id", "run_id", "task_uuid", "image_uuid"),
    [
        ("..", "..", "..", ".."),
        ("../../etc", "manual__../../x", "/abs/path", "..\\..\\win"),
        ("dag", "run", ".", "..."),
        ("d", "r" * 400, "t", "i"),
        ("d", "run\x00id\n", "t", ".hidden"),
    ],
)
def test_no_id_can_place_a_key_outside_the_destination(
    tmp_path: Path, dag_id: str, run_id: str, task_uuid: str, image_uuid: str
) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    root = tmp_path / "dest"
    key = Path(
        str(image_key(ObjectStoragePath(f"file://{root}"), dag_id, run_id, task_uuid, image_uuid, "PNG").path)
    )
    relative = key.resolve().relative_to(root.resolve())
    assert len(relative.parts) == 4
    assert all(
        part not in (".", "..") and not part.startswith(".") and len(part) <= 130 for part in relative.parts
    )


def test_long_ids_that_share_a_prefix_get_distinct_keys(tmp_path: Path) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    root = ObjectStoragePath(f"file://{tmp_path}")
    first, second = ("r" * 300 + suffix for suffix in ("a", "b"))
    assert image_key(root, "d", first, "t", "i", "PNG") != image_key(root, "d", second, "t", "i", "PNG")
