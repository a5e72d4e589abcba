"""
:func:`apply_policies`: act on the verdicts (quarantine moves, then fail if needed) and
:func:`qa_images`, both steps in one call for TaskFlow.

Order matters: every quarantine move is made *before* the task fails, so an NSFW image never stays
in the publishable location just because another image in the batch was corrupt. An image failing
a ``"fail"`` check and a ``"quarantine"`` check is therefore moved too, and reported as failed.
Moves are idempotent (see :mod:`airflow_provider_bfl.qa.storage`): a retry finds the object already
in quarantine and goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_provider_bfl.qa import storage
from airflow_provider_bfl.qa.config import QAConfig
from airflow_provider_bfl.qa.errors import QAFailedError, QAInputError
from airflow_provider_bfl.qa.evaluation import evaluate
from airflow_provider_bfl.qa.report import failure_message

log = logging.getLogger(__name__)


def apply_policies(
    verdicts: Sequence[Mapping[str, Any]], config: QAConfig | None = None
) -> list[dict[str, Any]]:
    """
    Move quarantined objects, then raise :class:`QAFailedError` if any image's action is ``"failed"``.

    Returns the verdicts, each quarantined one now with ``quarantinedURI``. Pass the same config
    that :func:`evaluate` used: it decides where quarantined objects go.
    """
    config = config or QAConfig()
    applied: list[dict[str, Any]] = []
    move_errors: list[tuple[int, str]] = []
    for index, original in enumerate(verdicts):
        verdict = dict(original)
        if not isinstance(verdict.get("qa"), Mapping) or "storedURI" not in verdict:
            raise QAInputError(
                f"Verdict #{index + 1} has no 'qa' block or storedURI; pass what evaluate() returned",
                parameter="verdicts",
            )
        if _needs_quarantine(verdict, config):
            try:
                verdict["quarantinedURI"] = _quarantine(verdict, config)
            except Exception as exc:  # one stuck object must not stop the other moves
                move_errors.append((index, f"{type(exc).__name__}: {exc}"))
        applied.append(verdict)
    if move_errors or any(verdict["qa"]["action"] == "failed" for verdict in applied):
        raise QAFailedError(failure_message(applied, move_errors), verdicts=applied)
    return applied


def passed_records(verdicts: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records of the images that passed, without their ``qa`` block: the landing shape again."""
    return [
        {key: value for key, value in verdict.items() if key != "qa"}
        for verdict in verdicts
        if verdict["qa"]["action"] == "kept"
    ]


def qa_images(records: Iterable[Mapping[str, Any]], **config: Any) -> list[dict[str, Any]]:
    """
    Evaluate and enforce in one call, for ``@task`` functions: ``qa_images(landed, nsfw="skip")``.

    Keywords are :class:`QAConfig` fields, ``policies={...}``, or a check name as a policy shorthand.
    Returns every verdict (filter with :func:`passed_records`); raises :class:`QAFailedError` after
    all moves when an image fails a ``"fail"`` check.
    """
    settings = QAConfig.from_kwargs(**config)
    return apply_policies(evaluate(records, settings), settings)


def _needs_quarantine(verdict: Mapping[str, Any], config: QAConfig) -> bool:
    return any(
        not result["ok"] and config.policy(name) == "quarantine"
        for name, result in verdict["qa"]["checks"].items()
    )


def _quarantine(verdict: Mapping[str, Any], config: QAConfig) -> str:
    target = storage.quarantine_uri(verdict["storedURI"], verdict.get("taskUUID"), config.quarantine_prefix)
    source = verdict.get("quarantinedURI") or verdict["storedURI"]
    if source == target:
        log.info("%s already in quarantine at %s", verdict["storedURI"], target)
        return target
    if storage.move_to_quarantine(source, target, config.conn_id):
        log.info("Quarantined %s -> %s", source, target)
    else:
        log.info("%s was already moved to %s by an earlier run", source, target)
    return target
