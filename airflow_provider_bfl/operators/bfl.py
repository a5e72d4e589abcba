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
from airflow_provider_bfl.models.request import BYTE_OUTPUTS
from airflow_provider_bfl.models.results import TaskState
from airflow_provider_bfl.operators import _requests

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_bfl._flows import SubmitOutcome
    from airflow_provider_bfl.hooks.bfl import BflHook
    from airflow_provider_bfl.models.request import ImageInferenceRequest
    from airflow_provider_bfl.storage.landing import ImageLander

#: Task state store key (Airflow 3.3) holding the taskUUIDs this task instance submitted.
STATE_KEY = "bfl_task_uuids"
#: How many times a retry may replace a generation that failed in an earlier try.
MAX_GENERATIONS = 5
#: FLUX.1.1 [pro] on Runware, per image (the budget guard's estimate; the API reports the real cost).
PRICE_PER_IMAGE_USD = 0.04


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
    :param destination: where the images are landed (an ``ObjectStoragePath`` URI: ``file://``,
        ``s3://`` or any scheme an installed provider registers; templated), under
        ``{destination}/{dag_id}/{run_id}/{taskUUID}/{imageUUID}.{ext}``. Each result then carries
        ``storedURI``, ``sha256``, ``bytes``, ``contentType``, ``format``, ``width``, ``height``.
        Required for ``base64Data``/``dataURI`` outputs: image bytes never go to XCom or the logs.
    :param destination_conn_id: connection for the destination's storage (e.g. ``aws_default``).
    :param upload_to: an ``s3://bucket/prefix``: each request gets a presigned PUT URL as its
        ``uploadEndpoint`` so Runware uploads the image itself; the task then checks it arrived.
    :param max_images: refuse (before sending anything) a batch that would make more images.
    :param max_cost: refuse a batch whose estimated cost (``price_per_image`` each) is higher.

    Landing a destination's files also emits an asset event for every ``Asset`` in ``outlets``
    (one for ``destination`` is added when it is a plain URI), and OpenLineage output datasets.

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
        "destination",
        "upload_to",
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
        destination: str | None = None,
        destination_conn_id: str | None = None,
        landing_concurrency: int = 4,
        upload_to: str | None = None,
        upload_conn_id: str | None = "aws_default",
        upload_timeout: float = 300.0,
        max_images: int | None = None,
        max_cost: float | None = None,
        price_per_image: float = PRICE_PER_IMAGE_USD,
        **kwargs: Any,
    ) -> None:
        if destination and "outlets" not in kwargs and _is_plain_uri(destination):
            from airflow.providers.common.compat.sdk import Asset

            kwargs["outlets"] = [Asset(destination)]
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
        self.destination = destination
        self.destination_conn_id = destination_conn_id
        self.landing_concurrency = landing_concurrency
        self.upload_to = upload_to
        self.upload_conn_id = upload_conn_id
        self.upload_timeout = upload_timeout
        self.max_images = max_images
        self.max_cost = max_cost
        self.price_per_image = price_per_image

    @property
    def hook(self) -> BflHook:
        from airflow_provider_bfl.hooks.bfl import BflHook

        overrides = {} if self.poll_interval is None else {"poll_interval": self.poll_interval}
        return BflHook(self.bfl_conn_id, **overrides)

    # -- building the requests --------------------------------------------------------------

    def build_requests(self) -> list[ImageInferenceRequest]:
        """Validated requests from the (rendered) arguments; raises before anything is sent."""
        label = repr(self.task_id)
        if not self.generation_timeout or float(self.generation_timeout) <= 0:
            raise BflInvalidRequestError(
                f"Task {label}: generation_timeout must be a positive number of seconds, got {self.generation_timeout!r}",
                parameter="generation_timeout",
            )
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
        needs_bytes_home = [r for r in requests if r.output_type in BYTE_OUTPUTS]
        if needs_bytes_home and not self.destination and self.wait_for_completion:
            raise BflInvalidRequestError(
                f"Task {label}: outputType {needs_bytes_home[0].output_type!r} returns image bytes, which "
                "never go to XCom or the logs; set destination= to say where the files are written "
                "(or use outputType 'URL')",
                parameter="outputType",
            )
        if self.upload_to:
            from airflow_provider_bfl.storage.presigned import split_s3_uri

            split_s3_uri(self.upload_to)
            several = [r for r in requests if r.number_results > 1 or r.upload_endpoint]
            if several:
                raise BflInvalidRequestError(
                    f"Task {label}: upload_to gives each request one uploadEndpoint, so every request needs "
                    f"numberResults 1 and no uploadEndpoint of its own (taskUUID {several[0].task_uuid})",
                    parameter="numberResults",
                )
        _requests.check_budget(
            requests,
            max_images=self.max_images,
            max_cost=self.max_cost,
            price_per_image=self.price_per_image,
            task_label=label,
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
            batch = hook.submit([self._outgoing(context, requests[index]) for index in to_send])
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

    def _outgoing(self, context: Context, request: ImageInferenceRequest) -> ImageInferenceRequest:
        """
        The request as sent: with a presigned ``uploadEndpoint`` when ``upload_to`` is set.

        Added only here, after the taskUUID is fixed: a presigned URL differs on every try and
        must not feed into the derived taskUUID.
        """
        if not self.upload_to:
            return request
        from airflow_provider_bfl.operators import _landing
        from airflow_provider_bfl.storage.presigned import presigned_put_url

        lander = self._lander(context, self.upload_to, self.upload_conn_id)
        try:
            target = _landing.upload_target(lander, request)
        finally:
            lander.close()
        bucket, _, key = str(target.path).partition("/")
        url = presigned_put_url(bucket, key, aws_conn_id=self.upload_conn_id)
        return type(request).model_validate({**request.to_wire(), "uploadEndpoint": url})

    def _failed_in_earlier_try(self, hook: BflHook, outcome: SubmitOutcome) -> set[str]:
        expected = {uuid: outcome.statuses[uuid].expected_images for uuid in outcome.reattached}
        statuses = hook.get_status(expected)
        for uuid, status in statuses.items():
            outcome.statuses[uuid] = status
        return {uuid for uuid, status in statuses.items() if status.state is TaskState.ERROR}

    # -- the task ---------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        # Airflow resolves extra links whenever the task stops (to defer, or on an early failure).
        context["ti"].xcom_push(key=IMAGE_LINK_XCOM_KEY, value="")
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
        from airflow_provider_bfl.operators import _landing

        ti = context["ti"]
        results: list[dict[str, Any]] = list(event["results"])
        requests = getattr(self, "_requests_by_uuid", {})
        failures: list[tuple[Any, BflError]] = []
        if results and (self.destination or self.upload_to):
            # Land what arrived even when a sibling failed: it is paid for, keep it durable.
            results, failures = self._store(context, results, requests)
        cost = _landing.total_cost(results)
        if cost is not None:
            ti.xcom_push(key="total_cost", value=cost)
        if results and results[0].get("imageURL"):
            ti.xcom_push(key=IMAGE_LINK_XCOM_KEY, value=results[0]["imageURL"])
        self._log_summary(results, cost)
        if event["status"] != events.SUCCESS or failures:
            if results:
                ti.xcom_push(key="partial_results", value=results)
                self.log.warning("Kept %d image(s) that did arrive (XCom 'partial_results')", len(results))
            raise self._failure(event, failures)
        self._emit_assets(context, results)
        return results

    def _failure(self, event: dict[str, Any], failures: list[tuple[Any, BflError]]) -> BflError:
        if event["status"] != events.SUCCESS:
            error = events.error_for(event)
        else:
            first = failures[0][1]
            details = "; ".join(str(error) for _, error in failures[:5])
            error = type(first)(f"{len(failures)} image(s) could not be stored: {details}", code=first.code)
            error.task_uuid = first.task_uuid
        return type(error)(
            f"Task {self.task_id!r}: {error.message}", code=error.code, task_uuid=error.task_uuid
        )

    def _lander(self, context: Context, destination: str, conn_id: str | None) -> ImageLander:
        from airflow_provider_bfl.storage.landing import ImageLander

        ti = context["ti"]
        return ImageLander(
            destination,
            conn_id=conn_id,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            concurrency=self.landing_concurrency,
        )

    def _store(
        self, context: Context, results: list[dict[str, Any]], requests: dict[str, ImageInferenceRequest]
    ) -> tuple[list[dict[str, Any]], list[tuple[Any, BflError]]]:
        from airflow_provider_bfl.operators import _landing

        if self.upload_to:
            with self._lander(context, self.upload_to, self.upload_conn_id) as lander:
                records, failures = _landing.verify_uploads(lander, results, requests, self.upload_timeout)
            self._stored_root = lander.root
            self.log.info("Verified %d upload(s) under %s", len(records), lander.root)
            return records, failures
        assert self.destination is not None
        hook = self.hook
        try:
            with self._lander(context, self.destination, self.destination_conn_id) as lander:
                records, failures = _landing.land(lander, hook, results, requests)
        finally:
            hook.close()
        self._stored_root = lander.root
        self.log.info("Landed %d image(s) under %s (%d failed)", len(records), lander.root, len(failures))
        return records, failures

    def _emit_assets(self, context: Context, results: list[dict[str, Any]]) -> None:
        stored = [entry["storedURI"] for entry in results if entry.get("storedURI")]
        if not stored:
            return
        from airflow.providers.common.compat.sdk import Asset

        extra: dict[str, Any] = {
            "images": len(stored),
            "storedURIs": stored[:100],
            "sha256": [str(entry.get("sha256")) for entry in results][:100],
        }
        for outlet in self.outlets:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = extra

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Where the images were stored, as an OpenLineage output dataset (when that provider is installed)."""
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        root = getattr(self, "_stored_root", None)
        if root is None:
            return OperatorLineage()
        if root.protocol in ("", "file", "local"):
            namespace, name = "file", str(root.path)
        else:
            namespace, name = (
                f"{root.protocol}://{str(root.path).partition('/')[0]}",
                str(root.path).partition("/")[2],
            )
        return OperatorLineage(outputs=[Dataset(namespace=namespace, name=name or "/")])

    # -- results ----------------------------------------------------------------------------

    def _log_summary(self, results: list[dict[str, Any]], cost: float | None) -> None:
        requests = getattr(self, "_requests_by_uuid", {})
        for entry in results:
            request = requests.get(entry.get("taskUUID"))
            size = f"{request.width}x{request.height}" if request else "?"
            where = entry.get("storedURI") or entry.get("imageURL") or "-"
            self.log.info(
                "image %s  %s  seed=%s  cost=%s  %s",
                entry.get("imageUUID"),
                size,
                entry.get("seed"),
                entry.get("cost"),
                where,
            )
        if cost is not None:
            self.log.info("Generated %d image(s); total cost %.4f USD", len(results), cost)


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


def _is_plain_uri(value: str) -> bool:
    """A literal ``scheme://...`` (not a template), usable as an Asset URI at parse time."""
    return "{{" not in value and "://" in value
