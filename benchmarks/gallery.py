"""
Target 6, the gallery with a 500-image run: the server time of what a reviewer's browser loads
(the page and its thumbnails, first view and cached) against the same page with the originals in
place of thumbnails, served by the same plugin in the same run; and thumbnail bytes vs original
bytes.

The images are 1024x1024 JPGs at quality 95 (the API's defaults), textured like photographs, landed
in a ``file://`` folder as the operator lays them out; the records are a real DAG run's XCom (see
:mod:`benchmarks.gallery_server`). The client fetches as a browser does: six connections at once.
"First view" deletes every cached thumbnail first, so each one is made on request.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks._common import (
    ROOT,
    BenchResult,
    Row,
    fmt_ms,
    median,
    prepare_airflow_env,
    ratio,
    stop_process,
)

SIDE = 1024
QUALITY = 95
#: Distinct pictures; the run's files are copies of them (a thumbnail is made per file all the same).
DISTINCT = 25
#: Connections a browser opens to one host (HTTP/1.1).
CONNECTIONS = 6
#: Tiles on the first screen of a 1400x1000 window: 6 columns x 4 rows (lazy loading fetches no more
#: before the reviewer scrolls).
FIRST_SCREEN = 24


def _picture(seed: int) -> bytes:
    """A seeded gradient with shapes (the emulator's drawing) under photographic grain, as JPG."""
    from PIL import Image

    from airflow_provider_bfl.testing.emulator.rendering import ImageRenderer, RenderKey

    drawn = Image.open(io.BytesIO(ImageRenderer().render(RenderKey(seed, SIDE, SIDE, "PNG", 0, False))))

    # Grain at three scales, as in a photograph: FLUX's 1024x1024 JPGs at q95 are some 300-700 KiB,
    # these ~560 KiB (a smooth picture would flatter the thumbnail's size).
    def noise(scale: int, sigma: int) -> Any:
        grain = Image.effect_noise((SIDE // scale, SIDE // scale), sigma)
        return grain.resize((SIDE, SIDE), Image.Resampling.BICUBIC)

    texture = Image.merge("RGB", (noise(4, 64), noise(2, 48), noise(1, 32)))
    textured = Image.blend(drawn.convert("RGB"), texture, 0.4)
    out = io.BytesIO()
    textured.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


def land_images(folder: Path, count: int) -> list[dict[str, Any]]:
    """``count`` landed images under ``folder`` and their records (with QA verdicts), in order."""
    pictures = [_picture(seed) for seed in range(min(count, DISTINCT))]
    records = []
    for number in range(count):
        task_uuid, image_uuid = str(uuid.uuid4()), str(uuid.uuid4())
        path = folder / "bench_gallery" / "run" / task_uuid / f"{image_uuid}.jpg"
        path.parent.mkdir(parents=True)
        data = pictures[number % len(pictures)]
        path.write_bytes(data)
        passed = number % 10 != 3
        records.append(
            {
                "taskUUID": task_uuid,
                "imageUUID": image_uuid,
                "storedURI": f"file://{path}",
                "bytes": len(data),
                "width": SIDE,
                "height": SIDE,
                "format": "JPEG",
                "seed": 1000 + number,
                "cost": 0.04,
                "key": f"SKU-{number:04d}",
                "prompt": f"Studio product photo of catalogue item {number}, seamless grey background",
                "qa": {
                    "passed": passed,
                    "action": "kept" if passed else "quarantined",
                    "reasons": [] if passed else ["not_blank: flat"],
                },
            }
        )
    return records


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class GalleryServer:
    """:mod:`benchmarks.gallery_server` in a child process (its own GIL, as an api-server has)."""

    def __init__(self, records: Path) -> None:
        self.records = records
        self.log = records.with_name("server.log")
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.run_id = ""
        self._proc: subprocess.Popen[str] | None = None

    @property
    def port_args(self) -> list[str]:
        return ["--port", str(self.port)]

    def __enter__(self) -> GalleryServer:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.gallery_server",
                "--records",
                str(self.records),
                *self.port_args,
            ],
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
            cwd=ROOT,
            env=prepare_airflow_env(),
        )
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith("READY "):
                self.run_id = line.split()[2]
                break
        else:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"the gallery server did not start:\n{tail}")
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(self.base_url + "/", timeout=2)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the gallery server does not answer")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            stop_process(self._proc)


def _fetch_all(client: Any, paths: Sequence[str]) -> int:
    """GET every path over CONNECTIONS connections at once; the bytes received (each must be 200)."""

    def one(path: str) -> int:
        response = client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code}")
        return len(response.content)

    with ThreadPoolExecutor(max_workers=CONNECTIONS) as pool:
        return sum(pool.map(one, paths))


def _load(client: Any, page: str, images: Sequence[str]) -> tuple[float, int]:
    """A browser's load of ``page`` then ``images``: (seconds, image bytes)."""
    started = time.perf_counter()
    response = client.get(page)
    if response.status_code != 200:
        raise RuntimeError(f"GET {page}: {response.status_code}")
    received = _fetch_all(client, images)
    return time.perf_counter() - started, received


def _clear_thumbnails(folder: Path) -> None:
    from airflow_provider_bfl.ui.thumbnails import THUMBNAIL_DIR

    for cache in folder.rglob(THUMBNAIL_DIR):
        shutil.rmtree(cache)


def run(quick: bool = False) -> BenchResult:
    import httpx

    from airflow_provider_bfl.ui import page, urls

    count, repeats = (12, 1) if quick else (500, 3)
    result = BenchResult(
        name="gallery",
        title="6. Gallery page load",
        setup=(
            f"a {count}-image run ({SIDE}x{SIDE} JPG q{QUALITY}, file://) recorded by dag.test(); the plugin's "
            f"app on uvicorn (1 worker) in its own process; {CONNECTIONS} connections as a browser; "
            f"median of {repeats} (the whole run: once); baseline: the same pages with the originals (the plugin's full-size "
            "route) in place of the thumbnails"
        ),
    )
    work = Path(tempfile.mkdtemp(prefix="bfl-bench-gallery-"))
    try:
        records = land_images(work / "images", count)
        records_file = work / "records.json"
        records_file.write_text(json.dumps(records))
        with (
            GalleryServer(records_file) as server,
            httpx.Client(
                base_url=server.base_url, timeout=120, limits=httpx.Limits(max_connections=CONNECTIONS)
            ) as client,
        ):
            dag_id, run_id = "bench_gallery", server.run_id
            pages = [
                (urls.run_page(dag_id, run_id) + f"?page={n + 1}", records[start : start + page.PAGE_SIZE])
                for n, start in enumerate(range(0, count, page.PAGE_SIZE))
            ]

            def thumbs(chunk: Sequence[dict[str, Any]]) -> list[str]:
                return [urls.thumbnail(dag_id, run_id, r["imageUUID"]) for r in chunk]

            def originals(chunk: Sequence[dict[str, Any]]) -> list[str]:
                return [urls.image(dag_id, run_id, r["imageUUID"]) for r in chunk]

            def measure(load: Callable[[], tuple[float, int]], cold: bool, times: int) -> tuple[float, int]:
                runs = []
                for _ in range(times):
                    if cold:
                        _clear_thumbnails(work / "images")
                    runs.append(load())
                return median(seconds for seconds, _ in runs), runs[-1][1]

            first_page, first_chunk = pages[0]
            screen = first_chunk[:FIRST_SCREEN]
            # Warm-up, then a cold cache: the app is built, the template compiled and Pillow imported on
            # first use, which no later view pays.
            _load(client, first_page, [*thumbs(screen[:1]), *originals(screen[:1])])
            _clear_thumbnails(work / "images")
            html = median(_load(client, first_page, [])[0] for _ in range(max(3, repeats * 3)))
            figures: dict[str, dict[str, tuple[float, int]]] = {}
            first_screen = f"first screen: page + {len(screen)} thumbnails"
            everything = f"all {count} images: {len(pages)} page(s) + every thumbnail"
            views = {
                first_screen: [(first_page, screen)],
                f"page 1 scrolled: page + {len(first_chunk)} thumbnails": [(first_page, first_chunk)],
                everything: pages,
            }
            for label, view in views.items():

                def load(kind: Callable[[Sequence[dict[str, Any]]], list[str]], view: Any = view) -> Any:
                    def go() -> tuple[float, int]:
                        loads = [_load(client, url, kind(chunk)) for url, chunk in view]
                        return sum(s for s, _ in loads), sum(b for _, b in loads)

                    return go

                times = 1 if view is pages and len(pages) > 1 else repeats  # the whole run: once
                figures[label] = {
                    "first view": measure(load(thumbs), cold=True, times=times),
                    "cached": measure(load(thumbs), cold=False, times=times),
                    "originals": measure(load(originals), cold=False, times=times),
                }
            thumb_bytes = figures[everything]["cached"][1]
            original_bytes = sum(int(r["bytes"]) for r in records)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for label, measured in figures.items():
        baseline, _ = measured["originals"]
        for state in ("first view", "cached"):
            seconds, _ = measured[state]
            result.rows.append(
                Row(
                    f"{label}, {state}",
                    fmt_ms(seconds),
                    f"{fmt_ms(baseline)} (originals)",
                    ratio(seconds, baseline),
                )
            )
    result.rows.append(
        Row(
            f"page HTML alone ({min(count, page.PAGE_SIZE)} of {count} tiles)",
            fmt_ms(html),
            f"{fmt_ms(figures[first_screen]['cached'][0])} (with its first screen, cached)",
            ratio(html, figures[first_screen]["cached"][0]),
        )
    )
    result.rows.append(
        Row(
            f"bytes: {count} thumbnails (WEBP, 320 px) vs the originals",
            f"{thumb_bytes / 1024:,.0f} KiB ({thumb_bytes / 1024 / count:.1f} KiB each)",
            f"{original_bytes / 1024:,.0f} KiB ({original_bytes / 1024 / count:.0f} KiB each)",
            ratio(thumb_bytes, original_bytes),
        )
    )
    result.notes.append(
        "first view makes every thumbnail on request (the cache deleted before each run); cached reads "
        "them from .thumbnails/ beside the images; the browser also keeps them (max-age 1 day), which "
        "these server figures leave out"
    )
    result.raw = {
        "count": count,
        "html_s": html,
        "thumbnail_bytes": thumb_bytes,
        "original_bytes": original_bytes,
        "views": {label: {k: list(v) for k, v in m.items()} for label, m in figures.items()},
    }
    return result
