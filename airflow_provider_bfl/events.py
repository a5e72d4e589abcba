"""
The result and trigger-event contract shared by the operator, the sensor and the trigger.

An event is small JSON (it is stored in the metadata DB): the taskUUIDs, one XCom-shaped entry per
image received, the failures and the tasks still pending. Never image bytes, prompts or keys::

    {"status": "success" | "error" | "timeout", "task_uuids": [...], "results": [...],
     "failures": [{"taskUUID", "code", "message", "error"}], "pending": [...], "message": "..."}

A batch too large for that (above the operator's ``manifest_threshold``) gets a *summary* event
instead: counts, and at most :data:`DETAILED` failures and pending taskUUIDs (messages cut), the
same few KiB whatever the batch; whoever resumes fetches the images with :func:`fetch_results`::

    {"status": ..., "summary": {"generations", "done", "images", "failed", "pending"},
     "failures": [...], "pending": [...], "message": "..."}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_bfl import exceptions
from airflow_provider_bfl.exceptions import BflError

if TYPE_CHECKING:
    from airflow_provider_bfl.hooks.bfl import BflHook
    from airflow_provider_bfl.models.results import TaskStatus

SUCCESS = "success"
ERROR = "error"
TIMEOUT = "timeout"
STATUSES = frozenset({SUCCESS, ERROR, TIMEOUT})
_REQUIRED = ("status", "task_uuids", "results", "failures", "pending", "message")
_REQUIRED_SUMMARY = ("status", "summary", "failures", "pending", "message")
_SUMMARY_COUNTS = ("generations", "done", "images", "failed", "pending")
#: Failures and pending taskUUIDs a summary event names one by one; the rest are counted.
DETAILED = 10
#: Failures its message names; characters kept of each failure's message (the server wrote it).
NAMED_IN_MESSAGE = 3
MESSAGE_CHARS = 200


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


def from_statuses(statuses: Mapping[str, TaskStatus], *, with_results: bool = True) -> dict[str, Any]:
    """The event describing where a set of tasks stands (a summary event without ``with_results``)."""
    if not with_results:
        return Summary().add(statuses).event()
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


def from_error(
    error: BflError, task_uuids: list[str], statuses: Mapping[str, TaskStatus], *, with_results: bool = True
) -> dict[str, Any]:
    """The event for a failure of the waiting itself (auth, exhausted poll budget, ...)."""
    if not with_results:
        return Summary().add(statuses).event(failure=error)
    return {
        "status": ERROR,
        "task_uuids": task_uuids,
        "results": results_of(statuses),
        "failures": [failure_record(error)],
        "pending": [uuid for uuid, status in statuses.items() if not status.done],
        "message": str(error),
    }


class Summary:
    """
    A wait's counts, added up status by status (or chunk by chunk), for a summary event.

    Keeps only counts and the first :data:`DETAILED` failures and pending taskUUIDs, so it stays
    small however many statuses pass through it.
    """

    def __init__(self) -> None:
        self.generations = self.done = self.images = self.failed = self.running = 0
        self.failures: list[dict[str, Any]] = []
        self.pending: list[str] = []

    def add(self, statuses: Mapping[str, TaskStatus]) -> Summary:
        for uuid, status in statuses.items():
            self.generations += 1
            self.images += len(status.results)
            if status.error is not None:
                self.failed += 1
                if len(self.failures) < DETAILED:
                    self.failures.append(_cut(failure_record(status.error, uuid)))
            if status.done:
                self.done += 1
            else:
                self.running += 1
                if len(self.pending) < DETAILED:
                    self.pending.append(uuid)
        return self

    def event(self, *, failure: BflError | None = None) -> dict[str, Any]:
        """The summary event; ``failure`` is a failure of the waiting itself (it outranks the rest)."""
        counts = dict(
            zip(
                _SUMMARY_COUNTS,
                (self.generations, self.done, self.images, self.failed, self.running),
                strict=True,
            )
        )
        if failure is not None:
            return {
                "status": ERROR,
                "summary": counts,
                "failures": [_cut(failure_record(failure))],
                "pending": self.pending,
                "message": str(failure)[: MESSAGE_CHARS * 2],
            }
        if self.failed:
            named = "; ".join(
                f"{f['taskUUID']}: {f['code']}: {f['message']}" for f in self.failures[:NAMED_IN_MESSAGE]
            )
            more = self.failed - min(self.failed, NAMED_IN_MESSAGE)
            status = ERROR
            message = f"{self.failed} of {self.generations} generation(s) failed: {named}" + (
                f"; and {more} more" if more else ""
            )
        elif self.running:
            more = self.running - len(self.pending)
            status = TIMEOUT
            message = (
                f"{self.running} generation(s) still running at the deadline: {', '.join(self.pending)}"
                + (f" and {more} more" if more else "")
            )
        else:
            status, message = SUCCESS, f"{self.images} image(s) from {self.generations} generation(s)"
        return {
            "status": status,
            "summary": counts,
            "failures": self.failures,
            "pending": self.pending,
            "message": message,
        }


def is_summary(event: Mapping[str, Any]) -> bool:
    """A summary event (no per-image results in it: fetch them with :func:`fetch_results`)."""
    return "summary" in event


def failed_count(event: Mapping[str, Any]) -> int:
    """How many generations failed, also where a summary event names only some of them."""
    return int(event["summary"]["failed"]) if is_summary(event) else len(event["failures"])


def drain_results(statuses: Mapping[str, TaskStatus]) -> list[dict[str, Any]]:
    """
    One XCom entry per image, as :func:`results_of`, emptying each status's images as it goes.

    For big batches: the parsed results and their entries are never both held whole.
    """
    entries: list[dict[str, Any]] = []
    for status in statuses.values():
        entries.extend(result.to_xcom() for result in status.results)
        status.results = []
    return entries


def fetch_results(
    hook: BflHook, expected: Mapping[str, int], *, chunk: int
) -> tuple[Summary, list[dict[str, Any]]]:
    """
    Where ``expected`` tasks stand now and their images, fetched ``chunk`` taskUUIDs per getResponse.

    What a summary event left out. Each chunk's answer is reduced to XCom entries before the next
    is asked for (byte outputs never pile up); a task the API does not mention is ``taskNotFound``.
    """
    summary = Summary()
    results: list[dict[str, Any]] = []
    uuids: Sequence[str] = list(expected)
    for start in range(0, len(uuids), chunk):
        part = {uuid: expected[uuid] for uuid in uuids[start : start + chunk]}
        statuses = hook.get_status(part, unknown_as_missing=True)
        summary.add(statuses)
        results.extend(drain_results(statuses))
    return summary, results


def _cut(record: dict[str, Any]) -> dict[str, Any]:
    message = record.get("message")
    if isinstance(message, str) and len(message) > MESSAGE_CHARS:
        record["message"] = message[:MESSAGE_CHARS] + "..."
    return record


def validate(event: Any) -> dict[str, Any]:
    """The event if it honours the contract; a clear error for a missing or unknown one."""
    if not isinstance(event, Mapping):
        raise BflError(f"Expected a trigger event (a dict), got {type(event).__name__}: {event!r:.200}")
    missing = [key for key in (_REQUIRED_SUMMARY if is_summary(event) else _REQUIRED) if key not in event]
    if missing:
        raise BflError(f"Trigger event is missing {', '.join(missing)}: {dict(event)!r:.300}")
    if event["status"] not in STATUSES:
        raise BflError(
            f"Unknown trigger event status {event['status']!r}; expected one of {sorted(STATUSES)}"
        )
    if is_summary(event):
        counts = event["summary"]
        if not isinstance(counts, Mapping) or not all(
            isinstance(counts.get(name), int) for name in _SUMMARY_COUNTS
        ):
            raise BflError(
                f"A summary trigger event needs the counts {', '.join(_SUMMARY_COUNTS)}: {counts!r:.200}"
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
