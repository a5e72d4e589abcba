"""
:class:`BflImageInferenceSensor`: waits for FLUX generations submitted by another task.

It only polls (getResponse), so a retry or a reschedule can never pay for a generation twice. The
module stays light to import (DAG parsing imports it constantly): the hook, its HTTP client and the
trigger are imported when the sensor runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import conf  # airflow.sdk.conf is 3.2+
from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_bfl import defaults, events
from airflow_provider_bfl._rendered import decode_rendered, looks_like_literal
from airflow_provider_bfl._task_uuids import expected_images
from airflow_provider_bfl.exceptions import BflError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_bfl.hooks.bfl import BflHook
    from airflow_provider_bfl.models.status import TaskStatus

#: How much longer the deferral may last than the trigger's own deadline, so the trigger reports a
#: timeout (with the images received so far) before Airflow gives up on it.
DEFER_TIMEOUT_GRACE = timedelta(minutes=5)

#: XCom key of the images that arrived before a failure or timeout (the operator uses the same key).
PARTIAL_RESULTS_XCOM_KEY = "partial_results"


def normalize_task_uuids(value: Any) -> dict[str, int]:
    """
    ``{taskUUID: images expected}`` from whatever templating or an upstream XCom produced.

    Rendered text is decoded by the provider's one decoder (JSON, or the Python repr a non-native
    Jinja render makes of an XCom list or dict); a bare string is one taskUUID. The result is
    checked by the one ``{taskUUID: count}`` validator. A list means one image per task: pass the
    mapping when tasks use ``numberResults`` > 1, or the sensor reports success as soon as the
    first image of each task is ready.
    """
    parsed = value
    if isinstance(value, str):
        parsed = decode_rendered(value, parameter="task_uuids") if looks_like_literal(value) else [value]
    if isinstance(parsed, str):  # a JSON-quoted single UUID
        parsed = [parsed]
    return expected_images(parsed, parameter="task_uuids", shown=value)


def plan_handoff(value: Any) -> dict[str, Any] | None:
    """
    The operator's ``task_uuids`` XCom for a batch above its ``manifest_threshold`` (where its plan
    is saved: ``{"planURI", "conn_id", "destination", ...}``), decoded like ``task_uuids``; else None.
    """
    from airflow_provider_bfl.exceptions import BflInvalidRequestError
    from airflow_provider_bfl.plan import is_located

    parsed = value
    if isinstance(value, str) and looks_like_literal(value):
        parsed = decode_rendered(value, parameter="task_uuids")
    if not is_located(parsed):
        return None
    if not isinstance(parsed.get("destination"), str) or not parsed["destination"]:
        raise BflInvalidRequestError(
            f"task_uuids names a saved plan ({parsed['planURI']!r:.200}) but no destination to write "
            "the results' manifest to: pass the operator's task_uuids XCom as it is",
            parameter="task_uuids",
        )
    return dict(parsed)


def _skip_exception() -> type[Exception]:
    try:
        from airflow.sdk.exceptions import AirflowSkipException
    except ImportError:  # Airflow 3.1 keeps it in core
        from airflow import exceptions

        return exceptions.AirflowSkipException
    return AirflowSkipException


class BflImageInferenceSensor(BaseSensorOperator):
    """
    Wait for FLUX.1.1 [pro] generations that another task submitted, and return their images.

    Pairs with ``BflImageInferenceOperator(wait_for_completion=False)``: feed its XCom (the
    taskUUIDs, or ``{taskUUID: numberResults}``) to ``task_uuids``. Returns the same XCom as the
    operator: one small dict per image (taskUUID, imageUUID, imageURL, seed, cost, NSFWContent),
    never image bytes. For a batch above the operator's ``manifest_threshold`` that XCom names
    the batch's saved plan instead; the sensor then writes the records to its own manifest
    beside it and returns (and pushes as XCom ``manifest``) the ManifestRef, and its trigger
    event carries counts only: XCom and events stay a few KiB whatever the batch.

    A generation that fails or is moderated fails the sensor with the matching
    :class:`~airflow_provider_bfl.exceptions.BflError` (naming the taskUUID and the API's code) as
    soon as the other generations of the batch have finished, instead of waiting out ``timeout``;
    the images that did arrive go to the XCom ``partial_results``. With ``soft_fail`` (or
    ``never_fail``) the task is skipped instead. Polling errors that outlive the hook's retries
    fail the poke; Airflow's task retries are safe, as the sensor never submits anything.

    :param task_uuids: The tasks to wait for (templated): a taskUUID, a list of them, a mapping
        ``{taskUUID: numberResults}``, or a JSON string (or the Python repr a non-native Jinja
        render makes) of one of those. Use the mapping when
        tasks make more than one image, so the sensor waits for all of them.
    :param bfl_conn_id: The ``bfl`` connection.
    :param deferrable: Wait in the triggerer instead of holding a worker slot.
    :param poll_interval: Seconds between polls in deferrable mode (first interval of the capped
        backoff); None keeps the connection's setting. Poke and reschedule modes use
        ``poke_interval``.
    """

    template_fields: Sequence[str] = ("task_uuids", "bfl_conn_id")
    ui_color = "#d9e8f5"

    def __init__(
        self,
        *,
        task_uuids: Any,
        bfl_conn_id: str = defaults.DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.task_uuids = task_uuids
        self.bfl_conn_id = bfl_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self._hook: BflHook | None = None
        #: Poke mode only: statuses kept between pokes, so finished tasks are not asked about again.
        self._statuses: dict[str, TaskStatus] | None = None

    @property
    def hook(self) -> BflHook:
        if self._hook is None:
            from airflow_provider_bfl.hooks.bfl import BflHook

            self._hook = BflHook(self.bfl_conn_id)
        return self._hook

    def execute(self, context: Context) -> Any:
        if self.deferrable:
            self._defer()
        try:
            return super().execute(context)
        finally:
            if self._hook is not None:
                self._hook.close()

    def _expected(self) -> tuple[dict[str, int], dict[str, Any] | None]:
        """``{taskUUID: images}`` to wait for, and the plan hand-off they came from (big batches)."""
        handoff = plan_handoff(self.task_uuids)
        if handoff is None:
            return normalize_task_uuids(self.task_uuids), None
        from airflow_provider_bfl.plan import GenerationPlan

        return GenerationPlan.load(handoff["planURI"], conn_id=handoff.get("conn_id")).expected, handoff

    def poke(self, context: Context) -> PokeReturnValue:
        """One getResponse round for the tasks not finished yet."""
        expected, handoff = self._expected()
        statuses = self._statuses_to_poll(expected)
        pending = {task_uuid: status for task_uuid, status in statuses.items() if not status.done}
        try:
            self.hook.get_status(pending)
        except BflError as error:
            self._fail(error, context, events.results_of(statuses), handoff)
        if not self.reschedule:
            self._statuses = statuses
        event = events.from_statuses(statuses, with_results=handoff is None)
        running = [task_uuid for task_uuid, status in statuses.items() if not status.done]
        if running:
            self.log.info(
                "%d of %d generation(s) still running (%d image(s) received, %d failed): %s",
                len(running),
                len(statuses),
                sum(len(status.results) for status in statuses.values()),
                sum(status.error is not None for status in statuses.values()),
                ", ".join(event["pending"])
                + ("" if handoff is None or len(running) <= events.DETAILED else " ..."),
            )
            return PokeReturnValue(is_done=False)
        results = events.results_of(statuses) if handoff is None else events.drain_results(statuses)
        return PokeReturnValue(is_done=True, xcom_value=self._results(context, event, results, handoff))

    def _statuses_to_poll(self, expected: dict[str, int]) -> dict[str, TaskStatus]:
        """Poke mode resumes from the last poke; reschedule mode (a fresh instance) starts over."""
        kept = self._statuses
        if kept is not None and not self.reschedule and kept.keys() == expected.keys():
            return kept
        from airflow_provider_bfl.models.status import TaskStatus

        return {task_uuid: TaskStatus(task_uuid, expected_images=n) for task_uuid, n in expected.items()}

    def _defer(self) -> NoReturn:
        from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger

        expected, handoff = self._expected()
        trigger = BflImageInferenceTrigger(
            task_uuids=expected,
            bfl_conn_id=self.bfl_conn_id,
            deadline=time.time() + self.timeout,
            poll_interval=self.poll_interval,
            with_results=handoff is None,
        )
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) + DEFER_TIMEOUT_GRACE,
        )

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """Resume from the trigger: the images on success, the error the event stands for otherwise."""
        try:
            checked = events.validate(event)
        except BflError as error:
            self._fail(error, context)
        if not events.is_summary(checked):
            return self._results(context, checked, list(checked["results"]), None)
        expected, handoff = self._expected()
        try:  # a summary event has counts only: the images come from the API, a chunk per request
            fetched, results = events.fetch_results(
                self.hook, expected, chunk=self.hook.settings.max_tasks_per_request
            )
        finally:
            self.hook.close()
        final = fetched.event() if checked["status"] == events.SUCCESS else checked
        return self._results(context, final, results, handoff)

    def _results(
        self,
        context: Context,
        event: dict[str, Any],
        results: list[dict[str, Any]],
        handoff: dict[str, Any] | None,
    ) -> Any:
        """The images (or, for a plan hand-off, the ref of their manifest), or the event's error."""
        if event["status"] != events.SUCCESS:
            self._fail(events.error_for(event), context, results, handoff)
        self.log.info("%s", event["message"])
        if handoff is None:
            return results
        ref = self._manifest(context, results, handoff)
        context["ti"].xcom_push(key="manifest", value=ref)
        return ref

    def _manifest(self, context: Context, results: Sequence[dict[str, Any]], handoff: dict[str, Any]) -> Any:
        """Write ``results`` to this sensor's manifest beside the plan's destination; its ref."""
        from airflow_provider_bfl.storage.manifest import manifest_uri, write_manifest

        ti = context["ti"]
        uri = manifest_uri(
            handoff["destination"],
            ti.dag_id,
            ti.run_id,
            ti.task_id,
            -1 if ti.map_index is None else ti.map_index,
        )
        return write_manifest(results, uri, conn_id=handoff.get("conn_id"))

    def _fail(
        self,
        error: BflError,
        context: Context,
        results: Sequence[dict[str, Any]] = (),
        handoff: dict[str, Any] | None = None,
    ) -> NoReturn:
        """
        Raise ``error``, or skip the task when ``soft_fail``/``never_fail`` asks for it.

        Images that did arrive are paid for: they go to the XCom ``partial_results`` (as the
        operator does) so nobody generates them again. Airflow's sensor machinery skips only on
        its own timeout and fail exceptions, so an API error would otherwise end FAILED despite
        ``soft_fail``.
        """
        ti = context.get("ti")
        if results and ti is not None:
            kept = list(results) if handoff is None else self._manifest(context, results, handoff)
            ti.xcom_push(key=PARTIAL_RESULTS_XCOM_KEY, value=kept)
            self.log.warning(
                "Kept %d image(s) that did arrive (already billed) in XCom %r",
                len(results),
                PARTIAL_RESULTS_XCOM_KEY,
            )
        if self.soft_fail or self.never_fail:
            flag = "soft_fail" if self.soft_fail else "never_fail"
            raise _skip_exception()(f"Skipping ({flag} is set): {error}") from error
        raise error
