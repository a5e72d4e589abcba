"""
Airflow's blocked-loop warnings in a triggerer's output, and what held the loop meanwhile.

Airflow's triggerer warns when its event loop was held past ``[triggerer]
blocked_main_thread_warning_threshold``. Three things hold it that no trigger controls: a full
garbage collection of the process (most of its heap is Airflow's own objects), Airflow's own code
between trigger steps (its synchronous "trigger starting" log line, on a busy disk), and a machine
with no core free for the loop's thread (the kernel's run queue). The deployment's probes record
all three (``Deployment.runner_gc_pauses``, ``runner_slow_callbacks``, ``runner_run_queue``), so a
scenario can judge what is left: the triggers' own share.
"""

from __future__ import annotations

import itertools
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
    #: Seconds of the rest of the span the loop's thread waited for a CPU (the kernel's run queue).
    waiting_for_cpu: float = 0.0

    @property
    def triggers_share(self) -> float:
        """What is left for the triggers (never below 0)."""
        return max(0.0, self.seconds - self.collecting - self.in_airflow - self.waiting_for_cpu)


def _overlap(start: float, end: float, at: float, took: float) -> float:
    return max(0.0, min(end, at + took) - max(start, at))


def _covered(start: float, end: float, spans: list[tuple[float, float]]) -> float:
    """How much of ``[start, end]`` the ``(start, seconds)`` spans cover together (overlaps once)."""
    covered, reached = 0.0, start
    for at, took in sorted(spans):
        begin, finish = max(at, reached), min(at + took, end)
        if finish > begin:
            covered += finish - begin
            reached = finish
    return covered


def _waiting_for_cpu(
    start: float, end: float, run_queue: list[list[tuple[float, float]]], explained: list[tuple[float, float]]
) -> float:
    """
    Run-queue seconds of the loop's thread within ``[start, end]`` outside the ``explained`` spans:
    each sampling interval's wait is taken as spread evenly over it, so a wait inside a collection
    or an Airflow callback (already taken off the span) is not taken off twice.
    """
    waited = 0.0
    for samples in run_queue:
        for (before, waited_before), (after, waited_after) in itertools.pairwise(samples):
            begin, finish = max(start, before), min(end, after)
            if finish <= begin or after <= before:
                continue
            outside = (finish - begin) - _covered(begin, finish, explained)
            waited += (waited_after - waited_before) * outside / (after - before)
    return waited


def blocks_in(
    output: str,
    pauses: list[tuple[float, float]],
    callbacks: list[SlowCallback] | None = None,
    run_queue: list[list[tuple[float, float]]] | None = None,
) -> list[Block]:
    """
    Airflow's blocked-loop warnings in a triggerer's ``output``, each with what full garbage
    collections, Airflow-only slow callbacks and waiting for a CPU took of the runner's loop within
    the blocked span: from what the warning says before its timestamp (50 ms earlier still, as the
    line is stamped a little after the measurement) to the timestamp.
    """
    airflows = [(c.ended - c.seconds, c.seconds) for c in callbacks or [] if c.airflows_own]
    blocks = []
    for stamp, said in BLOCKED_FOR.findall(output):
        ended, seconds = datetime.fromisoformat(stamp).timestamp(), float(said)
        start = ended - seconds - 0.05
        collecting = min(seconds, sum(_overlap(start, ended, at, took) for at, took in pauses))
        in_airflow = min(seconds, sum(_overlap(start, ended, at, took) for at, took in airflows))
        waiting = _waiting_for_cpu(start, ended, run_queue or [], [*pauses, *airflows])
        blocks.append(Block(ended, seconds, collecting, in_airflow, min(seconds, waiting)))
    return blocks
