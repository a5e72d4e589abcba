"""Fixtures of the deployment tests: one real Airflow deployment per session, one Scenario per test."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Generator, Iterator
from types import FrameType

import pytest

from tests.deployment import dags
from tests.deployment.deployment import Deployment
from tests.deployment.scenario import Evidence, Scenario, write_figures

#: Repeat every scenario this many times in one session (``make reliability`` sets it).
RUNS_ENV = "BFL_DEPLOYMENT_RUNS"
#: A distinctive API key, so the secrets scan cannot confuse it with anything else.
API_KEY = f"bfl-deploy-key-{secrets.token_hex(12)}-never-log-me"

_REPORT = pytest.StashKey[pytest.TestReport]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(name): the reliability scenario a deployment test measures")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "repetition" in metafunc.fixturenames:
        runs = max(1, int(os.environ.get(RUNS_ENV, "1")))
        metafunc.parametrize("repetition", range(1, runs + 1), ids=[f"run{n}" for n in range(1, runs + 1)])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" or (report.when == "setup" and report.failed):
        item.stash[_REPORT] = report
    return report


@pytest.fixture(scope="package")
def evidence() -> Evidence:
    return Evidence()


@pytest.fixture(scope="package")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """
    Emulator, api-server, scheduler (LocalExecutor), dag-processor and triggerer, started once for
    the package's tests and stopped when they are done (not at the end of the whole session).

    A SIGTERM to pytest ends the session like Ctrl-C, which runs this fixture's finalizer, so the
    deployment is stopped then too; ``atexit`` is the last backstop.
    """
    root = tmp_path_factory.mktemp("bfl-deployment")
    running = Deployment(root, API_KEY, dags.dag_files())
    previous = signal.getsignal(signal.SIGTERM)

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # pytest stops the session and runs finalizers

    signal.signal(signal.SIGTERM, terminated)
    try:
        running.start()
        running.wait_for_dags(dags.ALL_DAG_IDS)
        yield running
    finally:
        running.stop()
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@pytest.fixture
def scenario(
    request: pytest.FixtureRequest, deployment: Deployment, evidence: Evidence
) -> Iterator[Scenario]:
    """The test's scenario; its figures are written for ``make reliability`` once the test ends."""
    marker = request.node.get_closest_marker("scenario")
    name = marker.args[0] if marker else request.node.originalname
    deployment.emulator.clear_faults()
    current = Scenario(name, deployment, evidence)
    yield current
    deployment.emulator.clear_faults()
    figures = current.finish()
    report = request.node.stash.get(_REPORT, None)
    figures.passed = report is not None and report.passed
    write_figures(figures)
