"""The review request: numbered items in the gallery's order, labels to pick from, a safe body."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

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


def test_response_timeout_is_passed_where_the_installed_standard_provider_takes_it() -> None:
    from airflow.providers.standard import __version__ as standard_version
    from packaging.version import Version

    from airflow_provider_bfl.review import operator

    assert Version(standard_version) >= Version("1.13")  # the dev install: the current interface
    assert operator.HITL_TAKES_RESPONSE_TIMEOUT
    review = operator.BflImageReviewOperator(task_id="r", images=[], response_timeout=timedelta(hours=12))
    assert review.response_timeout == timedelta(hours=12) and review.execution_timeout is None


# The installed (1.13+) class is the one spied on: it warns that execution_timeout is deprecated there.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_before_standard_provider_1_13_the_wait_is_timed_by_execution_timeout(mocker: Any) -> None:
    """Standard provider 1.6-1.12 (what Airflow 3.1/3.2 shipped) take no response_timeout."""
    from airflow.providers.standard.operators.hitl import HITLOperator

    from airflow_provider_bfl.review import operator

    mocker.patch.object(operator, "HITL_TAKES_RESPONSE_TIMEOUT", False)
    init = mocker.spy(HITLOperator, "__init__")
    review = operator.BflImageReviewOperator(task_id="r", images=[], response_timeout=timedelta(hours=12))
    passed = init.call_args.kwargs
    assert "response_timeout" not in passed  # those versions' BaseOperator would refuse it
    assert passed["execution_timeout"] == timedelta(hours=12)
    assert review.response_timeout == timedelta(hours=12)  # for the timeout message


@pytest.mark.parametrize(
    "event",
    [
        {"error": "timed out", "error_type": "timeout"},  # standard provider 1.9+
        # the defaults chosen for nobody (every version; the only form before 1.9)
        {"chosen_options": ["Reject the batch"], "params_input": {"leave_out": []}, "timedout": True},
    ],
    ids=["error-event", "defaults-event"],
)
def test_a_timeout_fails_as_a_timeout_not_as_a_reviewer_rejection(event: dict[str, Any]) -> None:
    from airflow_provider_bfl.review.operator import BflImageReviewOperator, BflReviewRejectedError

    review = BflImageReviewOperator(task_id="r", images=[_verdict(1)], response_timeout=timedelta(hours=2))
    with pytest.raises(
        BflReviewRejectedError, match=r"nobody answered within 2:00:00; the batch is rejected"
    ):
        review.execute_complete({}, event)  # type: ignore[arg-type]


def test_images_rendered_as_text_are_decoded_and_junk_is_a_bfl_error() -> None:
    import json

    from airflow_provider_bfl.exceptions import BflError
    from airflow_provider_bfl.review.operator import BflImageReviewOperator

    review = BflImageReviewOperator(task_id="r", images=json.dumps([_verdict(1), _verdict(2)]))
    assert [item.number for item in review._items()] == [1, 2]
    with pytest.raises(BflError, match="images"):
        BflImageReviewOperator(task_id="r", images="{not json")._items()


def test_an_answer_is_checked_against_the_review_form_not_the_dags_params() -> None:
    """On resume Airflow 3.1 merges the DAG's params into the task's: the answer is still valid."""
    from datetime import datetime, timezone

    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamsDict

    from airflow_provider_bfl.exceptions import BflError
    from airflow_provider_bfl.review.operator import LEAVE_OUT, PUBLISH, BflImageReviewOperator

    review = BflImageReviewOperator(task_id="r", images=[_verdict(1), _verdict(2)])
    labels = [item.label for item in review._items()]
    review.params = ParamsDict(
        {"destination": Param("file:///tmp/x"), "review": Param("human"), LEAVE_OUT: Param([])}
    )
    event = {
        "chosen_options": [PUBLISH],
        "params_input": {LEAVE_OUT: [labels[1]]},
        "responded_at": datetime(2026, 12, 1, tzinfo=timezone.utc),
        "responded_by_user": {"id": "reviewer", "name": "reviewer"},
    }
    answer = review.execute_complete({}, event)  # type: ignore[arg-type]
    assert [record["imageUUID"] for record in answer["approved"]] == ["img-1"]
    assert [record["imageUUID"] for record in answer["left_out"]] == ["img-2"]
    with pytest.raises(BflError, match=r"fields this form does not: \['destination'\]"):
        review.execute_complete({}, {**event, "params_input": {LEAVE_OUT: [], "destination": "s3://x"}})  # type: ignore[arg-type]
