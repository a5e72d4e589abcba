"""The review request: numbered items in the gallery's order, labels to pick from, a safe body."""

from __future__ import annotations

from typing import Any

from airflow_provider_bfl.review.body import markdown_body, review_items


def _verdict(n: int, action: str = "kept", **extra: Any) -> dict[str, Any]:
    return {
        "imageUUID": f"img-{n}",
        "storedURI": f"file:///x/{n}.png",
        "cost": 0.04,
        "prompt": f"Product {n} | on a *table*",
        "key": f"SKU-{n}",
        "qa": {
            "passed": action == "kept",
            "action": action,
            "reasons": [] if action == "kept" else ["nsfw: flagged"],
        },
        **extra,
    }


def test_items_keep_record_order_and_label_each_image_by_number_sku_and_prompt() -> None:
    items = review_items([[_verdict(1), _verdict(2, "quarantined")], [_verdict(3)]])
    assert [item.number for item in items] == [1, 2, 3]
    assert [item.passed for item in items] == [True, False, True]
    assert items[0].label == "#1 · SKU-1 · Product 1 | on a *table*"
    assert items[1].verdict == "quarantined: nsfw: flagged"
    assert len({item.label for item in items}) == 3


def test_body_shows_thumbnails_links_the_gallery_and_escapes_markdown() -> None:
    items = review_items([_verdict(n) for n in range(1, 6)])
    body = markdown_body(items, dag_id="d", run_id="r:1", gallery_task_id="qa", inline_limit=3)
    assert body.count("](/bfl-gallery/thumb/d/r%3A1/img-") == 3
    assert "(/bfl-gallery/ti/d/r%3A1/qa/-1)" in body
    assert "| ... | 2 more in the gallery |" in body
    assert "Product 1 \\| on a \\*table\\*" in body  # a prompt cannot break the table or add markup
