"""
Target 4, landing memory: landing 200 images of 1440x1440 PNG to ``file://`` storage with the
provider's landing module (``airflow_provider_bfl.storage``: streamed, hashed, verified, atomic)
against a plain ``httpx`` download loop (``client.get`` then ``write_bytes``, one at a time), each
in a fresh child process: peak RSS growth over the process's RSS before landing (sampled every
5 ms) and throughput. Both processes import Pillow before measuring, so the figures are about the
images, not about a one-off import.

The images come from a static file server in its own process, not from the emulator: the
emulator draws smooth gradients that compress to ~40 KB at 1440x1440, while a real FLUX PNG of that
size is megabytes. The server sends one 1440x1440 PNG of random pixels (~6 MB, the worst case a
PNG of that size can be) under every image URL, so memory and throughput are measured at full size.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks._common import (
    ROOT,
    BenchResult,
    Row,
    fmt_s,
    median,
    prepare_airflow_env,
    ratio,
    rss_mb,
    run_child,
)

VARIANTS = ("httpx", "lander")
RSS_BUDGET_MB = 100.0


def noise_png(size: int) -> bytes:
    """A ``size`` x ``size`` PNG of random pixels: as large as a PNG of that size gets."""
    import io
    import os

    from PIL import Image

    image = Image.frombytes("RGB", (size, size), os.urandom(size * size * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def serve(size: int) -> None:
    """Serve the same PNG under every ``/images/*.png`` URL (keep-alive) until killed; print the origin."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = noise_png(size)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


class _ImageServer:
    """:func:`serve` in a child process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._proc: subprocess.Popen[str] | None = None
        self.origin = ""

    def __enter__(self) -> _ImageServer:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.landing_memory", "--serve", str(self.size)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=prepare_airflow_env(),
        )
        assert self._proc.stdout is not None
        self.origin = self._proc.stdout.readline().strip()
        if not self.origin.startswith("http"):
            self.__exit__()
            raise RuntimeError("the image server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=15)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None


def landing_module_present() -> bool:
    if importlib.util.find_spec("airflow_provider_bfl.storage") is None:
        return False
    module = importlib.import_module("airflow_provider_bfl.storage")
    return hasattr(module, "ImageLander")


class _RssSampler:
    """Samples this process's RSS every ``period`` seconds in a thread; keeps the peak."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.period):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def child(variant: str, entries_file: str, out_dir: str) -> dict[str, Any]:
    import gc

    import httpx
    from PIL import Image, PngImagePlugin  # noqa: F401  (imported up front in both variants)

    entries: list[dict[str, Any]] = json.loads(Path(entries_file).read_text())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    requested = {entry["taskUUID"]: entry.pop("requested") for entry in entries}
    lander = None
    if variant == "lander":
        from airflow_provider_bfl.storage import ImageLander

        lander = ImageLander(out.as_uri(), dag_id="bench", run_id="landing")
    gc.collect()
    before = rss_mb()
    total = 0
    failures: list[str] = []
    with _RssSampler() as sampler:
        started = time.perf_counter()
        if lander is None:
            with httpx.Client(timeout=60) as client:
                for entry in entries:
                    response = client.get(entry["imageURL"])
                    response.raise_for_status()
                    (out / f"{entry['imageUUID']}.png").write_bytes(response.content)
                    total += len(response.content)
        else:
            with lander:
                records, failed = lander.land_urls(entries, requested)
            total = sum(record["bytes"] for record in records)
            failures = [str(error) for _, error in failed]
        wall = time.perf_counter() - started
    return {
        "variant": variant,
        "images": len(entries) - len(failures),
        "failures": failures[:3],
        "bytes": total,
        "wall": wall,
        "rss_before_mb": before,
        "rss_peak_mb": sampler.peak,
    }


def run(quick: bool = False) -> BenchResult:
    images = 12 if quick else 200
    size = 512 if quick else 1440
    repeats = 1 if quick else 3
    result = BenchResult(
        name="landing_memory",
        title="4. Landing memory",
        setup=(
            f"{images} images of {size}x{size} PNG (random pixels, served by a static server in its own "
            "process) to file://; each run in a "
            f"fresh child process, {repeats} run(s) per variant alternating (median); baseline: plain httpx "
            "loop (client.get + write_bytes); RSS sampled every 5 ms"
        ),
    )
    if not landing_module_present():
        result.skipped = "landing module not present (airflow_provider_bfl.storage.ImageLander)"
        return result
    workdir = Path(tempfile.mkdtemp(prefix="bfl-bench-landing-"))
    try:
        with _ImageServer(size) as server:
            wanted = {"width": size, "height": size, "outputFormat": "PNG"}
            entries = []
            for _ in range(images):
                task_uuid, image_uuid = str(uuid.uuid4()), str(uuid.uuid4())
                url = f"{server.origin}/images/{image_uuid}.png"
                entries.append(
                    {"taskUUID": task_uuid, "imageUUID": image_uuid, "imageURL": url, "requested": wanted}
                )
            entries_file = workdir / "entries.json"
            entries_file.write_text(json.dumps(entries))
            runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
            for attempt in range(repeats):
                for variant in VARIANTS:
                    out = workdir / f"{variant}-{attempt}"
                    # Start every run with no dirty pages of the previous one still being written back.
                    os.sync()
                    runs[variant].append(
                        run_child(
                            "benchmarks.landing_memory",
                            ["--child", variant, "--entries", str(entries_file), "--out", str(out)],
                        )
                    )
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        os.sync()  # leave no write-back behind for whatever runs next
    result.raw = runs

    def growth(run: dict[str, Any]) -> float:
        return float(run["rss_peak_mb"] - run["rss_before_mb"])

    def throughput(run: dict[str, Any]) -> float:
        return float(run["bytes"]) / run["wall"] / 2**20

    lander_growth = max(growth(run) for run in runs["lander"])
    base_growth = max(growth(run) for run in runs["httpx"])
    lander_rate = median(throughput(run) for run in runs["lander"])
    base_rate = median(throughput(run) for run in runs["httpx"])
    lander_wall = median(run["wall"] for run in runs["lander"])
    base_wall = median(run["wall"] for run in runs["httpx"])
    mean_mb = runs["lander"][0]["bytes"] / max(1, runs["lander"][0]["images"]) / 2**20
    landed = min(run["images"] for run in runs["lander"])
    result.rows = [
        Row(
            f"images landed ({mean_mb:.2f} MiB each)",
            f"{landed}/{images}",
            f"{min(run['images'] for run in runs['httpx'])}/{images}",
            target=f"{images}/{images}",
            met=landed == images,
        ),
        Row(
            "peak RSS growth while landing (worst run)",
            f"{lander_growth:.1f} MiB",
            f"{base_growth:.1f} MiB",
            ratio(max(lander_growth, 0.1), max(base_growth, 0.1)),
            f"< {RSS_BUDGET_MB:.0f} MB",
            lander_growth < RSS_BUDGET_MB,
        ),
        Row(
            "throughput (landed MiB/s)",
            f"{lander_rate:.1f} MiB/s ({fmt_s(lander_wall)})",
            f"{base_rate:.1f} MiB/s ({fmt_s(base_wall)})",
            ratio(lander_rate, base_rate),
            ">= 0.8x",
            ratio(lander_rate, base_rate) >= 0.8,
        ),
    ]
    for run in runs["lander"]:
        for failure in run["failures"]:
            result.notes.append(f"landing failure: {failure}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=VARIANTS)
    parser.add_argument("--entries")
    parser.add_argument("--out")
    parser.add_argument("--serve", type=int, metavar="SIZE", help="serve a SIZE x SIZE PNG (for the parent)")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if not (args.child and args.entries and args.out):
        parser.error("--child, --entries and --out go together")
    prepare_airflow_env()
    print(json.dumps(child(args.child, args.entries, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
