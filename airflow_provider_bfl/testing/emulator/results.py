"""Turns task records into the wire items Runware sends: results, progress, placeholders, failures."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from airflow_provider_bfl.testing.emulator.config import EmulatorConfig
from airflow_provider_bfl.testing.emulator.rendering import EXTENSIONS, MIME_TYPES, ImageRenderer, RenderKey
from airflow_provider_bfl.testing.emulator.state import TaskRecord
from airflow_provider_bfl.testing.emulator.validation import TASK_TYPE
from airflow_provider_bfl.testing.emulator.wire import ApiError


class ResultBuilder:
    def __init__(self, config: EmulatorConfig, renderer: ImageRenderer, origin: Callable[[], str]) -> None:
        self._config = config
        self._renderer = renderer
        self._origin = origin

    def render_key(self, record: TaskRecord, index: int) -> RenderKey:
        request = record.request
        quality = 0 if request.output_format == "PNG" else request.output_quality
        return RenderKey(
            seed=record.seeds[index],
            width=request.width,
            height=request.height,
            output_format=request.output_format,
            quality=quality,
            blank=record.blank[index],
            reference=request.references[0].thumbnail if request.references else None,
        )

    def image_bytes(self, record: TaskRecord, index: int) -> bytes:
        return self._renderer.render(self.render_key(record, index))

    def image_url(self, record: TaskRecord, index: int) -> str:
        extension = EXTENSIONS[record.request.output_format]
        return f"{self._origin()}/images/{record.image_uuids[index]}.{extension}"

    def image_item(self, record: TaskRecord, index: int, *, with_status: bool = False) -> dict[str, Any]:
        """The result of image ``index``; ``with_status`` adds ``status: success`` (getResponse)."""
        request = record.request
        item: dict[str, Any] = {
            "taskType": TASK_TYPE,
            "taskUUID": record.task_uuid,
            "imageUUID": record.image_uuids[index],
        }
        if with_status:
            item["status"] = "success"
        if request.output_type == "URL":
            item["imageURL"] = self.image_url(record, index)
        else:
            encoded = base64.b64encode(self.image_bytes(record, index)).decode("ascii")
            if request.output_type == "dataURI":
                item["imageDataURI"] = f"data:{MIME_TYPES[request.output_format]};base64,{encoded}"
            else:
                item["imageBase64Data"] = encoded
        item["seed"] = record.seeds[index]
        if request.include_cost:
            item["cost"] = self._config.cost_per_image
        if request.check_content:
            item["NSFWContent"] = record.nsfw
        return item

    def placeholder(self, record: TaskRecord) -> dict[str, Any]:
        return {"taskType": TASK_TYPE, "taskUUID": record.task_uuid}

    def processing_item(self, record: TaskRecord, now: float) -> dict[str, Any]:
        return {
            "taskType": TASK_TYPE,
            "taskUUID": record.task_uuid,
            "status": self._config.processing_status_word,
            "progress": record.progress(now),
        }

    def failure(self, record: TaskRecord, http_status: int | None = None) -> ApiError:
        outcome = record.outcome
        return ApiError(
            code=outcome.error_code,
            message=outcome.error_message,
            task_type=TASK_TYPE,
            task_uuid=record.task_uuid,
            http_status=outcome.http_status if http_status is None else http_status,
        )

    def failure_item(self, record: TaskRecord) -> dict[str, Any]:
        outcome = record.outcome
        return {
            "taskType": TASK_TYPE,
            "taskUUID": record.task_uuid,
            "status": "error",
            "error": {"code": outcome.error_code, "message": outcome.error_message},
        }

    def cumulative(self, record: TaskRecord, now: float) -> tuple[list[dict[str, Any]], ApiError | None]:
        """What getResponse reports now: finished images plus a progress item, or the failure.

        A failure is returned as an item or as an error, per ``async_error_shape``.
        """
        if record.outcome.failed:
            if not record.done(now):
                return [self.processing_item(record, now)], None
            if self._config.async_error_shape == "envelope":
                return [], self.failure(record, http_status=200)
            return [self.failure_item(record)], None
        ready = record.ready_count(now)
        items = [self.image_item(record, index, with_status=True) for index in range(ready)]
        if ready < record.count:
            items.append(self.processing_item(record, now))
        return items, None
