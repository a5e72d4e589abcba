"""
The generation plan: what each taskUUID of a task instance is for, fixed once at submit time.

A plan is small, plain JSON (no image bytes, no key) carried from submission through the deferral
to landing, QA, review and the gallery, so nothing after the money is spent re-renders or
re-validates the operator's arguments, and nothing matches results to requests by position.

A big batch's plan (thousands of wire requests: megabytes) does not travel in XCom: it is saved
beside the task's manifest, one entry per line, and XCom carries its location (:func:`plan_location`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from airflow_provider_bfl.exceptions import BflError

if TYPE_CHECKING:
    from airflow_provider_bfl.models.request import ImageInferenceRequest

#: The folder, beside the tasks' manifests, of saved plans. ``@`` is not allowed in a task id, so
#: no task's manifest (``{task_id}.jsonl``) or folder (QA's ``{task_id}/passed.jsonl``) can be it.
PLANS_FOLDER = "@plans"


def plan_location(manifest: str) -> str:
    """Where the plan of the task whose manifest is ``manifest`` is saved: ``.../_manifests/@plans/{name}``."""
    folder, _, name = manifest.rpartition("/")
    return f"{folder}/{PLANS_FOLDER}/{name}"


def is_located(value: Any) -> bool:
    """An XCom value that names a saved plan (``{"planURI": ..., "conn_id": ...}``) instead of holding it."""
    return isinstance(value, Mapping) and isinstance(value.get("planURI"), str)


@dataclass(frozen=True)
class PlannedGeneration:
    """One taskUUID of the plan; attribute names match :class:`ImageInferenceRequest` where shared."""

    task_uuid: str
    #: 1-based place of the request in the operator's batch (to find its prompt in the DAG).
    position: int
    model: str
    #: The dimensions the model's images will have (its registry spec); None: the server chooses.
    width: int | None
    height: int | None
    output_format: str
    output_type: str
    number_results: int
    prompt: str
    #: The request as validated (wire names, this taskUUID): what a replacement resubmits.
    wire: Mapping[str, Any]
    #: A caller-supplied key (e.g. a SKU) that ties the images back to a product; None if not given.
    key: str | None = None
    #: The taskUUID was given by the caller (not derived), so it is never replaced automatically.
    explicit: bool = False
    #: Which generation of this request this is (0 = first; a replacement counts up).
    generation: int = 0
    #: Re-attached to a caller-given taskUUID an earlier run paid for: its cost is not this run's.
    reused: bool = False
    #: The reference images (locators: URIs/URLs, never bytes) the request uses, in order.
    references: Sequence[str] = ()
    #: The request's key in the reuse index (reuse on): its records carry it, its images are indexed under it.
    fingerprint: str | None = None
    #: The reuse index fixed this taskUUID, and another run may have submitted it first (the claim is
    #: another run's, or this is the task's first try): a re-attach to it is that run's cost, not this one's.
    shared: bool = False
    #: Submitted before (an earlier try, another run): with ``upload_to`` its upload went to whoever
    #: submitted it first, so its image may have to be downloaded instead.
    reattached: bool = False

    @classmethod
    def of(
        cls, request: ImageInferenceRequest, *, position: int, key: str | None = None, explicit: bool = False
    ) -> PlannedGeneration:
        from airflow_provider_bfl.models import registry

        spec = registry.spec_of(request)
        width: int | None = request.width
        height: int | None = request.height
        size = (width, height) if spec is None else spec.result_size(width, height)
        inputs = getattr(request, "inputs", None)
        references = getattr(inputs, "reference_images", None) or ()
        return cls(
            task_uuid=request.task_uuid,
            position=position,
            model=request.model,
            width=None if size is None else size[0],
            height=None if size is None else size[1],
            output_format=request.output_format,
            output_type=request.output_type,
            number_results=request.number_results,
            prompt=request.positive_prompt,
            wire=request.to_wire(),
            key=key,
            explicit=explicit,
            references=tuple(references),
        )

    def replaced_by(self, task_uuid: str, *, shared: bool = False) -> PlannedGeneration:
        """The next generation of the same request, under ``task_uuid`` (for ``shared``, see the field)."""
        return replace(
            self.under(task_uuid, shared=shared),
            generation=self.generation + 1,
            reused=False,
            reattached=False,
        )

    def under(self, task_uuid: str, *, shared: bool) -> PlannedGeneration:
        """The same generation under the taskUUID the reuse index fixed for it (for ``shared``, see the field)."""
        return replace(self, task_uuid=task_uuid, wire={**self.wire, "taskUUID": task_uuid}, shared=shared)

    def request(self) -> ImageInferenceRequest:
        """The request to submit for this generation (validated again: the same rules, no I/O)."""
        from airflow_provider_bfl.models import registry

        # Validated with the operator's model setting when planned; an unknown model stays allowed.
        return registry.validate_request(dict(self.wire), allow_unknown_model=True)

    @property
    def label(self) -> str:
        """How log lines and errors name this generation: '#2 (SKU-17) <uuid>'."""
        key = f" ({self.key})" if self.key else ""
        return f"#{self.position}{key} {self.task_uuid}"


_FIELDS = tuple(f.name for f in fields(PlannedGeneration))


class GenerationPlan(Mapping[str, PlannedGeneration]):
    """The plan of one task instance, keyed by taskUUID in submission order."""

    def __init__(self, entries: Iterable[PlannedGeneration] = ()) -> None:
        self._entries = {entry.task_uuid: entry for entry in entries}

    def __getitem__(self, task_uuid: str) -> PlannedGeneration:
        return self._entries[task_uuid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"GenerationPlan({len(self)} generation(s))"

    @property
    def expected(self) -> dict[str, int]:
        """``{taskUUID: numberResults}``: what the sensor and trigger wait for."""
        return {uuid: entry.number_results for uuid, entry in self._entries.items()}

    @property
    def image_count(self) -> int:
        return sum(entry.number_results for entry in self._entries.values())

    def replacing(self, old_uuid: str, new: PlannedGeneration) -> GenerationPlan:
        """A plan with ``old_uuid``'s entry replaced in place (same position in the order)."""
        return GenerationPlan(new if uuid == old_uuid else entry for uuid, entry in self._entries.items())

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(entry) for entry in self._entries.values()]

    def save(self, uri: str, *, conn_id: str | None) -> None:
        """Write the plan to ``uri`` (see :func:`plan_location`), whole or not at all, one entry per line."""
        from airflow_provider_bfl.storage.manifest import write_manifest

        write_manifest((asdict(entry) for entry in self._entries.values()), uri, conn_id=conn_id)

    @classmethod
    def load(cls, uri: str, *, conn_id: str | None) -> GenerationPlan:
        """The plan :meth:`save` wrote; a clear :class:`BflError` for a missing or damaged one."""
        from airflow_provider_bfl.storage.manifest import read_manifest

        try:
            return cls.from_json(list(read_manifest(uri, conn_id=conn_id)))
        except BflError as exc:
            raise exc.with_context(prefix=f"The generation plan saved at {uri!r:.200}: ") from None

    @classmethod
    def from_json(cls, value: Any) -> GenerationPlan:
        """The plan from :meth:`to_json` output; a clear error for anything else."""
        if not isinstance(value, list):
            raise BflError(f"A generation plan is a list of entries, got {type(value).__name__}")
        entries = []
        for item in value:
            if not isinstance(item, Mapping) or set(item) - set(_FIELDS):
                raise BflError(f"Not a generation plan entry: {item!r:.200}")
            try:
                entries.append(PlannedGeneration(**item))
            except TypeError as exc:
                raise BflError(f"Not a generation plan entry ({exc}): {item!r:.200}") from None
        return cls(entries)
