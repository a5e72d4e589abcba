"""The registry: dispatch on model, the unknown-model error and its escape hatch, what derives from it, prices."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_bfl.exceptions import BflBudgetExceededError, BflInvalidRequestError
from airflow_provider_bfl.models import ImageInferenceRequest, registry
from airflow_provider_bfl.models.spec import megapixels
from airflow_provider_bfl.operators import _requests
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.plan import PlannedGeneration

BASE = {"positivePrompt": "a red bicycle", "width": 1024, "height": 1024}


def test_validate_request_dispatches_on_model_and_defaults_to_flux_1_1_pro() -> None:
    assert type(registry.validate_request({**BASE, "width": 512})) is ImageInferenceRequest
    assert registry.validate_request({**BASE, "model": "bfl:3@1"}).model == "bfl:3@1"
    # the same size is valid for one model and not for another: the model's own rules apply
    with pytest.raises(BflInvalidRequestError, match="width"):
        registry.validate_request({**BASE, "model": "bfl:2@2"})


def test_an_unknown_model_lists_the_registered_ones_and_the_escape_hatch() -> None:
    with pytest.raises(BflInvalidRequestError) as caught:
        registry.validate_request({**BASE, "model": "bfl:99@1"})
    message = str(caught.value)
    assert caught.value.parameter == "model"
    assert "model: got 'bfl:99@1'" in message
    for air in registry.models():
        assert repr(air) in message
    assert "allow_unknown_model=True" in message


def test_the_escape_hatch_passes_an_unknown_model_through_with_platform_fields_checked() -> None:
    wire = {
        **BASE,
        "model": "bfl:99@1",
        "brandNewField": {"x": 1},
        "providerSettings": {"bfl": {"new": True}},
    }
    request = registry.validate_request(wire, allow_unknown_model=True)
    assert request.to_wire() == {"taskType": "imageInference", "taskUUID": request.task_uuid, **wire}
    with pytest.raises(BflInvalidRequestError) as caught:
        registry.validate_request({**wire, "outputQuality": 5}, allow_unknown_model=True)
    assert caught.value.parameter == "outputQuality"
    assert registry.spec_of(request) is None


def test_a_non_object_request_is_a_clear_error() -> None:
    with pytest.raises(BflInvalidRequestError, match="must be an object"):
        registry.validate_request(["not", "a", "dict"])  # type: ignore[arg-type]


def test_operator_keywords_and_template_fields_come_from_the_registry() -> None:
    assert set(_requests.MODEL_KEYWORDS) == {"steps", "cfg_scale"}
    assert set(_requests.PROVIDER_KEYWORDS) == {"prompt_upsampling", "safety_tolerance", "raw"}
    fields = set(BflImageInferenceOperator.template_fields)
    assert {"steps", "cfg_scale", "raw", "reference_images"} <= fields


def test_operator_builds_model_specific_requests_from_keywords() -> None:
    operator = BflImageInferenceOperator(
        task_id="flex",
        model="bfl:6@1",
        positive_prompt="a poster",
        width=1024,
        height=1024,
        steps=30,
        cfg_scale=3.5,
    )
    (request,) = operator.build_requests()
    assert (request.to_wire()["steps"], request.to_wire()["CFGScale"]) == (30, 3.5)
    ultra = BflImageInferenceOperator(
        task_id="ultra", model="bfl:2@2", positive_prompt="a vista", width=2752, height=1536, raw=True
    )
    assert ultra.build_requests()[0].to_wire()["providerSettings"] == {"bfl": {"raw": True}}


def test_a_keyword_the_model_does_not_have_fails_the_dag_import() -> None:
    with pytest.raises(BflInvalidRequestError, match="unknown parameter 'steps'"):
        BflImageInferenceOperator(task_id="t", positive_prompt="a mug", width=512, height=512, steps=20)


# -- prices ---------------------------------------------------------------------------------------

#: The FLUX.2 [max] model page's price table: (output size, reference sizes, USD).
FLUX2_MAX_TABLE = [
    ((1024, 1024), [], 0.07),
    ((1536, 1024), [], 0.10),
    ((1024, 1536), [], 0.10),
    ((1920, 1080), [], 0.13),
    ((1024, 1024), [(1920, 1080)], 0.16),
    ((1024, 1024), [(1024, 1024)] * 3, 0.16),
]


@pytest.mark.parametrize(("size", "references", "usd"), FLUX2_MAX_TABLE)
def test_flux2_max_price_rule_reproduces_every_row_of_the_pages_table(
    size: tuple[int, int], references: list[tuple[int, int]], usd: float
) -> None:
    spec = registry.spec_for("bfl:7@1")
    assert spec.price(size[0], size[1], references) == pytest.approx(usd)


def test_megapixel_counting() -> None:
    assert [megapixels(1024, 1024), megapixels(512, 512), megapixels(1536, 1024), megapixels(1920, 1080)] == [
        1,
        1,
        2,
        3,
    ]


@pytest.mark.parametrize(
    ("air", "size", "usd"),
    [
        ("bfl:2@1", (1024, 768), 0.04),
        ("bfl:2@2", (2752, 1536), 0.06),
        ("bfl:3@1", (1024, 1024), 0.04),
        ("bfl:4@1", (1024, 1024), 0.08),
        ("bfl:5@1", (1024, 1024), 0.03),
        ("bfl:6@1", (512, 512), 0.06),
        ("bfl:6@1", (1024, 1024), 0.06),
        ("bfl:7@1", (1024, 1024), 0.07),
    ],
)
def test_listed_prices(air: str, size: tuple[int, int], usd: float) -> None:
    assert registry.spec_for(air).price(size[0], size[1], ()) == pytest.approx(usd)


def _requests_of(*wires: dict[str, Any]) -> list[ImageInferenceRequest]:
    return [registry.validate_request(wire) for wire in wires]


def test_budget_uses_each_models_price() -> None:
    batch = _requests_of({**BASE, "model": "bfl:4@1", "numberResults": 2}, {**BASE, "model": "bfl:3@1"})
    _requests.check_budget(batch, max_images=None, max_cost=0.20, price_per_image=None, task_label="t")
    with pytest.raises(BflBudgetExceededError, match=r"3 images \(priced per model\) would cost 0.20 USD"):
        _requests.check_budget(batch, max_images=None, max_cost=0.19, price_per_image=None, task_label="t")


def test_budget_counts_reference_megapixels_where_the_model_bills_them() -> None:
    batch = _requests_of({**BASE, "model": "bfl:7@1"})
    _requests.check_budget(batch, max_images=None, max_cost=0.07, price_per_image=None, task_label="t")
    with pytest.raises(BflBudgetExceededError, match=r"0\.16 USD"):
        _requests.check_budget(
            batch,
            max_images=None,
            max_cost=0.15,
            price_per_image=None,
            task_label="t",
            references=[(1920, 1080)],
        )


def test_budget_for_an_unknown_model_needs_a_price() -> None:
    unknown = [registry.validate_request({**BASE, "model": "bfl:99@1"}, allow_unknown_model=True)]
    with pytest.raises(BflInvalidRequestError, match="set price_per_image"):
        _requests.check_budget(unknown, max_images=None, max_cost=1.0, price_per_image=None, task_label="t")
    with pytest.raises(BflBudgetExceededError, match=r"1 images at 2\.0 USD each"):
        _requests.check_budget(unknown, max_images=None, max_cost=1.0, price_per_image=2.0, task_label="t")


# -- the plan ---------------------------------------------------------------------------------------


def test_the_plan_records_the_models_result_size_and_references() -> None:
    request = registry.validate_request(
        {
            **BASE,
            "model": "bfl:3@1",
            "inputs": {"referenceImages": ["file:///data/mug.png", "https://x.example/y.png"]},
        }
    )
    entry = PlannedGeneration.of(request, position=1)
    assert (entry.model, entry.width, entry.height) == ("bfl:3@1", 1024, 1024)
    assert list(entry.references) == ["file:///data/mug.png", "https://x.example/y.png"]
    assert type(entry.request()) is type(request)
    no_size = registry.validate_request({"model": "bfl:7@1", "positivePrompt": "a mug"})
    assert (
        PlannedGeneration.of(no_size, position=1).width,
        PlannedGeneration.of(no_size, position=1).height,
    ) == (
        None,
        None,
    )


def test_largest_output_is_ultras_4_3_size() -> None:
    """2368x1792 (4.24 MP) beats 3136x1344 (4.21 MP) and 2048x2048 (4.19 MP, also the FLUX.2 maximum)."""
    assert registry.largest_output_pixels() == 2368 * 1792


def test_the_readme_documents_every_model_with_its_price_and_an_example() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("\n## Models\n", 1)[1].split("\n## ", 1)[0]
    for air, spec in registry.models().items():
        (row,) = [line for line in section.splitlines() if line.startswith(f"| {spec.name} | `{air}` |")]
        assert row.rstrip(" |").endswith(spec.price_text), air
        assert f'model="{air}"' in section or air == "bfl:2@1", air  # an example per model


def test_the_operators_escape_hatch_for_a_model_the_provider_does_not_know() -> None:
    with pytest.raises(BflInvalidRequestError, match="allow_unknown_model=True"):
        BflImageInferenceOperator(
            task_id="t", model="bfl:99@1", positive_prompt="a mug", width=1024, height=1024
        )
    operator = BflImageInferenceOperator(
        task_id="t",
        request={"model": "bfl:99@1", "positivePrompt": "a mug", "newKnob": 3},
        allow_unknown_model=True,
    )
    (request,) = operator.build_requests()
    assert request.to_wire()["newKnob"] == 3 and request.model == "bfl:99@1"


def test_qa_limits_cover_the_largest_registered_output() -> None:
    """QA's decode and size limits are written as numbers (QA imports no models); keep them in step."""
    from airflow_provider_bfl.qa.config import DEFAULT_MAX_BYTES
    from airflow_provider_bfl.qa.imaging import MAX_MODEL_PIXELS

    assert registry.largest_output_pixels() == MAX_MODEL_PIXELS
    assert DEFAULT_MAX_BYTES >= 1.5 * 4 * MAX_MODEL_PIXELS  # an incompressible RGBA PNG, with margin
