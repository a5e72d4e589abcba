"""
Fixtures of the deployment tests: one real Airflow deployment per topology, one Scenario per test.

Every test that uses the deployment runs on each topology of ``BFL_DEPLOYMENT_TOPOLOGIES`` (default:
both, see :data:`tests.deployment.deployment.TOPOLOGIES`). Only the tests marked ``smoke`` run unless
``BFL_DEPLOYMENT_FULL=1`` (``make reliability``), which keeps ``make test`` within its budget;
tests marked ``topology("celery")`` need what only that topology has.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Generator, Iterator
from types import FrameType

import pytest

from tests.deployment import dags
from tests.deployment.deployment import TOPOLOGIES, Deployment
from tests.deployment.scenario import Evidence, Scenario, write_figures

#: Repeat every scenario this many times in one session (``make reliability`` sets it).
RUNS_ENV = "BFL_DEPLOYMENT_RUNS"
#: Comma-separated topologies to run on (default: all).
TOPOLOGIES_ENV = "BFL_DEPLOYMENT_TOPOLOGIES"
#: "1": every scenario on every topology; otherwise each topology runs its smoke set only.
FULL_ENV = "BFL_DEPLOYMENT_FULL"
#: A distinctive API key, so the secrets scan cannot confuse it with anything else.
API_KEY = f"bfl-deploy-key-{secrets.token_hex(12)}-never-log-me"

_REPORT = pytest.StashKey[pytest.TestReport]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(name): the reliability scenario a deployment test measures")
    config.addinivalue_line("markers", "smoke: runs in `make test` (the rest only in `make reliability`)")
    config.addinivalue_line("markers", "topology(name): runs on that topology only")
    config.addinivalue_line("markers", "repeat(runs): runs at most this many times (heavy scenarios)")


def selected_topologies() -> list[str]:
    names = [name.strip() for name in os.environ.get(TOPOLOGIES_ENV, ",".join(TOPOLOGIES)).split(",")]
    unknown = [name for name in names if name not in TOPOLOGIES]
    if unknown:
        raise pytest.UsageError(f"{TOPOLOGIES_ENV}: unknown topologies {unknown}; known: {list(TOPOLOGIES)}")
    return [name for name in names if name]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "deployment" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("topology")
        names = [name for name in selected_topologies() if only is None or name in only.args]
        metafunc.parametrize("deployment", names, indirect=True, scope="package")
    if "repetition" in metafunc.fixturenames:
        runs = max(1, int(os.environ.get(RUNS_ENV, "1")))
        cap = metafunc.definition.get_closest_marker("repeat")
        if cap is not None:
            runs = min(runs, int(cap.args[0]))
        metafunc.parametrize("repetition", range(1, runs + 1), ids=[f"run{n}" for n in range(1, runs + 1)])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Outside ``make reliability``, every topology runs its smoke set only."""
    if os.environ.get(FULL_ENV) == "1":
        return
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_a_deployment = callspec is not None and "deployment" in callspec.params
        smoke = item.get_closest_marker("smoke") is not None
        (dropped if on_a_deployment and not smoke else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" or (report.when == "setup" and report.failed):
        item.stash[_REPORT] = report
    return report


@pytest.fixture(scope="package")
def evidence(deployment: Deployment) -> Evidence:
    """What this deployment's scenarios left behind for the secrets scan."""
    return deployment.evidence


@pytest.fixture(scope="package")
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """
    One topology's deployment (see :mod:`tests.deployment.deployment`), started once for the
    package's tests on it and stopped when they are done (not at the end of the whole session).

    A SIGTERM to pytest ends the session like Ctrl-C, which runs this fixture's finalizer, so the
    deployment is stopped then too; ``atexit`` is the last backstop.
    """
    topology = TOPOLOGIES[request.param]
    root = tmp_path_factory.mktemp(f"bfl-deployment-{topology.name}")
    running = Deployment(root, API_KEY, dags.dag_files(production=topology.celery), topology)
    previous = signal.getsignal(signal.SIGTERM)

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # pytest stops the session and runs finalizers

    signal.signal(signal.SIGTERM, terminated)
    try:
        running.start()
        running.wait_for_dags(dags.ALL_DAG_IDS + (dags.PRODUCTION_DAG_IDS if topology.celery else []))
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
