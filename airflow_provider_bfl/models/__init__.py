"""
Pure data: the requests exactly as the model references define them, their results and task status.

:class:`ImageInferenceRequest` is FLUX.1.1 [pro] (``bfl:2@1``); every other model's request class
extends it and comes from the model registry (:mod:`airflow_provider_bfl.models.registry`, one
module per model under ``models/flux/``): :func:`validate_request` validates a wire-form request of
any registered model, dispatching on ``model``.
"""

from airflow_provider_bfl.models.registry import validate_request
from airflow_provider_bfl.models.request import (
    MODEL_ID,
    BflSettings,
    ImageInferenceRequest,
    ProviderSettings,
    SafetySettings,
)
from airflow_provider_bfl.models.results import ImageResult, TaskState, TaskStatus

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
