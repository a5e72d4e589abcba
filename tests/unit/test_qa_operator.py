"""BflImageQAOperator in real DAG runs (dag.test) on real landed images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from airflow_provider_bfl.qa import BflImageQAOperator, QAInputError
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from tests.conftest import DAGS_FOLDER
from tests.dag_runs import task_states, write_dag, xcom
from tests.unit.qa_images import ImageSource, image_source, land, path_of

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture(scope="module")
def source() -> Iterator[ImageSource]:
    yield from image_source()


def run_qa(records: list[dict[str, Any]], operator_kwargs: str, upstream: str = "images=landed") -> Any:
    """Run ``land >> qa`` where ``land`` returns ``records`` as its XCom, like the landing task."""
    dag = write_dag(
        DAGS_FOLDER,
        f"""
        from airflow.sdk import task
        from airflow_provider_bfl.qa import BflImageQAOperator

        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            @task
            def land():
                return {records!r}

            landed = land()
            qa = BflImageQAOperator(task_id="qa", {upstream}, {operator_kwargs})
            landed >> qa
        """,
    )
    return dag.test()


def test_operator_returns_verdicts_pushes_passed_and_quarantines(source: ImageSource, tmp_path: Path) -> None:
    good = land(tmp_path, source.generate("a lighthouse", seed=1))
    blank = land(tmp_path, source.generate("blank", seed=2))
    duplicate = land(tmp_path, source.generate("a lighthouse", seed=1, fresh=True))
    sheet = tmp_path / "sheets" / "qa.png"
    dag_run = run_qa(
        [good, blank, duplicate],
        f"quarantine_prefix='file://{tmp_path}/held/{{{{ ds_nodash }}}}', contact_sheet={str(sheet)!r}",
    )
    assert task_states(dag_run) == {"land": "success", "qa": "success"}
    verdicts = xcom(dag_run, "qa")
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "quarantined", "skipped"]
    assert xcom(dag_run, "qa", key="passed") == [good]
    # The templated prefix was rendered, and the file really moved there.
    moved = path_of(verdicts[1]["quarantinedURI"])
    assert moved.parent.parent.parent == tmp_path / "held" and moved.parent.parent.name.isdigit()
    assert moved.exists() and not path_of(blank["storedURI"]).exists()
    assert xcom(dag_run, "qa", key="contact_sheet") == f"file://{sheet}"
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.width == 3 * 256 + 4 * 8


def test_operator_rerun_after_quarantine_succeeds_with_jinja_rendered_images(
    source: ImageSource, tmp_path: Path
) -> None:
    records = [
        land(tmp_path, source.generate("a harbour", seed=3)),
        land(tmp_path, source.generate("nsfw poster", seed=3, check_content=True)),
    ]
    first = run_qa(records, "nsfw='quarantine'")
    # The same upstream records again (the NSFW original is gone now), this time through a Jinja
    # template, which renders the XCom list as text.
    second = run_qa(records, "nsfw='quarantine'", upstream="images=\"{{ ti.xcom_pull(task_ids='land') }}\"")
    assert task_states(first)["qa"] == task_states(second)["qa"] == "success"
    assert xcom(first, "qa") == xcom(second, "qa")
    verdicts = xcom(second, "qa")
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "quarantined"]
    assert verdicts[1]["quarantinedURI"].startswith(f"file://{tmp_path}/quarantine/")
    assert path_of(verdicts[1]["quarantinedURI"]).exists()
    assert xcom(second, "qa", key="passed") == [records[0]]


def test_operator_fails_the_task_and_keeps_the_verdicts(source: ImageSource, tmp_path: Path) -> None:
    good = land(tmp_path, source.generate("a harbour", seed=4))
    wide = land(tmp_path, source.generate("a quay", seed=5), requested_width=512)
    sheet = tmp_path / "sheet.png"
    dag_run = run_qa([good, wide], f"policies={{'near_duplicate': 'off'}}, contact_sheet={str(sheet)!r}")
    assert task_states(dag_run) == {"land": "success", "qa": "failed"}
    assert sheet.exists()  # the reviewer's overview is written when QA fails, too
    verdicts = xcom(dag_run, "qa", key="verdicts")
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "failed"]
    assert verdicts[1]["qa"]["reasons"] == ["dimensions: decoded 256x256, requested 512x256"]
    assert xcom(dag_run, "qa", key="passed") is None
    assert xcom(dag_run, "qa") is None


def test_generate_land_and_qa_in_one_dag(bfl_conn: RunwareEmulator, tmp_path: Path) -> None:
    """The provider's own generation operator lands the images; QA consumes its XCom as is."""
    dag = write_dag(
        DAGS_FOLDER,
        f"""
        from airflow_provider_bfl.qa import BflImageQAOperator

        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            generate = BflImageInferenceOperator(
                task_id="generate", prompts=["a lighthouse", "a blank wall"], width=256, height=256,
                seed=11, output_type="base64Data", output_format="PNG", deferrable=False,
                destination="file://{tmp_path}/images",
            )
            BflImageQAOperator(task_id="qa", images=generate.output)
        """,
    )
    dag_run = dag.test()
    assert task_states(dag_run) == {"generate": "success", "qa": "success"}
    verdicts = xcom(dag_run, "qa")
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "quarantined"]
    assert xcom(dag_run, "qa", key="passed") == xcom(dag_run, "generate")[:1]
    moved = path_of(verdicts[1]["quarantinedURI"])
    assert moved.exists() and moved.parent.parent.name == "quarantine"
    assert moved.parent.parent.parent == path_of(verdicts[1]["storedURI"]).parent.parent


def test_operator_flattens_the_output_of_a_mapped_landing_task(source: ImageSource, tmp_path: Path) -> None:
    groups = [
        [land(tmp_path, source.generate("a harbour", seed=8))],
        [
            land(tmp_path, source.generate("blank", seed=9)),
            land(tmp_path, source.generate("a quay", seed=10)),
        ],
    ]
    dag = write_dag(
        DAGS_FOLDER,
        f"""
        from airflow.sdk import task
        from airflow_provider_bfl.qa import BflImageQAOperator

        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
            @task
            def land(group):
                return group

            BflImageQAOperator(task_id="qa", images=land.expand(group={groups!r}), not_blank="skip")
        """,
    )
    dag_run = dag.test()
    assert task_states(dag_run)["qa"] == "success"
    verdicts = xcom(dag_run, "qa")
    assert [v["imageUUID"] for v in verdicts] == [r["imageUUID"] for group in groups for r in group]
    assert [v["qa"]["action"] for v in verdicts] == ["kept", "skipped", "kept"]


def test_bad_policy_or_threshold_fails_at_dag_parse_time() -> None:
    with pytest.raises(QAInputError, match="Policy of 'nsfw': got 'delete'"):
        BflImageQAOperator(task_id="qa", images=[], nsfw="delete")  # type: ignore[arg-type]
    with pytest.raises(QAInputError, match=r"max_dominant_share: got 1\.5"):
        BflImageQAOperator(task_id="qa", images=[], max_dominant_share=1.5)


def test_templated_policies_are_validated_at_run_time() -> None:
    operator = BflImageQAOperator(task_id="qa", images=[], nsfw="skip", policies={"nsfw": "fail"})
    with pytest.raises(QAInputError, match="The policy of 'nsfw' is given twice"):
        operator.qa_config()
    operator = BflImageQAOperator(task_id="qa", images=[], policies='{"nsfw": "skip"}')  # type: ignore[arg-type]
    assert operator.qa_config().policy("nsfw") == "skip"
