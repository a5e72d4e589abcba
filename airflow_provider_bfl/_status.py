"""Folding getResponse (and sync-delivery) items into one :class:`TaskStatus` per taskUUID."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from airflow_provider_bfl._envelope import ApiError, Envelope, server_text, to_exception
from airflow_provider_bfl.exceptions import BflMalformedResponseError
from airflow_provider_bfl.models.results import ImageResult, TaskState, TaskStatus

log = logging.getLogger(__name__)

_PROCESSING_WORDS = frozenset({"processing", "pending"})
#: Without a ``status``, an item with an image is a (sync) result and one without is an async ack.
_IMAGE_FIELDS = frozenset({"imageUUID", "imageURL", "imageBase64Data", "imageDataURI"})


def parse_result(item: Mapping[str, Any]) -> ImageResult:
    try:
        return ImageResult.model_validate(item)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BflMalformedResponseError(
            f"The API sent an image result that cannot be used: {problems}",
            task_uuid=item.get("taskUUID") if isinstance(item.get("taskUUID"), str) else None,
        ) from None


def _item_error(item: Mapping[str, Any], task_uuid: str) -> ApiError:
    raw = item.get("error")
    raw = raw if isinstance(raw, Mapping) else {}
    return ApiError(
        code=server_text(raw.get("code") or item.get("code") or "taskFailed", limit=80),
        message=server_text(raw.get("message") or item.get("message") or "The generation failed"),
        task_uuid=task_uuid,
    )


def check_scope(envelope: Envelope, asked: Mapping[str, Any]) -> None:
    """Every data item must answer one of the taskUUIDs ``asked`` about; anything else is malformed."""
    for item in envelope.data:
        task_uuid = item.get("taskUUID")
        if not isinstance(task_uuid, str) or task_uuid not in asked:
            raise BflMalformedResponseError(
                f"The API sent an item for a taskUUID that was not asked about: {server_text(task_uuid, 80)!r}",
                status_code=envelope.status_code,
            )


def merge(statuses: Mapping[str, TaskStatus], envelope: Envelope) -> set[str]:
    """
    Apply one response to ``statuses`` (keyed by taskUUID) in place; return the UUIDs it mentioned.

    Linear in the size of the response. Results accumulate across polls (deduplicated by
    imageUUID), so images of a task with ``numberResults`` > 1 are kept as they arrive. Results
    beyond a task's expected count (``numberResults``) are *ignored* with one warning per task:
    they were not asked for, so they are never landed, logged as images or costed, and an answer
    padded with thousands of them cannot slow the merge down (they are not even parsed).
    """
    check_scope(envelope, statuses)
    mentioned: set[str] = set()
    still_processing: set[str] = set()
    known: dict[str, set[str]] = {}  # imageUUIDs per task, built once per response
    ignored: dict[str, int] = {}
    for item in envelope.data:
        task_uuid = item["taskUUID"]
        mentioned.add(task_uuid)
        status = statuses[task_uuid]
        if status.state is TaskState.ERROR:
            continue
        if item.get("status") == "success" and len(status.results) >= status.expected_images:
            seen = known.get(task_uuid)
            if seen is None:
                seen = known[task_uuid] = {result.image_uuid for result in status.results}
            image_uuid = item.get("imageUUID")
            if not (isinstance(image_uuid, str) and image_uuid in seen):
                ignored[task_uuid] = ignored.get(task_uuid, 0) + 1
            continue  # the task has all its images: nothing more to read in this item
        word = server_text(
            item.get("status") or ("success" if _IMAGE_FIELDS & item.keys() else "processing"), limit=40
        ).lower()
        if word in _PROCESSING_WORDS:
            still_processing.add(task_uuid)
            progress = item.get("progress")
            status.progress = progress if isinstance(progress, int) else status.progress
        elif word == "error":
            _fail(status, _item_error(item, task_uuid), envelope.status_code)
        elif word == "success":
            seen = known.get(task_uuid)
            if seen is None:
                seen = known[task_uuid] = {result.image_uuid for result in status.results}
            image_uuid = item.get("imageUUID")
            if isinstance(image_uuid, str) and image_uuid in seen:
                continue  # the same image again (a repeated poll)
            if len(status.results) >= status.expected_images:
                ignored[task_uuid] = ignored.get(task_uuid, 0) + 1
                continue
            result = parse_result(item)
            seen.add(result.image_uuid)
            status.results.append(result)
        else:
            raise BflMalformedResponseError(
                f"The API sent an unknown task status {word!r}", task_uuid=task_uuid
            )
    for task_uuid, count in ignored.items():
        log.warning(
            "Ignored %d result(s) for taskUUID %s beyond the %d image(s) it was asked for (numberResults)",
            count,
            task_uuid,
            statuses[task_uuid].expected_images,
        )
    for error in envelope.errors:
        if error.task_uuid is not None and error.task_uuid in statuses:
            mentioned.add(error.task_uuid)
            _fail(statuses[error.task_uuid], error, envelope.status_code)
    for task_uuid in mentioned - still_processing:
        status = statuses[task_uuid]
        # Done when every expected image is here and the API no longer says "processing" (an
        # expected count that is too low must not end the wait early).
        if (
            status.state is TaskState.PROCESSING
            and status.results
            and len(status.results) >= status.expected_images
        ):
            status.state, status.progress = TaskState.SUCCESS, 100
    return mentioned


def _fail(status: TaskStatus, error: ApiError, status_code: int) -> None:
    status.state = TaskState.ERROR
    status.error = to_exception(error, status_code)
