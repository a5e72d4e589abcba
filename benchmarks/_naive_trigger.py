"""
The triggerer-scale baseline: what a generic HTTP sensor trigger does. Benchmark code, not product.

A fixed poll interval and a new HTTP client (so a new connection) for every poll. The clients
share one SSL context, as aiohttp's sessions do: httpx's default loads the CA bundle for every
client (~19 ms of CPU each), which would turn the baseline into a strawman.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

_SHARED_SSL_CONTEXT: list[ssl.SSLContext] = []


def _ssl_context() -> ssl.SSLContext:
    if not _SHARED_SSL_CONTEXT:
        _SHARED_SSL_CONTEXT.append(ssl.create_default_context())
    return _SHARED_SSL_CONTEXT[0]


class NaiveHttpPollingTrigger(BaseTrigger):
    """The baseline: poll every ``poll_interval`` seconds with a new HTTP client per poll."""

    def __init__(
        self, task_uuids: dict[str, int], bfl_conn_id: str, deadline: float, poll_interval: float = 1.0
    ) -> None:
        super().__init__()
        self.task_uuids = task_uuids
        self.bfl_conn_id = bfl_conn_id
        self.deadline = deadline
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "task_uuids": self.task_uuids,
                "bfl_conn_id": self.bfl_conn_id,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import httpx
        from airflow.sdk import BaseHook

        from airflow_provider_bfl import events
        from airflow_provider_bfl._envelope import parse_envelope
        from airflow_provider_bfl._status import merge
        from airflow_provider_bfl.exceptions import BflError
        from airflow_provider_bfl.models.results import TaskStatus

        conn = await BaseHook.aget_connection(self.bfl_conn_id)
        url, headers = str(conn.host), {"Authorization": f"Bearer {conn.password}"}
        statuses = {uuid: TaskStatus(uuid, expected_images=n) for uuid, n in self.task_uuids.items()}
        while True:
            pending = [uuid for uuid, status in statuses.items() if not status.done]
            tasks = [{"taskType": "getResponse", "taskUUID": uuid} for uuid in pending]
            try:
                async with httpx.AsyncClient(verify=_ssl_context(), timeout=60) as client:
                    response = await client.post(url, json=tasks, headers=headers)
                if response.status_code == 200:
                    merge({uuid: statuses[uuid] for uuid in pending}, parse_envelope(200, response.content))
            except (httpx.TransportError, BflError):
                pass  # a generic sensor just pokes again
            if all(status.done for status in statuses.values()) or time.time() >= self.deadline:
                yield TriggerEvent(events.from_statuses(statuses))
                return
            await asyncio.sleep(self.poll_interval)


class IdleTrigger(BaseTrigger):
    """
    The floor of the triggerer-scale benchmark: a trigger that asks nothing and fires after a sleep.

    What 2,000 triggers cost the event loop (tasks, loggers, the collector walking them) before
    any polling is done; it logs as often as the provider's trigger does.
    """

    def __init__(
        self, task_uuids: dict[str, int], bfl_conn_id: str, deadline: float, seconds: float = 5.0
    ) -> None:
        super().__init__()
        self.task_uuids = task_uuids
        self.bfl_conn_id = bfl_conn_id
        self.deadline = deadline
        self.seconds = seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "task_uuids": self.task_uuids,
                "bfl_conn_id": self.bfl_conn_id,
                "deadline": self.deadline,
                "seconds": self.seconds,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self.log.info("Waiting for %d generation(s)", len(self.task_uuids))
        await asyncio.sleep(self.seconds)
        self.log.info("Done")
        yield TriggerEvent(
            {
                "status": "success",
                "task_uuids": list(self.task_uuids),
                "results": [],
                "failures": [],
                "pending": [],
                "message": "idle",
            }
        )
