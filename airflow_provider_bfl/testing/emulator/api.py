"""The task API behind ``POST /v1``: authentication, dispatch per taskType, and the response envelope.

It knows nothing about sockets, so the server can run it normally, after a stall, or before dropping
the connection. A request is handled in two steps: :meth:`TaskProcessor.submit` accepts and answers
every task at once, and :meth:`PendingResponse.finish` builds the body once the sync tasks it waited
for are done.

HTTP status: 200 when at least one task succeeded (``data`` plus any task-scoped ``errors``), or when
the only errors are async outcomes reported by getResponse (a failed task in the ``envelope`` error
shape, ``taskNotFound``, ``taskExpired``); otherwise the status of the first error (400 for
validation errors and conflicts, 401 for authentication) with only ``errors``.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_bfl.testing.emulator.config import EmulatorConfig
from airflow_provider_bfl.testing.emulator.counters import Counters
from airflow_provider_bfl.testing.emulator.delivery import Deliverer
from airflow_provider_bfl.testing.emulator.rendering import MIME_TYPES
from airflow_provider_bfl.testing.emulator.results import ResultBuilder
from airflow_provider_bfl.testing.emulator.scheduler import Scheduler
from airflow_provider_bfl.testing.emulator.state import TaskRecord, TaskStore
from airflow_provider_bfl.testing.emulator.validation import TASK_TYPE, validate_image_inference
from airflow_provider_bfl.testing.emulator.wire import ApiError, dumps, envelope

SUPPORTED_TASK_TYPES = ("imageInference", "getResponse", "getTaskDetails", "accountManagement", "ping")
ORGANIZATION_UUID = "00000000-0000-4000-8000-00000000e4a1"


@dataclass
class ApiResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ParsedBody:
    """The request body as far as it could be understood; ``error`` is set when it is unusable."""

    tasks: list[dict[str, Any]]
    error: ApiError | None = None

    @property
    def task_types(self) -> list[str]:
        return [str(task.get("taskType")) for task in self.tasks]

    @property
    def submitted_uuids(self) -> list[str]:
        return [
            task["taskUUID"]
            for task in self.tasks
            if task.get("taskType") == TASK_TYPE and isinstance(task.get("taskUUID"), str)
        ]


def parse_body(raw: bytes, max_tasks: int | None) -> ParsedBody:
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return ParsedBody([], _body_error("The request body is not valid JSON."))
    if not isinstance(payload, list) or not all(isinstance(task, dict) for task in payload):
        return ParsedBody([], _body_error("The request body must be a JSON array of task objects."))
    if not payload:
        return ParsedBody([], _body_error("The request body must contain at least one task."))
    if max_tasks is not None and len(payload) > max_tasks:
        return ParsedBody(
            payload, ApiError(code="tooManyTasks", message=f"At most {max_tasks} tasks per request.")
        )
    return ParsedBody(payload)


def _body_error(message: str) -> ApiError:
    return ApiError(code="invalidRequestBody", message=message)


@dataclass
class _Slot:
    """The answer to one task; ``error`` fails the task, ``result_error`` is reported on a 200."""

    items: list[dict[str, Any]] = field(default_factory=list)
    error: ApiError | None = None
    result_error: ApiError | None = None
    sync: TaskRecord | None = None


class PendingResponse:
    def __init__(
        self,
        processor: TaskProcessor,
        slots: list[_Slot] | None = None,
        fixed: ApiResponse | None = None,
    ) -> None:
        self._processor = processor
        self._slots = slots or []
        self._fixed = fixed
        self.wait_until = max((slot.sync.completes_at for slot in self._slots if slot.sync), default=0.0)

    def finish(self) -> ApiResponse:
        if self._fixed is not None:
            return self._fixed
        return self._processor.finish(self._slots)


class TaskProcessor:
    def __init__(
        self,
        config: EmulatorConfig,
        store: TaskStore,
        counters: Counters,
        results: ResultBuilder,
        scheduler: Scheduler,
        deliverer: Deliverer,
    ) -> None:
        self._config = config
        self._store = store
        self._counters = counters
        self._results = results
        self._scheduler = scheduler
        self._deliverer = deliverer
        self._handlers: dict[str, Callable[[dict[str, Any], float], _Slot]] = {
            "imageInference": self._image_inference,
            "getResponse": self._get_response,
            "getTaskDetails": self._get_task_details,
            "accountManagement": self._account_management,
            "ping": self._ping,
            "authentication": self._authentication,
        }

    # -- request level -----------------------------------------------------------------------------
    def submit(self, authorization: str | None, parsed: ParsedBody) -> PendingResponse:
        auth_error = self._authenticate(authorization, parsed)
        if auth_error is not None:
            return PendingResponse(self, fixed=self.error_response([auth_error]))
        if parsed.error is not None:
            return PendingResponse(self, fixed=self.error_response([parsed.error]))
        now = time.monotonic()
        self._store.settle(now)
        slots = [self._dispatch(task, now) for task in parsed.tasks]
        return PendingResponse(self, slots=slots)

    def error_response(self, errors: list[ApiError]) -> ApiResponse:
        self._counters.record_errors(error.code for error in errors)
        return ApiResponse(errors[0].http_status, envelope(None, errors, self._config))

    def finish(self, slots: list[_Slot]) -> ApiResponse:
        now = time.monotonic()
        data: list[dict[str, Any]] = []
        errors: list[ApiError] = []
        failed_status: int | None = None
        any_ok = False
        for slot in slots:
            if slot.sync is not None:
                self._finish_sync(slot, slot.sync, now)
            if slot.error is not None:
                errors.append(slot.error)
                failed_status = failed_status or slot.error.http_status
                continue
            any_ok = True
            data.extend(slot.items)
            if slot.result_error is not None:
                errors.append(slot.result_error)
        self._counters.record_errors(error.code for error in errors)
        if not any_ok:
            return ApiResponse(failed_status or 400, envelope(None, errors, self._config))
        return ApiResponse(200, envelope(data, errors, self._config))

    def _finish_sync(self, slot: _Slot, record: TaskRecord, now: float) -> None:
        if not record.done(now):
            slot.error = ApiError(
                code="serviceUnavailable",
                message="The server is shutting down.",
                task_type=TASK_TYPE,
                task_uuid=record.task_uuid,
                http_status=503,
            )
        elif record.outcome.failed:
            slot.error = self._results.failure(record)
        else:
            slot.items = [self._results.image_item(record, index) for index in range(record.count)]

    def _authenticate(self, authorization: str | None, parsed: ParsedBody) -> ApiError | None:
        expected = self._config.api_key
        if authorization is not None and authorization.strip():
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip() == expected:
                return None
            return _auth_error("invalidApiKey", "The API key is invalid.")
        first = parsed.tasks[0] if parsed.tasks else {}
        if first.get("taskType") == "authentication" and "apiKey" in first:
            if first["apiKey"] == expected:
                return None
            return _auth_error("invalidApiKey", "The API key is invalid.")
        return _auth_error("missingApiKey", "Send the API key as 'Authorization: Bearer <key>'.")

    def _dispatch(self, task: dict[str, Any], now: float) -> _Slot:
        task_type = task.get("taskType")
        raw_uuid = task.get("taskUUID")
        scope = raw_uuid if isinstance(raw_uuid, str) else None
        if task_type is None:
            return _Slot(error=ApiError("missingTaskType", "taskType is required.", "taskType", "string"))
        handler = self._handlers.get(task_type) if isinstance(task_type, str) else None
        if handler is None:
            return _Slot(
                error=ApiError(
                    code="unsupportedTaskType",
                    message=f"Unsupported taskType {task_type!r}.",
                    parameter="taskType",
                    type="string",
                    task_type=task_type if isinstance(task_type, str) else None,
                    task_uuid=scope,
                    allowed_values=list(SUPPORTED_TASK_TYPES),
                )
            )
        return handler(task, now)

    # -- task types --------------------------------------------------------------------------------
    def _image_inference(self, task: dict[str, Any], now: float) -> _Slot:
        validated = validate_image_inference(task)
        if isinstance(validated, ApiError):
            return _Slot(error=validated)
        accepted = self._store.accept(validated, now, time.time())
        if isinstance(accepted, ApiError):
            return _Slot(error=accepted)
        self._schedule(accepted)
        if validated.delivery_method == "async":
            return _Slot(items=[self._results.placeholder(accepted)])
        return _Slot(sync=accepted)

    def _get_response(self, task: dict[str, Any], now: float) -> _Slot:
        task_uuid, error = _task_uuid_of(task, "getResponse")
        if error is not None:
            return _Slot(error=error)
        record = self._store.get(task_uuid)
        if record is None or self._store.forgotten(task_uuid):
            if self._config.unknown_task_mode == "empty":
                return _Slot()
            return _Slot(result_error=_not_found(task_uuid, "taskNotFound", TASK_TYPE))
        if now > record.completes_at + self._config.result_retention:
            return _Slot(result_error=_not_found(task_uuid, "taskExpired", TASK_TYPE))
        items, failure = self._results.cumulative(record, now)
        return _Slot(items=items, result_error=failure)

    def _get_task_details(self, task: dict[str, Any], now: float) -> _Slot:
        task_uuid, error = _task_uuid_of(task, "getTaskDetails")
        if error is not None:
            return _Slot(error=error)
        record = self._store.get(task_uuid)
        if record is None:
            not_found = _not_found(task_uuid, "taskNotFound", "getTaskDetails")
            return _Slot(error=dataclasses.replace(not_found, http_status=404))
        items, _ = self._results.cumulative(record, now)
        if record.outcome.failed and record.done(now):
            status, items = "error", [self._results.failure_item(record)]
        else:
            status = "success" if record.done(now) else self._config.processing_status_word
        accepted = datetime.fromtimestamp(record.accepted_wall, tz=timezone.utc)
        detail = {
            "taskType": "getTaskDetails",
            "taskUUID": task_uuid,
            "status": status,
            "createdAt": accepted.isoformat().replace("+00:00", "Z"),
            "request": dict(record.request.raw),
            "response": items,
        }
        return _Slot(items=[detail])

    def _account_management(self, task: dict[str, Any], now: float) -> _Slot:
        operation = task.get("operation")
        raw_uuid = task.get("taskUUID")
        scope = raw_uuid if isinstance(raw_uuid, str) else None
        if operation != "getDetails":
            code = "missingOperation" if operation is None else "unsupportedOperation"
            return _Slot(
                error=ApiError(
                    code=code,
                    message="accountManagement supports operation 'getDetails'.",
                    parameter="operation",
                    type="string",
                    task_type="accountManagement",
                    task_uuid=scope,
                    allowed_values=["getDetails"],
                )
            )
        billed = self._counters.snapshot().cost_billed
        item: dict[str, Any] = {
            "taskType": "accountManagement",
            "operation": "getDetails",
            "organizationUUID": ORGANIZATION_UUID,
            "organizationName": "Runware Emulator",
            "balance": {
                "amount": round(self._config.initial_balance - billed, 6),
                "freeBalance": 0.0,
                "currency": "USD",
            },
        }
        if scope is not None:
            item["taskUUID"] = scope
        return _Slot(items=[item])

    def _ping(self, task: dict[str, Any], now: float) -> _Slot:
        return _Slot(items=[{"taskType": "ping", "pong": True}])

    def _authentication(self, task: dict[str, Any], now: float) -> _Slot:
        if task.get("apiKey") != self._config.api_key:
            return _Slot(error=_auth_error("invalidApiKey", "The API key is invalid."))
        return _Slot(items=[{"taskType": "authentication", "connectionSessionUUID": str(uuid.uuid4())}])

    # -- side effects of acceptance ----------------------------------------------------------------
    def _schedule(self, record: TaskRecord) -> None:
        store = self._store
        self._scheduler.call_at(record.completes_at, lambda: store.settle(time.monotonic()))
        request = record.request
        if request.webhook_url is None and request.upload_endpoint is None:
            return
        for index in range(record.count):
            self._scheduler.call_at(record.ready_at(index), _Push(self, record, index))

    def push(self, record: TaskRecord, index: int) -> None:
        """Deliver image ``index`` (or, once, the failure) to the task's webhook and upload endpoint."""
        request = record.request
        if record.outcome.failed:
            if index != record.count - 1 or request.webhook_url is None:
                return
            failure = envelope(None, [self._results.failure(record)], self._config)
            self._deliverer.webhook(request.webhook_url, lambda: dumps(failure))
            return
        if index in record.delivered:
            return
        record.delivered.add(index)
        results = self._results
        if request.webhook_url is not None:
            self._deliverer.webhook(
                request.webhook_url, lambda: dumps({"data": [results.image_item(record, index)]})
            )
        if request.upload_endpoint is not None:
            self._deliverer.upload(
                request.upload_endpoint,
                lambda: results.image_bytes(record, index),
                MIME_TYPES[request.output_format],
            )


class _Push:
    """A scheduler callback bound to one image (a class, not a lambda, to bind the loop index)."""

    def __init__(self, processor: TaskProcessor, record: TaskRecord, index: int) -> None:
        self._processor, self._record, self._index = processor, record, index

    def __call__(self) -> None:
        self._processor.push(self._record, self._index)


def _task_uuid_of(task: Mapping[str, Any], task_type: str) -> tuple[str, ApiError | None]:
    value = task.get("taskUUID")
    if value is None:
        return "", ApiError("missingTaskUUID", "taskUUID is required.", "taskUUID", "string", task_type)
    if not isinstance(value, str) or not value:
        return "", ApiError("invalidTaskUUID", "taskUUID must be a string.", "taskUUID", "string", task_type)
    return value, None


def _not_found(task_uuid: str, code: str, task_type: str) -> ApiError:
    message = "No task with this taskUUID." if code == "taskNotFound" else "The task's results expired."
    return ApiError(code=code, message=message, task_type=task_type, task_uuid=task_uuid, http_status=200)


def _auth_error(code: str, message: str) -> ApiError:
    return ApiError(code=code, message=message, http_status=401)
