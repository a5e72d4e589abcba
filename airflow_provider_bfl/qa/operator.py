"""
:class:`BflImageQAOperator`: the QA step as a classic operator, fed by the landing task's XCom.

Thin by design: it renders its arguments, builds a :class:`~airflow_provider_bfl.qa.QAConfig`, and
calls :func:`~airflow_provider_bfl.qa.evaluate` and :func:`~airflow_provider_bfl.qa.apply_policies`;
every decision lives in those functions, so the TaskFlow and operator paths cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_bfl._rendered import decode_rendered
from airflow_provider_bfl.qa.config import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DOMINANT_SHARE,
    DEFAULT_MAX_DUPLICATE_DISTANCE,
    DEFAULT_MIN_BYTES,
    DEFAULT_MIN_STDDEV,
    Policy,
    QAConfig,
)
from airflow_provider_bfl.qa.enforcement import apply_policies, passed_records
from airflow_provider_bfl.qa.errors import QAFailedError, QAInputError
from airflow_provider_bfl.qa.evaluation import evaluate
from airflow_provider_bfl.qa.report import format_table
from airflow_provider_bfl.storage.manifest import (
    ManifestRef,
    first_manifest_ref,
    iter_records,
    manifest_beside,
    write_manifest,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: XCom keys besides the return value (the verdicts).
PASSED_XCOM_KEY = "passed"
VERDICTS_XCOM_KEY = "verdicts"
CONTACT_SHEET_XCOM_KEY = "contact_sheet"


class BflImageQAOperator(BaseOperator):
    """
    Check every landed image; return one verdict per image and push the passing records.

    :param images: the landed image records, usually ``images=generate.output`` of a
        :class:`~airflow_provider_bfl.operators.bfl.BflImageInferenceOperator` with ``destination=``:
        a list of dicts, or a :class:`~airflow_provider_bfl.storage.manifest.ManifestRef` (a large
        batch's records in a manifest); a mapped task's list of these is flattened; JSON or
        Python-literal text from a Jinja template is decoded.
    :param policies: per-check policies, e.g. ``{"nsfw": "fail", "near_duplicate": "off"}``.
    :param decodes: shorthand for ``policies={"decodes": ...}``; likewise ``format``,
        ``dimensions``, ``not_blank``, ``file_size``, ``nsfw``, ``near_duplicate``. A check named
        both ways is an error. Defaults: see :data:`~airflow_provider_bfl.qa.config.DEFAULT_POLICIES`.
    :param min_stddev: ``not_blank`` threshold (largest per-channel standard deviation, 0..255).
    :param max_dominant_share: ``not_blank`` threshold (share of pixels in one colour bucket).
    :param min_bytes: ``file_size`` lower bound.
    :param max_bytes: ``file_size`` upper bound.
    :param max_duplicate_distance: ``near_duplicate`` threshold (Hamming distance of 128-bit dHashes).
    :param quarantine_prefix: where quarantined objects go (templated URI or local path); default:
        a ``quarantine`` folder beside the landing root.
    :param conn_id: Airflow connection for the object store holding the images; default: the
        connection of the manifest ``images`` names (if it names one).
    :param contact_sheet: if set, a PNG contact sheet of the run is written there (templated URI
        or local path) and its URI pushed as XCom ``contact_sheet``; written when QA fails too. A
        sheet that cannot be written is logged as a warning and never changes the QA outcome.

    Returns the verdicts (XCom ``return_value``) and pushes the passing records, in the landing
    shape, as XCom ``passed``. On a ``"fail"`` policy the task fails after all quarantine moves,
    and the verdicts are pushed as XCom ``verdicts`` for inspection. Re-running is safe: objects
    already quarantined are found there and not moved again.

    Given a manifest, QA answers with manifests, so XCom stays small whatever the batch: the
    verdicts go to ``_manifests/{task_id}.jsonl`` and the passing records to
    ``_manifests/{task_id}/passed.jsonl`` in the input manifest's run folder, and ``return_value``,
    ``passed`` and ``verdicts`` are their ManifestRefs (with ``passed``/``quarantined`` counts).
    """

    template_fields: Sequence[str] = ("images", "policies", "quarantine_prefix", "contact_sheet")
    template_fields_renderers = {"images": "json", "policies": "json"}
    ui_color = "#fff3d6"

    def __init__(
        self,
        *,
        images: Any,
        policies: Mapping[str, Policy] | None = None,
        decodes: Policy | None = None,
        format: Policy | None = None,
        dimensions: Policy | None = None,
        not_blank: Policy | None = None,
        file_size: Policy | None = None,
        nsfw: Policy | None = None,
        near_duplicate: Policy | None = None,
        min_stddev: float = DEFAULT_MIN_STDDEV,
        max_dominant_share: float = DEFAULT_MAX_DOMINANT_SHARE,
        min_bytes: int = DEFAULT_MIN_BYTES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_duplicate_distance: int = DEFAULT_MAX_DUPLICATE_DISTANCE,
        quarantine_prefix: str | None = None,
        conn_id: str | None = None,
        contact_sheet: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.images = images
        self.policies = policies
        self.check_policies: dict[str, Policy | None] = {
            "decodes": decodes,
            "format": format,
            "dimensions": dimensions,
            "not_blank": not_blank,
            "file_size": file_size,
            "nsfw": nsfw,
            "near_duplicate": near_duplicate,
        }
        self.thresholds: dict[str, float | int] = {
            "min_stddev": min_stddev,
            "max_dominant_share": max_dominant_share,
            "min_bytes": min_bytes,
            "max_bytes": max_bytes,
            "max_duplicate_distance": max_duplicate_distance,
        }
        self.quarantine_prefix = quarantine_prefix
        self.conn_id = conn_id
        self.contact_sheet = contact_sheet
        # Fail at DAG parse time on a typo'd policy or a bad threshold (both are not templated).
        self.qa_config(validate_only=True)

    def qa_config(self, *, validate_only: bool = False) -> QAConfig:
        """The config from the rendered arguments (templated ones are left out when validating early)."""
        settings: dict[str, Any] = {**self.check_policies, **self.thresholds}
        if not validate_only:
            policies = self.policies
            settings["policies"] = decode_rendered(policies, parameter="policies", error=QAInputError)
            settings["quarantine_prefix"] = self.quarantine_prefix or None
        settings["conn_id"] = self.conn_id
        return QAConfig.from_kwargs(**settings)

    def execute(self, context: Context) -> list[dict[str, Any]] | ManifestRef:
        images = decode_rendered(self.images, parameter="images", error=QAInputError)
        source = first_manifest_ref(images)
        # Images and their manifest share a store: without a conn_id, the manifest's is used.
        conn_id = self.conn_id or (source or {}).get("conn_id")
        config = replace(self.qa_config(), conn_id=conn_id)
        verdicts = evaluate(iter_records(images, conn_id=self.conn_id, error=QAInputError), config)
        failure: QAFailedError | None = None
        try:
            verdicts = apply_policies(verdicts, config)
        except QAFailedError as exc:
            verdicts, failure = exc.verdicts, exc
        self.log.info("Image QA results\n%s", format_table(verdicts))
        ti = context["ti"]
        if self.contact_sheet and verdicts:
            self._write_contact_sheet(context, verdicts, conn_id)
        output = _Output(source, conn_id, ti.task_id, -1 if ti.map_index is None else ti.map_index)
        if failure is not None:
            ti.xcom_push(key=VERDICTS_XCOM_KEY, value=output.write(verdicts))
            raise failure
        passed = output.write(passed_records(verdicts), role=PASSED_XCOM_KEY)
        ti.xcom_push(key=PASSED_XCOM_KEY, value=passed)
        return output.write(verdicts)

    def _write_contact_sheet(
        self, context: Context, verdicts: list[dict[str, Any]], conn_id: str | None
    ) -> None:
        """The sheet is a view of the verdicts, not a gate: failing to write it is logged, not raised."""
        from airflow_provider_bfl.qa.contact_sheet import make_contact_sheet

        assert self.contact_sheet is not None
        ti = context["ti"]
        try:
            sheet = make_contact_sheet(
                verdicts, self.contact_sheet, conn_id=conn_id, title=f"{ti.dag_id} {ti.run_id}"
            )
        except Exception as exc:
            self.log.warning("Could not write the contact sheet to %s: %s", self.contact_sheet, exc)
            return
        self.log.info("Contact sheet: %s", sheet)
        ti.xcom_push(key=CONTACT_SHEET_XCOM_KEY, value=sheet)


@dataclass(frozen=True)
class _Output:
    """
    What QA hands on, in the shape it was given: lists for a list of records; for a manifest (or a
    mapped task's refs) a manifest of its own beside the input's, and its :class:`ManifestRef`.
    """

    source: Mapping[str, Any] | None
    conn_id: str | None
    task_id: str
    map_index: int

    def write(self, records: list[dict[str, Any]], role: str | None = None) -> Any:
        if self.source is None:
            return records
        uri = manifest_beside(self.source["bflManifest"], self.task_id, self.map_index, role=role)
        return write_manifest(records, uri, conn_id=self.conn_id)
