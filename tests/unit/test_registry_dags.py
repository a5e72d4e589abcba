"""
A ``dag.test()`` run of every registered model against the emulator, and reference images end to end.

One DAG run holds a task per model plus the reference cases (a local file, a mapped list of
products, an upstream task's landed records, a file that is not an image); the tests below read
what each task recorded.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bfl.exceptions import BflInvalidRequestError
from airflow_provider_bfl.models import registry
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from tests.conftest import API_KEY, DAGS_FOLDER, connection_json
from tests.dag_runs import task_states, write_dag, xcom

PRODUCTS = Path(__file__).parents[2] / "example_dags" / "data" / "products"
MUG, LAMP, SHOE = (PRODUCTS / name for name in ("MUG-0107.png", "LMP-0142.png", "SNK-0311.png"))


def _task_id(air: str) -> str:
    return "gen_" + air.replace(":", "_").replace("@", "_")


def _model_tasks() -> str:
    lines = []
    for air, spec in registry.models().items():
        example = {k: v for k, v in spec.example.items() if k not in ("taskType", "taskUUID", "inputs")}
        name = "upstream = " if air == "bfl:2@1" else ""  # its landed image is a later task's reference
        lines.append(
            f"    {name}BflImageInferenceOperator(task_id={_task_id(air)!r}, request={example!r}, destination=DEST)"
        )
    return "\n".join(lines)


DAG_BODY = """
DEST = {dest!r}
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
{model_tasks}
    BflImageInferenceOperator(
        task_id="kontext_file", model="bfl:3@1", positive_prompt="the mug on an oak kitchen counter",
        width=1248, height=832, reference_images={mug!r}, destination=DEST,
    )
    BflImageInferenceOperator.partial(
        task_id="kontext_mapped", model="bfl:4@1", positive_prompt="the product in a sunlit living room",
        width=1024, height=1024, destination=DEST,
    ).expand(reference_images=[{lamp_uri!r}, {shoe!r}])
    BflImageInferenceOperator(
        task_id="flex_from_records", model="bfl:6@1", positive_prompt="the library on a picnic rug",
        width=1024, height=768, steps=20, cfg_scale=3.0, reference_images=upstream.output, destination=DEST,
    )
    BflImageInferenceOperator(
        task_id="max_without_size", model="bfl:7@1", positive_prompt="the mug, size left to the model",
        destination=DEST,
    )
    BflImageInferenceOperator(
        task_id="not_an_image", model="bfl:3@1", positive_prompt="the product on a shelf",
        width=1024, height=1024, reference_images={not_image!r},
    )
    BflImageInferenceOperator(
        task_id="server_refuses", request={{"model": "bfl:5@1", "positivePrompt": "a poster", "width": 1024,
        "height": 1024, "providerSettings": {{"bfl": {{"guidance": 3}}}}}},
    )
"""


@dataclass
class Run:
    states: dict[str, str]
    run: Any
    received: list[dict[str, Any]]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("registry-dags")
    not_image = tmp / "notes.png"
    not_image.write_text("this is not an image")
    body = DAG_BODY.format(
        dest=f"file://{tmp / 'images'}",
        model_tasks=_model_tasks(),
        mug=str(MUG),
        lamp_uri=MUG.with_name("LMP-0142.png").as_uri(),
        shoe=str(SHOE),
        not_image=str(not_image),
    )
    with RunwareEmulator(api_key=API_KEY) as emulator, pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(emulator))
        dag = write_dag(DAGS_FOLDER, body)
        result = dag.test()
        yield Run(task_states(result), result, emulator.received_tasks("imageInference"))


def _sent(run: Run, prompt: str) -> list[dict[str, Any]]:
    return [task for task in run.received if task["positivePrompt"] == prompt]


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("air", list(registry.models()))
def test_a_dag_run_of_each_model_lands_images_of_its_size(run: Run, air: str) -> None:
    task_id = _task_id(air)
    assert run.states[task_id] == "success"
    (record,) = xcom(run.run, task_id)
    example = registry.models()[air].example
    assert (record["width"], record["height"]) == (example["width"], example["height"])
    assert record["requested"] == {
        "width": example["width"],
        "height": example["height"],
        "outputFormat": "JPG",
    }
    assert Path(record["storedURI"].removeprefix("file://")).stat().st_size == record["bytes"]
    (sent,) = _sent(run, example["positivePrompt"])
    assert sent["model"] == air
    assert {k: v for k, v in sent.items() if k not in ("taskUUID", "deliveryMethod", "includeCost")} == {
        k: v
        for k, v in example.items()
        if k not in ("taskUUID", "inputs")  # the example's URL is not served
    }


@pytest.mark.usefixtures("airflow_db")
def test_a_local_reference_goes_out_as_a_data_uri_and_is_recorded_by_its_uri(run: Run) -> None:
    assert run.states["kontext_file"] == "success"
    (sent,) = _sent(run, "the mug on an oak kitchen counter")
    (reference,) = sent["inputs"]["referenceImages"]
    assert reference == "data:image/png;base64," + base64.b64encode(MUG.read_bytes()).decode()
    (record,) = xcom(run.run, "kontext_file")
    assert record["references"] == [MUG.as_uri()]
    assert (record["width"], record["height"]) == (1248, 832)


@pytest.mark.usefixtures("airflow_db")
def test_no_reference_bytes_in_xcom(run: Run) -> None:
    encoded = base64.b64encode(MUG.read_bytes()).decode()[:40]
    for task_id in ("kontext_file", "flex_from_records"):
        for key in ("return_value", "bfl_plan", "task_uuids"):
            text = json.dumps(xcom(run.run, task_id, key=key))
            assert encoded not in text and "base64" not in text, (task_id, key)


@pytest.mark.usefixtures("airflow_db")
def test_mapped_references_make_one_edit_per_product(run: Run) -> None:
    assert [run.states[f"kontext_mapped[{i}]"] for i in range(2)] == ["success", "success"]
    records = [xcom(run.run, "kontext_mapped", map_index=i)[0] for i in range(2)]
    assert [r["references"] for r in records] == [[LAMP.as_uri()], [SHOE.as_uri()]]
    sent = _sent(run, "the product in a sunlit living room")
    assert sorted(len(task["inputs"]["referenceImages"][0]) for task in sent) == sorted(
        len("data:image/png;base64,") + len(base64.b64encode(p.read_bytes())) for p in (LAMP, SHOE)
    )


@pytest.mark.usefixtures("airflow_db")
def test_an_upstream_tasks_landed_images_are_references_by_stored_uri(run: Run) -> None:
    assert run.states["flex_from_records"] == "success"
    (upstream,) = xcom(run.run, "gen_bfl_2_1")
    (record,) = xcom(run.run, "flex_from_records")
    assert record["references"] == [upstream["storedURI"]]
    (sent,) = _sent(run, "the library on a picnic rug")
    stored = Path(upstream["storedURI"].removeprefix("file://")).read_bytes()
    assert sent["inputs"]["referenceImages"] == [
        "data:image/jpeg;base64," + base64.b64encode(stored).decode()
    ]
    assert (sent["steps"], sent["CFGScale"]) == (20, 3.0)


@pytest.mark.usefixtures("airflow_db")
def test_a_reference_that_is_not_an_image_fails_before_anything_is_sent(run: Run) -> None:
    assert run.states["not_an_image"] == "failed"
    assert _sent(run, "the product on a shelf") == []


@pytest.mark.usefixtures("airflow_db")
def test_a_setting_left_to_the_server_that_it_refuses_fails_the_task(run: Run) -> None:
    assert run.states["server_refuses"] == "failed"
    (refused,) = [t for t in run.received if t.get("providerSettings") == {"bfl": {"guidance": 3}}]
    assert refused["model"] == "bfl:5@1"


# -- checks that need no run -------------------------------------------------------------------------


def test_too_many_references_for_the_model_fail_the_dag_import() -> None:
    with pytest.raises(BflInvalidRequestError, match="at most 2"):
        BflImageInferenceOperator(
            task_id="t",
            model="bfl:3@1",
            positive_prompt="x y",
            width=1024,
            height=1024,
            reference_images=[str(MUG), str(LAMP), str(SHOE)],
        )


def test_references_for_a_model_that_takes_none_name_the_models_that_do() -> None:
    with pytest.raises(BflInvalidRequestError, match=r"bfl:2@1 takes no reference images.*bfl:3@1, bfl:4@1"):
        BflImageInferenceOperator(
            task_id="t", positive_prompt="x y", width=512, height=512, reference_images=str(MUG)
        )


def test_image_data_is_refused_as_a_reference_locator() -> None:
    with pytest.raises(BflInvalidRequestError, match="not image data"):
        BflImageInferenceOperator(
            task_id="t",
            model="bfl:3@1",
            positive_prompt="x y",
            width=1024,
            height=1024,
            reference_images="data:image/png;base64,AAAA",
        )


@pytest.mark.usefixtures("airflow_db")
def test_a_size_left_to_the_model_is_landed_at_the_size_it_came_in(run: Run) -> None:
    assert run.states["max_without_size"] == "success"
    (record,) = xcom(run.run, "max_without_size")
    assert (record["width"], record["height"]) == (1024, 1024)  # the emulator's choice
    assert record["requested"] == {"width": None, "height": None, "outputFormat": "JPG"}
    (sent,) = _sent(run, "the mug, size left to the model")
    assert "width" not in sent and "height" not in sent
