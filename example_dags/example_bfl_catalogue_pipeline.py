"""
### Nightly catalogue imagery

A scheduled content pipeline next to the ETL that feeds the product catalogue:

1. **load_prompts** reads tonight's product prompts and SKUs (a file in the repo here; a table in
   real life); each image's record carries its SKU (`keys=`) into QA, review and the gallery.
2. **generate_hero_images** submits them as one batch (safety check on, budget guard on), defers
   to the triggerer while FLUX.1.1 [pro] works, then lands every image in `params.destination`
   (streamed, verified, sha256 recorded) and emits the `catalogue_hero_images` asset.
3. **submit_variants** fires off lifestyle variants; **wait_for_variants** (a sensor) waits for
   them in the triggerer and **land_variants** stores them next to the heroes.
4. **qa** checks every image (decodes, format, size, not blank, not flagged, no near-duplicates),
   quarantines what fails and writes a contact sheet of the batch with each verdict.
5. **review**: a reviewer publishes or rejects the batch in Airflow's *Required actions*
   (*human_review*: every image as a thumbnail with its prompt and QA verdict, a link to the same
   images full size in the gallery, and a pick list to leave images out). Rejecting, or nobody
   answering within 12 hours, fails the run: nothing is published. With `params.review = "auto"`
   (offline demos, trusted prompts) *auto_review* approves the QA-passed images instead.
6. **publish** copies the approved images to `{destination}/published/{run}` and returns them.

Safe to unpause: images go to `params.destination` or, when that is empty (scheduled runs), to the
`bfl_catalogue_destination` Variable; without either the run fails before anything is generated.
Runs may overlap (each lands in its own folder), so a scheduled run waiting for its reviewer does
not block a manual one. Every task has an *Images* tab (the gallery plugin).

Retries are safe and cheap: generations re-attach by taskUUID, landing and publishing skip what is
already stored.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, get_current_context, task

from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.operators.qa import BflImageQAOperator
from airflow_provider_bfl.review.operator import BflImageReviewOperator
from airflow_provider_bfl.sensors.bfl import BflImageInferenceSensor

PROMPTS_FILE = Path(__file__).parent / "data" / "catalogue_prompts.json"
VARIANT = {"width": 1216, "height": 832, "outputFormat": "JPG"}
VARIANT_PROMPT = (
    "Lifestyle photo of a brushed brass desk lamp on a tidy oak desk in a sunlit home office, "
    "editorial, natural light"
)
#: The variants are of the desk lamp (LMP-0142 in the prompts file).
VARIANT_KEY = "LMP-0142 lifestyle"

#: Where images land unless the run says otherwise (``params.destination``): an Airflow Variable,
#: so a scheduled run never writes to a guessed folder. Unset, the run fails at render time, before
#: anything is generated or paid for, naming the Variable.
DESTINATION = "{{ params.destination or var.value.bfl_catalogue_destination }}"
RUN_FOLDER = "{{ run_id | replace(':', '_') | replace('+', '_') }}"

with DAG(
    dag_id="example_bfl_catalogue_pipeline",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,  # unpausing creates one run (the latest night), never a backlog
    # Runs land in folders of their own, so they may overlap: a scheduled run waiting for its
    # reviewer never blocks a manual run.
    max_active_runs=3,
    tags=["bfl", "example", "content-pipeline"],
    params={
        "destination": Param(
            "",
            type="string",
            description="Where images are stored (URI or path); empty: the bfl_catalogue_destination Variable",
        ),
        "review": Param("human", enum=["human", "auto"], description="Who approves the batch"),
    },
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True)
    def load_prompts() -> dict[str, list[Any]]:
        """One wire-form request per product (safety check on), and the products' SKUs in that order."""
        products = json.loads(PROMPTS_FILE.read_text())
        requests = [
            {
                **{k: v for k, v in product.items() if k != "sku"},
                "safety": {"checkContent": True, "mode": "fast"},
            }
            for product in products
        ]
        return {"requests": requests, "skus": [product["sku"] for product in products]}

    catalogue = load_prompts()
    hero_images = BflImageInferenceOperator(
        task_id="generate_hero_images",
        request=catalogue["requests"],
        keys=catalogue["skus"],  # each image's record carries its SKU into QA, review and the gallery
        deferrable=True,
        generation_timeout=1800,
        destination=DESTINATION,
        outlets=[Asset(name="catalogue_hero_images")],
        max_images=50,
    )

    variants = BflImageInferenceOperator(
        task_id="submit_variants",
        positive_prompt=VARIANT_PROMPT,
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
    def land_variants(results: list[dict[str, Any]], destination: str) -> list[dict[str, Any]]:
        """
        Store the sensor's images beside the heroes (the operator lands its own; a sensor does not).

        A sensor's results know nothing of the request, so the records get the prompt and key here.
        """
        from airflow_provider_bfl.storage.landing import ImageLander

        context = get_current_context()
        with ImageLander(destination, dag_id=context["dag"].dag_id, run_id=context["run_id"]) as lander:
            records, failures = lander.land_urls(results, {r["taskUUID"]: VARIANT for r in results})
        if failures:
            raise failures[0][1]
        return [{**record, "prompt": VARIANT_PROMPT, "key": VARIANT_KEY} for record in records]

    qa = BflImageQAOperator(
        task_id="qa",
        images=[hero_images.output, land_variants(variant_results.output, DESTINATION)],
        contact_sheet=f"{DESTINATION}/contact-sheets/{RUN_FOLDER}.png",
    )

    @task.branch
    def choose_review() -> str:
        return "auto_review" if get_current_context()["params"]["review"] == "auto" else "human_review"

    human_review = BflImageReviewOperator(
        task_id="human_review",
        images=qa.output,  # the verdicts: thumbnails, SKU, prompt and QA verdict per image
        subject="Publish tonight's catalogue images?",
        intro="Tonight's catalogue images. Anything QA held back is shown but never published.",
        response_timeout=timedelta(hours=12),  # then rejected: nothing is published unasked
    )

    @task
    def auto_review(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
        """The offline stand-in for a reviewer: approve whatever passed QA."""
        from airflow_provider_bfl.qa import passed_records

        return {"approved": passed_records(verdicts), "left_out": [], "responded_by": "auto_review"}

    @task(trigger_rule="none_failed_min_one_success")
    def publish(destination: str) -> list[dict[str, Any]]:
        """Copy the approved images to the published prefix (a rejected review fails before this)."""
        from airflow_provider_bfl.storage.publishing import publish_images

        context = get_current_context()
        ti = context["ti"]
        decision = ti.xcom_pull(task_ids="human_review") or ti.xcom_pull(task_ids="auto_review")
        run_folder = context["run_id"].replace(":", "_").replace("+", "_")
        return publish_images(decision["approved"], f"{destination}/published/{run_folder}")

    review = choose_review()
    qa >> review >> [human_review, auto_review(qa.output)] >> publish(DESTINATION)
