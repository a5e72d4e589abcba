"""
:class:`BflImageReviewOperator`: a human approves a batch of images while looking at them.

Built on the standard provider's human-in-the-loop operator (Airflow 3.1+), so the request shows
up in Airflow's *Required actions* and is answered there or through the REST API. What this adds:

- the request's body shows every image as a thumbnail (linked to the full size) with its number,
  SKU/key, prompt and QA verdict, and links to the same images, in the same order, in the gallery;
- leaving images out is a pick from a list of the QA-passed images (*Leave out*), never typing ids;
- *Reject the batch*, a timeout (the default answer is a rejection) or an approval that leaves
  every image out fail the task with :class:`BflReviewRejectedError`, so a batch that publishes
  nothing ends as a red run that says why, never as a green one.

The return value (XCom) is ``{"approved": [records], "left_out": [records], "responded_by": ...}``;
feed ``review.output["approved"]`` to the publishing step. Given a manifest (``images=qa.output``
of a large batch), ``approved`` and ``left_out`` are the ManifestRefs of
``_manifests/{task_id}/approved.jsonl`` and ``left_out.jsonl`` beside it, so XCom stays small
whatever the batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict

from airflow_provider_bfl._rendered import decode_rendered
from airflow_provider_bfl.exceptions import BflError
from airflow_provider_bfl.review.body import ReviewItem, markdown_body, review_items
from airflow_provider_bfl.storage.manifest import (
    first_manifest_ref,
    is_manifest_ref,
    manifest_beside,
    write_manifest,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: ``response_timeout`` arrived in the standard provider 1.13; before it the HITL wait was timed by
#: ``execution_timeout`` (1.6 to 1.12, what Airflow 3.1 and 3.2 shipped with), which is then used.
HITL_TAKES_RESPONSE_TIMEOUT = "response_timeout" in inspect.signature(HITLOperator.__init__).parameters

PUBLISH = "Publish"
REJECT = "Reject the batch"
LEAVE_OUT = "leave_out"
#: Labels offered in *Leave out* (they are stored with the request); any other passed image is left
#: out by typing its number, ``#1234``.
LEAVE_OUT_CHOICES = 1000


class BflReviewRejectedError(BflError, AirflowFailException):  # type: ignore[misc]  # status_code: both None here
    """The reviewer (or the review's timeout) rejected the batch: nothing is published, no retry."""


def _leave_out_param(labels: Sequence[str] = ()) -> Param:
    """A multi-select over the QA-passed images (Airflow renders an array with ``examples`` so)."""
    schema: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
    if labels:
        schema["examples"] = list(labels)
    return Param(
        [],
        title="Leave out",
        description=(
            "Images not to publish (the others that passed QA are published): pick them, or type "
            "an image's number, e.g. #7"
        ),
        **schema,
    )


class BflImageReviewOperator(HITLOperator):
    """
    Ask a reviewer to publish or reject a batch of landed, QA-checked images, showing the pictures.

    :param images: the image records under review, usually ``images=qa.output`` (QA verdicts; plain
        landed records work too and count as passed): a list, a ManifestRef, or a mapped task's
        list of these. Templated.
    :param subject: the request's title.
    :param intro: Markdown shown above the images.
    :param gallery_task_id: whose gallery page the body links to; defaults to the task that
        produced ``images`` when it is an XComArg (so the gallery shows the same order), else the
        whole run's gallery.
    :param inline_thumbnails: at most this many thumbnails in the body itself (the rest are in
        the gallery, one click away).
    :param response_timeout: how long to wait; then the batch is rejected (the default answer).
    :param conn_id: storage connection for reading (and writing) manifests; default: the one the
        manifest was written with.

    Other keyword arguments go to :class:`~airflow.providers.standard.operators.hitl.HITLOperator`
    (``notifiers``, ``assigned_users`` where the installed standard provider has them, ...).
    """

    template_fields: Sequence[str] = (*HITLOperator.template_fields, "images", "intro")
    template_fields_renderers = {"images": "json", "body": "md"}
    ui_color = "#e6f0ff"

    def __init__(
        self,
        *,
        images: Any,
        subject: str = "Publish these images?",
        intro: str = "",
        gallery_task_id: str | None = None,
        inline_thumbnails: int = 50,
        response_timeout: timedelta | None = timedelta(hours=24),
        conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        for fixed in ("options", "multiple", "defaults", "body"):
            if fixed in kwargs:
                raise ValueError(f"BflImageReviewOperator sets {fixed!r} itself; do not pass it")
        kwargs.pop("params", None)  # the DAG's params (Airflow passes them in); the form is ours
        if HITL_TAKES_RESPONSE_TIMEOUT:
            kwargs["response_timeout"] = response_timeout
        elif response_timeout is not None:
            kwargs["execution_timeout"] = response_timeout
        super().__init__(
            subject=subject,
            body=None,
            options=[PUBLISH, REJECT],
            defaults=[REJECT],  # a timeout publishes nothing
            multiple=False,
            params={LEAVE_OUT: _leave_out_param()},
            **kwargs,
        )
        self.response_timeout = response_timeout
        self.images = images
        self.intro = intro
        producer = getattr(images, "operator", None)
        self.gallery_task_id = gallery_task_id or getattr(producer, "task_id", None)
        self.inline_thumbnails = inline_thumbnails
        self.conn_id = conn_id

    def _images(self) -> Any:
        images = decode_rendered(self.images, parameter="images")
        if not isinstance(images, list | tuple) and not is_manifest_ref(images):
            raise BflError(
                f"Task {self.task_id!r}: images must be a list of image records or a ManifestRef "
                f"(e.g. images=qa.output), got {type(images).__name__}",
                parameter="images",
            )
        return images

    def _items(self) -> list[ReviewItem]:
        return review_items(self._images(), conn_id=self.conn_id)

    def execute(self, context: Context) -> Any:
        items = self._items()
        candidates = [item for item in items if item.passed]
        if not candidates:
            raise BflReviewRejectedError(
                f"Task {self.task_id!r}: none of the {len(items)} image(s) passed QA; nothing to review "
                "or publish",
                parameter="images",
            )
        ti = context["ti"]
        self.body = markdown_body(
            items,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            gallery_task_id=self.gallery_task_id,
            inline_limit=self.inline_thumbnails,
            intro=self.intro,
        )
        labels = [item.label for item in candidates[:LEAVE_OUT_CHOICES]]
        self.params = ParamsDict({LEAVE_OUT: _leave_out_param(labels)})
        return super().execute(context)

    def validate_params_input(self, params_input: Any) -> None:
        """
        The answer holds this review's one form field. Not compared with ``self.params``, as the
        base class does: on resume Airflow 3.1 has merged the DAG's params into them.
        """
        unknown = set(params_input or {}) - {LEAVE_OUT}
        if unknown:
            raise BflError(
                f"Task {self.task_id!r}: the review's answer has fields this form does not: {sorted(unknown)}",
                parameter="params_input",
            )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        # error_type: standard provider 1.9+; timedout (the defaults chosen for the reviewer): older
        if event.get("error_type") == "timeout" or event.get("timedout"):
            raise BflReviewRejectedError(
                f"Task {self.task_id!r}: nobody answered within {self.response_timeout}; the batch is "
                "rejected (nothing published)"
            )
        answer = super().execute_complete(context, event)
        responded_by = answer.get("responded_by_user") or answer.get("responded_by")
        who = (responded_by or {}).get("name") if isinstance(responded_by, dict) else responded_by
        if answer["chosen_options"] != [PUBLISH]:
            raise BflReviewRejectedError(
                f"Task {self.task_id!r}: {who or 'the reviewer'} rejected the batch; nothing is published"
            )
        images = self._images()
        candidates = [item for item in review_items(images, conn_id=self.conn_id) if item.passed]
        left_out_labels = set((answer.get("params_input") or {}).get(LEAVE_OUT) or ())
        chosen = _chosen(left_out_labels, candidates)
        unknown = left_out_labels - set(chosen)
        if unknown:
            raise BflError(
                f"Task {self.task_id!r}: 'Leave out' named image(s) that are not in this batch: "
                f"{sorted(unknown)}",
                parameter=LEAVE_OUT,
            )
        left_out_numbers = set(chosen.values())
        approved = [dict(item.record) for item in candidates if item.number not in left_out_numbers]
        left_out = [dict(item.record) for item in candidates if item.number in left_out_numbers]
        if not approved:
            raise BflReviewRejectedError(
                f"Task {self.task_id!r}: {who or 'the reviewer'} chose Publish but left out all "
                f"{len(candidates)} image(s); nothing is published"
            )
        self.log.info(
            "%s approved %d image(s), left out %d: %s",
            who or "The reviewer",
            len(approved),
            len(left_out),
            ", ".join(sorted(left_out_labels)) or "none",
        )
        source = first_manifest_ref(images)
        if source is not None:
            ti = context["ti"]
            map_index = -1 if ti.map_index is None else ti.map_index
            conn_id = self.conn_id or source.get("conn_id")
            refs = {
                role: write_manifest(
                    chosen_records,
                    manifest_beside(source["bflManifest"], ti.task_id, map_index, role=role),
                    conn_id=conn_id,
                )
                for role, chosen_records in (("approved", approved), ("left_out", left_out))
            }
            return {**refs, "responded_by": who}
        return {"approved": approved, "left_out": left_out, "responded_by": who}


def _chosen(answers: set[str], candidates: Sequence[ReviewItem]) -> dict[str, int]:
    """Each answer that names a candidate (by its label, or by ``#number``) -> that image's number."""
    by_label = {item.label: item.number for item in candidates}
    by_number = {f"#{item.number}": item.number for item in candidates}
    return {
        answer: by_label.get(answer) or by_number[answer.strip()]
        for answer in answers
        if answer in by_label or answer.strip() in by_number
    }
