"""A real Airflow 3 deployment on loopback, started from the installed package, for the deployment tests.

Two topologies (:data:`TOPOLOGIES`), every process its own session, output in
``<root>/process-logs/<name>.log``:

``local``: LocalExecutor and SQLite, one AIRFLOW_HOME shared by every process:

- the Runware emulator (``python -m airflow_provider_bfl.testing.emulator``), outside AIRFLOW_HOME
  because it plays the remote API (its own stdout prints the key it accepts);
- ``airflow api-server`` (REST API v2 and the execution API the workers and triggerer talk to);
- ``airflow scheduler`` with the LocalExecutor (task workers are its children);
- ``airflow dag-processor``;
- ``airflow triggerer``.

``celery``: production-shaped. PostgreSQL, Redis (the Celery broker) and an S3-compatible server
(:mod:`tests.deployment.services`), the emulator, api-server, scheduler with the CeleryExecutor,
dag-processor, two ``airflow celery worker`` and two triggerers. Workers and triggerers each have an
AIRFLOW_HOME of their own (their own copy of the DAG files, their own log folder): nothing relies on
a shared disk. Task and trigger logs go to the S3 server (remote logging), which is where the
api-server reads finished logs from, and where the landing scenarios write images.

Auth is the simple auth manager with ``simple_auth_manager_all_admins`` (every request is an admin:
the test calls the REST API without logging in). Log servers are not started (``--skip-serve-logs``):
they bind every interface, and the API server reads the local log files (``local``) or the remote
store (``celery``) anyway. Intervals are shortened so a DAG is parsed, scheduled and resumed within
seconds, and a dead triggerer's triggers are adopted within seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy
from cryptography.fernet import Fernet

from tests.deployment import dags, services
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
#: ``bfl_calm``: the polling a large deployment would use (hundreds of triggers at once).
CALM_EXTRAS: dict[str, Any] = {
    **DEFAULT_EXTRAS,
    "poll_interval": 2.0,
    "poll_max_interval": 5.0,
    "timeout": 10,
}
#: Seconds without a task heartbeat before the scheduler fails the task (what detects a dead worker).
#: A supervisor heartbeats every 5 s, but on a loaded 2-core machine a heartbeat can wait that long
#: for the CPU and then queue behind other calls in the one API server process: at 20 s the
#: scheduler failed live tasks (measured at load 20-25), so the scenarios that kill a worker wait this long.
TASK_HEARTBEAT_TIMEOUT = 90
#: Buckets on the S3 server of the ``celery`` topology: remote task/trigger logs, landed images.
LOG_BUCKET = "bfl-airflow-logs"
LANDING_BUCKET = dags.LANDING_BUCKET
#: Credentials moto accepts (any); set so no AWS SDK goes looking for real ones.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}

#: The Celery settings module of the ``celery`` topology (see :meth:`Deployment._python_path`).
CELERY_CONFIG_MODULE = "bfl_deploy_celery"
#: ``sitecustomize`` of the deployment's PYTHONPATH. With ``BFL_LOOP_PROBES`` set (the triggerers) it
#: records, per process, each full garbage collection (wall-clock start, seconds: ``<pid>.log``), each
#: event-loop callback that ran over 150 ms with the stack it was at by then (``<pid>.slow``), and
#: every 50 ms how long the loop's thread had waited for a CPU so far (the kernel's run-queue time:
#: ``<pid>.cpu``), so a blocked triggerer loop can be told apart from the interpreter collecting
#: Airflow's heap and from a machine with no core to spare, and traced to the code that held it.
#: Costs two clock reads a callback and a thread waking every 50 ms.
LOOP_PROBES = """\
import asyncio.events
import gc
import os
import sys
import threading
import time
import traceback

_folder = os.environ.get("BFL_LOOP_PROBES")
_gc_started = [0.0, 0.0]
#: The thread and perf_counter() start of the callback running now (0.0: none).
_callback = [0, 0.0]
#: The kernel's id of each thread that ran a callback (a forked child's threads have new ones).
_native_ids = {}
SLOW = 0.15


def _write(suffix, text):
    with open(os.path.join(_folder, f"{os.getpid()}.{suffix}"), "a") as out:
        out.write(text)


def _collection(phase, info):
    if info["generation"] != 2:
        return
    if phase == "start":
        _gc_started[:] = [time.time(), time.perf_counter()]
        return
    _write("log", f"{_gc_started[0]:.6f} {time.perf_counter() - _gc_started[1]:.6f}\\n")


_run = asyncio.events.Handle._run


def _timed_run(self):
    thread = threading.get_ident()
    if thread not in _native_ids:
        _native_ids[thread] = threading.get_native_id()
    _callback[:] = [thread, time.perf_counter()]
    try:
        _run(self)
    finally:
        took = time.perf_counter() - _callback[1]
        _callback[1] = 0.0
        if took > SLOW:
            owner = getattr(self._callback, "__self__", self._callback)
            _write("slow", f"== {time.time():.6f} {took:.3f} s {owner!r}"[:3000] + "\\n")


def _run_queue_seconds(thread):
    # Seconds the thread has spent runnable but waiting for a CPU (None: not known).
    native = _native_ids.get(thread)
    if native is None:
        return None
    try:
        with open(f"/proc/self/task/{native}/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def _watch():
    dumped = 0.0
    while True:
        time.sleep(0.05)
        thread, started = _callback
        if started and started != dumped and time.perf_counter() - started > SLOW:
            frame = sys._current_frames().get(thread)
            if frame is not None:
                dumped = started
                _write("slow", "".join(traceback.format_stack(frame)[-25:]))
        waited = _run_queue_seconds(thread) if thread else None
        if waited is not None:
            _write("cpu", f"{time.time():.6f} {waited:.6f}\\n")


def _start_watch():
    threading.Thread(target=_watch, name="bfl-loop-probe", daemon=True).start()


def _after_fork():
    _native_ids.clear()
    _start_watch()


if _folder:
    gc.callbacks.append(_collection)
    asyncio.events.Handle._run = _timed_run
    _start_watch()
    os.register_at_fork(after_in_child=_after_fork)
"""
CELERY_CONFIG_SOURCE = """\
import importlib

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

CELERY_CONFIG = DEFAULT_CELERY_CONFIG
PRELOADED = (
    "airflow.sdk.execution_time.task_runner",
    "airflow.providers.amazon.aws.log.s3_task_handler",
    "airflow_provider_bfl.hooks.bfl",
    "airflow_provider_bfl.operators.bfl",
    "airflow_provider_bfl.operators._namespace",
    "airflow_provider_bfl.sensors.bfl",
    "airflow_provider_bfl.triggers.bfl",
    "airflow_provider_bfl.models.registry",
)


@worker_init.connect
def preload(**_):
    for name in PRELOADED:
        importlib.import_module(name)
"""


def _number_pairs(text: str) -> list[tuple[float, float]]:
    """The ``<number> <number>`` lines of a probe file (a line cut short by a crash is skipped)."""
    pairs = []
    for line in text.splitlines():
        first, _, second = line.partition(" ")
        with contextlib.suppress(ValueError):
            pairs.append((float(first), float(second)))
    return pairs


@dataclass
class Evidence:
    """What the session produced that the secrets scan must search besides files: runs and trigger rows."""

    runs: list[tuple[str, str]] = field(default_factory=list)
    db_trigger_rows: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Topology:
    """What a deployment is made of."""

    name: str
    description: str
    celery_workers: int = 0
    triggerers: int = 1

    @property
    def celery(self) -> bool:
        return self.celery_workers > 0


TOPOLOGIES = {
    "local": Topology(
        "local",
        "LocalExecutor, SQLite, one triggerer, one AIRFLOW_HOME shared by every process",
    ),
    "celery": Topology(
        "celery",
        "CeleryExecutor with 2 workers (each its own AIRFLOW_HOME), PostgreSQL, Redis, 2 triggerers, "
        "logs and landed images on an S3-compatible server",
        celery_workers=2,
        triggerers=2,
    ),
}


@dataclass
class Deployment:
    """Owns the temporary directories, the processes and the two HTTP clients of one deployment."""

    root: Path
    api_key: str
    dag_files: Mapping[str, str]
    topology: Topology = TOPOLOGIES["local"]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    startup_seconds: float = 0.0
    #: What the scenarios on this deployment left behind for the secrets scan.
    evidence: Evidence = field(default_factory=Evidence)

    def __post_init__(self) -> None:
        self.home = self.root / "airflow-home"
        self.dags_folder = self.home / "dags"
        self.process_logs = self.home / "process-logs"
        self.api_port = free_port()
        self.emulator_port = free_port()
        self.fernet_key = Fernet.generate_key().decode()
        self.postgres: services.PostgresServer | None = None
        self.redis_port = 0
        self.s3_port = 0
        self.registry = ProcessRegistry(self.run_id, {}, self.root.resolve())
        if self.topology.celery:
            self.postgres = services.PostgresServer(self.registry, self.root / "postgres.log")
            self.redis_port = free_port()
            self.s3_port = free_port()
        self.registry.env = self._environment()
        self.api = AirflowApi(f"http://127.0.0.1:{self.api_port}")
        self.emulator = EmulatorControl(self.emulator_origin)

    @property
    def triggerers(self) -> list[str]:
        """Service names of the triggerers."""
        if self.topology.triggerers == 1:
            return ["triggerer"]
        return [f"triggerer-{n}" for n in range(1, self.topology.triggerers + 1)]

    @property
    def workers(self) -> list[str]:
        """Service names of the Celery workers (none with the LocalExecutor)."""
        return [f"worker-{n}" for n in range(1, self.topology.celery_workers + 1)]

    def homes(self) -> list[Path]:
        """Every AIRFLOW_HOME of the deployment (one, or one per worker and triggerer as well)."""
        own = (
            [self._own_home(name) for name in self.workers + self.triggerers] if self.topology.celery else []
        )
        return [self.home, *own]

    def _own_home(self, service: str) -> Path:
        return self.root / service / "airflow-home"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def sql_alchemy_conn(self) -> str:
        if self.postgres is not None:
            return self.postgres.url
        return f"sqlite:///{self.home / 'airflow.db'}"

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
            "AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": "128",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_conn,
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
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "6",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "False",
            "AIRFLOW_CONN_BFL_DEFAULT": self.connection(DEFAULT_EXTRAS),
            "AIRFLOW_CONN_BFL_TIGHT": self.connection(TIGHT_EXTRAS),
            "AIRFLOW_CONN_BFL_CALM": self.connection(CALM_EXTRAS),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            **(self._celery_environment() if self.topology.celery else {}),
        }

    def _celery_environment(self) -> dict[str, str]:
        """CeleryExecutor on Redis, results in PostgreSQL, task and trigger logs on the S3 server."""
        assert self.postgres is not None
        s3_connection = {
            "conn_type": "aws",
            "login": AWS_ENV["AWS_ACCESS_KEY_ID"],
            "password": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            "extra": {
                "endpoint_url": self.s3_endpoint,
                "region_name": AWS_ENV["AWS_DEFAULT_REGION"],
                "config_kwargs": {"s3": {"addressing_style": "path"}},
            },
        }
        return {
            **AWS_ENV,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            # Two workers of 8 slots: starting a task costs ~2 CPU-seconds across the deployment
            # (worker, API server, scheduler, PostgreSQL), so hundreds of deferrals are CPU-bound;
            # 16 slots keep the CPU busy while some tasks wait on the API server.
            "AIRFLOW__CORE__PARALLELISM": "16",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.postgres.url.replace('+psycopg2', '')}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "8",
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": f"{CELERY_CONFIG_MODULE}.CELERY_CONFIG",
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            "AIRFLOW__CELERY__OPERATION_TIMEOUT": "10",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_PRE_PING": "True",
            # Row locks (SELECT ... FOR UPDATE) make PostgreSQL wait where SQLite does not: on a
            # loaded machine a task's first call can take longer than the 5 s default, and its
            # retry then queues behind the first one's lock.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
            "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{LOG_BUCKET}/logs",
            "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "bfl_s3",
            "AIRFLOW__LOGGING__ENCRYPT_S3_LOGS": "False",
            "AIRFLOW_CONN_BFL_S3": json.dumps(s3_connection),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "bfl_deploy_hostname.service_name",
            "PYTHONPATH": str(self._python_path()),
        }

    def _python_path(self) -> Path:
        """
        The deployment's own modules, on every process's PYTHONPATH:

        - ``bfl_deploy_hostname``, whose ``service_name`` Airflow uses as the hostname (``[core]
          hostname_callable``): every process of the ``celery`` topology runs on one machine, so the
          service name is what tells a task instance's worker or a triggerer job's process apart;
        - ``bfl_deploy_celery`` (``[celery] celery_config_options``): Airflow's Celery settings, and a
          ``worker_init`` hook that imports what every task imports (the provider, the task runner, the
          S3 log handler) once in the worker before it forks its pool, as a production worker image
          would preload: each task process then inherits them instead of importing them again
          (imports were a quarter of a task process's profile samples).
        """
        folder = self.root / "python-path"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "bfl_deploy_hostname.py").write_text(
            "import os, socket\n\n\ndef service_name():\n"
            "    return os.environ.get('BFL_SERVICE_NAME') or socket.getfqdn()\n"
        )
        (folder / f"{CELERY_CONFIG_MODULE}.py").write_text(CELERY_CONFIG_SOURCE)
        (folder / "sitecustomize.py").write_text(LOOP_PROBES)
        return folder

    def _runner_probes(self, triggerer: str, suffix: str) -> list[str]:
        """
        What the probes wrote to ``<pid>.<suffix>`` for each process below ``triggerer``'s own (its
        trigger runners, whose event loop runs the triggers), in pid order; the ``sitecustomize`` on
        the ``celery`` topology's PYTHONPATH writes them (nothing elsewhere).
        """
        supervisor = f"{self.registry.services[triggerer].pid}.{suffix}"
        files = sorted((self.root / "loop-probes" / triggerer).glob(f"*.{suffix}"))
        return [probe.read_text() for probe in files if probe.name != supervisor]

    def runner_gc_pauses(self, triggerer: str) -> list[tuple[float, float]]:
        """``(wall-clock start, seconds)`` of each full garbage collection so far in ``triggerer``'s runners."""
        return sorted(
            pause for text in self._runner_probes(triggerer, "log") for pause in _number_pairs(text)
        )

    def runner_run_queue(self, triggerer: str) -> list[list[tuple[float, float]]]:
        """
        Per runner of ``triggerer``, ``(wall clock, seconds)`` samples of how long its event loop's
        thread had waited for a CPU by then.
        """
        return [_number_pairs(text) for text in self._runner_probes(triggerer, "cpu")]

    def runner_slow_callbacks(self, triggerer: str) -> str:
        """What the probes wrote of ``triggerer``'s runners' event-loop callbacks over 150 ms (stacks included)."""
        return "".join(self._runner_probes(triggerer, "slow"))

    def _home_environment(self, service: str) -> dict[str, str]:
        """An AIRFLOW_HOME (with its own DAG files and log folder) for one worker or triggerer."""
        home = self._own_home(service)
        dags_folder = home / "dags"
        dags_folder.mkdir(parents=True, exist_ok=True)
        for name, source in self.dag_files.items():
            (dags_folder / name).write_text(source)
        return {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder)}

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> None:
        """Start every process; ``timeout`` defaults to what a loaded 2-core machine needs."""
        timeout = timeout or 600.0
        started = time.monotonic()
        self.dags_folder.mkdir(parents=True)
        for name, source in self.dag_files.items():
            (self.dags_folder / name).write_text(source)
        if self.topology.celery:
            self._start_servers()
        self._migrate()
        self._start_emulator()
        self._airflow("api-server", "--host", "127.0.0.1", "--port", str(self.api_port))
        self._airflow("dag-processor")
        self._airflow("scheduler", "--skip-serve-logs")
        for name in self.triggerers:
            self._airflow("triggerer", "--skip-serve-logs", name=name)
        for name in self.workers:
            celery_name = f"{name}@%h"
            self._airflow(
                "celery", "worker", "--celery-hostname", celery_name, "--skip-serve-logs", name=name
            )
        remaining = max(10.0, timeout - (time.monotonic() - started))
        wait_for("the API server to answer", self._api_ready, remaining, context=self.tail_logs)
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        try:
            self.registry.stop_all()
        finally:
            self.api.close()
            self.emulator.close()
            if self.postgres is not None:
                self.postgres.close()

    def _start_servers(self) -> None:
        """PostgreSQL, Redis and the S3 server (with its buckets), before anything of Airflow."""
        assert self.postgres is not None
        missing = services.missing_binaries()
        if missing:
            raise RuntimeError(f"missing {missing}: run `make deployment-services` first")
        self.postgres.start()
        services.start_redis(self.registry, self.root / "redis.log", self.root, self.redis_port)
        services.start_s3(self.registry, self.root / "s3.log", self.root, self.s3_port)
        s3 = self.s3_client()
        for bucket in (LOG_BUCKET, LANDING_BUCKET):
            s3.create_bucket(Bucket=bucket)

    def s3_client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name=AWS_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def s3_objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """``{key: size}`` of the objects in ``bucket`` under ``prefix``."""
        s3 = self.s3_client()
        found: dict[str, int] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
        return found

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
                timeout=300,  # minutes, not seconds, on a loaded 2-core machine
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

    def _airflow(self, command: str, *args: str, name: str | None = None) -> Service:
        """An Airflow command; ``name`` (a worker or triggerer of the ``celery`` topology) gets a home of its own."""
        service = name or command
        own_home = self.topology.celery and name is not None
        env = self._home_environment(service) if own_home else {}
        if self.topology.celery:
            env["BFL_SERVICE_NAME"] = service
        if command == "triggerer":
            probes = self.root / "loop-probes" / service
            probes.mkdir(parents=True, exist_ok=True)
            env["BFL_LOOP_PROBES"] = str(probes)
        cwd = self._own_home(service) if own_home else self.home
        return self.registry.start(
            service, [AIRFLOW, command, *args], self.process_logs / f"{service}.log", cwd, env=env
        )

    def _api_ready(self) -> bool:
        self._check_alive()
        return self.api.healthy()

    def _check_alive(self) -> None:
        dead = [s.name for s in self.registry.services.values() if not s.alive()]
        if dead:
            raise RuntimeError(f"deployment process(es) exited: {dead}\n{self.tail_logs()}")

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180.0) -> None:
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
    def crash(self, name: str) -> list[int]:
        """SIGKILL a service (a triggerer, a Celery worker) and everything below it, as a lost machine would."""
        return self.registry.crash(name)

    def restart(self, name: str) -> Service:
        return self.registry.restart(name)

    def job_hostname(self, job_id: int) -> str:
        """The hostname a job (a triggerer, a scheduler) registered: its service name on ``celery``."""
        [(hostname,)] = self._query(f"SELECT hostname FROM job WHERE id = {int(job_id)}")
        return str(hostname)

    def revive_exited(self) -> list[str]:
        """Restart every service that exited, as a process supervisor (systemd, Kubernetes) would."""
        dead = [name for name, service in self.registry.services.items() if not service.alive()]
        for name in dead:
            self.registry.restart(name)
        return dead

    def restart_postgres(self) -> None:
        """The metadata DB goes away (every connection cut) and comes back."""
        assert self.postgres is not None, "only the celery topology runs PostgreSQL"
        self.postgres.restart()

    def kill_pid(self, pid: int) -> None:
        self.registry.kill_pid(pid)

    def parent_of(self, pid: int) -> int:
        """The process that started ``pid`` (for a task: the LocalExecutor worker supervising it)."""
        parent = psutil.Process(pid).ppid()
        if not self.registry.owns(psutil.Process(parent)):
            raise RuntimeError(f"the parent {parent} of {pid} is not part of this deployment")
        return parent

    # -- the metadata DB, read-only ----------------------------------------------------------------
    def _engine(self) -> sqlalchemy.engine.Engine:
        if self.postgres is not None:
            return sqlalchemy.create_engine(self.postgres.url, poolclass=sqlalchemy.pool.NullPool)
        url = f"sqlite:///file:{self.home / 'airflow.db'}?mode=ro&uri=true"
        return sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        engine = self._engine()
        try:
            with engine.connect() as db:
                return [_plain(row) for row in db.execute(sqlalchemy.text(sql))]
        finally:
            engine.dispose()

    def trigger_rows(self) -> list[dict[str, Any]]:
        """Rows of the ``trigger`` table, kwargs decrypted with the deployment's Fernet key."""
        fernet = Fernet(self.fernet_key.encode())
        rows = self._query("SELECT id, classpath, kwargs, triggerer_id FROM trigger")
        decoded = []
        for trigger_id, classpath, kwargs, triggerer_id in rows:
            text = kwargs if kwargs.startswith("{") else fernet.decrypt(kwargs.encode()).decode()
            decoded.append(
                {"id": trigger_id, "classpath": classpath, "kwargs": text, "triggerer_id": triggerer_id}
            )
        return decoded

    def ti_states(self, dag_id: str, run_id: str) -> dict[str, int]:
        """``{state: task instances}`` of one run (mapped runs have more than the REST API pages)."""
        rows = self._query(
            "SELECT state, count(*) FROM task_instance "
            f"WHERE dag_id = '{dag_id}' AND run_id = '{run_id}' GROUP BY state"
        )
        return {str(state): int(count) for state, count in rows}

    def ti_tries(self, dag_id: str, run_id: str) -> dict[int, int]:
        """``{try_number: task instances}`` of one run."""
        rows = self._query(
            "SELECT try_number, count(*) FROM task_instance "
            f"WHERE dag_id = '{dag_id}' AND run_id = '{run_id}' GROUP BY try_number"
        )
        return {int(tries): int(count) for tries, count in rows}

    def trigger_assignments(self) -> dict[int, int | None]:
        """``{trigger id: triggerer job id}`` right now (no kwargs: cheap enough to sample every second)."""
        return {row[0]: row[1] for row in self._query("SELECT id, triggerer_id FROM trigger")}

    def trigger_created(self, dag_id: str, run_id: str) -> dict[int, float]:
        """``{trigger id: creation time (epoch seconds)}`` of one run's triggers that exist right now."""
        rows = self._query(
            "SELECT t.id, t.created_date FROM trigger t JOIN task_instance ti ON ti.trigger_id = t.id "
            f"WHERE ti.dag_id = '{dag_id}' AND ti.run_id = '{run_id}'"
        )
        return {int(trigger_id): _epoch(created) for trigger_id, created in rows}

    @property
    def task_slots(self) -> int:
        """Tasks the executor runs at once (Celery: every worker's pool)."""
        return int(self.registry.env["AIRFLOW__CORE__PARALLELISM"])

    def db_tables(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table of the metadata DB."""
        engine = self._engine()
        try:
            names = sqlalchemy.inspect(engine).get_table_names()
        finally:
            engine.dispose()
        return {name: self._query(f'SELECT * FROM "{name}"') for name in names}

    # -- diagnostics ----------------------------------------------------------------------------
    def tail_logs(self, lines: int = 25) -> str:
        parts = []
        for service in self.registry.services.values():
            tail = service.output().splitlines()[-lines:]
            state = "alive" if service.alive() else f"exited {service.process.returncode}"
            text = "\n".join(tail).replace(self.api_key, "***")
            parts.append(f"--- {service.name} ({state}) ---\n{text}")
        return "\n".join(parts)


def _epoch(value: Any) -> float:
    """A timestamp column (PostgreSQL: a datetime; SQLite: its ISO text) as epoch seconds."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=moment.tzinfo or timezone.utc).timestamp()


def _plain(row: Any) -> tuple[Any, ...]:
    """A result row as a tuple, binary columns (PostgreSQL's ``bytea``) as bytes, so they can be searched."""
    return tuple(bytes(value) if isinstance(value, memoryview) else value for value in row)
