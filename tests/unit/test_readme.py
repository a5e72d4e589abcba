"""The README's snippets parse as written and use no template variable Airflow 3 leaves undefined."""

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
