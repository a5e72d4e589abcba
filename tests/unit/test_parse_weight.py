"""
A DAG file's imports stay light: importing the operator, sensor and trigger builds no pydantic
model and loads no task-time module, while the registry still lists every model and its keywords.

Module sets, not timings (the timings are ``benchmarks/parse_cost.py``'s job). One fresh
interpreter answers every question here; the benchmark's HEAVY list is the one list of modules a
parse must not load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from airflow_provider_bfl.models import registry
from airflow_provider_bfl.models.request import BflSettings, ImageInferenceRequest
from benchmarks.parse_cost import HEAVY, MODULES

_PROBE = """
import json, sys
import airflow.sdk
import pydantic

def provider_models():
    seen, todo = set(), [pydantic.BaseModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    return sorted(c.__module__ + "." + c.__qualname__ for c in seen if c.__module__.startswith("airflow_provider_bfl"))

def built_specs():
    registry = sys.modules["airflow_provider_bfl.models.registry"]
    return sorted(air for air, spec in registry.models().items() if "request_class" in vars(spec))

report = {}
before = set(sys.modules)
for name in MODULES:
    __import__(name)
report["imports"] = {"loaded": sorted(set(sys.modules) - before), "models": provider_models()}
from airflow_provider_bfl.models import registry
report["registry"] = list(registry.models())
report["keywords"] = {"added": registry.added_fields(), "provider": registry.provider_keywords()}
report["after_registry"] = {"loaded": sorted(set(sys.modules) - before), "built": built_specs()}
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
BflImageInferenceOperator(task_id="templated", model="bfl:6@1", positive_prompt="{{ params.p }}", width=1024, height=1024)
report["templated"] = {"models": provider_models(), "built": built_specs()}
BflImageInferenceOperator(task_id="literal", model="bfl:6@1", positive_prompt="a poster", width=1024, height=1024)
report["literal"] = {"built": built_specs()}
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def fresh() -> dict[str, Any]:
    """What a fresh interpreter loads and builds for a DAG file's imports and two operators."""
    completed = subprocess.run(
        [sys.executable, "-c", f"MODULES = {MODULES!r}\n{_PROBE}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return report


def test_importing_the_public_modules_loads_no_task_time_module(fresh: dict[str, Any]) -> None:
    loaded = fresh["imports"]["loaded"]
    assert set(MODULES) <= set(loaded)  # the probe did import them
    assert [name for name in HEAVY if name in loaded] == []


def test_importing_the_public_modules_builds_no_pydantic_model(fresh: dict[str, Any]) -> None:
    assert fresh["imports"]["models"] == []


def test_the_registry_lists_every_model_and_its_keywords_without_building_a_request_class(
    fresh: dict[str, Any],
) -> None:
    assert fresh["registry"] == list(registry.models())
    assert fresh["keywords"] == {"added": registry.added_fields(), "provider": registry.provider_keywords()}
    assert fresh["after_registry"]["built"] == []
    assert [name for name in HEAVY if name in fresh["after_registry"]["loaded"]] == []


def test_a_templated_operator_builds_no_request_model_at_parse_time(fresh: dict[str, Any]) -> None:
    assert fresh["templated"] == {"models": [], "built": []}


def test_a_literal_operator_builds_only_its_own_models_request_class(fresh: dict[str, Any]) -> None:
    """Literal arguments are validated at parse time (a feature): that costs one model's class, not seven."""
    assert fresh["literal"]["built"] == ["bfl:6@1"]


# -- the plain specs agree with the classes built from them -----------------------------------


def _fields(model: type[Any]) -> dict[str, str]:
    return {name: info.alias or name for name, info in model.model_fields.items()}


@pytest.mark.parametrize("air", list(registry.models()))
def test_each_models_plain_added_fields_are_its_request_class_fields(air: str) -> None:
    spec = registry.models()[air]
    built = _fields(spec.request_class)
    base = _fields(ImageInferenceRequest)
    assert {name: alias for name, alias in built.items() if name not in base} == spec.added_fields()
    assert set(base) <= set(built)


@pytest.mark.parametrize("air", list(registry.models()))
def test_each_models_plain_settings_fields_are_its_settings_class_fields(air: str) -> None:
    spec = registry.models()[air]
    settings: Any = spec.request_class.model_fields["provider_settings"].annotation
    (settings_class,) = [arg for arg in getattr(settings, "__args__", (settings,)) if arg is not type(None)]
    bfl_class: Any = settings_class.model_fields["bfl"].annotation
    assert issubclass(bfl_class, BflSettings)
    assert _fields(bfl_class) == spec.settings_fields()


def test_a_spec_builds_its_request_class_once() -> None:
    spec = registry.models()["bfl:5@1"]
    assert spec.request_class is spec.request_class
    assert registry.models()["bfl:2@1"].request_class is ImageInferenceRequest


def test_the_models_package_exports_lazily_and_refuses_unknown_names() -> None:
    import airflow_provider_bfl.models as models

    assert models.ImageInferenceRequest is ImageInferenceRequest
    assert models.MODEL_ID == "bfl:2@1"
    assert {name for name in models.__all__ if not hasattr(models, name)} == set()
    with pytest.raises(AttributeError, match="no attribute 'ImageRequest'"):
        models.ImageRequest  # noqa: B018
