"""The README's snippets run as written and use no template variable Airflow 3 leaves undefined."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).parents[2] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
#: Undefined on manual and API-triggered runs in Airflow 3 (no logical date).
NO_LOGICAL_DATE = re.compile(r"\{\{[^}]*\b(ds|ds_nodash|ts|ts_nodash|logical_date|execution_date)\b")


def test_readme_has_python_snippets() -> None:
    assert len(SNIPPETS) >= 5


@pytest.mark.parametrize("number", range(len(SNIPPETS)))
def test_snippet_parses_and_needs_no_logical_date(number: int) -> None:
    snippet = SNIPPETS[number]
    compile(snippet, f"README.md python snippet {number + 1}", "exec")
    assert not NO_LOGICAL_DATE.search(snippet), snippet


def test_providers_list_shows_the_description_intact() -> None:
    """`airflow providers list` renders with rich markup: "[pro]" would vanish from the table."""
    from airflow_provider_bfl.get_provider_info import get_provider_info

    result = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "providers", "list", "-o", "table"],
        capture_output=True,
        text=True,
        timeout=180,
        env={
            "COLUMNS": "400",
            "PATH": "/usr/bin:/bin",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_HOME": str(Path(__import__("tempfile").mkdtemp())),
        },
    )
    assert result.returncode == 0, result.stderr
    line = next(row for row in result.stdout.splitlines() if row.startswith("airflow-provider-bfl"))
    assert get_provider_info()["description"].rstrip(".") in line


def _display_names(info: dict[str, Any]) -> list[str]:
    """Every name the providers CLI shows in its tables (description, integrations, hook names)."""
    names = [info["name"], info["description"]]
    for group in ("integrations", "operators", "sensors", "hooks", "triggers"):
        names += [entry["integration-name"] for entry in info.get(group, [])]
    names += [entry["hook-name"] for entry in info["connection-types"]]
    return names


def test_provider_names_survive_the_cli_tables_rich_markup() -> None:
    """`airflow providers list/hooks/get` print through rich: a "[tag]" in a name would vanish."""
    from rich.text import Text

    from airflow_provider_bfl.get_provider_info import get_provider_info

    names = _display_names(get_provider_info())
    assert len(names) >= 8
    for name in names:
        assert Text.from_markup(name).plain == name, name
    assert any("FLUX.1.1 pro" in name for name in names[2:])  # the model's name kept, plainly


#: Names a snippet borrows from the prose around it ("your prompts", "your DAG"), defined as the
#: prose describes them; everything else a snippet uses it must import or define itself.
BORROWED = """
import pendulum
from airflow.sdk import DAG

prompts = ["Studio photo of a walnut desk lamp", "Studio photo of a brass desk lamp"]
prompts_by_sku = {"SKU-1": prompts[0], "SKU-2": prompts[1]}
requests = [{"positivePrompt": prompt, "width": 512, "height": 512} for prompt in prompts]
"""
#: The DAG the emulator snippet tests (a DAG file, as ``dag.test()`` needs): three images per prompt.
SIX_IMAGES = """
with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    BflImageInferenceOperator(task_id="six", prompts=["a walnut desk lamp", "a brass desk lamp"],
                              width=512, height=512, number_results=3, poll_interval=0.2)
"""


def _kinds() -> dict[str, list[int]]:
    """Snippets by what running them needs: a DAG to build in, a live API, or nothing."""
    kinds: dict[str, list[int]] = {"dag": [], "hook": [], "emulator": [], "plain": []}
    for number, snippet in enumerate(SNIPPETS):
        if "RunwareEmulator(" in snippet:
            kinds["emulator"].append(number)
        elif "BflHook(" in snippet:
            kinds["hook"].append(number)
        elif "Operator(" in snippet:
            kinds["dag"].append(number)
        else:
            kinds["plain"].append(number)
    return kinds


def test_every_snippet_is_run_by_one_of_the_tests_below() -> None:
    kinds = _kinds()
    assert sorted(n for numbers in kinds.values() for n in numbers) == list(range(len(SNIPPETS)))
    assert kinds["dag"] and kinds["hook"] and kinds["emulator"] and kinds["plain"], kinds


def test_operator_snippets_build_one_dag_as_written() -> None:
    """In the README's order (a later snippet uses an earlier one's tasks), inside one DAG."""
    namespace: dict[str, Any] = {}
    exec(BORROWED, namespace)
    with namespace["DAG"]("readme_snippets", schedule=None, start_date=namespace["pendulum"].now()) as dag:
        for number in _kinds()["dag"]:
            exec(compile(SNIPPETS[number], f"README.md python snippet {number + 1}", "exec"), namespace)
    built = set(dag.task_dict)
    # Every task the snippets name was constructed (literal arguments are validated right there).
    named = {name for number in _kinds()["dag"] for name in re.findall(r'task_id="(\w+)"', SNIPPETS[number])}
    assert named <= built and len(named) >= 12, (named, built)


def test_plain_snippets_run_as_written() -> None:
    """Running is the test (any exception fails it); the registry snippet's request is checked too."""
    validated = []
    for number in _kinds()["plain"]:
        namespace: dict[str, Any] = {}
        exec(BORROWED, namespace)
        exec(compile(SNIPPETS[number], f"README.md python snippet {number + 1}", "exec"), namespace)
        if "validate_request" in SNIPPETS[number]:
            validated.append(namespace["request"].to_wire())
    assert [(wire["model"], wire["width"], wire["height"]) for wire in validated] == [("bfl:3@1", 1392, 752)]


@pytest.mark.usefixtures("bfl_conn")
def test_hook_snippet_runs_against_the_emulator() -> None:
    (number,) = _kinds()["hook"]
    namespace: dict[str, Any] = {}
    exec(BORROWED, namespace)
    exec(compile(SNIPPETS[number], f"README.md python snippet {number + 1}", "exec"), namespace)
    assert len(namespace["images"]) == 1
    assert sorted(namespace["statuses"]) == sorted(namespace["outcome"].pending)
    assert all(status.done for status in namespace["statuses"].values())


@pytest.mark.usefixtures("airflow_db")
def test_emulator_snippet_tests_a_dag_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    (number,) = _kinds()["emulator"]
    monkeypatch.delenv("AIRFLOW_CONN_BFL_DEFAULT", raising=False)  # the snippet sets it itself
    from tests.conftest import DAGS_FOLDER
    from tests.dag_runs import write_dag

    namespace: dict[str, Any] = {"dag": write_dag(DAGS_FOLDER, SIX_IMAGES)}
    exec(compile(SNIPPETS[number], f"README.md python snippet {number + 1}", "exec"), namespace)
    assert namespace["emu"].snapshot().images_billed == 6  # the snippet's own assert, checked again
