"""
pytest plugin that ``make matrix`` loads: backports Airflow 3.3's ``dag.test()`` fixes to 3.1 and 3.2.

Two of them: the task's error in ``on_failure_callback``'s context (below), and the answer to a
human-in-the-loop review given from outside (:mod:`tests.browser.hitl_backport`).

Before 3.3 the in-process supervisor behind ``dag.test()`` calls the task runner's ``finalize()``
without putting the task's error into the context, so ``on_failure_callback`` sees
``context["exception"] is None`` there, while a deployed task runner (``task_runner.main``) does set it
on every version. The suites read the provider's errors through that callback; this does what the
task runner does, and nothing on 3.3+.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    from airflow import __version__
    from airflow.sdk.execution_time import task_runner

    from tests.browser import hitl_backport

    major, minor = (int(part) for part in __version__.split(".")[:2])
    if (major, minor) >= (3, 3) or getattr(task_runner.finalize, "matrix_backport", False):
        return
    hitl_backport.install()  # dag.test() answers a review given from outside only from 3.3
    original = task_runner.finalize

    @functools.wraps(original)
    def finalize(ti: Any, state: Any, context: Any, log: Any, error: BaseException | None = None) -> Any:
        context["exception"] = error
        return original(ti, state, context, log, error)

    finalize.matrix_backport = True  # type: ignore[attr-defined]
    # The supervisor imports finalize from the module when it runs a task, so this is what it calls.
    task_runner.finalize = finalize  # type: ignore[assignment]
