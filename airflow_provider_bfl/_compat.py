"""
The few Airflow APIs that differ between 3.1 and 3.3, resolved in one place.

What 3.1 lacks and how it degrades (README, "Airflow versions"):

- ``airflow.sdk.log.amask_secret`` (3.3): the sync ``mask_secret`` is used, which does no I/O there;
- the task state store (3.3): :func:`task_state_store` is None, so a retry re-attaches through the
  derived (deterministic) taskUUIDs alone;
- exceptions the task SDK took over from core in 3.2 (:func:`sdk_exception`).
"""

from __future__ import annotations

import importlib
from typing import Any


def mask_secret(secret: str) -> None:
    from airflow.sdk.log import mask_secret as _mask

    _mask(secret)


async def amask_secret(secret: str) -> None:
    try:
        from airflow.sdk.log import amask_secret as _amask
    except ImportError:  # Airflow 3.1/3.2: only the sync variant exists, and it does no I/O there
        mask_secret(secret)
    else:
        await _amask(secret)


def task_state_store(context: Any) -> Any | None:
    """Airflow 3.3's per-task-instance store that survives retries; None on older versions."""
    try:
        return context.get("task_state_store")
    except AttributeError:
        return None


def sdk_exception(name: str) -> type[BaseException]:
    """
    An Airflow exception class by name (``AirflowSkipException``, ``AirflowRescheduleException``,
    ``TaskDeferred``...): from ``airflow.sdk.exceptions`` (3.2+), else from ``airflow.exceptions``
    (3.1, where the task SDK does not define them yet).
    """
    for module in ("airflow.sdk.exceptions", "airflow.exceptions"):
        found = getattr(importlib.import_module(module), name, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return found
    raise ImportError(f"Airflow has no exception named {name!r}")
