"""Shared fixtures for the emulator tests: a fresh emulator per test and a thin HTTP wrapper."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_bfl.testing.emulator import RunwareEmulator


def image_task(**overrides: Any) -> dict[str, Any]:
    """A valid imageInference task; ``overrides`` replace fields (value ``...`` removes a field)."""
    task: dict[str, Any] = {
        "taskType": "imageInference",
        "taskUUID": str(uuid.uuid4()),
        "model": "bfl:2@1",
        "positivePrompt": "a lighthouse at dusk",
        "width": 256,
        "height": 256,
    }
    task.update(overrides)
    return {key: value for key, value in task.items() if value is not ...}


class Api:
    """Plain-httpx access to one emulator (the provider's hook is deliberately not used)."""

    def __init__(self, http: httpx.Client, emu: RunwareEmulator) -> None:
        self.http = http
        self.emu = emu

    def post(self, tasks: Any, key: str | None = "default", **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {self.emu.api_key if key == 'default' else key}"
        return self.http.post(self.emu.base_url, json=tasks, headers=headers, **kwargs)

    def poll(self, *task_uuids: str) -> httpx.Response:
        return self.post([{"taskType": "getResponse", "taskUUID": task_uuid} for task_uuid in task_uuids])

    def control(self, method: str, route: str, body: Any = None) -> httpx.Response:
        return self.http.request(method, f"{self.emu.control_url}/{route}", json=body)


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        yield client


@pytest.fixture
def emu() -> Iterator[RunwareEmulator]:
    with RunwareEmulator(random_seed=7) as emulator:
        yield emulator


@pytest.fixture
def api(http: httpx.Client, emu: RunwareEmulator) -> Api:
    return Api(http, emu)


@pytest.fixture
def make_task() -> Any:
    return image_task
