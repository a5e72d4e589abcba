"""A real Airflow 3 deployment on loopback, started from the installed package, for the deployment tests.

Processes (each its own session, output in ``<root>/process-logs/<name>.log``):

- the Runware emulator (``python -m airflow_provider_bfl.testing.emulator``), outside AIRFLOW_HOME
  because it plays the remote API (its own stdout prints the key it accepts);
- ``airflow api-server`` (REST API v2 and the execution API the workers and triggerer talk to);
- ``airflow scheduler`` with the LocalExecutor (task workers are its children);
- ``airflow dag-processor``;
- ``airflow triggerer``.

The metadata DB is SQLite in a temporary AIRFLOW_HOME. Auth is the simple auth manager with
``simple_auth_manager_all_admins`` (every request is an admin: the test calls the REST API without
logging in). Log servers are not started (``--skip-serve-logs``): they bind every interface, and the
API server reads the local log files anyway. Intervals are shortened so a DAG is parsed, scheduled
and resumed within seconds, and a dead triggerer's triggers are adopted within seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from cryptography.fernet import Fernet

from tests.deployment.airflow_api import AirflowApi, EmulatorControl, wait_for
from tests.deployment.processes import ProcessRegistry, Service, free_port

VENV_BIN = Path(sys.executable).parent
AIRFLOW = str(VENV_BIN / "airflow")

#: Connection extras of ``bfl_default``: fast polling, a generous retry budget for fault storms, and a
#: request timeout short enough that a stalled answer is retried within a scenario.
DEFAULT_EXTRAS: dict[str, Any] = {
    "poll_interval": 0.25,
    "poll_max_interval": 1.0,
    "max_retries": 10,
    "retry_backoff_base": 0.1,
    "retry_backoff_max": 0.5,
    "retry_max_elapsed": 60,
    "timeout": 3,
    "max_poll_failures": 5,
}
#: ``bfl_tight``: the same API with a small retry budget, for the budget-exhaustion scenario.
TIGHT_EXTRAS: dict[str, Any] = {**DEFAULT_EXTRAS, "max_retries": 2, "retry_max_elapsed": 10}


@dataclass
class Deployment:
    """Owns the temporary directories, the processes and the two HTTP clients of one deployment."""

    root: Path
    api_key: str
    dag_files: Mapping[str, str]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    startup_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.home = self.root / "airflow-home"
        self.dags_folder = self.home / "dags"
        self.process_logs = self.home / "process-logs"
        self.api_port = free_port()
        self.emulator_port = free_port()
        self.fernet_key = Fernet.generate_key().decode()
        self.registry = ProcessRegistry(self.run_id, self._environment(), self.root.resolve())
        self.api = AirflowApi(f"http://127.0.0.1:{self.api_port}")
        self.emulator = EmulatorControl(self.emulator_origin)

    # -- configuration --------------------------------------------------------------------------
    @property
    def emulator_origin(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"

    def connection(self, extras: Mapping[str, Any]) -> str:
        return json.dumps(
            {
                "conn_type": "bfl",
                "password": self.api_key,
                "host": f"{self.emulator_origin}/v1",
                "extra": dict(extras),
            }
        )

    def _environment(self) -> dict[str, str]:
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW", "PYTEST", "_AIRFLOW")) and key not in ("PYTHONPATH",)
        }
        api = f"http://127.0.0.1:{self.api_port}"
        return {
            **inherited,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "6",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "2",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "6",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "False",
            "AIRFLOW_CONN_BFL_DEFAULT": self.connection(DEFAULT_EXTRAS),
            "AIRFLOW_CONN_BFL_TIGHT": self.connection(TIGHT_EXTRAS),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        started = time.monotonic()
        self.dags_folder.mkdir(parents=True)
        for name, source in self.dag_files.items():
            (self.dags_folder / name).write_text(source)
        self._migrate()
        self._start_emulator()
        self._airflow("api-server", "--host", "127.0.0.1", "--port", str(self.api_port))
        self._airflow("dag-processor")
        self._airflow("scheduler", "--skip-serve-logs")
        self._airflow("triggerer", "--skip-serve-logs")
        remaining = max(10.0, timeout - (time.monotonic() - started))
        wait_for("the API server to answer", self._api_ready, remaining, context=self.tail_logs)
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        try:
            self.registry.stop_all()
        finally:
            self.api.close()
            self.emulator.close()

    def _migrate(self) -> None:
        log = self.process_logs / "db-migrate.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            subprocess.run(
                [AIRFLOW, "db", "migrate"],
                env={**self.registry.env},
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=120,
            )

    def _start_emulator(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "airflow_provider_bfl.testing.emulator",
            "--port",
            str(self.emulator_port),
            "--api-key",
            self.api_key,
            "--latency",
            "1",
        ]
        self.registry.start("emulator", argv, self.root / "emulator.log", self.root)
        wait_for("the emulator to answer", self.emulator.healthy, 30.0, context=self.tail_logs)

    def _airflow(self, command: str, *args: str) -> Service:
        return self.registry.start(
            command, [AIRFLOW, command, *args], self.process_logs / f"{command}.log", self.home
        )

    def _api_ready(self) -> bool:
        self._check_alive()
        return self.api.healthy()

    def _check_alive(self) -> None:
        dead = [s.name for s in self.registry.services.values() if not s.alive()]
        if dead:
            raise RuntimeError(f"deployment process(es) exited: {dead}\n{self.tail_logs()}")

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 90.0) -> None:
        def parsed() -> bool:
            self._check_alive()
            return all(self.api.dag(dag_id) is not None for dag_id in dag_ids)

        def context() -> str:
            try:
                errors = self.api.import_errors()
            except Exception as exc:
                errors = [{"error": str(exc)}]
            return f"import errors: {errors}\n{self.tail_logs()}"

        wait_for(f"DAGs {dag_ids} to be parsed", parsed, timeout, interval=0.5, context=context)

    # -- faults in the deployment ---------------------------------------------------------------
    def crash_triggerer(self) -> list[int]:
        """SIGKILL the triggerer and its trigger runner, as a lost machine would."""
        return self.registry.crash("triggerer")

    def restart_triggerer(self) -> Service:
        return self.registry.restart("triggerer")

    def kill_pid(self, pid: int) -> None:
        self.registry.kill_pid(pid)

    def parent_of(self, pid: int) -> int:
        """The process that started ``pid`` (for a task: the LocalExecutor worker supervising it)."""
        parent = psutil.Process(pid).ppid()
        if not self.registry.owns(psutil.Process(parent)):
            raise RuntimeError(f"the parent {parent} of {pid} is not part of this deployment")
        return parent

    # -- the metadata DB, read-only ---------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30.0)

    def trigger_rows(self) -> list[dict[str, Any]]:
        """Rows of the ``trigger`` table, kwargs decrypted with the deployment's Fernet key."""
        fernet = Fernet(self.fernet_key.encode())
        with contextlib.closing(self._db()) as db:
            rows = db.execute("SELECT id, classpath, kwargs, triggerer_id FROM trigger").fetchall()
        decoded = []
        for trigger_id, classpath, kwargs, triggerer_id in rows:
            text = kwargs if kwargs.startswith("{") else fernet.decrypt(kwargs.encode()).decode()
            decoded.append(
                {"id": trigger_id, "classpath": classpath, "kwargs": text, "triggerer_id": triggerer_id}
            )
        return decoded

    def db_tables(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table of the metadata DB."""
        with contextlib.closing(self._db()) as db:
            names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {name: db.execute(f'SELECT * FROM "{name}"').fetchall() for name in names}

    # -- diagnostics ----------------------------------------------------------------------------
    def tail_logs(self, lines: int = 25) -> str:
        parts = []
        for service in self.registry.services.values():
            tail = service.output().splitlines()[-lines:]
            state = "alive" if service.alive() else f"exited {service.process.returncode}"
            text = "\n".join(tail).replace(self.api_key, "***")
            parts.append(f"--- {service.name} ({state}) ---\n{text}")
        return "\n".join(parts)
