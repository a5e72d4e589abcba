"""
What the API sends back: one :class:`ImageResult` per image (the status of a task while polling,
:class:`TaskStatus`, lives in the light :mod:`airflow_provider_bfl.models.status` and is
re-exported here).

Parsing is tolerant of fields the API may add later (kept as extras) and strict about the fields
the provider relies on, so an API change fails loudly instead of producing empty results.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from airflow_provider_bfl.models.status import TaskState as TaskState
from airflow_provider_bfl.models.status import TaskStatus as TaskStatus

log = logging.getLogger(__name__)

#: Result fields that hold image bytes: never logged, never pushed to XCom.
BYTES_FIELDS = frozenset({"imageBase64Data", "imageDataURI"})
_XCOM_FIELDS = ("taskType", "taskUUID", "imageUUID", "imageURL", "seed", "cost", "NSFWContent")


class ImageResult(BaseModel):
    """
    One generated image as the API describes it.

    ``imageUUID`` is required: it names the image in storage, XCom and QA, and deduplicates
    repeated polls, so a result without one is malformed. ``cost`` is the API's own figure when it
    is a finite number >= 0; anything else (NaN, infinity, a negative number, a boolean, text that
    is not a number) is *dropped* to ``None`` (cost unknown) with a warning, never summed, and the
    image itself is kept: it was paid for.
    """

    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True, extra="allow", frozen=True
    )

    task_type: str = Field("imageInference", alias="taskType")
    task_uuid: str = Field(alias="taskUUID", min_length=1)
    image_uuid: str = Field(alias="imageUUID", min_length=1)
    image_url: str | None = Field(None, alias="imageURL")
    image_data_uri: str | None = Field(None, alias="imageDataURI", repr=False)
    image_base64_data: str | None = Field(None, alias="imageBase64Data", repr=False)
    seed: int | None = Field(None, alias="seed")
    cost: float | None = Field(None, alias="cost")
    nsfw_content: bool | None = Field(None, alias="NSFWContent")

    @field_validator("image_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"imageURL must be an http(s) URL, got {value[:60]!r}")
        return value

    @field_validator("cost", mode="before")
    @classmethod
    def _sane_cost(cls, value: Any) -> float | None:
        if value is None:
            return None
        number: float | None = None
        if not isinstance(value, bool):
            try:
                number = float(value)
            except (TypeError, ValueError, OverflowError):
                number = None
        if number is None or not math.isfinite(number) or number < 0:
            log.warning("Ignoring a cost the API sent that is not a sane amount: %.40r", value)
            return None
        return number

    def __repr_args__(self) -> Any:
        # Extras may hold bytes under names we do not know yet; keep repr (and so logs) small.
        return [(key, value) for key, value in super().__repr_args__() if key not in BYTES_FIELDS]

    def to_xcom(self) -> dict[str, Any]:
        """Small JSON for XCom: the API's own field names, never image bytes."""
        dumped = self.model_dump(by_alias=True, exclude_none=True)
        return {key: dumped[key] for key in _XCOM_FIELDS if key in dumped}

    def image_bytes(self) -> bytes | None:
        """The decoded image for base64Data/dataURI outputs; None for URL outputs."""
        encoded = self.image_base64_data
        if encoded is None and self.image_data_uri is not None:
            _, _, encoded = self.image_data_uri.partition(",")
        if encoded is None:
            return None
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"image data of {self.image_uuid} is not valid base64: {exc}") from None
