"""
The result and trigger-event contract shared by the operator, the sensor and the trigger.

An event is small JSON (it is stored in the metadata DB): the taskUUIDs, one XCom-shaped entry per
image received, the failures and the tasks still pending. Never image bytes, prompts or keys::

    {"status": "success" | "error" | "timeout", "task_uuids": [...], "results": [...],
     "failures": [{"taskUUID", "code", "message", "error"}], "pending": [...], "message": "..."}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_bfl import exceptions
from airflow_provider_bfl.exceptions import BflError

if TYPE_CHECKING:
    from airflow_provider_bfl.models.results import TaskStatus

SUCCESS = "success"
ERROR = "error"
TIMEOUT = "timeout"
STATUSES = frozenset({SUCCESS, ERROR, TIMEOUT})
_REQUIRED = ("status", "task_uuids", "results", "failures", "pending", "message")


def failure_record(error: BflError, task_uuid: str | None = None) -> dict[str, Any]:
    return {
        "taskUUID": task_uuid or error.task_uuid,
        "code": error.code,
        "message": error.message,
        "error": type(error).__name__,
    }


def results_of(statuses: Mapping[str, TaskStatus]) -> list[dict[str, Any]]:
    """One XCom entry per image received, in submission order."""
    return [result.to_xcom() for status in statuses.values() for result in status.results]


def from_statuses(statuses: Mapping[str, TaskStatus]) -> dict[str, Any]:
    """The event describing where a set of tasks stands."""
    failures = [failure_record(s.error, uuid) for uuid, s in statuses.items() if s.error is not None]
    position = {uuid: index + 1 for index, uuid in enumerate(statuses)}  # to find the prompt behind it
    pending = [uuid for uuid, status in statuses.items() if not status.done]
    results = results_of(statuses)
    if failures:
        status, message = (
            ERROR,
            f"{len(failures)} of {len(statuses)} generation(s) failed: "
            + "; ".join(
                f"#{position[f['taskUUID']]} {f['taskUUID']}: {f['code']}: {f['message']}" for f in failures
            ),
        )
    elif pending:
        status, message = (
            TIMEOUT,
            f"{len(pending)} generation(s) still running at the deadline: {', '.join(pending)}",
        )
    else:
        status, message = SUCCESS, f"{len(results)} image(s) from {len(statuses)} generation(s)"
    return {
        "status": status,
        "task_uuids": list(statuses),
        "results": results,
        "failures": failures,
        "pending": pending,
        "message": message,
    }


def from_error(error: BflError, task_uuids: list[str], statuses: Mapping[str, TaskStatus]) -> dict[str, Any]:
    """The event for a failure of the waiting itself (auth, exhausted poll budget, ...)."""
    return {
        "status": ERROR,
        "task_uuids": task_uuids,
        "results": results_of(statuses),
        "failures": [failure_record(error)],
        "pending": [uuid for uuid, status in statuses.items() if not status.done],
        "message": str(error),
    }


def validate(event: Any) -> dict[str, Any]:
    """The event if it honours the contract; a clear error for a missing or unknown one."""
    if not isinstance(event, Mapping):
        raise BflError(f"Expected a trigger event (a dict), got {type(event).__name__}: {event!r:.200}")
    missing = [key for key in _REQUIRED if key not in event]
    if missing:
        raise BflError(f"Trigger event is missing {', '.join(missing)}: {dict(event)!r:.300}")
    if event["status"] not in STATUSES:
        raise BflError(
            f"Unknown trigger event status {event['status']!r}; expected one of {sorted(STATUSES)}"
        )
    return dict(event)


def error_for(event: Mapping[str, Any]) -> BflError:
    """The exception a failed or timed-out event stands for, of the family the API reported."""
    if event["status"] == TIMEOUT:
        return exceptions.BflWaitTimeoutError(event["message"], task_uuid=_single(event["pending"]))
    failures = event["failures"]
    first = failures[0] if failures else {}
    family = getattr(exceptions, str(first.get("error")), None)
    if not (isinstance(family, type) and issubclass(family, BflError)):
        family = BflError
    return family(event["message"], code=first.get("code"), task_uuid=first.get("taskUUID"))


def _single(uuids: list[str]) -> str | None:
    return uuids[0] if len(uuids) == 1 else None
