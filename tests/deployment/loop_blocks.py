"""
Airflow's blocked-loop warnings in a triggerer's output, and what held the loop meanwhile.

Airflow's triggerer warns when its event loop was held past ``[triggerer]
blocked_main_thread_warning_threshold``. Two things hold it that no trigger controls: a full
garbage collection of the process (most of its heap is Airflow's own objects), and Airflow's own
code between trigger steps (its synchronous "trigger starting" log line, on a busy disk). The
deployment's probes record both (``Deployment.runner_gc_pauses``, ``runner_slow_callbacks``), so a
scenario can judge what is left: the triggers' own share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

#: Airflow's warning when a trigger (or anything else) holds the triggerer's event loop.
BLOCKED_FOR = re.compile(r"^(\S+) .*Triggerer's async thread was blocked for ([0-9.]+) seconds", re.MULTILINE)
#: Airflow's default ``[triggerer] blocked_main_thread_warning_threshold``: what it warns of.
BLOCK_THRESHOLD = 0.2
#: A slow callback's summary line in the probes' ``.slow`` file (its stack, if dumped, comes before it).
SLOW_LINE = re.compile(r"^== ([0-9.]+) ([0-9.]+) s (.*)$")
PROVIDER = "airflow_provider_bfl"


@dataclass(frozen=True)
class SlowCallback:
    """One event-loop callback that ran over the probes' 150 ms, with the stack it was at by then."""

    ended: float
    seconds: float
    owner: str
    stack: str

    @property
    def airflows_own(self) -> bool:
        """Held in Airflow's code with no provider frame on its stack (unknown if no stack was dumped)."""
        return bool(self.stack) and PROVIDER not in self.stack


def slow_callbacks(text: str) -> list[SlowCallback]:
    callbacks, stack = [], []
    for line in text.splitlines():
        summary = SLOW_LINE.match(line)
        if summary is None:
            stack.append(line)
            continue
        ended, seconds, owner = summary.groups()
        callbacks.append(SlowCallback(float(ended), float(seconds), owner, "\n".join(stack)))
        stack = []
    return callbacks


@dataclass(frozen=True)
class Block:
    """One blocked-loop warning: the loop held ``seconds`` until ``ended`` (wall clock), and by what."""

    ended: float
    seconds: float
    #: Seconds of the span spent in full garbage collections.
    collecting: float
    #: Seconds of the span spent in slow callbacks running Airflow's own code only.
    in_airflow: float

    @property
    def triggers_share(self) -> float:
        """What is left for the triggers (never below 0)."""
        return max(0.0, self.seconds - self.collecting - self.in_airflow)


def _overlap(start: float, end: float, at: float, took: float) -> float:
    return max(0.0, min(end, at + took) - max(start, at))


def blocks_in(
    output: str, pauses: list[tuple[float, float]], callbacks: list[SlowCallback] | None = None
) -> list[Block]:
    """
    Airflow's blocked-loop warnings in a triggerer's ``output``, each with what full garbage
    collections and Airflow-only slow callbacks of its runner took within the blocked span: from
    what the warning says before its timestamp (50 ms earlier still, as the line is stamped a little
    after the measurement) to the timestamp.
    """
    blocks = []
    for stamp, said in BLOCKED_FOR.findall(output):
        ended, seconds = datetime.fromisoformat(stamp).timestamp(), float(said)
        start = ended - seconds - 0.05
        collecting = min(seconds, sum(_overlap(start, ended, at, took) for at, took in pauses))
        in_airflow = sum(
            _overlap(start, ended, callback.ended - callback.seconds, callback.seconds)
            for callback in callbacks or []
            if callback.airflows_own
        )
        blocks.append(Block(ended, seconds, collecting, min(seconds, in_airflow)))
    return blocks
