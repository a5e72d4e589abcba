"""Pure data: the request exactly as the API reference defines it, its results and task status."""

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
]
