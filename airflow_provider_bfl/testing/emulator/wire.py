"""Runware error items and response envelopes, including the legacy variants clients must parse."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from airflow_provider_bfl.testing.emulator.config import EmulatorConfig

JSON_TYPE = "application/json"


@dataclass(frozen=True)
class ApiError:
    """One item of an ``errors`` array; ``http_status`` is used when no task in the request succeeded."""

    code: str
    message: str
    parameter: str | list[str] | None = None
    type: str | None = None
    task_type: str | None = None
    task_uuid: str | None = None
    allowed_values: list[Any] | None = None
    http_status: int = 400

    def to_wire(self) -> dict[str, Any]:
        item: dict[str, Any] = {"code": self.code, "message": self.message}
        optional = {
            "parameter": self.parameter,
            "type": self.type,
            "taskType": self.task_type,
            "taskUUID": self.task_uuid,
            "allowedValues": self.allowed_values,
        }
        item.update({key: value for key, value in optional.items() if value is not None})
        return item


def envelope(
    data: list[dict[str, Any]] | None, errors: list[ApiError], config: EmulatorConfig
) -> dict[str, Any]:
    """Shape a body: ``data`` and/or ``errors``, honouring ``data_as_object`` and ``legacy_error_key``.

    With ``legacy_error_key`` only the first error is sent, as the single ``error`` object older
    servers used. ``data`` is omitted when ``None`` (error-only responses).
    """
    body: dict[str, Any] = {}
    if data is not None:
        body["data"] = data[0] if config.data_as_object and len(data) == 1 else data
    if errors:
        if config.legacy_error_key:
            body["error"] = errors[0].to_wire()
        else:
            body["errors"] = [error.to_wire() for error in errors]
    return body


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def param_code(prefix: str, parameter: str) -> str:
    """``invalid`` + ``width`` -> ``invalidWidth``; nested names use their last segment."""
    leaf = parameter.rsplit(".", 1)[-1]
    return prefix + leaf[:1].upper() + leaf[1:]
