"""
Automatic QA of landed images: decide, per image, whether it may go on down the pipeline.

Input: the landing step's records (one small dict per image, with ``storedURI`` and what the request
asked for). Output: the same records, each with a ``qa`` verdict; quarantined objects moved aside.

    from airflow_provider_bfl.qa import QAConfig, apply_policies, evaluate, qa_images

    verdicts = evaluate(records, QAConfig(policies={"nsfw": "fail"}))   # reads, never writes
    verdicts = apply_policies(verdicts, config)                         # moves, then may raise
    verdicts = qa_images(records, nsfw="fail")                          # both, for @task code

Checks (``airflow_provider_bfl.qa.checks``): ``decodes``, ``format``, ``dimensions``,
``not_blank``, ``file_size``, ``nsfw``, ``near_duplicate``; policies ``fail``, ``quarantine``,
``skip``, ``off`` (``airflow_provider_bfl.qa.config``). The operator is
:class:`~airflow_provider_bfl.qa.operator.BflImageQAOperator`; the reviewer's one-page overview is
:func:`~airflow_provider_bfl.qa.contact_sheet.make_contact_sheet`.

Importing this package imports neither Pillow (loaded on the first image decoded) nor Airflow
(loaded with the operator, on first use of ``BflImageQAOperator``), so the functions stay cheap to
import in any process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_bfl.qa.config import CHECKS, DEFAULT_POLICIES, POLICIES, Policy, QAConfig
from airflow_provider_bfl.qa.enforcement import apply_policies, passed_records, qa_images
from airflow_provider_bfl.qa.errors import QAFailedError, QAInputError
from airflow_provider_bfl.qa.evaluation import evaluate

if TYPE_CHECKING:
    from airflow_provider_bfl.qa.operator import BflImageQAOperator


def __getattr__(name: str) -> Any:
    if name == "BflImageQAOperator":
        from airflow_provider_bfl.qa.operator import BflImageQAOperator

        return BflImageQAOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHECKS",
    "DEFAULT_POLICIES",
    "POLICIES",
    "BflImageQAOperator",
    "Policy",
    "QAConfig",
    "QAFailedError",
    "QAInputError",
    "apply_policies",
    "evaluate",
    "passed_records",
    "qa_images",
]
