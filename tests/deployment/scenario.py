"""Per-scenario bookkeeping: DAG runs triggered, emulator counters before and after, and the figures.

The emulator is shared by every scenario of the session, so a scenario's share of its counters is
the set of taskUUIDs it has not seen before the scenario started (scenarios run one after another).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.deployment.airflow_api import wait_for
from tests.deployment.deployment import Deployment, Evidence

#: When set, each scenario appends one JSON line with its figures to this file (``make reliability``).
REPORT_ENV = "BFL_RELIABILITY_REPORT"


@dataclass
class Figures:
    scenario: str
    topology: str = "local"
    passed: bool = False
    generations_expected: int = 0
    generations_run: int = 0
    submissions_sent: int = 0
    images_expected: int = 0
    images_billed: int = 0
    seconds: float = 0.0
    #: Scenario-specific measurements (name -> value) for the details table.
    details: dict[str, Any] = field(default_factory=dict)


class Scenario:
    """One scenario's view of the deployment: trigger runs, read its own emulator counters."""

    def __init__(self, name: str, deployment: Deployment, evidence: Evidence) -> None:
        self.name = name
        self.deployment = deployment
        self.api = deployment.api
        self.emulator = deployment.emulator
        self.evidence = evidence
        self.figures = Figures(name, topology=deployment.topology.name)
        self._started = time.monotonic()
        self._known_uuids = set(self.emulator.counters()["tasks"])
        self._requests_before = self.emulator.counters()["requests_by_task_type"]

    def trigger(self, dag_id: str) -> str:
        slug = re.sub(r"[^A-Za-z0-9]+", "_", self.name).strip("_").lower()
        run_id = f"{slug}__{uuid.uuid4().hex[:8]}"
        self.api.trigger(dag_id, run_id)
        self.evidence.runs.append((dag_id, run_id))
        return run_id

    def expect(self, generations: int, images: int) -> None:
        """What the scenario's DAG runs should have paid for: each generation once, each image once."""
        self.figures.generations_expected += generations
        self.figures.images_expected += images

    def detail(self, name: str, value: Any) -> None:
        """Record a measurement of this scenario (printed in the details table of ``make reliability``)."""
        self.figures.details[name] = value

    # -- the emulator's side ----------------------------------------------------------------------
    def tasks(self) -> dict[str, dict[str, int]]:
        """Per-taskUUID counters of the generations this scenario submitted."""
        tasks: dict[str, dict[str, int]] = self.emulator.counters()["tasks"]
        return {
            task_uuid: counts for task_uuid, counts in tasks.items() if task_uuid not in self._known_uuids
        }

    def requests_since_start(self, task_type: str) -> int:
        now = self.emulator.counters()["requests_by_task_type"].get(task_type, 0)
        return int(now - self._requests_before.get(task_type, 0))

    def wait_for_accepted(self, task_uuids: list[str], timeout: float = 60.0) -> None:
        wait_for(
            f"the emulator to accept {task_uuids}",
            lambda: all(self.tasks().get(u, {}).get("accepted") == 1 for u in task_uuids),
            timeout,
        )

    def capture_trigger_rows(self) -> list[dict[str, Any]]:
        """The trigger table as it is now (kwargs decrypted), kept for the secrets scan."""
        rows = self.deployment.trigger_rows()
        self.evidence.db_trigger_rows.extend(json.dumps(row) for row in rows)
        return rows

    def finish(self) -> Figures:
        tasks = self.tasks()
        self.figures.generations_run = sum(counts["accepted"] for counts in tasks.values())
        self.figures.submissions_sent = sum(counts["submissions"] for counts in tasks.values())
        self.figures.images_billed = sum(counts["images_billed"] for counts in tasks.values())
        self.figures.seconds = time.monotonic() - self._started
        return self.figures


def write_figures(figures: Figures) -> None:
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(asdict(figures)) + "\n")
