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


def _print_table(rows: list[tuple[str, ...]], headers: tuple[str, ...]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def _rows(
    verdicts: list[dict[str, Any]], prompts: dict[str, str], published: set[str]
) -> list[tuple[str, ...]]:
    rows = []
    for verdict in verdicts:
        qa = verdict["qa"]
        status = "published" if verdict["imageUUID"] in published else qa["action"]
        rows.append(
            (
                prompts.get(verdict["taskUUID"], "lifestyle variant")[:40],
                f"{verdict['width']}x{verdict['height']}",
                str(verdict.get("seed")),
                f"{verdict['cost']:.2f}" if verdict.get("cost") is not None else "-",
                "pass" if qa["passed"] else ", ".join(r.split(":")[0] for r in qa["reasons"]),
                status,
                os.path.relpath(
                    str(
                        verdict.get("publishedURI") or verdict.get("quarantinedURI") or verdict["storedURI"]
                    ).removeprefix("file://")
                ),
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default=str(REPO / "demo-output"), help="where the images go")
    args = parser.parse_args()
    output_dir = Path(args.output_dir).resolve()

    _prepare_airflow_home()
    from airflow.utils.db import initdb

    initdb()
    with _api_connection() as where:
        print(f"\n>>> Generating with {where}\n")
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
        for verdict in verdicts:
            match = next((p for p in published_records if p["imageUUID"] == verdict["imageUUID"]), None)
            if match:
                verdict["publishedURI"] = match["publishedURI"]
        requests = xcom(run, "load_prompts")
        order = list(xcom(run, "generate_hero_images", key="task_uuids") or {})
        prompts = {uuid: requests[i]["positivePrompt"] for i, uuid in enumerate(order)}
        print()
        _print_table(
            _rows(verdicts, prompts, published), ("prompt", "size", "seed", "cost $", "QA", "status", "file")
        )
        total = sum(float(v["cost"]) for v in verdicts if v.get("cost") is not None)
        sheet = xcom(run, "qa", key="contact_sheet")
        print(f"\n>>> {len(verdicts)} images, {len(published)} published, total cost {total:.2f} USD")
        print(f">>> images under {output_dir}")
        print(f">>> contact sheet: {str(sheet).removeprefix('file://')}")
        if "SYNTHETIC" in where:
            print(">>> These images are synthetic: set RUNWARE_API_KEY to generate real ones.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
