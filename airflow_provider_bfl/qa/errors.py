"""
The two ways the QA step stops a task: unusable input, or images whose ``"fail"`` policy tripped.

Both derive from :class:`~airflow_provider_bfl.exceptions.BflError` so ``except BflError`` keeps
catching everything the provider raises; they live here rather than in ``exceptions.py`` because
only the QA step raises them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_bfl.exceptions import BflError


class QAInputError(BflError, ValueError):
    """A QA setting or an input record is unusable: fix the DAG, retrying cannot help."""


class QAFailedError(BflError):
    """
    At least one image failed a check whose policy is ``"fail"`` (or could not be quarantined).

    Raised only after every image was evaluated and every quarantine move was made, so one bad
    image never hides another. ``verdicts`` holds the full per-image result for inspection.
    """

    def __init__(self, message: str, *, verdicts: Sequence[dict[str, Any]] = (), **kwargs: Any) -> None:
        self.verdicts = [dict(verdict) for verdict in verdicts]
        super().__init__(message, **kwargs)

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "verdicts": self.verdicts}
