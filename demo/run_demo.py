"""
Run the example catalogue pipeline end to end with a real Airflow run (``dag.test()``).

Offline by default: the bundled emulator plays Runware and the images are synthetic. It is told to
return one blank image and flag one as NSFW, so the QA step has something to catch. Review is
auto-decided (``review=auto``) so the run never waits for a human. With ``RUNWARE_API_KEY`` set
(or ``AIRFLOW_CONN_BFL_DEFAULT`` configured) it calls the real API and spends real credits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "example_dags" / "example_bfl_catalogue_pipeline.py"
DAG_ID = "example_bfl_catalogue_pipeline"


def _prepare_airflow_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="bfl-demo-airflow-home-"))
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAG_FILE.parent)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    # A fresh home has no Fernet key: Airflow would warn that connections and variables are stored
    # unencrypted. The throw-away home gets a key of its own.
    if not os.environ.get("AIRFLOW__CORE__FERNET_KEY"):
        from cryptography.fernet import Fernet

        os.environ["AIRFLOW__CORE__FERNET_KEY"] = Fernet.generate_key().decode()
    return home


@contextlib.contextmanager
def _api_connection() -> Iterator[str]:
    """Point ``bfl_default`` at the real API when a key is given, else at the bundled emulator."""
    if os.environ.get("AIRFLOW_CONN_BFL_DEFAULT"):
        yield "the configured bfl_default connection (real API: real images, real cost)"
        return
    key = os.environ.get("RUNWARE_API_KEY")
    if key:
        os.environ["AIRFLOW_CONN_BFL_DEFAULT"] = json.dumps({"conn_type": "bfl", "password": key})
        yield "the Runware API with RUNWARE_API_KEY (real images, real cost)"
        return
    from airflow_provider_bfl.testing.emulator import RunwareEmulator

    # One product comes back blank and one is flagged, so QA has something to catch.
    with RunwareEmulator(
        api_key="demo-key-offline",
        latency=1.5,
        blank_prompt_marker="stoneware mug",
        nsfw_marker="cognac leather",
    ) as emulator:
        os.environ["AIRFLOW_CONN_BFL_DEFAULT"] = json.dumps(
            {
                "conn_type": "bfl",
                "password": emulator.api_key,
                "host": emulator.base_url,
                "extra": {"poll_interval": 0.5, "poll_max_interval": 2},
            }
        )
        yield f"the bundled emulator at {emulator.base_url} (OFFLINE: the images are SYNTHETIC)"


#: The table fits a terminal this wide; the prompt column gives way (the full prompts are in XCom).
TABLE_WIDTH = 120
HEADERS = ("#", "SKU", "prompt", "size", "seed", "cost $", "QA", "status")


def _print_table(rows: list[tuple[str, ...]], headers: tuple[str, ...], shrink: str, width: int) -> None:
    """Columns two spaces apart; the ``shrink`` column is cut (with "...") so a line fits ``width``."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    column = headers.index(shrink)
    others = sum(widths) - widths[column] + 2 * (len(headers) - 1)
    widths[column] = max(len(shrink), min(widths[column], width - others))

    def cut(text: str, size: int) -> str:
        return text if len(text) <= size else text[: size - 3].rstrip() + "..."

    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(cut(cell, w).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _rows(verdicts: list[dict[str, Any]], published: set[str]) -> list[tuple[str, ...]]:
    """One row per image, from its own record: the SKU (``key``) and prompt travel with it."""
    rows = []
    for number, verdict in enumerate(verdicts, start=1):
        qa = verdict["qa"]
        status = "published" if verdict["imageUUID"] in published else qa["action"]
        rows.append(
            (
                str(number),
                str(verdict.get("key") or "-"),
                " ".join(str(verdict.get("prompt") or "-").split()),
                f"{verdict['width']}x{verdict['height']}",
                str(verdict.get("seed")),
                f"{verdict['cost']:.2f}" if verdict.get("cost") is not None else "-",
                "pass" if qa["passed"] else ", ".join(r.split(":")[0] for r in qa["reasons"]),
                status,
            )
        )
    return rows


def _folder(uris: list[str]) -> str:
    """The folder holding all of ``uris`` (file:// stripped)."""
    paths = [uri.removeprefix("file://") for uri in uris]
    return os.path.commonpath([os.path.dirname(path) for path in paths]) if paths else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default=str(REPO / "demo-output"), help="where the images go")
    args = parser.parse_args()
    output_dir = Path(args.output_dir).resolve()

    _prepare_airflow_home()
    from airflow.utils.db import initdb

    initdb()
    with _api_connection() as where:
        print(f"\n>>> Generating with {where}")
        from airflow_provider_bfl.testing.dag_runs import load_dag_file, task_states, xcom

        dag = load_dag_file(DAG_FILE, DAG_ID)
        run = dag.test(run_conf={"destination": f"file://{output_dir}", "review": "auto"})
        print(f"\n>>> DAG run {run.run_id}: {run.state}")
        for task_id, state in sorted(task_states(run).items()):
            print(f"    {task_id:<24} {state}")
        if str(run.state) != "success":
            return 1
        verdicts = xcom(run, "qa")
        published_records = xcom(run, "publish") or []
        published = {record["imageUUID"] for record in published_records}
        if "SYNTHETIC" in where:
            print("\n>>> These images are synthetic: set RUNWARE_API_KEY to generate real ones.")
        print()
        _print_table(_rows(verdicts, published), HEADERS, shrink="prompt", width=TABLE_WIDTH)
        total = sum(float(v["cost"]) for v in verdicts if v.get("cost") is not None)
        sheet = str(xcom(run, "qa", key="contact_sheet")).removeprefix("file://")
        quarantined = [v["quarantinedURI"] for v in verdicts if v.get("quarantinedURI")]
        print(f"\n>>> {len(verdicts)} images, {len(published)} published, total cost {total:.2f} USD")
        print(f">>> output folder: {output_dir}")
        print(f">>>   published:   {_folder([r['publishedURI'] for r in published_records])}")
        if quarantined:
            print(f">>>   quarantined: {_folder(quarantined)}")
        print(f">>>   contact sheet: {sheet}")
        if _run_product_edit(output_dir) != "success":
            return 1
    return 0


def _run_product_edit(output_dir: Path) -> str:
    """The product photos, each edited into a scene with FLUX.1 Kontext (the photo as reference)."""
    from airflow_provider_bfl.testing.dag_runs import load_dag_file, xcom

    print("\n>>> Product photos into lifestyle scenes (FLUX.1 Kontext, the photo as reference image)")
    dag_file = REPO / "example_dags" / "example_bfl_product_edit.py"
    run = load_dag_file(dag_file, "example_bfl_product_edit").test(
        run_conf={"destination": f"file://{output_dir}", "review": "auto"}
    )
    print(f">>> DAG run {run.run_id}: {run.state}")
    verdicts = xcom(run, "qa") or []
    for verdict in verdicts:
        reference = str(verdict["references"][0]).rsplit("/", 1)[-1]
        size = f"{verdict['width']}x{verdict['height']}"
        print(f"    {verdict['key']:<10} reference {reference:<14} -> {size}  QA {verdict['qa']['action']}")
    print(f">>>   edits: {_folder([v['storedURI'] for v in verdicts])}")
    return str(run.state)


if __name__ == "__main__":
    sys.exit(main())
