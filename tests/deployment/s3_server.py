"""``python tests/deployment/s3_server.py --port N``: moto's S3-compatible server on 127.0.0.1 until killed."""

from __future__ import annotations

import argparse
import signal
import threading


def main() -> None:
    from moto.server import ThreadedMotoServer

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    server.start()
    print(f"S3 server on http://127.0.0.1:{args.port}", flush=True)
    stopped.wait()
    server.stop()


if __name__ == "__main__":
    main()
