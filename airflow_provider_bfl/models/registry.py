"""
The model registry: every FLUX model the provider knows, one module each under ``models/flux/``.

A model module defines ``SPEC = ModelSpec(...)``, plain data; modules are found by listing the
package, so adding a model is adding one file (and its tests). Everything model-specific is read
from here: request validation (:func:`validate_request`), the operator's keywords, the budget
estimate, the result dimensions the plan, landing and QA expect, and the emulator's rules.

Listing the models and reading their keywords builds no pydantic class (a DAG file's imports do
both); a model's request class is built the first time one of its requests is validated
(:attr:`~airflow_provider_bfl.models.spec.ModelSpec.request_class`).

A model the provider does not know yet can still be used: ``validate_request(wire,
allow_unknown_model=True)`` (operator: ``allow_unknown_model=True``) checks the platform fields
only and passes the rest to the server, which judges it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from airflow_provider_bfl.exceptions import BflInvalidRequestError
from airflow_provider_bfl.models.spec import ModelSpec, SizeRange
from airflow_provider_bfl.models.wire import MODEL_ID

if TYPE_CHECKING:
    from airflow_provider_bfl.models.request import ImageInferenceRequest


@cache
def models() -> dict[str, ModelSpec]:
    """``{AIR id: spec}`` of every model module in ``airflow_provider_bfl.models.flux``, in AIR order."""
    from airflow_provider_bfl.models import flux

    found: dict[str, ModelSpec] = {}
    for info in sorted(pkgutil.iter_modules(flux.__path__), key=lambda module: module.name):
        module = importlib.import_module(f"{flux.__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"{module.__name__} defines no SPEC = ModelSpec(...)")
        if spec.air in found:
            raise TypeError(f"{module.__name__}: model {spec.air} is already defined")
        found[spec.air] = spec
    return dict(sorted(found.items(), key=lambda item: _air_order(item[0])))


def _air_order(air: str) -> tuple[str, int, int]:
    source, _, version = air.partition(":")
    major, _, minor = version.partition("@")
    return source, int(major or 0), int(minor or 0)


def spec_for(model: str) -> ModelSpec:
    """The spec of a registered model; a clear error listing the registered ones otherwise."""
    spec = models().get(model) if isinstance(model, str) else None
    if spec is None:
        raise unknown_model(model)
    return spec


def unknown_model(model: Any) -> BflInvalidRequestError:
    known = ", ".join(repr(air) for air in models())
    violation = (
        f"model: got {model!r}; allowed: {known} (for a model the provider does not know yet, pass "
        "allow_unknown_model=True: its parameters then go to the API unchecked and the API judges them)"
    )
    return BflInvalidRequestError(
        f"Invalid imageInference request: {violation}",
        code="invalidRequest",
        parameter="model",
        violations=[violation],
    )


def request_class(model: Any, *, allow_unknown_model: bool = False) -> type[ImageInferenceRequest]:
    """The request class for ``model`` (the wire ``model`` value); default ``bfl:2@1`` when absent."""
    if model is None:
        return models()[MODEL_ID].request_class
    if isinstance(model, str) and model in models():
        return models()[model].request_class
    if allow_unknown_model and isinstance(model, str) and model:
        from airflow_provider_bfl.models.classes import UnknownModelRequest

        return UnknownModelRequest
    raise unknown_model(model)


def validate_request(wire: Mapping[str, Any], *, allow_unknown_model: bool = False) -> ImageInferenceRequest:
    """
    Validate one request of any registered model (wire names or Python names), dispatching on ``model``.

    Raises :class:`~airflow_provider_bfl.exceptions.BflInvalidRequestError` naming every offending
    parameter; an unregistered ``model`` is an error listing the registered ones unless
    ``allow_unknown_model`` is set (then only the platform fields are checked).
    """
    from airflow_provider_bfl.models.request import ImageInferenceRequest

    if isinstance(wire, ImageInferenceRequest):
        return wire
    if not isinstance(wire, Mapping):
        raise BflInvalidRequestError(
            f"Invalid imageInference request: the request must be an object of API fields, got {type(wire).__name__}",
            parameter="request",
        )
    cls = request_class(wire.get("model"), allow_unknown_model=allow_unknown_model)
    return cls.model_validate(dict(wire))


def spec_of(request: ImageInferenceRequest) -> ModelSpec | None:
    """The spec of a validated request's model (None for an unknown model let through)."""
    return models().get(request.model)


def added_fields() -> dict[str, str]:
    """``{python name: wire name}`` of the top-level fields some registered model adds to FLUX.1.1 [pro]'s."""
    names: dict[str, str] = {}
    for spec in models().values():
        names |= spec.added_fields()
    return names


def provider_keywords() -> dict[str, str]:
    """``{python name: wire name}`` of every ``providerSettings.bfl`` field a registered model types."""
    names: dict[str, str] = {}
    for spec in models().values():
        names |= spec.settings_fields()
    return names


def largest_output_pixels() -> int:
    """Pixels of the largest image any registered model makes (a decode or size limit to size by)."""
    largest = 0
    for spec in models().values():
        if isinstance(spec.sizes, SizeRange):
            largest = max(largest, spec.sizes.high * spec.sizes.high)
        else:
            largest = max(largest, *(w * h for w, h in spec.sizes))
    return largest
