"""Run the emulator in the foreground: ``python -m airflow_provider_bfl.testing.emulator --port 8765``.

Prints the base URL on the first line and the API key on the second (flushed at once, so a parent
process can read them), then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_provider_bfl.testing.emulator.emulator import RunwareEmulator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_bfl.testing.emulator",
        description="Offline Runware task API emulator for bfl:2@1 (FLUX.1.1 [pro]).",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--api-key", default="test-key", help="the accepted API key")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per generation")
    parser.add_argument("--unknown-task-mode", choices=("error", "empty"), default="error")
    parser.add_argument("--processing-status-word", choices=("processing", "pending"), default="processing")
    parser.add_argument("--async-error-shape", choices=("item", "envelope"), default="item")
    parser.add_argument("--legacy-error-key", action="store_true", help="send 'error' instead of 'errors'")
    parser.add_argument(
        "--data-as-object", action="store_true", help="send a single 'data' item as an object"
    )
    parser.add_argument("--default-ttl", type=float, default=3600.0, help="image URL lifetime in seconds")
    parser.add_argument("--random-seed", type=int, default=None, help="seed for seeds drawn by the server")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    emulator = RunwareEmulator(
        api_key=args.api_key,
        latency=args.latency,
        host=args.host,
        port=args.port,
        unknown_task_mode=args.unknown_task_mode,
        processing_status_word=args.processing_status_word,
        async_error_shape=args.async_error_shape,
        legacy_error_key=args.legacy_error_key,
        data_as_object=args.data_as_object,
        default_ttl=args.default_ttl,
        random_seed=args.random_seed,
    )
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with emulator:
        print(emulator.base_url, flush=True)
        print(emulator.api_key, flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
