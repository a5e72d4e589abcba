"""The few Airflow APIs that differ between 3.1 and 3.3, resolved in one place."""

from __future__ import annotations

from typing import Any


def mask_secret(secret: str) -> None:
    from airflow.sdk.log import mask_secret as _mask

    _mask(secret)


async def amask_secret(secret: str) -> None:
    try:
        from airflow.sdk.log import amask_secret as _amask
    except ImportError:  # Airflow 3.1: only the sync variant exists, and it does no I/O there
        mask_secret(secret)
    else:
        await _amask(secret)


def task_state_store(context: Any) -> Any | None:
    """Airflow 3.3's per-task-instance store that survives retries; None on older versions."""
    try:
        return context.get("task_state_store")
    except AttributeError:
        return None
