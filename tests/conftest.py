"""Shared fixtures: a real emulator on loopback, a ``bfl_default`` connection, a real Airflow DB."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
