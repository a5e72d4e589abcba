"""Starting, crashing and reaping the processes of a test deployment, without leaking any.

Every process gets its own session (so its process group is its own) and an environment marker
naming the deployment. Stopping walks the process tree (Airflow's supervisors put task and trigger
runners in process groups of their own, so a group signal alone would miss them), sends SIGTERM,
then SIGKILL to whatever is left. A last sweep finds strays (re-parented orphans) by the marker or
by their working directory inside the deployment's root, also from ``atexit``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

#: Environment variable set in every process of a deployment; its value identifies the deployment.
MARKER_ENV = "BFL_DEPLOYMENT_RUN"


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Service:
    """One long-running process of the deployment, its output going to ``log_path``."""

    name: str
    argv: Sequence[str]
    log_path: Path
    cwd: Path
    process: subprocess.Popen[bytes]
    starts: int = 1
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class ProcessRegistry:
    """Every process a deployment started; :meth:`stop_all` leaves none behind."""

    run_id: str
    env: Mapping[str, str]
    root: Path
    services: dict[str, Service] = field(default_factory=dict)
    _log_handles: list[IO[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        atexit.register(self.stop_all)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> Service:
        """
        Start ``argv`` in a new session; stdout and stderr are appended to ``log_path``.

        ``env`` is added to the deployment's environment (per-process settings such as an
        AIRFLOW_HOME of its own); ``user`` runs the process as that user (servers that refuse root).
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = log_path.open("ab")
        self._log_handles.append(handle)
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env={**self.env, **(env or {}), MARKER_ENV: self.run_id},
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
        )
        previous = self.services.get(name)
        starts = previous.starts + 1 if previous else 1
        service = Service(name, argv, log_path, cwd, process, starts=starts, env=dict(env or {}), user=user)
        self.services[name] = service
        return service

    def restart(self, name: str) -> Service:
        old = self.services[name]
        return self.start(name, old.argv, old.log_path, old.cwd, env=old.env, user=old.user)

    def crash(self, name: str) -> list[int]:
        """SIGKILL a service and everything below it at once, as a machine failure would."""
        service = self.services[name]
        victims = tree(service.pid)
        _signal_all(victims, signal.SIGKILL)
        _wait_gone(victims, timeout=10.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.process.wait(timeout=5.0)
        return [process.pid for process in victims]

    def kill_pid(self, pid: int) -> None:
        """SIGKILL one process (and what it spawned) that belongs to this deployment."""
        victims = tree(pid)
        strangers = [victim.pid for victim in victims if not self.owns(victim)]
        if not victims or strangers:
            raise RuntimeError(f"process {pid} (or its children {strangers}) is not part of this deployment")
        _signal_all(victims, signal.SIGKILL)
        _wait_gone(victims, timeout=10.0)

    def stop(self, name: str, grace: float = 10.0) -> None:
        service = self.services.get(name)
        if service is not None:
            _terminate(tree(service.pid), grace)
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=1.0)

    def stop_all(self, grace: float = 10.0) -> None:
        """Stop every service at once (one grace period for all, not one each), then sweep strays
        (see :meth:`owns`)."""
        _terminate([victim for service in self.services.values() for victim in tree(service.pid)], grace)
        for service in self.services.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=1.0)
        _terminate(self.strays(), grace=2.0)
        for handle in self._log_handles:
            handle.close()
        self._log_handles.clear()
        atexit.unregister(self.stop_all)

    def owns(self, process: psutil.Process) -> bool:
        """
        Whether ``process`` was started by this deployment (directly or by one of its processes).

        The environment marker is the first test; Airflow's workers and supervisors overwrite their
        environment block with ``setproctitle``, so their working directory (inside the
        deployment's root, inherited from the process that started them) is the second.
        """
        try:
            if process.pid == os.getpid():
                return False
            if process.environ().get(MARKER_ENV) == self.run_id:
                return True
            return Path(process.cwd()).is_relative_to(self.root)
        except psutil.Error:
            return False

    def strays(self) -> list[psutil.Process]:
        """Live processes of this deployment, wherever they were re-parented to."""
        return [process for process in psutil.process_iter() if self.owns(process)]


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    try:
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    return [root, *children]


def _signal_all(processes: Iterable[psutil.Process], sig: signal.Signals) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(sig)


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return list(alive)


def _terminate(processes: list[psutil.Process], grace: float) -> None:
    """SIGTERM, wait up to ``grace`` seconds, SIGKILL the rest (and anything they spawned meanwhile)."""
    if not processes:
        return
    _signal_all(processes, signal.SIGTERM)
    alive = _wait_gone(processes, timeout=grace)
    deadline = time.monotonic() + 5.0
    while alive and time.monotonic() < deadline:
        more = [child for process in alive for child in _children(process)]
        _signal_all([*alive, *more], signal.SIGKILL)
        alive = _wait_gone([*alive, *more], timeout=1.0)


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return list(process.children(recursive=True))
    except psutil.Error:
        return []
