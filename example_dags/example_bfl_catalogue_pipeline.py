"""
### Nightly catalogue imagery

A scheduled content pipeline next to the ETL that feeds the product catalogue:

1. **load_prompts** reads tonight's product prompts (a file in the repo here; a table in real life).
2. **generate_hero_images** submits them as one batch and defers to the triggerer while FLUX.1.1
   [pro] works, so no worker slot is held.
3. **submit_variants** submits a fire-and-forget request for lifestyle variants, and
   **wait_for_variants** (a sensor) waits for them in the triggerer.
4. **publish** downloads every image before its URL expires, writes it next to a manifest, and
   returns the manifest (prompt, size, seed, cost, file) for downstream consumers.

Retries are safe and cheap: taskUUIDs are derived from the task instance, so a retried
generation re-attaches to what was already paid for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.sensors.bfl import BflImageInferenceSensor

PROMPTS_FILE = Path(__file__).parent / "data" / "catalogue_prompts.json"

with DAG(
    dag_id="example_bfl_catalogue_pipeline",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["bfl", "example", "content-pipeline"],
    params={"output_dir": Param("/tmp/bfl-catalogue", type="string", description="Where images are written")},
    doc_md=__doc__,
) as dag:

    @task
    def load_prompts() -> list[dict[str, Any]]:
        """One request per product: the wire-form request plus the SKU it belongs to."""
        products = json.loads(PROMPTS_FILE.read_text())
        return [{key: value for key, value in product.items() if key != "sku"} for product in products]

    prompts = load_prompts()

    hero_images = BflImageInferenceOperator(
        task_id="generate_hero_images",
        request=prompts,
        deferrable=True,
        generation_timeout=1800,
    )

    variants = BflImageInferenceOperator(
        task_id="submit_variants",
        positive_prompt=(
            "Lifestyle photo of a brushed brass desk lamp on a tidy oak desk in a sunlit home office, "
            "editorial, natural light"
        ),
        width=1216,
        height=832,
        number_results=2,
        wait_for_completion=False,
    )

    variant_images = BflImageInferenceSensor(
        task_id="wait_for_variants",
        task_uuids=variants.output,
        deferrable=True,
        poke_interval=5,
        timeout=1800,
    )

    @task
    def publish(
        requests: list[dict[str, Any]], heroes: list[dict[str, Any]], extras: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Download each image before its URL expires and write a manifest beside them."""
        import httpx

        context = get_current_context()
        target = Path(context["params"]["output_dir"]) / context["run_id"].replace(":", "_").replace("+", "_")
        target.mkdir(parents=True, exist_ok=True)
        order = list(context["ti"].xcom_pull(task_ids="generate_hero_images", key="task_uuids") or {})
        manifest = []
        with httpx.Client(timeout=60, follow_redirects=True) as client:
            for entry in [*heroes, *extras]:
                position = order.index(entry["taskUUID"]) if entry["taskUUID"] in order else None
                request = requests[position] if position is not None else None
                suffix = Path(entry["imageURL"].split("?")[0]).suffix or ".jpg"
                path = target / f"{entry['imageUUID']}{suffix}"
                with client.stream("GET", entry["imageURL"]) as response:
                    response.raise_for_status()
                    with path.open("wb") as file:
                        for chunk in response.iter_bytes():
                            file.write(chunk)
                manifest.append(
                    {
                        "prompt": request["positivePrompt"] if request else "lifestyle variant",
                        "size": f"{request['width']}x{request['height']}" if request else "1216x832",
                        "seed": entry.get("seed"),
                        "cost": entry.get("cost"),
                        "taskUUID": entry["taskUUID"],
                        "file": str(path),
                    }
                )
        (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return manifest

    publish(prompts, hero_images.output, variant_images.output)
