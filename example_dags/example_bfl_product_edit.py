"""
### Product photos into lifestyle scenes (reference-guided editing)

The real product in the picture: every photo in a folder is edited into a lifestyle scene by
FLUX.1 Kontext [pro] (`bfl:3@1`), which keeps the product and changes the world around it.

1. **find_products** lists the product photos (`data/products/*.png` here; a bucket prefix such as
   `s3://shop-assets/products/` in real life) and their SKUs (the file names).
2. **edit_into_scene** is mapped over them: one edit per product, the photo passed as
   `reference_images` (checked before anything is paid for: PNG/JPG/WEBP, size, how many the model
   takes; sent to the API as a data URI, never put in XCom or the logs). Each landed image's record
   carries its SKU (`keys=`) and the reference it was made from (`references`), so QA, the review
   and the gallery show the product next to its scene.
3. **qa** checks every edit and writes a contact sheet; what fails is quarantined.
4. **review**: a reviewer approves the batch in Airflow's *Required actions* (*human_review*), or,
   with `params.review = "auto"` (offline demos), *auto_review* approves whatever passed QA.

Images go to `params.destination` or, when that is empty, to the `bfl_product_edit_destination`
Variable; without either the run fails before anything is generated. Retries re-attach by
taskUUID: an edit is never paid twice. Any model that takes references works here: set
`params.model` (Kontext [max] `bfl:4@1`, FLUX.2 `bfl:5@1`/`bfl:6@1`/`bfl:7@1`; see the README's
Models section for their sizes and prices).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.operators.qa import BflImageQAOperator
from airflow_provider_bfl.review.operator import BflImageReviewOperator

PRODUCTS = Path(__file__).parent / "data" / "products"
SCENE = (
    "Place this exact product on a sunlit oak kitchen counter beside a small potted herb, soft "
    "morning light through a window, shallow depth of field, lifestyle catalogue photo; keep the "
    "product's shape, colour and details unchanged"
)
DESTINATION = "{{ params.destination or var.value.bfl_product_edit_destination }}"
RUN_FOLDER = "{{ run_id | replace(':', '_') | replace('+', '_') }}"

with DAG(
    dag_id="example_bfl_product_edit",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["bfl", "example", "reference-images"],
    params={
        "destination": Param(
            "",
            type="string",
            description="Where images are stored (URI or path); empty: the bfl_product_edit_destination Variable",
        ),
        "model": Param(
            "bfl:3@1", enum=["bfl:3@1", "bfl:4@1"], description="A Kontext model (nine ~1 MP sizes)"
        ),
        "review": Param("human", enum=["human", "auto"], description="Who approves the batch"),
    },
    doc_md=__doc__,
) as dag:

    @task
    def find_products() -> list[dict[str, Any]]:
        """One edit per product photo: the photo as the reference, its file name as the SKU."""
        return [
            {"reference_images": photo.as_uri(), "keys": [photo.stem]}
            for photo in sorted(PRODUCTS.glob("*.png"))
        ]

    edits = BflImageInferenceOperator.partial(
        task_id="edit_into_scene",
        model="{{ params.model }}",
        positive_prompt=SCENE,
        width=1248,
        height=832,  # 3:2, one of Kontext's nine sizes
        destination=DESTINATION,
        deferrable=True,
        generation_timeout=1800,
        max_cost=0.10,  # per product: one Kontext [max] edit is 0.08 USD
    ).expand_kwargs(find_products())

    qa = BflImageQAOperator(
        task_id="qa",
        images=edits.output,  # one list per product; flattened
        contact_sheet=f"{DESTINATION}/contact-sheets/{RUN_FOLDER}.png",
    )

    @task.branch
    def choose_review() -> str:
        return "auto_review" if get_current_context()["params"]["review"] == "auto" else "human_review"

    human_review = BflImageReviewOperator(
        task_id="human_review",
        images=qa.output,
        subject="Publish these product scenes?",
        intro="Each product photo edited into a kitchen scene. Anything QA held back is never published.",
        response_timeout=timedelta(hours=12),
    )

    @task
    def auto_review(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
        """The offline stand-in for a reviewer: approve whatever passed QA."""
        from airflow_provider_bfl.qa import passed_records

        return {"approved": passed_records(verdicts), "left_out": [], "responded_by": "auto_review"}

    qa >> choose_review() >> [human_review, auto_review(qa.output)]
