"""Pytest fixture for offline tests against the Runware emulator.

Opt in from a top-level ``conftest.py``::

    pytest_plugins = ["airflow_provider_bfl.testing.pytest_plugin"]

    def test_generate(runware_emulator):
        hook = BflHook(base_url=runware_emulator.base_url, api_key=runware_emulator.api_key)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_bfl.testing.emulator import RunwareEmulator


@pytest.fixture
def runware_emulator() -> Iterator[RunwareEmulator]:
    """A started emulator (key ``test-key``, zero latency) on a free loopback port, stopped afterwards."""
    with RunwareEmulator() as emulator:
        yield emulator
