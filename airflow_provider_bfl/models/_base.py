"""The strict base of the request models, and the one place pydantic errors become readable ones."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from airflow_provider_bfl.exceptions import BflInvalidRequestError


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode turns True into 1; for a width or a seed that is always a mistake.
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    return value


#: An integer that also accepts numeric strings (templated values render as text) but never a bool.
WireInt = Annotated[int, BeforeValidator(_no_bool)]


class WireModel(BaseModel):
    """Accepts the wire names (camelCase) and the Python names; anything else is an error."""

    model_config = ConfigDict(
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
    )


def wire_name(name: str, field: FieldInfo) -> str:
    return field.alias or name


def _field_at(model: type[BaseModel], key: str) -> tuple[str, FieldInfo] | None:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return name, field
    return None


def _nested_model(field: FieldInfo) -> type[BaseModel] | None:
    candidates = [field.annotation, *getattr(field.annotation, "__args__", ())]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _walk(
    model: type[BaseModel], loc: tuple[int | str, ...]
) -> tuple[type[BaseModel], FieldInfo | None, str]:
    """Follow an error location through nested models: (owning model, field, dotted wire path)."""
    path: list[str] = []
    field: FieldInfo | None = None
    owner = model
    for index, key in enumerate(loc):
        found = _field_at(owner, str(key))
        if found is None:
            path.append(str(key))
            break
        name, field = found
        path.append(wire_name(name, field))
        nested = _nested_model(field)
        if nested is not None and index < len(loc) - 1:
            owner = nested
    return owner, field, ".".join(path)


def _shown(value: Any) -> str:
    if isinstance(value, str) and len(value) > 60:
        return f"a {len(value)}-character string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple) and any(isinstance(item, str) and len(item) > 60 for item in value):
        # e.g. reference images as data URIs: their bytes must never reach an error or a log
        return "[" + ", ".join(_shown(item) for item in value[:5]) + (", ...]" if len(value) > 5 else "]")
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _suggestion(owner: type[BaseModel], key: str) -> str:
    names = [wire_name(name, field) for name, field in owner.model_fields.items()]
    python_names = list(owner.model_fields)
    lowered = {candidate.lower(): candidate for candidate in names + python_names}
    close = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.6)
    hint = f"; did you mean {lowered[close[0]]!r}?" if close else "."
    return f"{hint} Valid parameters here: {', '.join(names)}."


def describe(model: type[BaseModel], error: Mapping[str, Any]) -> str:
    """One violation as a sentence: parameter, the value given, what is allowed."""
    owner, field, path = _walk(model, tuple(error["loc"]))
    kind = error["type"]
    if not path:  # the request itself is wrong, not one of its fields
        return f"the request must be an object of API fields, got {_shown(error['input'])}"
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        return f"unknown parameter {path!r}{_suggestion(owner, key)}"
    allowed = f"; allowed: {field.description}" if field is not None and field.description else ""
    if kind == "missing":
        return f"{path} is required{allowed}"
    reason = str(error["msg"]).removeprefix("Value error, ")
    if kind == "multiple_of":
        step = int(error["ctx"]["multiple_of"])
        below = (int(error["input"]) // step) * step
        reason += f" (nearest: {below} or {below + step})"
    return f"{path}: got {_shown(error['input'])}{allowed} ({reason})"


def invalid_request(
    model: type[BaseModel], exc: ValidationError, task_uuid: str | None
) -> BflInvalidRequestError:
    violations = [describe(model, error) for error in exc.errors()]
    parameters = [_walk(model, tuple(error["loc"]))[2] for error in exc.errors()]
    summary = "; ".join(violations)
    return BflInvalidRequestError(
        f"Invalid imageInference request: {summary}",
        code="invalidRequest",
        parameter=parameters[0] if len(parameters) == 1 else parameters,
        task_uuid=task_uuid,
        violations=violations,
    )
