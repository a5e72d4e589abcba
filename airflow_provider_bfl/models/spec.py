"""
What a model module declares (:class:`ModelSpec`): plain data, cheap to import.

A model module (``airflow_provider_bfl/models/flux/<name>.py``) is a table: the AIR id, its size
rule, prompt limits, reference-image rule, provider settings, sampling controls, price rule and
where each rule comes from. The model's pydantic request class (a subclass of
:class:`~airflow_provider_bfl.models.request.ImageInferenceRequest`) is built from that table by
:mod:`airflow_provider_bfl.models.classes` the first time :attr:`ModelSpec.request_class` is read,
so a DAG file that only imports the operator builds none. The emulator reads the same tables to
play the server.

Rules a source confirms are enforced; a rule no source confirms is ``None`` here and left to the
server, whose answer the hook turns into a :class:`~airflow_provider_bfl.exceptions.BflInvalidRequestError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_bfl.models.wire import MODEL_ID

if TYPE_CHECKING:
    from airflow_provider_bfl.models.request import ImageInferenceRequest

#: ``providerSettings.bfl`` fields the provider types, wire name -> Python name (the settings classes
#: in :mod:`~airflow_provider_bfl.models.request` and :mod:`~airflow_provider_bfl.models.classes`).
BFL_SETTINGS = {"promptUpsampling": "prompt_upsampling", "safetyTolerance": "safety_tolerance", "raw": "raw"}
#: The ``providerSettings.bfl`` fields of FLUX.1.1 [pro], typed for every model.
BASE_BFL_FIELDS = frozenset({"promptUpsampling", "safetyTolerance"})
#: The top-level request field that carries reference images (``inputs.referenceImages``).
REFERENCES_FIELD = "inputs"


@dataclass(frozen=True)
class SizeRange:
    """Free sizes: each side ``low..high`` in multiples of ``step``."""

    low: int
    high: int
    step: int

    def describe(self) -> str:
        return f"an integer from {self.low} to {self.high} in steps of {self.step}"


@dataclass(frozen=True)
class Sampling:
    """Sampling controls a model exposes (``steps``, ``CFGScale``); a ``None`` bound is the server's call."""

    #: Python name -> wire name of each control (the request field it becomes).
    FIELDS: ClassVar[Mapping[str, str]] = {"steps": "steps", "cfg_scale": "CFGScale"}

    steps: tuple[int | None, int | None] = (None, None)
    cfg_scale: tuple[float | None, float | None] = (None, None)


#: price(width, height, reference sizes) -> USD per image; width/height None when left to the server.
PriceRule = Callable[[int | None, int | None, Sequence[tuple[int, int]]], float]


@dataclass(frozen=True)
class ModelSpec:
    """Everything model-specific about one FLUX model on Runware; ``sources`` says where each rule comes from."""

    air: str
    name: str
    #: A closed list of (width, height) pairs, or a :class:`SizeRange`, for width and height each.
    sizes: tuple[tuple[int, int], ...] | SizeRange
    price: PriceRule
    #: One line: the price as Runware lists it (README, docs).
    price_text: str
    sources: Mapping[str, str]
    #: A request pasted from the sources (README example, round-trip test).
    example: Mapping[str, Any]
    #: Both may be omitted (the server picks the size); otherwise both are required.
    sizes_optional: bool = False
    prompt_length: tuple[int, int | None] = (2, 3000)
    #: 0: the model takes no reference images; None: it takes some, how many is the server's call.
    max_references: int | None = 0
    #: What the emulator (playing the server) allows when the client leaves the count to the server.
    server_max_references: int | None = None
    #: ``providerSettings.bfl`` fields; ``None``: not confirmed for this model, any are passed through.
    provider_fields: frozenset[str] | None = BASE_BFL_FIELDS
    sampling: Sampling | None = None

    @cached_property
    def request_class(self) -> type[ImageInferenceRequest]:
        """
        The pydantic request class of this model, built on first use (DAG parsing needs none):
        FLUX.1.1 [pro]'s is the hand-written ImageInferenceRequest, every other one is built from this spec.
        """
        if self.air == MODEL_ID:
            from airflow_provider_bfl.models.request import ImageInferenceRequest

            return ImageInferenceRequest
        from airflow_provider_bfl.models.classes import build_request_class

        return build_request_class(self)

    @property
    def takes_references(self) -> bool:
        return self.max_references != 0

    def added_fields(self) -> dict[str, str]:
        """``{python name: wire name}`` of the top-level fields this model adds to FLUX.1.1 [pro]'s."""
        added = {REFERENCES_FIELD: REFERENCES_FIELD} if self.takes_references else {}
        return added | (dict(Sampling.FIELDS) if self.sampling is not None else {})

    def settings_fields(self) -> dict[str, str]:
        """``{python name: wire name}`` of the ``providerSettings.bfl`` fields this model types."""
        typed = BASE_BFL_FIELDS if self.provider_fields is None else self.provider_fields
        return {python: wire for wire, python in BFL_SETTINGS.items() if wire in typed}

    def result_size(self, width: int | None, height: int | None) -> tuple[int, int] | None:
        """The dimensions this model's images have for a request of ``width`` x ``height`` (None: server's choice)."""
        if width is None or height is None:
            return None
        return width, height

    def estimate(self, request: ImageInferenceRequest, references: Sequence[tuple[int, int]] = ()) -> float:
        """Estimated USD for the whole request (every image), for the budget guard."""
        width, height = request.width, request.height
        return round(self.price(width, height, references) * request.number_results, 6)

    def describe_sizes(self) -> str:
        if isinstance(self.sizes, SizeRange):
            return f"width and height each {self.sizes.describe()}"
        return "width x height one of " + ", ".join(f"{w}x{h}" for w, h in self.sizes)


def flat_price(usd: float) -> PriceRule:
    """The same price for every image (the model's sizes all bill the same tier)."""

    def price(width: int | None, height: int | None, references: Sequence[tuple[int, int]]) -> float:
        return usd

    return price


def megapixels(width: int, height: int) -> int:
    """
    Billed megapixels of one image: 1 up to 1024x1024, then one more per started million pixels.

    Derived from the FLUX.2 [max] price table (Runware model page): it reproduces every row
    (1024x1024 -> 1, 1536x1024 -> 2, 1920x1080 -> 3); neither ceil(px/1e6) nor ceil(px/2**20) does.
    """
    return 1 + math.ceil(max(0, width * height - 1024 * 1024) / 1_000_000)


def per_megapixel_price(first: float, extra: float, per_reference_mp: float) -> PriceRule:
    """``first`` for the first output megapixel, ``extra`` per further one, ``per_reference_mp`` per reference megapixel."""

    def price(width: int | None, height: int | None, references: Sequence[tuple[int, int]]) -> float:
        # A size left to the server is estimated at the 1 MP the page prices first.
        output = megapixels(width, height) if width and height else 1
        referenced = sum(megapixels(w, h) for w, h in references)
        return round(first + extra * (output - 1) + per_reference_mp * referenced, 6)

    return price
