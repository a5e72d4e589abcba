"""
Pure data: the requests exactly as the model references define them, their results and task status.

:class:`ImageInferenceRequest` is FLUX.1.1 [pro] (``bfl:2@1``); every other model's request class
extends it and comes from the model registry (:mod:`airflow_provider_bfl.models.registry`, one
module per model under ``models/flux/``): :func:`validate_request` validates a wire-form request of
any registered model, dispatching on ``model``.

The names below are imported on first access: DAG files import the operator, which reads the
registry's plain specs, and building the pydantic classes is left to the task that runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_bfl.models.registry import validate_request
    from airflow_provider_bfl.models.request import (
        BflSettings,
        ImageInferenceRequest,
        ProviderSettings,
        SafetySettings,
    )
    from airflow_provider_bfl.models.results import ImageResult
    from airflow_provider_bfl.models.status import TaskState, TaskStatus
    from airflow_provider_bfl.models.wire import MODEL_ID

#: Public name -> the module that defines it.
_HOMES = {
    "MODEL_ID": "wire",
    "BflSettings": "request",
    "ImageInferenceRequest": "request",
    "ProviderSettings": "request",
    "SafetySettings": "request",
    "ImageResult": "results",
    "TaskState": "status",
    "TaskStatus": "status",
    "validate_request": "registry",
}

__all__ = [
    "MODEL_ID",
    "BflSettings",
    "ImageInferenceRequest",
    "ImageResult",
    "ProviderSettings",
    "SafetySettings",
    "TaskState",
    "TaskStatus",
    "validate_request",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # looked up once
    return value
