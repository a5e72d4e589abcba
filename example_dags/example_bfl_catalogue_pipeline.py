"""
### Nightly catalogue imagery

A scheduled content pipeline next to the ETL that feeds the product catalogue:

1. **load_prompts** reads tonight's product prompts (a file in the repo here; a table in real life).
2. **generate_hero_images** submits them as one batch (safety check on, budget guard on), defers
   to the triggerer while FLUX.1.1 [pro] works, then lands every image in `params.destination`
   (streamed, verified, sha256 recorded) and emits the `catalogue_hero_images` asset.
3. **submit_variants** fires off lifestyle variants; **wait_for_variants** (a sensor) waits for
   them in the triggerer and **land_variants** stores them next to the heroes.
4. **qa** checks every image (decodes, format, size, not blank, not flagged, no near-duplicates),
   quarantines what fails and writes a contact sheet of the batch with each verdict.
5. **review**: a reviewer approves or rejects the batch in Airflow's UI (*human_review*, with each
   image's location and QA verdict, and a field to leave images out). With `params.review = "auto"`
   (offline demos, trusted prompts) *auto_review* approves the QA-passed images instead, so the run
   never waits for a human.
6. **publish** copies the approved images to `{destination}/published/{run}` and returns them.

Retries are safe and cheap: generations re-attach by taskUUID, landing and publishing skip what is
already stored.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Asset, Param, get_current_context, task

from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.operators.qa import BflImageQAOperator
from airflow_provider_bfl.sensors.bfl import BflImageInferenceSensor

PROMPTS_FILE = Path(__file__).parent / "data" / "catalogue_prompts.json"
VARIANT = {"width": 1216, "height": 832, "outputFormat": "JPG"}

REVIEW_BODY = """
Tonight's catalogue images. Approve to publish every image that passed QA;
list imageUUIDs under *exclude* to leave some out.

| image | stored at | QA |
| --- | --- | --- |
{% for v in ti.xcom_pull(task_ids='qa') %}| {{ v.imageUUID }} | {{ v.get('quarantinedURI') or v.storedURI }} | {{ 'pass' if v.qa.passed else v.qa.action ~ ': ' ~ v.qa.reasons | join('; ') }} |
{% endfor %}
"""

with DAG(
    dag_id="example_bfl_catalogue_pipeline",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["bfl", "example", "content-pipeline"],
    params={
        "destination": Param(
            "file:///tmp/bfl-catalogue", type="string", description="Where images are stored"
        ),
        "review": Param("human", enum=["human", "auto"], description="Who approves the batch"),
    },
    doc_md=__doc__,
) as dag:

    @task
    def load_prompts() -> list[dict[str, Any]]:
        """One wire-form request per product, with the safety check on."""
        products = json.loads(PROMPTS_FILE.read_text())
        return [
            {
                **{k: v for k, v in product.items() if k != "sku"},
                "safety": {"checkContent": True, "mode": "fast"},
            }
            for product in products
        ]

    hero_images = BflImageInferenceOperator(
        task_id="generate_hero_images",
        request=load_prompts(),
        deferrable=True,
        generation_timeout=1800,
        destination="{{ params.destination }}",
        outlets=[Asset(name="catalogue_hero_images")],
        max_images=50,
    )

    variants = BflImageInferenceOperator(
        task_id="submit_variants",
        positive_prompt=(
            "Lifestyle photo of a brushed brass desk lamp on a tidy oak desk in a sunlit home office, "
            "editorial, natural light"
        ),
        width=VARIANT["width"],
        height=VARIANT["height"],
        number_results=2,
        wait_for_completion=False,
    )

    variant_results = BflImageInferenceSensor(
        task_id="wait_for_variants",
        task_uuids=variants.output,
        deferrable=True,
        poke_interval=5,
        timeout=1800,
    )

    @task
    def land_variants(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store the sensor's images beside the heroes (the operator lands its own; a sensor does not)."""
        from airflow_provider_bfl.storage.landing import ImageLander

        context = get_current_context()
        with ImageLander(
            context["params"]["destination"], dag_id=context["dag"].dag_id, run_id=context["run_id"]
        ) as lander:
            records, failures = lander.land_urls(results, {r["taskUUID"]: VARIANT for r in results})
        if failures:
            raise failures[0][1]
        return records

    qa = BflImageQAOperator(
        task_id="qa",
        images=[hero_images.output, land_variants(variant_results.output)],
        contact_sheet="{{ params.destination }}/contact-sheets/{{ run_id | replace(':', '_') | replace('+', '_') }}.png",
    )

    @task.branch
    def choose_review() -> str:
        return "auto_review" if get_current_context()["params"]["review"] == "auto" else "human_review"

    human_review = ApprovalOperator(
        task_id="human_review",
        subject="Approve tonight's catalogue images?",
        body=REVIEW_BODY,
        defaults="Reject",  # nothing is published unless someone says so
        response_timeout=timedelta(hours=12),
        params={"exclude": Param([], type="array", description="imageUUIDs to leave out")},
    )

    @task
    def auto_review() -> dict[str, Any]:
        """The offline stand-in for a reviewer: approve whatever passed QA."""
        return {"chosen_options": ["Approve"], "params_input": {"exclude": []}, "responded_by": "auto_review"}

    @task(trigger_rule="none_failed_min_one_success")
    def publish(verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copy the approved, QA-passed images to the published prefix."""
        from airflow_provider_bfl.qa import passed_records
        from airflow_provider_bfl.storage.publishing import publish_images

        context = get_current_context()
        ti = context["ti"]
        decision = ti.xcom_pull(task_ids="human_review") or ti.xcom_pull(task_ids="auto_review")
        if not decision or decision["chosen_options"] != ["Approve"]:
            return []
        excluded = set(decision.get("params_input", {}).get("exclude") or [])
        approved = [record for record in passed_records(verdicts) if record["imageUUID"] not in excluded]
        run_folder = context["run_id"].replace(":", "_").replace("+", "_")
        return publish_images(approved, f"{context['params']['destination']}/published/{run_folder}")

    review = choose_review()
    qa >> review >> [human_review, auto_review()] >> publish(qa.output)
