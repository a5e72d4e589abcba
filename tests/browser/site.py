"""
A real Airflow site on loopback for the browser tests: one ``airflow api-server`` and one run of
the catalogue pipeline (``dag.test()`` in its own process, against the emulator) that lands images,
QA-checks them and then waits for its reviewer, all sharing one SQLite database.

Users (simple auth manager, ``DagScopedAuthManager``): ``reviewer`` (role user), ``outsider``
(role user, but no access to the pipeline's DAG) and ``admin``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tests.deployment.processes import free_port

REPO = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
DAG_ID = "example_bfl_catalogue_pipeline"
PASSWORDS = {"reviewer": "reviewer-pw", "outsider": "outsider-pw", "admin": "admin-pw"}
ROLES = {"reviewer": "user", "outsider": "user", "admin": "admin"}
#: Printed by the pipeline's process once the metadata database is made.
DB_READY = "BFL-SITE-DB-READY"


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise AssertionError(f"Timed out waiting for {what}\n{tail}")


@dataclass
class AirflowSite:
    root: Path
    connection: str
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    run_id: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def destination(self) -> Path:
        return self.root / "images"

    def env(self) -> dict[str, str]:
        home = self.root / "home"
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(home),
            "PYTHONPATH": str(self.root / "pythonpath"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__AUTH_MANAGER": "bfl_browser_auth.DagScopedAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in ROLES.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": "browser-tests-jwt-secret-0123456789abcdef",
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW_CONN_BFL_DEFAULT": self.connection,
            "PYTHONUNBUFFERED": "1",  # the logs are read while the processes run
        }

    def prepare(self) -> None:
        home = self.root / "home"
        (home / "dags").mkdir(parents=True)
        shutil.copytree(REPO / "example_dags" / "data", home / "dags" / "data")
        shutil.copy(REPO / "example_dags" / f"{DAG_ID}.py", home / "dags")
        (home / "passwords.json").write_text(json.dumps(PASSWORDS))
        # The auth manager on a path of its own: the repo root on PYTHONPATH would make Airflow see
        # the package's metadata twice (its egg-info) and register every plugin twice.
        (self.root / "pythonpath").mkdir()
        shutil.copy(
            Path(__file__).parent / "auth_manager.py", self.root / "pythonpath" / "bfl_browser_auth.py"
        )
        shutil.copy(
            Path(__file__).parent / "hitl_backport.py", self.root / "pythonpath" / "bfl_hitl_backport.py"
        )

    def _start(self, name: str, argv: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.root / f"{name}.log"
        process = subprocess.Popen(
            argv,
            env=self.env(),
            cwd=self.root,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process, log

    def start_api_server(self) -> None:
        """Once the pipeline's process has made the database (the api-server needs its tables)."""
        wait_for(
            "the database",
            lambda: DB_READY in self.pipeline_log.read_text(errors="replace"),
            180,
            self.pipeline,
            self.pipeline_log,
        )
        process, log = self._start(
            "api-server",
            [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(self.port)],
        )

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the api-server", healthy, 240, process, log)  # slow on a loaded 2-core machine

    def start_pipeline_run(self) -> None:
        """
        Make the database, then run the pipeline with a human reviewer: it lands and checks 8 images,
        then waits for review. One process does both (``airflow db migrate`` would be one more
        interpreter importing Airflow); the api-server starts once the database is there.
        """
        code = (
            "import sys\n"
            "import bfl_hitl_backport\n"
            "bfl_hitl_backport.install()  # dag.test() answers HITL from outside only from 3.3\n"
            "from airflow.utils.db import initdb\n"
            "initdb()\n"
            f"print({DB_READY!r}, flush=True)\n"
            "try:\n"
            "    from airflow.dag_processing.dagbag import DagBag\n"
            "except ImportError:  # Airflow 3.1\n"
            "    from airflow.models.dagbag import DagBag\n"
            f"bag = DagBag(dag_folder={str(self.root / 'home' / 'dags')!r})\n"
            f"dag = bag.dags[{DAG_ID!r}]\n"
            "for task in dag.tasks:  # wait in the worker: no trigger runs inline, the run is quicker\n"
            "    if hasattr(task, 'deferrable') and task.task_id != 'human_review':\n"
            "        task.deferrable = False\n"
            f"run = dag.test(run_conf={{'destination': {f'file://{self.destination}'!r}, 'review': 'human'}})\n"
            "print('RUN-STATE', run.state)\n"
        )
        self.pipeline, self.pipeline_log = self._start("pipeline", [sys.executable, "-c", code])

    def token(self, user: str) -> str:
        response = httpx.post(
            f"{self.base_url}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=10
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def api(self, user: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token(user)}"}, timeout=30
        )

    def wait_for_review(self, timeout: float = 420) -> dict[str, Any]:
        """
        The run's review request (its HITL detail) once it waits for an answer. Not the task's state:
        ``dag.test()`` before 3.3 parks a deferred task as ``queued`` while its trigger runs inline.
        """
        with self.api("admin") as api:

            def awaiting() -> dict[str, Any] | None:
                runs = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns").json().get("dag_runs", [])
                if not runs:
                    return None
                self.run_id = runs[0]["dag_run_id"]
                run = quote(self.run_id, safe="")
                detail = api.get(
                    f"/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances/human_review/-1/hitlDetails"
                )
                if detail.status_code == 200 and not detail.json().get("response_received"):
                    return dict(detail.json())
                return None

            return dict(wait_for("the review request", awaiting, timeout, self.pipeline, self.pipeline_log))

    def run_state(self, api: httpx.Client) -> str:
        return str(api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(self.run_id, safe='')}").json()["state"])

    def stop(self) -> None:
        """Throw-away processes: a few seconds to stop, then killed (a graceful api-server takes 15)."""
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in self.processes:
            try:
                process.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(5)
