"""
The state of a task while polling: plain data, so the sensor, the trigger and the submission code
a DAG file imports need no pydantic class (the images themselves are
:class:`~airflow_provider_bfl.models.results.ImageResult`, built when a task runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_bfl.exceptions import BflError
    from airflow_provider_bfl.models.results import ImageResult


class TaskState(str, Enum):
    PROCESSING = "processing"
    SUCCESS = "success"
    ERROR = "error"

    @property
    def terminal(self) -> bool:
        return self is not TaskState.PROCESSING


@dataclass
class TaskStatus:
    """
    The cumulative state of one taskUUID: all its images (``numberResults`` of them) or its error.

    ``results`` holds the images that have arrived so far, so partial results of a task with
    several images are kept while the rest are still processing.
    """

    task_uuid: str
    expected_images: int = 1
    state: TaskState = TaskState.PROCESSING
    results: list[ImageResult] = field(default_factory=list)
    progress: int | None = None
    error: BflError | None = None

    @property
    def done(self) -> bool:
        return self.state.terminal
