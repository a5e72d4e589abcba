"""Turning the operator's (templated) arguments into validated requests, before any money is spent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_bfl._rendered import decode_rendered, looks_like_literal
from airflow_provider_bfl.exceptions import BflInvalidRequestError
from airflow_provider_bfl.models import registry
from airflow_provider_bfl.models.spec import REFERENCES_FIELD

if TYPE_CHECKING:
    from airflow_provider_bfl.models.request import ImageInferenceRequest

#: Operator keywords that are request fields under the same Python name.
REQUEST_KEYWORDS = (
    "positive_prompt",
    "width",
    "height",
    "seed",
    "number_results",
    "output_type",
    "output_format",
    "output_quality",
    "include_cost",
    "ttl",
    "webhook_url",
    "upload_endpoint",
    "safety",
    "model",
    "delivery_method",
    "task_uuid",
)
#: Request fields only some models have (e.g. ``steps``, ``cfg_scale``), read from the model registry's
#: plain specs (``inputs`` is given as ``reference_images``).
MODEL_KEYWORDS = tuple(name for name in registry.added_fields() if name != REFERENCES_FIELD)
#: ``providerSettings.bfl`` fields as operator keywords (``prompt_upsampling``, ``safety_tolerance``, ``raw``...).
PROVIDER_KEYWORDS = tuple(registry.provider_keywords())


def request_dicts(
    request: Any,
    prompts: Any,
    keywords: Mapping[str, Any],
    provider_bfl: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The raw request objects, from ``request=`` (wire form) or from keyword parameters."""
    given = {key: value for key, value in keywords.items() if value is not None}
    if request is not None:
        if given or prompts or provider_bfl:
            names = sorted([*given, *(["prompts"] if prompts else []), *provider_bfl])
            raise BflInvalidRequestError(
                f"Give either request= or keyword parameters, not both (also given: {', '.join(names)})",
                parameter="request",
            )
        request = decode_rendered(request, parameter="request")
        items = [request] if isinstance(request, Mapping) else request
        if isinstance(items, str) or not isinstance(items, Sequence):
            raise BflInvalidRequestError(
                f"request must be a request object or a list of them, got {type(request).__name__}",
                parameter="request",
            )
        if not items:
            raise BflInvalidRequestError("request is empty: there is nothing to submit", parameter="request")
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise BflInvalidRequestError(
                    f"request item {index + 1} is a {type(item).__name__}, not a request object: {item!r:.80}",
                    parameter="request",
                )
        return [dict(item) for item in items]
    if provider_bfl:
        given["provider_settings"] = {"bfl": dict(provider_bfl)}
    prompts = (
        decode_rendered(prompts, parameter="prompts")
        if isinstance(prompts, str) and looks_like_literal(prompts)
        else prompts
    )
    if prompts is None:
        return [given]
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise BflInvalidRequestError(
            f"prompts must be a list of prompt strings, got {type(prompts).__name__}", parameter="prompts"
        )
    if "positive_prompt" in given:
        raise BflInvalidRequestError("Give positive_prompt or prompts, not both", parameter="prompts")
    if not prompts:
        raise BflInvalidRequestError("prompts is empty: there is nothing to submit", parameter="prompts")
    return [{**given, "positive_prompt": prompt} for prompt in prompts]


def with_defaults(item: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Operator-level defaults for fields the request does not set (under either name)."""
    from airflow_provider_bfl.models.request import ImageInferenceRequest

    result = dict(item)
    for python_name, value in defaults.items():
        wire_name = ImageInferenceRequest.model_fields[python_name].alias or python_name
        if python_name not in result and wire_name not in result:
            result[wire_name] = value
    return result


def has_task_uuid(item: Mapping[str, Any]) -> bool:
    return item.get("taskUUID") is not None or item.get("task_uuid") is not None


def validated(
    items: Sequence[Mapping[str, Any]], task_label: str, *, allow_unknown_model: bool = False
) -> list[ImageInferenceRequest]:
    """Validate every request by its model's rules; one error naming the Airflow task and each offending request."""
    requests: list[ImageInferenceRequest] = []
    problems: list[str] = []
    parameters: list[str] = []
    for index, item in enumerate(items):
        try:
            requests.append(registry.validate_request(dict(item), allow_unknown_model=allow_unknown_model))
        except BflInvalidRequestError as exc:
            where = f"request {index + 1} of {len(items)}" if len(items) > 1 else "the request"
            problems.append(f"{where}: {'; '.join(exc.violations) or exc.message}")
            parameters.extend([exc.parameter] if isinstance(exc.parameter, str) else exc.parameter or [])
    if problems:
        raise BflInvalidRequestError(
            f"Task {task_label}: nothing was submitted, invalid input: " + " | ".join(problems),
            code="invalidRequest",
            parameter=sorted(set(parameters)) or None,
            violations=problems,
        )
    return requests


def estimate_cost(
    request: ImageInferenceRequest,
    price_per_image: float | None,
    references: Sequence[tuple[int, int]] = (),
) -> float | None:
    """USD the request is expected to cost: ``price_per_image`` if given, else its model's price rule."""
    if price_per_image is not None:
        return price_per_image * request.number_results
    spec = registry.spec_of(request)
    return None if spec is None else spec.estimate(request, references)


def check_budget(
    requests: Sequence[ImageInferenceRequest],
    *,
    max_images: int | None,
    max_cost: float | None,
    price_per_image: float | None,
    task_label: str,
    references: Sequence[tuple[int, int]] = (),
) -> None:
    """Refuse a batch over its guard before anything is sent (prices per model, from the registry)."""
    from airflow_provider_bfl.exceptions import BflBudgetExceededError

    images = sum(request.number_results for request in requests)
    if max_images is not None and images > max_images:
        raise BflBudgetExceededError(
            f"Task {task_label}: nothing was submitted: the batch asks for {images} images "
            f"({len(requests)} requests), over max_images={max_images}"
        )
    if max_cost is None:
        return
    costs = [estimate_cost(request, price_per_image, references) for request in requests]
    if any(cost is None for cost in costs):
        raise BflInvalidRequestError(
            f"Task {task_label}: max_cost needs a price for model(s) the provider does not know: "
            "set price_per_image",
            parameter="price_per_image",
        )
    estimate = sum(cost for cost in costs if cost is not None)
    unit_prices = {
        round((cost or 0.0) / r.number_results, 6) for cost, r in zip(costs, requests, strict=True)
    }
    if estimate > max_cost:
        priced = (
            f"{images} images at {unit_prices.pop()} USD each"
            if len(unit_prices) == 1
            else f"{images} images (priced per model)"
        )
        raise BflBudgetExceededError(
            f"Task {task_label}: nothing was submitted: {priced} would cost {estimate:.2f} USD, "
            f"over max_cost={max_cost}"
        )


def is_templated(value: Any) -> bool:
    """True when ``value`` (or anything nested in it) is not yet final: Jinja text, an XComArg, ..."""
    if value is None or isinstance(value, bool | int | float):
        return False
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(is_templated(key) or is_templated(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(is_templated(item) for item in value)
    return True  # XComArg, MappedArgument, ObjectStoragePath, ...: resolved at run time


def split_keyed_prompts(prompts: Any) -> tuple[Any, list[str] | None]:
    """``prompts`` given as ``{key: prompt}`` becomes the prompts and their keys, in order."""
    if isinstance(prompts, Mapping):
        return list(prompts.values()), [str(key) for key in prompts]
    return prompts, None


def caller_keys(keys: Any, from_prompts: list[str] | None, count: int) -> list[str | None]:
    """One key per request (``keys=`` or the keys of ``prompts={key: prompt}``), or None for each."""
    if keys is not None and from_prompts is not None:
        raise BflInvalidRequestError("Give keys= or prompts as {key: prompt}, not both", parameter="keys")
    if isinstance(keys, str):
        keys = decode_rendered(keys, parameter="keys") if looks_like_literal(keys) else [keys]
    chosen = from_prompts if keys is None else keys
    if chosen is None:
        return [None] * count
    if not isinstance(chosen, Sequence) or len(chosen) != count:
        raise BflInvalidRequestError(
            f"keys must give one key per request ({count}), got {chosen!r:.80}", parameter="keys"
        )
    if len({str(key) for key in chosen}) != len(chosen):
        raise BflInvalidRequestError(f"keys must be unique, got {chosen!r:.120}", parameter="keys")
    return [str(key) for key in chosen]
