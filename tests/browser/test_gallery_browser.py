"""
The gallery and the review page in a real browser, against a real api-server with landed images.

The run: 6 product images and 2 variants landed, QA quarantined 2 (a blank one, a flagged one),
and the review waits for its reviewer. The last test answers it (a rejection) and watches the run
end red.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx

from airflow_provider_bfl.ui import urls
from tests.browser.conftest import UI_TIMEOUT_MS, screenshot
from tests.browser.site import DAG_ID, AirflowSite, wait_for

IMAGES_IN_RUN = 8
QUARANTINED = 2

#: True once every <img> on the page (or frame) has loaded and decoded to a real picture.
ALL_DECODED = "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"
DECODED_COUNT = "() => [...document.images].filter(i => i.complete && i.naturalWidth > 0).length"


def _decoded(target: Any, expected: int) -> int:
    """Scroll through (lazy images load when near the viewport), then count decoded images."""
    target.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    target.wait_for_function(
        f"() => document.images.length >= {expected} && ({ALL_DECODED})()", timeout=UI_TIMEOUT_MS
    )
    target.evaluate("window.scrollTo(0, 0)")
    return int(target.evaluate(DECODED_COUNT))


def test_run_gallery_shows_every_image_decoded_with_its_record(page_as: Any, site: AirflowSite) -> None:
    page = page_as("reviewer")
    started = time.monotonic()
    response = page.goto(site.base_url + urls.run_page(DAG_ID, site.run_id))
    assert response.status == 200
    assert _decoded(page, IMAGES_IN_RUN) == IMAGES_IN_RUN
    print(f"run gallery with {IMAGES_IN_RUN} images, first view: {time.monotonic() - started:.2f} s")
    assert page.locator("figure.card").count() == IMAGES_IN_RUN
    marked = page.locator("figure.card.bad")
    assert marked.count() == QUARANTINED
    assert {marked.nth(i).get_attribute("data-verdict") for i in range(QUARANTINED)} == {"quarantined"}
    totals = page.locator("#totals").inner_text()
    assert "8 image(s)" in totals and "passed 6" in totals and "quarantined 2" in totals
    first = page.locator("figure.card").first.inner_text()
    for field in ("size", "seed", "cost", "stored", "file://"):
        assert field in first
    assert "LMP-0142" in " ".join(page.locator("figure.card").all_inner_texts())  # the SKU (keys=)
    assert "not_blank" in page.locator("figure.card.bad").first.inner_text() + marked.nth(1).inner_text()
    screenshot(page, "gallery.png")  # the plugin page on its own


def test_task_instance_gallery_and_full_size_view(page_as: Any, site: AirflowSite) -> None:
    page = page_as("reviewer")
    page.goto(site.base_url + urls.task_instance_page(DAG_ID, site.run_id, "generate_hero_images"))
    assert _decoded(page, 6) == 6
    full = page.locator("figure.card a").first.get_attribute("href")
    page.goto(site.base_url + full)
    assert page.evaluate("document.images[0].naturalWidth") == 1024


def test_gallery_tab_on_the_dag_run_page(page_as: Any, site: AirflowSite) -> None:
    """The plugin's external view: Airflow's own DAG run page embeds the gallery."""
    page = page_as("reviewer")
    page.goto(f"{site.base_url}/dags/{DAG_ID}/runs/{quote(site.run_id, safe='')}/plugin/bfl-images-dag-run")
    iframe = page.wait_for_selector(
        "iframe[src*='bfl-gallery/run/']", state="attached", timeout=UI_TIMEOUT_MS
    )
    frame = iframe.content_frame()
    frame.wait_for_selector("figure.card", timeout=UI_TIMEOUT_MS)
    assert _decoded(frame, IMAGES_IN_RUN) == IMAGES_IN_RUN
    screenshot(page, "gallery-dag-run-tab.png")


def test_anonymous_and_unauthorised_requests_are_refused(page_as: Any, site: AirflowSite) -> None:
    gallery = site.base_url + urls.run_page(DAG_ID, site.run_id)
    assert page_as(None).goto(gallery).status == 401
    assert page_as("outsider").goto(gallery).status == 403
    with site.api("reviewer") as reviewer, site.api("outsider") as outsider:
        image_id = _first_image_id(reviewer, site)
        for path in (
            urls.thumbnail(DAG_ID, site.run_id, image_id),
            urls.image(DAG_ID, site.run_id, image_id),
            urls.task_instance_page(DAG_ID, site.run_id, "qa"),
        ):
            assert httpx.get(site.base_url + path).status_code == 401, path
            assert outsider.get(path).status_code == 403, path
            assert reviewer.get(path).status_code == 200, path
        for outside in ("..%2F..%2F..%2Fetc%2Fpasswd", quote("file:///etc/passwd", safe=""), "not-a-record"):
            assert reviewer.get(
                f"{urls.PREFIX}/image/{DAG_ID}/{quote(site.run_id, safe='')}/{outside}"
            ).status_code in (404,)
        # an image of this run asked for under another run: not in that run's records
        assert (
            reviewer.get(urls.image(DAG_ID, "manual__1999-01-01T00:00:00+00:00", image_id)).status_code == 404
        )


def _first_image_id(api: httpx.Client, site: AirflowSite) -> str:
    xcom = api.get(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(site.run_id, safe='')}/taskInstances/qa/xcomEntries/return_value"
    ).json()
    value = xcom["value"]
    return str(value[0]["imageUUID"])


def test_review_page_shows_the_thumbnails(page_as: Any, site: AirflowSite) -> None:
    page = page_as("reviewer")
    page.goto(
        f"{site.base_url}/dags/{DAG_ID}/runs/{quote(site.run_id, safe='')}/tasks/human_review/required_actions"
    )
    page.wait_for_selector("img[src*='/bfl-gallery/thumb/']", timeout=UI_TIMEOUT_MS)
    thumbs = page.locator("img[src*='/bfl-gallery/thumb/']")
    assert thumbs.count() == IMAGES_IN_RUN
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"img[src*='/bfl-gallery/thumb/']\")]"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=UI_TIMEOUT_MS,
    )
    assert page.get_by_text("Leave out").count() >= 1
    assert page.get_by_role("button", name="Publish").count() >= 1
    # Each image's SKU (the example passes the prompts file's SKUs as keys=) beside its picture.
    assert page.get_by_text("LMP-0142", exact=True).count() >= 1
    screenshot(page, "review.png")


def test_connection_test_endpoint_accepts_a_bfl_connection(site: AirflowSite) -> None:
    """The UI's Test button calls this endpoint; it works once [core] test_connection is Enabled."""
    emulator_conn = __import__("json").loads(site.connection)
    with site.api("admin") as admin:
        response = admin.post(
            "/api/v2/connections/test",
            json={
                "connection_id": "bfl_ui_test",
                "conn_type": "bfl",
                "host": emulator_conn["host"],
                "password": emulator_conn["password"],
            },
        )
    assert response.status_code == 200, response.text
    assert response.json()["status"] is True, response.json()


def test_rejecting_the_batch_ends_the_run_failed(site: AirflowSite) -> None:
    """Runs last: answers the review as the reviewer would (the REST call the UI makes)."""
    run = quote(site.run_id, safe="")
    with site.api("reviewer") as reviewer:
        answer = reviewer.patch(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances/human_review/-1/hitlDetails",
            json={"chosen_options": ["Reject the batch"], "params_input": {"leave_out": []}},
        )
        assert answer.status_code == 200, answer.text
        wait_for("the pipeline run to end", lambda: site.run_state(reviewer) != "running", 90)
        states = {
            ti["task_id"]: ti["state"]
            for ti in reviewer.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances").json()[
                "task_instances"
            ]
        }
        assert reviewer.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run}").json()["state"] == "failed"
    assert states["human_review"] == "failed" and states["publish"] == "upstream_failed"
    assert "rejected the batch" in site.pipeline_log.read_text()
    assert not (site.destination / "published").exists()
