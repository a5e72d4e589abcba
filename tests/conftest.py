"""Shared fixtures: a real emulator on loopback, a ``bfl_default`` connection, a real Airflow DB."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Airflow reads its configuration when first imported: point it at a throw-away home first.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="bfl-test-airflow-home-"))
DAGS_FOLDER = AIRFLOW_HOME / "dags"
DAGS_FOLDER.mkdir()
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.pop("AIRFLOW_CONN_BFL_DEFAULT", None)

from airflow_provider_bfl.testing.emulator import RunwareEmulator  # noqa: E402  (after the env set-up)

API_KEY = "test-key-5f1c9a7e-do-not-log"

#: Fast retry and polling so fault tests run in milliseconds, not seconds.
FAST_EXTRAS = {
    "poll_interval": 0.02,
    "poll_max_interval": 0.1,
    "retry_backoff_base": 0.01,
    "retry_backoff_max": 0.05,
    "max_retries": 4,
    "timeout": 5,
}


def connection_json(emulator: RunwareEmulator, **extra: object) -> str:
    return json.dumps(
        {
            "conn_type": "bfl",
            "password": emulator.api_key,
            "host": emulator.base_url,
            "extra": {**FAST_EXTRAS, **extra},
        }
    )


@pytest.fixture
def emulator() -> Iterator[RunwareEmulator]:
    with RunwareEmulator(api_key=API_KEY) as emu:
        yield emu


@pytest.fixture
def bfl_conn(emulator: RunwareEmulator, monkeypatch: pytest.MonkeyPatch) -> RunwareEmulator:
    """``bfl_default`` points at the emulator; returns the emulator for its counters."""
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(emulator))
    return emulator


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB in the throw-away AIRFLOW_HOME (created once per session)."""
    from airflow.utils.db import initdb

    initdb()
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-compatible server (moto) on loopback; its endpoint URL."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh bucket and an ``aws_default`` connection to the loopback S3 server; the boto3 client."""
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {
                    "endpoint_url": s3_server,
                    "region_name": "us-east-1",
                    "config_kwargs": {"s3": {"addressing_style": "path"}},
                },
            }
        ),
    )
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    bucket = f"bfl-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.bucket = bucket
    yield client
