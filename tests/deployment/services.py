"""The servers of the production-shaped topology, each a throw-away process on loopback.

- PostgreSQL: a fresh cluster (``initdb``) in a temporary directory outside the pytest tree, run by an
  unprivileged user (PostgreSQL refuses to run as root), listening on 127.0.0.1 only, no Unix socket;
- Redis (the Celery broker): no persistence, 127.0.0.1 only;
- an S3-compatible server (moto's ``ThreadedMotoServer``, in a process of its own): the remote log
  store and the landing destination, since the workers share no disk.

The binaries come from Debian's packages (``make deployment-services`` installs them when missing).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.deployment.airflow_api import wait_for
from tests.deployment.processes import ProcessRegistry, Service, free_port

#: Who runs PostgreSQL (the Debian package creates this user).
POSTGRES_USER = "postgres"
DATABASE = "airflow"


def _postgres_bin(name: str) -> str:
    """``initdb``/``postgres``/``pg_ctl`` of the newest installed major version (Debian keeps them off PATH)."""
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_major, reverse=True)
    found = candidates[0] if candidates else shutil.which(name)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: run `make deployment-services`")
    return found


def _major(path: str) -> int:
    try:
        return int(Path(path).parts[-3])
    except ValueError:
        return 0


def missing_binaries() -> list[str]:
    """What the production-shaped topology needs and this machine lacks."""
    missing = []
    for name in ("initdb", "postgres"):
        try:
            _postgres_bin(name)
        except RuntimeError:
            missing.append(f"postgresql ({name})")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
        return True
    return False


def _listening(service: Service, port: int) -> bool:
    """Whether ``service`` accepts connections yet; fails at once (with its output) if it died."""
    if not service.alive():
        raise RuntimeError(f"{service.name} exited {service.process.returncode}:\n{service.output()[-3000:]}")
    return _port_open(port)


@dataclass
class PostgresServer:
    """A throw-away PostgreSQL cluster; :meth:`restart` is the mid-run outage of the scenario."""

    registry: ProcessRegistry
    log_path: Path
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        # pytest's temporary tree is private to root (0700): the cluster lives in a directory of its own.
        self.base = Path(tempfile.mkdtemp(prefix="bfl-postgres-"))
        self.data = self.base / "data"
        self.account = pwd.getpwnam(POSTGRES_USER) if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{DATABASE}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> None:
        if self.account is not None:
            os.chown(self.base, self.account.pw_uid, self.account.pw_gid)
        self._run(_postgres_bin("initdb"), "-D", str(self.data), "-U", DATABASE, "--auth=trust", "-E", "UTF8")
        self._serve()
        wait_for("the airflow database", self._create_database, 60.0, interval=1.0)

    def restart(self) -> Service:
        """Stop the cluster (fast shutdown: every session is cut) and start it again."""
        self.registry.stop("postgres", grace=30.0)
        return self._serve()

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def _serve(self) -> Service:
        argv = [
            _postgres_bin("postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=300",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
        ]
        service = self.registry.start("postgres", argv, self.log_path, self.base, user=self._user())
        wait_for("PostgreSQL to listen", lambda: _listening(service, self.port), 60.0)
        return service

    def _create_database(self) -> bool:
        created = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                DATABASE,
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                f"CREATE DATABASE {DATABASE}",
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
        )
        return created.returncode == 0 or "already exists" in created.stderr

    def _user(self) -> str | None:
        return self.account.pw_name if self.account is not None else None

    def _run(self, *argv: str) -> None:
        with self.log_path.open("ab") as out:
            subprocess.run(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=120,
                user=self._user(),
                cwd=self.base,
            )


def start_redis(registry: ProcessRegistry, log_path: Path, cwd: Path, port: int) -> None:
    """Redis on loopback, without persistence."""
    redis = shutil.which("redis-server")
    if redis is None:
        raise RuntimeError("redis-server is not installed: run `make deployment-services`")
    argv = [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(cwd)]
    service = registry.start("redis", argv, log_path, cwd)
    wait_for("Redis to listen", lambda: _listening(service, port), 30.0)


def start_s3(registry: ProcessRegistry, log_path: Path, cwd: Path, port: int) -> None:
    """moto's S3-compatible server in its own process."""
    argv = [sys.executable, str(Path(__file__).with_name("s3_server.py")), "--port", str(port)]
    service = registry.start("s3", argv, log_path, cwd)
    wait_for("the S3 server to listen", lambda: _listening(service, port), 60.0)
