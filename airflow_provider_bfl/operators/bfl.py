"""
:class:`BflImageInferenceOperator`: generate images with FLUX.1.1 [pro] from a DAG.

Billing safety is the point of most of this module. Every request is validated after templating
and before any HTTP call; taskUUIDs are derived from the task instance (see
:mod:`airflow_provider_bfl._identity`) and, on Airflow 3.3, also written ahead to the task state
store, so a retried or cleared task re-attaches to the generations it already paid for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_provider_bfl import _compat, events
from airflow_provider_bfl._identity import derived_task_uuid
from airflow_provider_bfl.defaults import DEFAULT_CONN_ID
from airflow_provider_bfl.exceptions import BflError, BflInvalidRequestError
from airflow_provider_bfl.links import IMAGE_LINK_XCOM_KEY, BflImageLink
from airflow_provider_bfl.models.results import TaskState, TaskStatus
from airflow_provider_bfl.operators import _requests

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_bfl._flows import SubmitOutcome
    from airflow_provider_bfl.hooks.bfl import BflHook
    from airflow_provider_bfl.models.request import ImageInferenceRequest

#: Task state store key (Airflow 3.3) holding the taskUUIDs this task instance submitted.
STATE_KEY = "bfl_task_uuids"
#: How many times a retry may replace a generation that failed in an earlier try.
MAX_GENERATIONS = 5
#: Byte outputs are fetched again for writing in chunks of this many tasks (bounded memory).
BYTES_FETCH_CHUNK = 8
_BYTE_OUTPUTS = frozenset({"base64Data", "dataURI"})
_EXTENSIONS = {"JPG": "jpg", "PNG": "png", "WEBP": "webp"}


class BflImageInferenceOperator(BaseOperator):
    """
    Submit FLUX.1.1 [pro] ``imageInference`` tasks and return one small JSON entry per image.

    Give the request as keyword parameters (``positive_prompt``, ``width``, ``height``, ``seed``,
    ``number_results``, ``output_type``, ``output_format``, ``output_quality``, ``include_cost``,
    ``ttl``, ``webhook_url``, ``upload_endpoint``, ``safety``, ``prompt_upsampling``,
    ``safety_tolerance``, ``model``, ``delivery_method``, ``task_uuid``), ``prompts=[...]`` for a
    batch sharing the other parameters, or ``request=`` as the API's own JSON object (or a list).

    :param deferrable: wait in the triggerer instead of the worker (default: ``[operators]
        default_deferrable``).
    :param wait_for_completion: False returns ``{taskUUID: numberResults}`` right after
        submitting, for a :class:`~airflow_provider_bfl.sensors.bfl.BflImageInferenceSensor`.
    :param generation_timeout: seconds to wait for all images before failing (they may still
        finish and be billed; a retry re-attaches to them).
    :param output_dir: where ``base64Data``/``dataURI`` outputs are written (a local path or an
        object storage URI). Image bytes never go to XCom or the logs, so these output types
        require it; each result then carries ``outputURI``.

    Retries never pay twice: taskUUIDs derive from the task instance, so the next try submits the
    same UUIDs and re-attaches to the generations already running or done. A generation that
    failed in an earlier try is replaced by a new one.
    """

    template_fields: Sequence[str] = (
        "positive_prompt",
        "prompts",
        "width",
        "height",
        "seed",
        "number_results",
        "output_type",
        "output_format",
        "output_quality",
        "ttl",
        "webhook_url",
        "upload_endpoint",
        "safety",
        "request",
        "output_dir",
    )
    template_fields_renderers = {"request": "json", "prompts": "json", "safety": "json"}
    operator_extra_links = (BflImageLink(),)
    ui_color = "#efe6ff"

    def __init__(
        self,
        *,
        positive_prompt: str | None = None,
        prompts: Sequence[str] | str | None = None,
        width: int | str | None = None,
        height: int | str | None = None,
        seed: int | str | None = None,
        number_results: int | str | None = None,
        output_type: str | None = None,
        output_format: str | None = None,
        output_quality: int | str | None = None,
        include_cost: bool = True,
        ttl: int | str | None = None,
        webhook_url: str | None = None,
        upload_endpoint: str | None = None,
        safety: dict[str, Any] | None = None,
        prompt_upsampling: bool | None = None,
        safety_tolerance: int | None = None,
        model: str | None = None,
        delivery_method: str | None = None,
        task_uuid: str | None = None,
        request: dict[str, Any] | list[dict[str, Any]] | str | None = None,
        bfl_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        wait_for_completion: bool = True,
        generation_timeout: float = 3600.0,
        poll_interval: float | None = None,
        output_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.positive_prompt = positive_prompt
        self.prompts = prompts
        self.width = width
        self.height = height
        self.seed = seed
        self.number_results = number_results
        self.output_type = output_type
        self.output_format = output_format
        self.output_quality = output_quality
        self.include_cost = include_cost
        self.ttl = ttl
        self.webhook_url = webhook_url
        self.upload_endpoint = upload_endpoint
        self.safety = safety
        self.prompt_upsampling = prompt_upsampling
        self.safety_tolerance = safety_tolerance
        self.model = model
        self.delivery_method = delivery_method
        self.task_uuid = task_uuid
        self.request = request
        self.bfl_conn_id = bfl_conn_id
        self.deferrable = deferrable
        self.wait_for_completion = wait_for_completion
        self.generation_timeout = generation_timeout
        self.poll_interval = poll_interval
        self.output_dir = output_dir

    @property
    def hook(self) -> BflHook:
        from airflow_provider_bfl.hooks.bfl import BflHook

        overrides = {} if self.poll_interval is None else {"poll_interval": self.poll_interval}
        return BflHook(self.bfl_conn_id, **overrides)

    # -- building the requests --------------------------------------------------------------

    def build_requests(self) -> list[ImageInferenceRequest]:
        """Validated requests from the (rendered) arguments; raises before anything is sent."""
        label = repr(self.task_id)
        try:
            keywords = {name: getattr(self, name) for name in _requests.REQUEST_KEYWORDS}
            keywords["include_cost"] = None  # an operator default, applied below
            provider = {
                key: value
                for key, value in {
                    "prompt_upsampling": self.prompt_upsampling,
                    "safety_tolerance": self.safety_tolerance,
                }.items()
                if value is not None
            }
            items = _requests.request_dicts(self.request, self.prompts, keywords, provider)
            defaults = {"include_cost": self.include_cost, "delivery_method": "async"}
            items = [_requests.with_defaults(item, defaults) for item in items]
        except BflInvalidRequestError as exc:
            raise BflInvalidRequestError(f"Task {label}: {exc.message}", parameter=exc.parameter) from None
        requests = _requests.validated(items, label)
        self._explicit_uuids = {
            r.task_uuid for r, item in zip(requests, items, strict=True) if _requests.has_task_uuid(item)
        }
        needs_bytes_home = [r for r in requests if r.output_type in _BYTE_OUTPUTS]
        if needs_bytes_home and not self.output_dir and self.wait_for_completion:
            raise BflInvalidRequestError(
                f"Task {label}: outputType {needs_bytes_home[0].output_type!r} returns image bytes, which "
                "never go to XCom or the logs; set output_dir= to say where the files are written "
                "(or use outputType 'URL')",
                parameter="outputType",
            )
        return requests

    def _assign_task_uuids(
        self, context: Context, requests: list[ImageInferenceRequest]
    ) -> list[ImageInferenceRequest]:
        """Explicit taskUUIDs are kept; the others are remembered (3.3) or derived from the task instance."""
        remembered = self._remembered_uuids(context, len(requests))
        identity = _identity(context)
        assigned = []
        for index, request in enumerate(requests):
            if request.task_uuid in self._explicit_uuids:
                assigned.append(request)
            elif remembered:
                assigned.append(request.with_task_uuid(remembered[index]))
            else:
                identity_here = {**identity, "index": index}
                assigned.append(request.with_task_uuid(derived_task_uuid(identity_here, request.to_wire())))
        return assigned

    def _remembered_uuids(self, context: Context, count: int) -> list[str] | None:
        store = _compat.task_state_store(context)
        if store is None:
            return None
        try:
            value = store.get(STATE_KEY)
        except Exception as exc:  # the store is an optimisation over derived UUIDs, never a blocker
            self.log.warning("Could not read the task state store (%s); using derived taskUUIDs", exc)
            return None
        if isinstance(value, list) and len(value) == count and all(isinstance(v, str) for v in value):
            self.log.info("Re-attaching to the %d taskUUID(s) an earlier try recorded", count)
            return value
        return None

    def _remember_uuids(self, context: Context, requests: Sequence[ImageInferenceRequest]) -> None:
        store = _compat.task_state_store(context)
        if store is None:
            return
        try:
            store.set(STATE_KEY, [request.task_uuid for request in requests])
        except Exception as exc:
            self.log.warning(
                "Could not write the task state store (%s); retries rely on derived taskUUIDs", exc
            )

    # -- submitting -------------------------------------------------------------------------

    def _submit(
        self, context: Context, hook: BflHook, requests: list[ImageInferenceRequest]
    ) -> tuple[list[ImageInferenceRequest], SubmitOutcome]:
        """
        Submit, re-attaching to what earlier tries submitted; replace generations that failed before.

        Returns the requests as finally submitted (some may have a new generation's taskUUID).
        """
        identity = _identity(context)
        generation = dict.fromkeys(range(len(requests)), 0)
        to_send = list(range(len(requests)))
        outcome: SubmitOutcome | None = None
        for _ in range(MAX_GENERATIONS):
            self._remember_uuids(context, requests)
            batch = hook.submit([requests[index] for index in to_send])
            outcome = batch if outcome is None else _merged(outcome, batch)
            failed_before = self._failed_in_earlier_try(hook, batch) if batch.reattached else set()
            to_send = [index for index in to_send if requests[index].task_uuid in failed_before]
            if not to_send:
                break
            for index in to_send:
                old = requests[index]
                if old.task_uuid in self._explicit_uuids:
                    raise BflInvalidRequestError(
                        f"Task {self.task_id!r}: taskUUID {old.task_uuid} was given explicitly and its "
                        "generation already failed; give a new taskUUID to generate again",
                        parameter="taskUUID",
                        task_uuid=old.task_uuid,
                    )
                generation[index] += 1
                fresh = derived_task_uuid({**identity, "index": index}, old.to_wire(), generation[index])
                self.log.warning(
                    "Generation %s failed in an earlier try; submitting a replacement as %s",
                    old.task_uuid,
                    fresh,
                )
                requests[index] = old.with_task_uuid(fresh)
                outcome.statuses.pop(old.task_uuid, None)
                outcome.reattached.remove(old.task_uuid)
        assert outcome is not None
        return requests, outcome

    def _failed_in_earlier_try(self, hook: BflHook, outcome: SubmitOutcome) -> set[str]:
        expected = {uuid: outcome.statuses[uuid].expected_images for uuid in outcome.reattached}
        statuses = hook.get_status(expected)
        for uuid, status in statuses.items():
            outcome.statuses[uuid] = status
        return {uuid for uuid, status in statuses.items() if status.state is TaskState.ERROR}

    # -- the task ---------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        requests = self._assign_task_uuids(context, self.build_requests())
        self._requests_by_uuid = {request.task_uuid: request for request in requests}
        images = sum(request.number_results for request in requests)
        self.log.info("Submitting %d generation(s), %d image(s)", len(requests), images)

        hook = self.hook
        try:
            requests, outcome = self._submit(context, hook, requests)
        finally:
            hook.close()
        self._requests_by_uuid = {request.task_uuid: request for request in requests}
        task_uuids = {r.task_uuid: r.number_results for r in requests if r.task_uuid not in outcome.rejected}
        context["ti"].xcom_push(key="task_uuids", value=task_uuids)
        # Airflow resolves extra links whenever the task stops (also to defer): give it a value.
        context["ti"].xcom_push(key=IMAGE_LINK_XCOM_KEY, value="")
        if outcome.reattached:
            self.log.info("Re-attached to %d generation(s) already submitted", len(outcome.reattached))
        if outcome.rejected:
            raise _rejected_error(self.task_id, outcome)
        if not self.wait_for_completion:
            return task_uuids

        pending = outcome.pending
        if pending and self.deferrable:
            self._defer(task_uuids)
        hook = self.hook
        try:
            statuses = hook.poll_until_done(outcome.statuses, timeout=self.generation_timeout)
        finally:
            hook.close()
        return self._finish(context, events.from_statuses(statuses))

    def _defer(self, task_uuids: dict[str, int]) -> None:
        from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger

        self.log.info("Deferring while %d generation(s) run", len(task_uuids))
        self.defer(
            trigger=BflImageInferenceTrigger(
                task_uuids=task_uuids,
                bfl_conn_id=self.bfl_conn_id,
                deadline=time.time() + self.generation_timeout,
                poll_interval=self.poll_interval,
            ),
            method_name="execute_complete",
            # The trigger reports its own deadline; Airflow's timeout is only the backstop.
            timeout=timedelta(seconds=self.generation_timeout + 300),
        )

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        event = events.validate(event)
        # A resumed task is a fresh operator instance: rebuild the requests (same order as the
        # taskUUIDs in the event) for the output formats and the summary.
        requests = self.build_requests()
        if len(requests) == len(event["task_uuids"]):
            self._requests_by_uuid = dict(zip(event["task_uuids"], requests, strict=True))
        return self._finish(context, event)

    def _finish(self, context: Context, event: dict[str, Any]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = list(event["results"])
        if event["status"] != events.SUCCESS:
            if results:
                context["ti"].xcom_push(key="partial_results", value=results)
                self.log.warning("Kept %d image(s) that did arrive (XCom 'partial_results')", len(results))
            error = events.error_for(event)
            raise type(error)(
                f"Task {self.task_id!r}: {error.message}", code=error.code, task_uuid=error.task_uuid
            )
        if self.output_dir and any(self._output_type_of(entry) in _BYTE_OUTPUTS for entry in results):
            results = self._write_byte_outputs(results)
        if results and results[0].get("imageURL"):
            context["ti"].xcom_push(key=IMAGE_LINK_XCOM_KEY, value=results[0]["imageURL"])
        self._log_summary(results)
        return results

    # -- results ----------------------------------------------------------------------------

    def _output_type_of(self, entry: dict[str, Any]) -> str:
        request = getattr(self, "_requests_by_uuid", {}).get(entry.get("taskUUID"))
        if request is not None:
            return request.output_type
        return "URL" if entry.get("imageURL") else (self.output_type or "URL")

    def _write_byte_outputs(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Fetch base64/dataURI images again (they are never in events or XCom) and write them."""
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        assert self.output_dir is not None
        root = ObjectStoragePath(self.output_dir)
        formats = {
            uuid: request.output_format for uuid, request in getattr(self, "_requests_by_uuid", {}).items()
        }
        uuids = list(dict.fromkeys(entry["taskUUID"] for entry in results))
        written: dict[str, str] = {}
        hook = self.hook
        try:
            for start in range(0, len(uuids), BYTES_FETCH_CHUNK):
                chunk = uuids[start : start + BYTES_FETCH_CHUNK]
                statuses: dict[str, TaskStatus] = hook.get_status(chunk)
                for status in statuses.values():
                    for result in status.results:
                        data = result.image_bytes()
                        if data is None or result.image_uuid is None:
                            continue
                        extension = _EXTENSIONS.get(formats.get(status.task_uuid, "JPG"), "jpg")
                        target = root / status.task_uuid / f"{result.image_uuid}.{extension}"
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(data)
                        written[result.image_uuid] = str(target)
        finally:
            hook.close()
        self.log.info("Wrote %d image file(s) under %s", len(written), self.output_dir)
        return [
            {**entry, "outputURI": written[entry["imageUUID"]]}
            if entry.get("imageUUID") in written
            else entry
            for entry in results
        ]

    def _log_summary(self, results: list[dict[str, Any]]) -> None:
        requests = getattr(self, "_requests_by_uuid", {})
        costs = [entry["cost"] for entry in results if isinstance(entry.get("cost"), int | float)]
        for entry in results:
            request = requests.get(entry.get("taskUUID"))
            size = f"{request.width}x{request.height}" if request else "?"
            where = entry.get("outputURI") or entry.get("imageURL") or "-"
            self.log.info(
                "image %s  %s  seed=%s  cost=%s  %s",
                entry.get("imageUUID"),
                size,
                entry.get("seed"),
                entry.get("cost"),
                where,
            )
        if costs:
            self.log.info("Generated %d image(s); total cost %.4f USD", len(results), sum(costs))


def _identity(context: Context) -> dict[str, Any]:
    ti = context["ti"]
    return {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": ti.map_index}


def _merged(first: SubmitOutcome, second: SubmitOutcome) -> SubmitOutcome:
    first.accepted.extend(second.accepted)
    first.reattached.extend(uuid for uuid in second.reattached if uuid not in first.reattached)
    first.rejected.update(second.rejected)
    first.statuses.update(second.statuses)
    return first


def _rejected_error(task_id: str, outcome: SubmitOutcome) -> BflError:
    first = next(iter(outcome.rejected.values()))
    details = "; ".join(f"{uuid}: {error}" for uuid, error in outcome.rejected.items())
    running = len(outcome.accepted) + len(outcome.reattached)
    message = f"Task {task_id!r}: the API refused {len(outcome.rejected)} request(s): {details}." + (
        f" {running} other generation(s) were accepted; a retry re-attaches to them." if running else ""
    )
    return type(first)(message, code=first.code, parameter=first.parameter, task_uuid=first.task_uuid)
