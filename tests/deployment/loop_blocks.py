"""
Airflow's blocked-loop warnings in a triggerer's output, told apart from full garbage collections.

Airflow's triggerer warns when its event loop was held past ``[triggerer]
blocked_main_thread_warning_threshold``. A full collection of the triggerer process (most of its
heap is Airflow's own objects) holds the loop too, whatever the triggers do; the deployment records
those pauses (``Deployment.runner_gc_pauses``) so a scenario can judge what is left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

#: Airflow's warning when a trigger (or anything else) holds the triggerer's event loop.
BLOCKED_FOR = re.compile(r"^(\S+) .*Triggerer's async thread was blocked for ([0-9.]+) seconds", re.MULTILINE)
#: Airflow's default ``[triggerer] blocked_main_thread_warning_threshold``: what it warns of.
BLOCK_THRESHOLD = 0.2


@dataclass(frozen=True)
class Block:
    """One blocked-loop warning: the loop held ``seconds`` until ``ended`` (wall clock), ``collecting`` of them in full GCs."""

    ended: float
    seconds: float
    collecting: float

    @property
    def without_collections(self) -> float:
        return self.seconds - self.collecting


def blocks_in(output: str, pauses: list[tuple[float, float]]) -> list[Block]:
    """
    Airflow's blocked-loop warnings in a triggerer's ``output``, each with the time full garbage
    collections of its runner took within the blocked span: from what the warning says before its
    timestamp (50 ms earlier still, as the line is stamped a little after the measurement) to the
    timestamp.
    """
    blocks = []
    for stamp, seconds in BLOCKED_FOR.findall(output):
        ended = datetime.fromisoformat(stamp).timestamp()
        start, end = ended - float(seconds) - 0.05, ended
        collecting = sum(max(0.0, min(end, at + took) - max(start, at)) for at, took in pauses)
        blocks.append(Block(ended, float(seconds), min(collecting, float(seconds))))
    return blocks
