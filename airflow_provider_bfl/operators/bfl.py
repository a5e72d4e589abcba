"""
:class:`BflImageInferenceOperator`: generate images with FLUX.1.1 [pro] from a DAG.

Billing safety is the point of most of this module. Every request is validated after templating
and before any HTTP call; taskUUIDs are derived from the task instance (see
:mod:`airflow_provider_bfl._identity`) and, on Airflow 3.3, also written ahead to the task state
store, so a retried or cleared task re-attaches to the generations it already paid for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_provider_bfl import _compat, _templating, events
from airflow_provider_bfl.defaults import DEFAULT_CONN_ID
from airflow_provider_bfl.exceptions import (
    BflError,
    BflImageExpiredError,
    BflInvalidRequestError,
    BflMalformedResponseError,
    BflReuseError,
    BflUploadMissingError,
)
from airflow_provider_bfl.links import BflImageLink
from airflow_provider_bfl.models.wire import BYTE_OUTPUTS
from airflow_provider_bfl.operators import _requests

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context

    from airflow_provider_bfl import _submission
    from airflow_provider_bfl._identity import TaskIdentity
    from airflow_provider_bfl.hooks.bfl import BflHook
    from airflow_provider_bfl.models.request import ImageInferenceRequest
    from airflow_provider_bfl.plan import GenerationPlan, PlannedGeneration
    from airflow_provider_bfl.storage.landing import ImageLander
    from airflow_provider_bfl.storage.references import Reference
    from airflow_provider_bfl.storage.reuse import ReuseIndex
    from airflow_provider_bfl.storage.reuse.fingerprints import ReuseMode

#: Task state store key (Airflow 3.3) holding the taskUUIDs this task instance submitted.
STATE_KEY = "bfl_task_uuids"
#: XCom key of the generation plan (and the records already landed) while the task is deferred.
PLAN_XCOM_KEY = "bfl_plan"
#: Landing failures that make a generation unusable: a new generation is the only way to the image.
UNUSABLE = (BflImageExpiredError, BflUploadMissingError)
#: FLUX.1.1 [pro] on Runware, per image (the budget guard's estimate; the API reports the real cost).
PRICE_PER_IMAGE_USD = 0.04
#: XCom key of the ManifestRef of a task's records (pushed whenever a destination is set).
MANIFEST_XCOM_KEY = "manifest"
#: Batches of more images than this return a ManifestRef instead of the records (the default).
MANIFEST_THRESHOLD = 100
#: Image lines a big batch logs one by one (the manifest has them all).
LOGGED_IMAGES = 20


class BflImageInferenceOperator(BaseOperator):
    """
    Submit FLUX ``imageInference`` tasks and return one small JSON entry per image.

    Any model of the registry (README, "Models"; default ``bfl:2@1``, FLUX.1.1 [pro]) is validated
    by its own rules before anything is sent.

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
    :param max_cost: refuse a batch whose estimated cost is higher (each model's price rule, see
        the README's Models section, or ``price_per_image`` each when given).
    :param reference_images: the product in the picture, for models that take references
        (Kontext, FLUX.2): an ``ObjectStoragePath`` URI (``file://``, ``s3://``), an http(s) URL,
        a local path, an upstream task's landed records (their ``storedURI``), or a list of these;
        templated and mappable. Each is checked (PNG/JPG/WEBP, size, count per model) before
        anything is sent; files go to the API as data URIs, URLs as they are. Each result records
        the references it used (``references``).
    :param reference_conn_id: connection for reading ``reference_images`` from object storage.
    :param allow_unknown_model: let a ``model`` the provider does not know yet through: only the
        platform fields are checked, the API judges the rest.
    Model-specific keywords come from the model registry (``steps``, ``cfg_scale`` for FLUX.2
    [flex]; ``raw`` for FLUX1.1 [pro] Ultra; see ``airflow_provider_bfl.models.flux``).
    :param keys: one caller key per request (e.g. SKUs), carried with each image's record into
        QA, review and the gallery. ``prompts`` may also be given as ``{key: prompt}``.
    :param image_hosts: download images only from these hosts (``"*.runware.ai"`` matches any host
        under it), redirects included; by default any host, at most a few redirects.
    :param regenerate: any non-empty text (templated, e.g. ``"{{ params.regenerate }}"``) asks for
        new images even where this task instance already has usable ones; each distinct value is
        one new set of generations (paid once), stable across that value's retries.
    :param manifest_threshold: a batch of more images than this (any batch, with 0) returns a
        ManifestRef (``{"bflManifest": uri, "images", "generations", "cost", ...}``) instead of the
        list of records: the records are a JSON Lines manifest beside the images
        (``{destination}/{dag_id}/{run_id}/_manifests/{task_id}.jsonl``) and XCom and the trigger
        event stay a few KiB whatever the batch size. Such a batch needs ``destination`` or
        ``upload_to``. With either set, XCom ``manifest`` holds the ref for a batch of any size.
        Read both shapes with :func:`airflow_provider_bfl.storage.manifest.iter_records`.
    :param reuse: pay only for what changed (templated; needs ``destination`` or ``upload_to``,
        where the index of landed images lives, ``{root}/_bfl_index/``). ``True`` or ``"seeded"``:
        a request with a seed whose generation-relevant content (model, prompt, size, seed,
        provider settings, output format and quality, reference images by content hash) matches
        an image already landed there and still stored is not sent; its records come back with
        ``reused: true``, ``cost`` 0, the original ``taskUUID``/``imageUUID``/``storedURI`` and
        ``original`` (its cost, when and by which run it was landed). ``"any"``: requests without
        a seed too (any earlier image of the same request will do). Runs racing on the same
        content share one generation: at most one pays. Default ``False``.
    :param refresh: with ``reuse``, generate these again even where usable images are indexed:
        caller keys (``keys=``/``prompts={key: ...}``) or 1-based positions, a list or one
        (templated). A non-empty ``regenerate`` refreshes every request.

    Landing a destination's files also emits an asset event for every ``Asset`` in ``outlets``
    (one for ``destination`` is added when it is a plain URI), and OpenLineage output datasets.

    Retries never pay twice: taskUUIDs derive from the deployment's namespace and the task
    instance, so the next try submits the same UUIDs and re-attaches to the generations already
    running or done. A generation an earlier try left unusable (failed, unknown to the API, its
    image URL expired before landing, its upload missing) is replaced by a new one, at most
    ``MAX_GENERATIONS`` times, with the reason and the extra cost in the log.

    Arguments that are invalid as written in the DAG file (not templated) fail the DAG's import;
    templated ones are checked after rendering, before anything is sent.
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
        "keys",
        "regenerate",
        "reuse",
        "refresh",
        "reference_images",
        "model",
        *_requests.MODEL_KEYWORDS,
        *_requests.PROVIDER_KEYWORDS,
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
        landing_concurrency: int | None = None,
        upload_to: str | None = None,
        upload_conn_id: str | None = "aws_default",
        upload_timeout: float = 300.0,
        max_images: int | None = None,
        max_cost: float | None = None,
        price_per_image: float | None = None,
        keys: Sequence[str] | str | None = None,
        regenerate: str | bool | None = None,
        image_hosts: Sequence[str] | None = None,
        reference_images: Any = None,
        reference_conn_id: str | None = None,
        allow_unknown_model: bool = False,
        manifest_threshold: int = MANIFEST_THRESHOLD,
        reuse: bool | str | None = False,
        refresh: Any = None,
        **kwargs: Any,
    ) -> None:
        for name in (*_requests.MODEL_KEYWORDS, *_requests.PROVIDER_KEYWORDS):  # the registry's keywords
            if name not in ("prompt_upsampling", "safety_tolerance"):
                setattr(self, name, kwargs.pop(name, None))
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
        self.keys = keys
        self.regenerate = regenerate
        self.image_hosts = image_hosts
        self.reference_images = reference_images
        self.reference_conn_id = reference_conn_id
        self.allow_unknown_model = allow_unknown_model
        if (
            isinstance(manifest_threshold, bool)
            or not isinstance(manifest_threshold, int)
            or manifest_threshold < 0
        ):
            raise BflInvalidRequestError(
                f"Task {self.task_id!r}: manifest_threshold must be a whole number of images >= 0 (0: always "
                f"a manifest), got {manifest_threshold!r:.60}",
                parameter="manifest_threshold",
            )
        self.manifest_threshold = manifest_threshold
        self.reuse = reuse
        self.refresh = refresh
        self._check_literal_arguments()

    @property
    def hook(self) -> BflHook:
        from airflow_provider_bfl.hooks.bfl import BflHook

        overrides = {} if self.poll_interval is None else {"poll_interval": self.poll_interval}
        return BflHook(self.bfl_conn_id, **overrides)

    # -- building the requests --------------------------------------------------------------

    def build_requests(self) -> list[ImageInferenceRequest]:
        """Validated requests from the (rendered) arguments; raises before anything is sent."""
        return self._build().requests

    def _build(self, *, check_references: bool = False) -> _Batch:
        """The validated batch; ``check_references`` reads and checks the reference images (I/O: run time only)."""
        label = repr(self.task_id)
        if not self.generation_timeout or float(self.generation_timeout) <= 0:
            raise BflInvalidRequestError(
                f"Task {label}: generation_timeout must be a positive number of seconds, got {self.generation_timeout!r}",
                parameter="generation_timeout",
            )
        try:
            items, keys = self._request_items()
        except BflInvalidRequestError as exc:
            raise exc.with_context(prefix=f"Task {label}: ") from None
        requests = _requests.validated(items, label, allow_unknown_model=self.allow_unknown_model)
        requests, checked = self._with_references(requests, label, check_references)
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
        reuse = self._reuse_policy()
        if reuse is None:  # with reuse only what is sent counts, known once the index answered
            self._check_budget(requests, checked)
        images = sum(request.number_results for request in requests)
        if images > self.manifest_threshold and not (self.destination or self.upload_to):
            raise BflInvalidRequestError(
                f"Task {label}: a batch of {images} images is above manifest_threshold="
                f"{self.manifest_threshold}, so its records are written to a manifest beside the images "
                "(XCom holds only its location), and neither destination nor upload_to is set. Set "
                "destination= (a file:// path or an object store URI such as s3://bucket/prefix) or "
                f"upload_to=, or raise manifest_threshold to {images} or more to get every record in XCom",
                parameter="destination",
            )
        explicit = [_requests.has_task_uuid(item) for item in items]
        if reuse is None:
            return _Batch(requests, explicit, keys, checked)
        from airflow_provider_bfl.operators import _reuse

        mode, refresh = reuse
        try:
            positions = _reuse.refreshed_positions(refresh, keys, len(requests))
        except BflInvalidRequestError as exc:
            raise exc.with_context(prefix=f"Task {label}: ") from None
        return _Batch(requests, explicit, keys, checked, mode, positions)

    def _check_budget(self, requests: Sequence[ImageInferenceRequest], references: Sequence[Any]) -> None:
        _requests.check_budget(
            requests,
            max_images=self.max_images,
            max_cost=self.max_cost,
            price_per_image=self.price_per_image,
            task_label=repr(self.task_id),
            references=[(reference.width, reference.height) for reference in references],
        )

    def _reuse_policy(self) -> tuple[ReuseMode, list[Any]] | None:
        """``reuse=`` and ``refresh=`` as checked (the mode, the refresh items); None when reuse is off."""
        if (self.reuse is None or self.reuse is False) and self.refresh in (None, "", [], ()):
            return None  # the default: nothing to import while a DAG file is parsed
        from airflow_provider_bfl.operators import _reuse

        label = repr(self.task_id)
        try:
            mode = _reuse.mode_of(self.reuse)
            refresh = _reuse.refresh_items(self.refresh)
        except BflInvalidRequestError as exc:
            raise exc.with_context(prefix=f"Task {label}: ") from None
        if mode == "off":
            if refresh:
                raise BflInvalidRequestError(
                    f"Task {label}: refresh={self.refresh!r:.80} regenerates images reuse would re-use, "
                    f"but reuse is {self.reuse!r:.40}: set reuse=True, 'seeded' or 'any' (or drop refresh)",
                    parameter="refresh",
                )
            return None
        if not (self.destination or self.upload_to):
            raise BflInvalidRequestError(
                f"Task {label}: reuse={self.reuse!r:.40} keeps its index of landed images in the "
                "destination, and neither destination nor upload_to is set: set destination= (a file:// "
                "path or s3://bucket/prefix) or upload_to=",
                parameter="reuse",
            )
        if not self.wait_for_completion:
            raise BflInvalidRequestError(
                f"Task {label}: reuse={self.reuse!r:.40} needs wait_for_completion=True: this task lands "
                "and indexes what it generates and re-uses, which a sensor waiting instead does not do",
                parameter="reuse",
            )
        return mode, refresh

    def _with_references(
        self, requests: list[ImageInferenceRequest], label: str, check: bool
    ) -> tuple[list[ImageInferenceRequest], list[Any]]:
        """
        The requests with ``reference_images`` in ``inputs.referenceImages`` (as locators: never bytes),
        and, when ``check``, each reference read and checked (format, size) before anything is sent.
        """
        from airflow_provider_bfl.models import registry
        from airflow_provider_bfl.storage import references

        try:
            found = references.locators(self.reference_images)
        except BflInvalidRequestError as exc:
            raise exc.with_context(prefix=f"Task {label}: ") from None
        for request in requests:  # the plan and the rendered request go to XCom: no image bytes there
            given = (request.to_wire().get("inputs") or {}).get("referenceImages") or []
            if any("://" not in item and not _is_uuid(item) for item in given):
                raise BflInvalidRequestError(
                    f"Task {label}: inputs.referenceImages holds image data (a data URI or base64); "
                    "give the file, URI or URL as reference_images= instead: image bytes never go to XCom",
                    parameter="inputs.referenceImages",
                )
        if not found:
            return requests, []
        with_refs = []
        for request in requests:
            spec = registry.spec_of(request)
            if spec is not None and not spec.takes_references:
                takers = ", ".join(air for air, s in registry.models().items() if s.takes_references)
                raise BflInvalidRequestError(
                    f"Task {label}: model {request.model} takes no reference images (reference_images "
                    f"given); models that do: {takers}",
                    parameter="reference_images",
                )
            wire = request.to_wire()
            inputs = dict(wire.get("inputs") or {})
            inputs["referenceImages"] = [*(inputs.get("referenceImages") or []), *found]
            try:
                with_refs.append(
                    registry.validate_request(
                        {**wire, "inputs": inputs}, allow_unknown_model=self.allow_unknown_model
                    )
                )
            except BflInvalidRequestError as exc:
                raise exc.with_context(prefix=f"Task {label}: reference_images: ") from None
        if not check:
            return with_refs, []
        try:
            return with_refs, references.checked(found, conn_id=self.reference_conn_id)
        except BflInvalidRequestError as exc:
            raise exc.with_context(prefix=f"Task {label}: nothing was submitted: ") from None

    def _request_items(self) -> tuple[list[dict[str, Any]], list[str | None]]:
        """The raw request objects with the operator's defaults, and one caller key per request."""
        keywords = {name: getattr(self, name) for name in _requests.REQUEST_KEYWORDS}
        keywords.update({name: getattr(self, name) for name in _requests.MODEL_KEYWORDS})
        keywords["include_cost"] = None  # an operator default, applied below
        provider = {
            name: getattr(self, name)
            for name in _requests.PROVIDER_KEYWORDS
            if getattr(self, name, None) is not None
        }
        prompts, keys_from_prompts = _requests.split_keyed_prompts(self.prompts)
        items = _requests.request_dicts(self.request, prompts, keywords, provider)
        defaults = {"include_cost": self.include_cost, "delivery_method": "async"}
        items = [_requests.with_defaults(item, defaults) for item in items]
        keys = _requests.caller_keys(self.keys, keys_from_prompts, len(items))
        return items, keys

    def _check_literal_arguments(self) -> None:
        """
        Fail the DAG's import for arguments that are invalid as written (no template in them).

        Only a batch that is entirely literal is checked here: a templated value can make any
        other one valid or invalid, so those wait for the run, where they are checked after
        rendering and before anything is sent.
        """
        names = (
            *_requests.REQUEST_KEYWORDS,
            *_requests.MODEL_KEYWORDS,
            *_requests.PROVIDER_KEYWORDS,
            "reference_images",
            "prompts",
            "request",
            "keys",
            "prompt_upsampling",
            "safety_tolerance",
        )
        reuse = (self.reuse, self.refresh, self.destination, self.upload_to)
        if any(_requests.is_templated(value) for value in reuse):
            return  # the budget, too, depends on reuse: checked once rendered
        self._reuse_policy()
        if any(_requests.is_templated(getattr(self, name)) for name in names):
            return
        self._build()

    def render_template(
        self,
        content: Any,
        context: Context,
        jinja_env: jinja2.Environment | None = None,
        seen_oids: set[int] | None = None,
    ) -> Any:
        """Text without markup is kept as written: 10,000 literal prompts are not 10,000 templates."""
        if (
            isinstance(content, str)
            and jinja_env is not None  # Airflow passes its environment down to every element
            and _templating.renders_to_itself(content, jinja_env, self.template_ext)
        ):
            return content
        return super().render_template(content, context, jinja_env, seen_oids)

    # -- the task ---------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        from airflow_provider_bfl import _submission  # task-time only: DAG parsing never needs it

        batch = self._build(check_references=True)
        self._check_destination()
        identity = self._identity(context)
        plan = _submission.assign(
            batch.requests,
            identity,
            explicit=batch.explicit,
            keys=batch.keys,
            remembered=self._remembered(context, identity, len(batch.requests)),
        )
        reused: list[dict[str, Any]] = []
        if batch.reuse is not None:
            plan, reused = self._reused(context, identity, plan, batch)
            if not plan:
                self.log.info("Nothing to send: all %d image(s) are re-used", len(reused))
                return self._finish(context, plan, events.from_statuses({}), [], reused)
        self.log.info("Submitting %d generation(s), %d image(s)", len(plan), plan.image_count)
        hook = self.hook
        try:
            submission = self._submit(context, hook, plan, identity)
        finally:
            hook.close()
        plan, outcome = submission.plan, submission.outcome
        task_uuids = self._hand_off(context, plan, outcome.rejected, reused)
        if outcome.reattached:
            self.log.info("Re-attached to %d generation(s) already submitted", len(outcome.reattached))
        if outcome.rejected:
            raise _rejected_error(self.task_id, plan, outcome)
        if not self.wait_for_completion:
            return task_uuids
        return self._wait(context, plan, outcome.statuses, kept=reused)

    def _reused(
        self, context: Context, identity: TaskIdentity, plan: GenerationPlan, batch: _Batch
    ) -> tuple[GenerationPlan, list[dict[str, Any]]]:
        """
        The plan without the requests the reuse index answers, the others under the taskUUIDs it
        fixed, and the re-used records; the budget is checked on what is left to send.
        """
        from airflow_provider_bfl.operators import _reuse

        assert batch.reuse is not None
        everything = frozenset(entry.position for entry in plan.values())
        try:
            outcome = _reuse.apply(
                plan,
                self._reuse_index(context),
                mode=batch.reuse,
                refresh=everything if identity.regenerate else batch.refresh,
                reference_hashes={reference.locator: reference.sha256 for reference in batch.references},
                owner=self._owner(context),
                first_try=_first_try(context),
                log=self.log,
                budget=lambda sent: self._check_budget(
                    [batch.requests[entry.position - 1] for entry in sent], batch.references
                ),
            )
        except BflReuseError as exc:  # the index cannot be read or written: paying for all is not the answer
            raise exc.with_context(prefix=f"Task {self.task_id!r}: nothing was submitted: ") from None
        return outcome.plan, outcome.records

    def _hand_off(
        self, context: Context, plan: GenerationPlan, rejected: Mapping[str, Any], kept: list[dict[str, Any]]
    ) -> Any:
        """
        Push (and return) XCom ``task_uuids``: what a sensor waits for.

        ``{taskUUID: numberResults}``; for a batch above ``manifest_threshold`` the plan's location
        instead (the plan is saved there first): ``{"planURI", "conn_id", "destination",
        "generations", "images"}``, which the sensor accepts as well.
        """
        from airflow_provider_bfl.plan import GenerationPlan

        submitted = GenerationPlan(entry for uuid, entry in plan.items() if uuid not in rejected)
        value: Any = submitted.expected
        if self._is_large(plan, kept):
            storage = self._storage(context)
            assert storage is not None  # _build refuses a big batch without one
            submitted.save(storage.plan, conn_id=storage.conn_id)
            value = {
                "planURI": storage.plan,
                "conn_id": storage.conn_id,
                "destination": storage.root,
                "generations": len(submitted),
                "images": submitted.image_count,
            }
        context["ti"].xcom_push(key="task_uuids", value=value)
        return value

    def _submit(
        self,
        context: Context,
        hook: BflHook,
        plan: GenerationPlan,
        identity: TaskIdentity,
        only: Sequence[str] | None = None,
    ) -> _submission.Submission:
        from airflow_provider_bfl import _submission

        return _submission.submit(
            hook,
            plan,
            identity,
            outgoing=partial(self._outgoing, context),
            remember=partial(self._remember, context, identity),
            price_per_image=self._image_price(plan),
            log=self.log,
            only=only,
            reclaim=self._reclaim(context, plan),
        )

    def _wait(
        self, context: Context, plan: GenerationPlan, statuses: Mapping[str, Any], kept: list[dict[str, Any]]
    ) -> Any:
        """Wait for ``statuses`` (in the triggerer or here), then finish with ``kept`` records."""
        expected = {uuid: plan[uuid].number_results for uuid in statuses}
        pending = [uuid for uuid, status in statuses.items() if not status.done]
        large = self._is_large(plan, kept)
        if pending and self.deferrable:
            # The plan waits in XCom (never in the trigger's kwargs); dag.test() drops resume kwargs.
            context["ti"].xcom_push(key=PLAN_XCOM_KEY, value=self._saved_plan(context, plan, kept))
            self._defer(expected, with_results=not large)
        hook = self.hook
        try:
            done = hook.poll_until_done(dict(statuses), timeout=self.generation_timeout)
        finally:
            hook.close()
        if not large:
            event = events.from_statuses(done)
            return self._finish(context, plan, event, event["results"], kept)
        event = events.from_statuses(done, with_results=False)
        return self._finish(context, plan, event, events.drain_results(done), kept)

    def _saved_plan(
        self, context: Context, plan: GenerationPlan, kept: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """
        XCom ``bfl_plan``: the plan and the records already landed, or for a big batch their locations.

        A big batch's plan was saved by :meth:`_hand_off`; its kept records (landed before a
        replacement) go to the task's manifest, which the finished task overwrites.
        """
        if not self._is_large(plan, kept):
            return {"plan": plan.to_json(), "kept": kept}
        from airflow_provider_bfl.storage.manifest import write_manifest

        storage = self._storage(context)
        assert storage is not None
        held = write_manifest(kept, storage.manifest, conn_id=storage.conn_id) if kept else []
        return {"planURI": storage.plan, "conn_id": storage.conn_id, "kept": held}

    def _defer(self, task_uuids: dict[str, int], *, with_results: bool = True) -> None:
        from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger

        self.log.info("Deferring while %d generation(s) run", len(task_uuids))
        self.defer(
            trigger=BflImageInferenceTrigger(
                task_uuids=task_uuids,
                bfl_conn_id=self.bfl_conn_id,
                deadline=time.time() + self.generation_timeout,
                poll_interval=self.poll_interval,
                with_results=with_results,
            ),
            method_name="execute_complete",
            # The trigger reports its own deadline; Airflow's timeout is only the backstop.
            timeout=timedelta(seconds=self.generation_timeout + 300),
        )

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        event = events.validate(event)
        ti = context["ti"]
        saved = (
            None
            if ti is None
            else ti.xcom_pull(task_ids=ti.task_id, key=PLAN_XCOM_KEY, map_indexes=ti.map_index)
        )
        if not isinstance(saved, Mapping):
            if event["status"] != events.SUCCESS:
                raise events.error_for(event).with_context(prefix=f"Task {self.task_id!r}: ")
            raise BflError(
                f"Task {self.task_id!r} resumed without its generation plan (XCom {PLAN_XCOM_KEY!r}; "
                "deferred by an older version of the provider?); clear the task: it re-attaches to "
                "the same generations"
            )
        from airflow_provider_bfl.plan import GenerationPlan, is_located

        if is_located(saved):
            from airflow_provider_bfl.storage.manifest import iter_records

            conn_id = saved.get("conn_id")
            plan = GenerationPlan.load(saved["planURI"], conn_id=conn_id)
            kept = [dict(record) for record in iter_records(saved.get("kept") or [], conn_id=conn_id)]
        else:
            plan = GenerationPlan.from_json(saved.get("plan"))
            kept = list(saved.get("kept") or [])
        if not events.is_summary(event):
            return self._finish(context, plan, event, list(event["results"]), kept)
        landed = {record.get("taskUUID") for record in kept}
        waited = {uuid: count for uuid, count in plan.expected.items() if uuid not in landed}
        hook = self.hook
        try:  # the event has counts only: the images come from the API, a chunk of tasks per request
            fetched, results = events.fetch_results(hook, waited, chunk=hook.settings.max_tasks_per_request)
        finally:
            hook.close()
        # A failed or timed-out wait stays failed; a success is as good as what the API says now.
        return self._finish(
            context, plan, fetched.event() if event["status"] == events.SUCCESS else event, results, kept
        )

    # -- finishing: land, replace the unusable, report ----------------------------------------

    def _finish(
        self,
        context: Context,
        plan: GenerationPlan,
        event: dict[str, Any],
        received: list[dict[str, Any]],
        kept: list[dict[str, Any]],
    ) -> Any:
        """Land the ``received`` images (those of ``event``), replace the unusable, report, return."""
        ti = context["ti"]
        foreign = sorted({str(entry.get("taskUUID")) for entry in received} - set(plan))
        if foreign:
            raise BflMalformedResponseError(
                f"Task {self.task_id!r}: the trigger reported images of taskUUID(s) not in this task's "
                f"plan: {', '.join(foreign[:5])}"
            )
        results = [_with_plan(entry, plan) for entry in received]
        failures: list[tuple[Any, BflError]] = []
        if results and (self.destination or self.upload_to):
            # Land what arrived even when a sibling failed: it is paid for, keep it durable.
            results, failures = self._store(context, results, plan)
            unusable = {entry["taskUUID"]: error for entry, error in failures if isinstance(error, UNUSABLE)}
            if (
                event["status"] == events.SUCCESS
                and failures
                and len(unusable) == len({entry["taskUUID"] for entry, _ in failures})
            ):
                return self._replace_unusable(context, plan, unusable, kept + results)
        records = sorted(kept + results, key=partial(_batch_position, plan))
        if any(entry.fingerprint for entry in plan.values()):
            self._publish(context, plan, records)
        self._report_cost(ti, plan, records)
        self._log_summary(plan, records)
        large = self._is_large(plan, records)
        storage = self._storage(context)
        if event["status"] != events.SUCCESS or failures:
            if records:
                ti.xcom_push(key="partial_results", value=self._records_or_ref(storage, records, large))
                self.log.warning("Kept %d image(s) that did arrive (XCom 'partial_results')", len(records))
            raise self._failure(plan, event, failures)
        self._emit_assets(context, records)
        if storage is None:
            return records
        ref = self._records_or_ref(storage, records, large=True)
        ti.xcom_push(key=MANIFEST_XCOM_KEY, value=ref)
        self.log.info("Wrote the manifest of %d image record(s): %s", len(records), storage.manifest)
        return ref if large else records

    def _records_or_ref(self, storage: _Storage | None, records: list[dict[str, Any]], large: bool) -> Any:
        """The records themselves, or (``large``) the ref of the task's manifest they were written to."""
        if not large:
            return records
        from airflow_provider_bfl.storage.manifest import write_manifest

        assert storage is not None
        return write_manifest(records, storage.manifest, conn_id=storage.conn_id)

    def _replace_unusable(
        self,
        context: Context,
        plan: GenerationPlan,
        unusable: Mapping[str, BflError],
        landed: list[dict[str, Any]],
    ) -> Any:
        """New generations for those whose images can no longer be had; the rest stays landed."""
        from airflow_provider_bfl import _submission

        identity = self._identity(context)
        reclaim = self._reclaim(context, plan)
        fresh = []
        for task_uuid, error in unusable.items():
            reason = (
                "has an image URL that expired before it was landed"
                if isinstance(error, BflImageExpiredError)
                else "never uploaded its image"
            )
            plan, new_uuid = _submission.replacement(
                plan,
                task_uuid,
                identity,
                reason=reason,
                price_per_image=self._image_price(plan),
                log=self.log,
                reclaim=reclaim,
            )
            fresh.append(new_uuid)
        kept = [record for record in landed if record["taskUUID"] not in unusable]
        hook = self.hook
        try:
            submission = self._submit(context, hook, plan, identity, only=fresh)
        finally:
            hook.close()
        plan, outcome = submission.plan, submission.outcome
        self._hand_off(context, plan, outcome.rejected, kept)
        if outcome.rejected:
            raise _rejected_error(self.task_id, plan, outcome)
        return self._wait(context, plan, outcome.statuses, kept)

    def _failure(
        self, plan: GenerationPlan, event: dict[str, Any], failures: list[tuple[Any, BflError]]
    ) -> BflError:
        if event["status"] != events.SUCCESS:
            error = events.error_for(event)
            labels = "; ".join(
                f"{plan[f['taskUUID']].label}: {f['code']}: {f['message']}"
                for f in event["failures"]
                if f.get("taskUUID") in plan
            )
            if labels:
                error = type(error)(
                    f"{events.failed_count(event)} of {len(plan)} generation(s) failed: {labels}",
                    code=error.code,
                    task_uuid=error.task_uuid,
                )
        else:
            first = failures[0][1]
            details = "; ".join(str(error) for _, error in failures[:5])
            error = type(first)(
                f"{len(failures)} image(s) could not be stored: {details}",
                code=first.code,
                task_uuid=first.task_uuid,
            )
        return error.with_context(prefix=f"Task {self.task_id!r}: ")

    # -- helpers of the task ----------------------------------------------------------------

    def _is_large(self, plan: GenerationPlan, kept: Sequence[Mapping[str, Any]]) -> bool:
        """
        Above ``manifest_threshold``: records travel as a manifest, the plan as a location. The
        batch's images are the plan's and those re-used (among ``kept``: not in the plan).
        """
        reused = sum(1 for record in kept if record.get("reused"))
        return plan.image_count + reused > self.manifest_threshold

    def _storage(self, context: Context) -> _Storage | None:
        """Where this task instance's manifest and plan are kept: beside its images, if it stores any."""
        from airflow_provider_bfl.plan import plan_location
        from airflow_provider_bfl.storage.manifest import manifest_uri

        root, conn_id = (
            (self.upload_to, self.upload_conn_id)
            if self.upload_to
            else (self.destination, self.destination_conn_id)
        )
        if not root:
            return None
        ti = context["ti"]
        uri = manifest_uri(
            root, ti.dag_id, ti.run_id, ti.task_id, -1 if ti.map_index is None else ti.map_index
        )
        return _Storage(root=root, manifest=uri, plan=plan_location(uri), conn_id=conn_id)

    def _identity(self, context: Context) -> TaskIdentity:
        from airflow_provider_bfl._identity import TaskIdentity
        from airflow_provider_bfl.operators._namespace import deployment_namespace

        ti = context["ti"]
        hook = self.hook
        extra = hook.get_connection(self.bfl_conn_id).extra_dejson
        return TaskIdentity(
            namespace=deployment_namespace(extra, self.bfl_conn_id),
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=-1 if ti.map_index is None else ti.map_index,
            regenerate=self._regenerate_token(),
        )

    def _regenerate_token(self) -> str:
        return "" if self.regenerate in (None, False, "", "False", "false") else str(self.regenerate)

    def _owner(self, context: Context) -> str:
        """Who claims and publishes in the reuse index: this task instance (and its regenerate token)."""
        ti = context["ti"]
        token = self._regenerate_token()
        owner = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{-1 if ti.map_index is None else ti.map_index}"
        return owner + (f"/regenerate={token}" if token else "")

    def _reuse_index(self, context: Context) -> ReuseIndex:
        """The index of landed images in this task's destination (or upload_to)."""
        from airflow_provider_bfl.storage.reuse import ReuseIndex

        storage = self._storage(context)
        assert storage is not None  # reuse is refused without a destination
        try:
            return ReuseIndex(storage.root, conn_id=storage.conn_id)
        except BflInvalidRequestError as exc:
            raise exc.with_context(prefix=f"Task {self.task_id!r}: reuse: ") from None

    def _reclaim(self, context: Context, plan: GenerationPlan) -> _submission.Reclaim | None:
        """With reuse, a replacement of an indexed generation takes the taskUUID the index answers."""
        if not any(entry.fingerprint for entry in plan.values()):
            return None
        from airflow_provider_bfl.operators import _reuse

        return _reuse.reclaimer(self._reuse_index(context), self._owner(context), _first_try(context))

    def _publish(self, context: Context, plan: GenerationPlan, records: list[dict[str, Any]]) -> None:
        """Index this task's landed generations for re-use (failing to is a warning, never an error)."""
        from airflow_provider_bfl.operators import _reuse

        ti = context["ti"]
        origin = {
            "dagId": ti.dag_id,
            "runId": ti.run_id,
            "taskId": ti.task_id,
            "mapIndex": -1 if ti.map_index is None else ti.map_index,
        }
        index = self._reuse_index(context)
        indexed = _reuse.publish(
            index, plan, records, owner=self._owner(context), origin=origin, log=self.log
        )
        if indexed:
            self.log.info("Indexed %d generation(s) for re-use under %s", indexed, index.root_uri)

    def _check_destination(self) -> None:
        from airflow_provider_bfl.storage.destination import validate_destination

        for name, uri, conn_id in (
            ("destination", self.destination, self.destination_conn_id),
            ("upload_to", self.upload_to, self.upload_conn_id),
        ):
            if uri:
                try:
                    validate_destination(uri, conn_id)
                except BflInvalidRequestError as exc:
                    raise exc.with_context(prefix=f"Task {self.task_id!r}: {name}: ") from None
        if self.destination or self.upload_to:
            from airflow_provider_bfl.storage.landing import landing_concurrency

            try:
                landing_concurrency(self.landing_concurrency)
            except BflInvalidRequestError as exc:
                raise exc.with_context(prefix=f"Task {self.task_id!r}: ") from None

    def _remembered(
        self, context: Context, identity: TaskIdentity, count: int
    ) -> dict[int, tuple[str, int]] | None:
        """The taskUUIDs (and generation numbers) an earlier try recorded (Airflow 3.3), if usable."""
        store = _compat.task_state_store(context)
        if store is None:
            return None
        try:
            value = store.get(STATE_KEY)
        except Exception as exc:  # the store is an optimisation over derived UUIDs, never a blocker
            self.log.warning("Could not read the task state store (%s); using derived taskUUIDs", exc)
            return None
        remembered = _recorded_generations(value, identity.regenerate, count)
        if remembered is not None:
            self.log.info("Re-attaching to the %d taskUUID(s) an earlier try recorded", len(remembered))
        return remembered

    def _remember(self, context: Context, identity: TaskIdentity, plan: GenerationPlan) -> None:
        store = _compat.task_state_store(context)
        if store is None:
            return
        record = {
            "regenerate": identity.regenerate,
            "generations": [[entry.task_uuid, entry.generation, entry.position] for entry in plan.values()],
        }
        try:
            store.set(STATE_KEY, record)
        except Exception as exc:
            self.log.warning(
                "Could not write the task state store (%s); retries rely on derived taskUUIDs", exc
            )

    def _outgoing(self, context: Context, entry: PlannedGeneration) -> ImageInferenceRequest:
        """
        The request as sent: with a presigned ``uploadEndpoint`` when ``upload_to`` is set.

        Added only here, after the taskUUID is fixed: a presigned URL differs on every try and
        must not feed into the derived taskUUID.
        """
        request = self._inlined(entry.request())
        if not self.upload_to:
            return request
        from airflow_provider_bfl.operators import _landing
        from airflow_provider_bfl.storage.presigned import presigned_put_url

        lander = self._lander(context, self.upload_to, self.upload_conn_id)
        try:
            target = _landing.upload_target(lander, entry)
        finally:
            lander.close()
        bucket, _, key = str(target.path).partition("/")
        url = presigned_put_url(bucket, key, aws_conn_id=self.upload_conn_id)
        return type(request).model_validate({**request.to_wire(), "uploadEndpoint": url})

    def _inlined(self, request: ImageInferenceRequest) -> ImageInferenceRequest:
        """The request with file and object-storage references as data URIs: the bytes exist only in the HTTP body."""
        inputs = request.to_wire().get("inputs") or {}
        located = inputs.get("referenceImages") or []
        from airflow_provider_bfl.storage import references

        if not any(
            isinstance(locator, str) and "://" in locator and not references.is_http(locator)
            for locator in located
        ):
            return request
        sent = [
            references.wire_value(locator, conn_id=self.reference_conn_id)
            if "://" in locator and not references.is_http(locator)
            else locator
            for locator in located
        ]
        return type(request).model_validate(
            {**request.to_wire(), "inputs": {**inputs, "referenceImages": sent}}
        )

    def _image_price(self, plan: GenerationPlan) -> float:
        """Per image, for log lines about replacements: ``price_per_image``, else the dearest model's estimate."""
        if self.price_per_image is not None:
            return float(self.price_per_image)
        from airflow_provider_bfl.models import registry

        prices = [
            spec.price(entry.width, entry.height, ())
            for entry in plan.values()
            if (spec := registry.models().get(entry.model)) is not None
        ]
        return max(prices, default=PRICE_PER_IMAGE_USD)

    def _lander(self, context: Context, destination: str, conn_id: str | None) -> ImageLander:
        from airflow_provider_bfl.storage.landing import ImageLander

        ti = context["ti"]
        return ImageLander(
            destination,
            conn_id=conn_id,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            concurrency=self.landing_concurrency,
            image_hosts=self.image_hosts,
        )

    def _store(
        self, context: Context, results: list[dict[str, Any]], plan: GenerationPlan
    ) -> tuple[list[dict[str, Any]], list[tuple[Any, BflError]]]:
        from airflow_provider_bfl.operators import _landing

        if self.upload_to:
            with self._lander(context, self.upload_to, self.upload_conn_id) as lander:
                elsewhere = _uploaded_elsewhere(lander, results, plan)
                uploaded = [entry for entry in results if entry.get("imageUUID") not in elsewhere]
                records, failures = _landing.verify_uploads(lander, uploaded, plan, self.upload_timeout)
                if elsewhere:  # re-attached: Runware uploaded it for whoever submitted it first
                    downloaded, missed = self._land(
                        lander, [e for e in results if e.get("imageUUID") in elsewhere], plan
                    )
                    records, failures = records + downloaded, failures + missed
                    self.log.info(
                        "Downloaded %d image(s) of generations first submitted by another run or try "
                        "(their uploads went there)",
                        len(downloaded),
                    )
            self.log.info("Verified %d upload(s) under %s", len(records), lander.root)
            return records, failures
        assert self.destination is not None
        with self._lander(context, self.destination, self.destination_conn_id) as lander:
            records, failures = self._land(lander, results, plan)
        self.log.info("Landed %d image(s) under %s (%d failed)", len(records), lander.root, len(failures))
        return records, failures

    def _land(
        self, lander: ImageLander, results: list[dict[str, Any]], plan: GenerationPlan
    ) -> tuple[list[dict[str, Any]], list[tuple[Any, BflError]]]:
        from airflow_provider_bfl.operators import _landing

        hook = self.hook
        try:
            return _landing.land(lander, hook, results, plan)
        finally:
            hook.close()

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

        where = self.upload_to or self.destination
        if not where:
            return OperatorLineage()
        from airflow.sdk import ObjectStoragePath

        root = ObjectStoragePath(where)
        if root.protocol in ("", "file", "local"):
            namespace, name = "file", str(root.path)
        else:
            namespace, name = (
                f"{root.protocol}://{str(root.path).partition('/')[0]}",
                str(root.path).partition("/")[2],
            )
        return OperatorLineage(outputs=[Dataset(namespace=namespace, name=name or "/")])

    # -- results ----------------------------------------------------------------------------

    def _report_cost(self, ti: Any, plan: GenerationPlan, records: list[dict[str, Any]]) -> None:
        """
        ``total_cost`` is what this run was billed; ``reused_cost`` what it did not pay again:
        re-attached explicit or shared taskUUIDs, and re-used images (their original cost).
        """
        from airflow_provider_bfl.operators import _landing

        generated = [r for r in records if not r.get("costReused") and not r.get("reused")]
        reused = [r for r in records if r.get("reused")]
        billed = _landing.total_cost(generated)
        reattached = _landing.total_cost([r for r in records if r.get("costReused")])
        saved = _landing.total_cost([{"cost": (r.get("original") or {}).get("cost")} for r in reused])
        if billed is not None:
            ti.xcom_push(key="total_cost", value=billed)
        if reattached is not None or saved is not None:
            ti.xcom_push(key="reused_cost", value=round((reattached or 0.0) + (saved or 0.0), 6))
        if reattached is not None:
            self.log.info(
                "%.4f USD of these images' cost was billed by an earlier run (re-attached, not billed again)",
                reattached,
            )
        if reused:
            self.log.info(
                "Re-used %d image(s) already landed under the destination (not generated again), saving %s",
                len(reused),
                "their cost (not recorded)" if saved is None else f"{saved:.4f} USD",
            )
        if billed is not None:
            self.log.info("Generated %d image(s); total cost %.4f USD", len(generated), billed)

    def _log_summary(self, plan: GenerationPlan, records: list[dict[str, Any]]) -> None:
        shown = records[:LOGGED_IMAGES] if self._is_large(plan, records) else records
        if len(shown) < len(records):
            self.log.info(
                "%d image(s); the first %d (the manifest lists them all):", len(records), len(shown)
            )
        for entry in shown:
            planned = plan.get(entry.get("taskUUID", ""))
            size = (
                f"{planned.width}x{planned.height}"
                if planned
                else f"{entry.get('width')}x{entry.get('height')}"
            )
            where = entry.get("storedURI") or entry.get("imageURL") or "-"
            self.log.info(
                "image %s  %s  seed=%s  cost=%s  %s%s",
                entry.get("imageUUID"),
                size,
                entry.get("seed"),
                entry.get("cost"),
                where,
                "  (re-used)" if entry.get("reused") else "",
            )


@dataclass(frozen=True)
class _Storage:
    """A task instance's manifest and saved plan, under ``root`` (its destination or upload_to)."""

    root: str
    manifest: str
    plan: str
    conn_id: str | None


@dataclass(frozen=True)
class _Batch:
    """
    The validated requests of one task, whether each taskUUID was the caller's, their keys, the
    checked references (their sha256 stands for them in reuse fingerprints) and the reuse policy.
    """

    requests: list[ImageInferenceRequest]
    explicit: list[bool]
    keys: list[str | None]
    references: list[Reference]
    #: "seeded" or "any"; None: reuse is off.
    reuse: ReuseMode | None = None
    #: 1-based positions to generate again even where the index holds usable images.
    refresh: frozenset[int] = frozenset()


def _with_plan(entry: Mapping[str, Any], plan: GenerationPlan) -> dict[str, Any]:
    """An image's record with what the plan knows of it: the prompt, the caller's key, re-use."""
    planned = plan.get(entry.get("taskUUID", ""))
    if planned is None:
        return dict(entry)
    extra: dict[str, Any] = {"prompt": planned.prompt}
    if planned.references:
        extra["references"] = list(planned.references)
    if planned.key is not None:
        extra["key"] = planned.key
    if planned.reused:
        extra["costReused"] = True
    if planned.fingerprint is not None:
        extra["fingerprint"] = planned.fingerprint
    return {**entry, **extra}


def _batch_position(plan: GenerationPlan, record: Mapping[str, Any]) -> int:
    """Where a record's request stands in the batch: a re-used one says so, the others are planned."""
    if record.get("reused"):
        return int(record.get("position") or 0)
    planned = plan.get(record.get("taskUUID", ""))
    return 0 if planned is None else planned.position


def _recorded_generations(value: Any, regenerate: str, count: int) -> dict[int, tuple[str, int]] | None:
    """
    The store's record, ``{position: (taskUUID, generation)}``, if it is this batch's (positions
    within it, the same regenerate token), else None. With reuse, only the positions sent are recorded.
    """
    if isinstance(value, list) and all(isinstance(v, str) for v in value):  # recorded by 0.1
        value = {"regenerate": "", "generations": [[v, 0] for v in value]}
    if not isinstance(value, dict) or value.get("regenerate", "") != regenerate:
        return None
    generations = value.get("generations")
    if not isinstance(generations, list):
        return None
    try:
        if all(isinstance(item, list) and len(item) == 2 for item in generations):  # before positions
            if len(generations) != count:
                return None
            generations = [
                [uuid, generation, index + 1] for index, (uuid, generation) in enumerate(generations)
            ]
        recorded = {int(position): (str(uuid), int(generation)) for uuid, generation, position in generations}
    except (TypeError, ValueError):
        return None
    if len(recorded) != len(generations) or not all(1 <= position <= count for position in recorded):
        return None
    return recorded


def _first_try(context: Context) -> bool:
    """Nothing of this task instance was submitted before (no retry, no clear)."""
    try_number = getattr(context["ti"], "try_number", None)
    return not isinstance(try_number, int) or try_number <= 1


def _uploaded_elsewhere(lander: ImageLander, results: list[dict[str, Any]], plan: GenerationPlan) -> set[str]:
    """
    The imageUUIDs of re-attached generations whose upload is not where this task asked for it:
    the generation was first submitted (and uploaded) by another run or an earlier try.
    """
    from airflow_provider_bfl.operators import _landing

    found: set[str] = set()
    for entry in results:
        planned = plan.get(str(entry.get("taskUUID")))
        if (
            planned is not None
            and planned.reattached
            and not _landing.upload_target(lander, planned).exists()
        ):
            found.add(str(entry.get("imageUUID")))
    return found


def _rejected_error(task_id: str, plan: GenerationPlan, outcome: Any) -> BflError:
    first = next(iter(outcome.rejected.values()))
    details = "; ".join(
        f"{plan[uuid].label if uuid in plan else uuid}: {error}" for uuid, error in outcome.rejected.items()
    )
    running = len(outcome.accepted) + len(outcome.reattached)
    message = f"the API refused {len(outcome.rejected)} request(s): {details}." + (
        f" {running} other generation(s) were accepted; a retry re-attaches to them." if running else ""
    )
    return type(first)(
        message, code=first.code, parameter=first.parameter, task_uuid=first.task_uuid
    ).with_context(prefix=f"Task {task_id!r}: ")


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_plain_uri(value: str) -> bool:
    """A literal ``scheme://...`` (not a template), usable as an Asset URI at parse time."""
    return "{{" not in value and "://" in value
