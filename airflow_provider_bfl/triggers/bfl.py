"""
:class:`BflImageInferenceTrigger`: waits in the triggerer for FLUX generations submitted elsewhere.

The trigger only *polls* (getResponse); it never submits, so a triggerer restart, a redistribution
to another triggerer or a retry can never pay for a generation twice. Its kwargs are stored in the
metadata DB and printed by ``repr``: they hold taskUUIDs, the connection id, poll settings and a
wall-clock deadline, never the API key, headers, prompts or image data.

Triggers of one triggerer that use the same connection share one HTTP connection pool and one
poller, which asks about all their tasks in batched getResponse requests (see
:mod:`airflow_provider_bfl.hooks._coalescer`): 2,000 deferred tasks cost a few requests per poll,
not 2,000. This module imports nothing heavy, since DAG files import it while being parsed.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_bfl import defaults
from airflow_provider_bfl._task_uuids import expected_images

if TYPE_CHECKING:
    from airflow_provider_bfl.models.results import TaskStatus

#: What a run needs beyond this module: the hook (httpx, the pydantic models) and the async backend
#: httpx loads on its first request. The first trigger of a triggerer process imports them in a
#: worker thread: on the event loop, that held every other trigger for 0.5 s on a loaded machine.
RUN_MODULES = ("airflow_provider_bfl.hooks.bfl", "airflow_provider_bfl.events", "anyio._backends._asyncio")


def _imported(name: str) -> bool:
    """In ``sys.modules`` and done (not a module another thread is still executing)."""
    module = sys.modules.get(name)
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


async def _import_off_loop(names: Iterable[str]) -> None:
    missing = [name for name in names if not _imported(name)]
    if missing:
        await asyncio.to_thread(lambda: [importlib.import_module(name) for name in missing])


class BflImageInferenceTrigger(BaseTrigger):
    """
    Poll Runware for already-submitted ``imageInference`` tasks and fire exactly one event.

    The event follows :mod:`airflow_provider_bfl.events`: ``success`` with every image,
    ``error`` naming the failed taskUUIDs and the API's codes (or the polling failure itself), or
    ``timeout`` once ``deadline`` passes. Every variant carries the images received so far (or,
    with ``with_results=False``, only their counts).

    :param task_uuids: ``{taskUUID: numberResults}`` of the tasks to wait for (a list of UUIDs
        means one image each). A task counts as done only once all its images arrived.
    :param bfl_conn_id: The ``bfl`` connection (API key and base URL live there, not here).
    :param deadline: Wall-clock ``time.time()`` at which to give up, or None to wait for ever.
        Wall-clock so it survives a triggerer restart in another process.
    :param poll_interval: First seconds between polls; None keeps the connection's setting.
    :param poll_max_interval: Cap of the backed-off poll interval; None keeps the connection's.
    :param max_poll_failures: Consecutive failed polls (each already retried by the hook)
        tolerated before the trigger reports an error; None keeps the default.
    :param with_results: False fires a *summary* event instead (counts, a few failures and
        pending taskUUIDs, no per-image results): a few KiB however big the batch, for whoever
        resumes to fetch the images (:func:`airflow_provider_bfl.events.fetch_results`).
    """

    def __init__(
        self,
        task_uuids: Mapping[str, int] | Iterable[str],
        bfl_conn_id: str = defaults.DEFAULT_CONN_ID,
        deadline: float | None = None,
        poll_interval: float | None = None,
        poll_max_interval: float | None = None,
        max_poll_failures: int | None = None,
        with_results: bool = True,
    ) -> None:
        super().__init__()
        self.task_uuids = expected_images(task_uuids)
        self.bfl_conn_id = bfl_conn_id
        self.deadline = None if deadline is None else float(deadline)
        self.poll_interval = poll_interval
        self.poll_max_interval = poll_max_interval
        self.max_poll_failures = max_poll_failures
        self.with_results = bool(with_results)
        #: Where each task stands; the hook updates these in place, so they outlive a failed poll
        #: and tell ``on_kill`` which tasks were still running.
        self.statuses: dict[str, TaskStatus] = {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "task_uuids": dict(self.task_uuids),
            "bfl_conn_id": self.bfl_conn_id,
            "deadline": self.deadline,
            "poll_interval": self.poll_interval,
            "poll_max_interval": self.poll_max_interval,
            "max_poll_failures": self.max_poll_failures,
        }
        if not self.with_results:  # only then: a results trigger serializes as earlier versions did
            kwargs["with_results"] = False
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """
        Poll until every task is terminal, the deadline passes or polling fails; exactly one event.

        Whatever goes wrong (a missing connection, a hostile answer, a bug) becomes that one
        ``error`` event: a trigger that raises would leave the task to Airflow's generic failure,
        without the images received so far.
        """
        await _import_off_loop(RUN_MODULES)
        from airflow_provider_bfl import _paced_log, events
        from airflow_provider_bfl.models.results import TaskStatus

        self.statuses = {uuid: TaskStatus(uuid, expected_images=n) for uuid, n in self.task_uuids.items()}
        named = list(self.statuses)
        if not self.with_results and len(named) > events.DETAILED:
            named = [*named[: events.DETAILED], f"and {len(named) - events.DETAILED} more"]
        # Paced: a triggerer adopting hundreds of triggers starts them in one loop iteration.
        _paced_log.log(
            self._log_method("info"),
            "Waiting for %d Runware generation(s) on connection %r: %s",
            len(self.statuses),
            self.bfl_conn_id,
            ", ".join(named),
        )
        event = await self._wait()
        # Out before the event: Airflow closes a trigger's log once the trigger has finished.
        await _paced_log.alog(
            self._log_method("info"),
            "Runware wait ended with status %s: %s",
            event["status"],
            event["message"],
        )
        yield TriggerEvent(event)

    async def _wait(self) -> dict[str, Any]:
        from airflow_provider_bfl import _paced_log, events
        from airflow_provider_bfl.exceptions import BflError
        from airflow_provider_bfl.hooks.bfl import BflHook

        overrides = {
            "poll_interval": self.poll_interval,
            "poll_max_interval": self.poll_max_interval,
            "max_poll_failures": self.max_poll_failures,
        }
        hook = BflHook(
            self.bfl_conn_id, **{key: value for key, value in overrides.items() if value is not None}
        )
        try:
            # Shared: the process-wide poller of this event loop batches every trigger's tasks on one
            # connection pool; leaving it (also by cancellation) never disturbs the other triggers.
            await hook.apoll_until_done(self.statuses, deadline=self.deadline, shared=True)
        except BflError as error:
            _paced_log.log(
                self._log_method("error"), "Polling Runware failed: %s", error
            )  # ends many at once
            return events.from_error(
                error, list(self.statuses), self.statuses, with_results=self.with_results
            )
        except Exception as unexpected:  # never raise out of a trigger: one clean error event
            self.log.exception("Polling Runware failed unexpectedly")
            failure = BflError(f"Polling failed unexpectedly: {type(unexpected).__name__}")
            return events.from_error(
                failure, list(self.statuses), self.statuses, with_results=self.with_results
            )
        return events.from_statuses(self.statuses, with_results=self.with_results)

    def _log_method(self, level: str) -> Callable[..., object]:
        """
        ``self.log.<level>``, looked up only when the line is written (by the log writer thread):
        the first use of ``self.log`` makes Airflow open the trigger's log file, which on a busy disk
        held the triggerer's event loop for most of a second.
        """
        return lambda msg, *args: getattr(self.log, level)(msg, *args)

    async def on_kill(self) -> None:
        """
        Say which generations a user abandoned (Airflow 3.3+: mark failed / clear while deferred).

        Runware has no cancel endpoint, so nothing is called: the generations keep running and
        the ones already started are billed. Older Airflow versions never call this method.
        """
        pending = [
            uuid for uuid in self.task_uuids if uuid not in self.statuses or not self.statuses[uuid].done
        ]
        finished = [uuid for uuid in self.task_uuids if uuid not in pending]
        if not pending:  # cancelled after its last answer (the event may be on its way): nothing abandoned
            self.log.info(
                "Trigger cancelled after all %d Runware generation(s) finished; nothing was abandoned",
                len(finished),
            )
            return
        self.log.warning(
            "Deferred task killed by a user: stopped waiting for %d Runware generation(s): %s. "
            "Runware has no cancel endpoint, so they keep running and every generation already "
            "started is billed; their results stay retrievable with getResponse until they expire. "
            "Already finished: %s",
            len(pending),
            ", ".join(pending) or "none",
            ", ".join(finished) or "none",
        )
