"""
Billing-safe submission: assign taskUUIDs, remember them, submit, replace the unusable, merge.

This is the part of a generation where money is spent, so it is kept apart from Airflow's glue
and from I/O details: it is handed a hook (``submit``/``get_status``), a place to remember the plan
and a logger, and it returns the plan as finally submitted. The rules:

- every request gets a taskUUID derived from its :class:`~airflow_provider_bfl._identity.TaskIdentity`
  (or the one an earlier try recorded, or the one the caller gave), so a retry re-attaches;
- a generation an earlier try left unusable (failed, or unknown to the server) is replaced by the
  next generation number, at most :data:`MAX_GENERATIONS` times, logging the reason and the cost;
- a caller's explicit taskUUID is never replaced behind their back: the error says what to do;
- with reuse on, a replacement's taskUUID is the one the reuse index answers (``reclaim``), so
  runs replacing the same generation at once pay for one new generation between them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_bfl.exceptions import BflError, BflInvalidRequestError
from airflow_provider_bfl.models.status import TaskState
from airflow_provider_bfl.plan import GenerationPlan, PlannedGeneration

if TYPE_CHECKING:
    from airflow_provider_bfl._flows import SubmitOutcome
    from airflow_provider_bfl._identity import TaskIdentity
    from airflow_provider_bfl.hooks.bfl import BflHook
    from airflow_provider_bfl.models.request import ImageInferenceRequest

#: How many generations one request may go through (the first one and its replacements).
MAX_GENERATIONS = 5


#: Given a generation being replaced and the fresh taskUUID proposed for it, the taskUUID to submit
#: (the proposal, or the one another run already fixed for the same content) and whether another
#: run may submit it first (:attr:`PlannedGeneration.shared`).
Reclaim = Callable[[PlannedGeneration, str], tuple[str, bool]]


class Log(Protocol):
    """What is logged to: a stdlib logger or Airflow's task logger."""

    def info(self, event: Any, *args: Any, **kwargs: Any) -> Any: ...

    def warning(self, event: Any, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Submission:
    plan: GenerationPlan
    outcome: SubmitOutcome


def assign(
    requests: Sequence[ImageInferenceRequest],
    identity: TaskIdentity,
    *,
    explicit: Sequence[bool],
    keys: Sequence[str | None],
    remembered: Mapping[int, tuple[str, int]] | None = None,
) -> GenerationPlan:
    """
    The plan: explicit taskUUIDs kept, else the ``(taskUUID, generation)`` an earlier try recorded
    for the request's 1-based position, else derived (generation 0).
    """
    entries = []
    for index, request in enumerate(requests):
        generation = 0
        recorded = None if remembered is None else remembered.get(index + 1)
        if explicit[index]:
            task_uuid = request.task_uuid
        elif recorded is not None:
            task_uuid, generation = recorded
        else:
            task_uuid = identity.task_uuid(index, request.to_wire())
        entry = PlannedGeneration.of(
            request.with_task_uuid(task_uuid), position=index + 1, key=keys[index], explicit=explicit[index]
        )
        entries.append(replace(entry, generation=generation) if generation else entry)
    return GenerationPlan(entries)


def replacement(
    plan: GenerationPlan,
    task_uuid: str,
    identity: TaskIdentity,
    *,
    reason: str,
    price_per_image: float,
    log: Log,
    reclaim: Reclaim | None = None,
) -> tuple[GenerationPlan, str]:
    """
    The plan with ``task_uuid``'s generation replaced by the next one (not yet submitted), and its taskUUID.

    Raises instead when the taskUUID was the caller's own or the request has used up its
    generations: paying again must be the user's decision then. With ``reclaim``, the taskUUID
    is the one it answers: another run's replacement of the same content is shared, not paid again.
    """
    old = plan[task_uuid]
    if old.explicit:
        raise BflInvalidRequestError(
            f"Generation {old.label} {reason}, and its taskUUID was given explicitly, so it is not "
            "replaced automatically: give a new taskUUID (or none, to let the provider derive one) "
            "to generate it again",
            parameter="taskUUID",
            task_uuid=task_uuid,
        )
    if old.generation + 1 >= MAX_GENERATIONS:
        raise BflError(
            f"Generation {old.label} {reason}; it has already been replaced {old.generation} time(s), "
            f"the most allowed ({MAX_GENERATIONS} generations): not paying again. Set regenerate= "
            "to start over deliberately",
            task_uuid=task_uuid,
        )
    fresh_uuid = identity.task_uuid(old.position - 1, old.wire, old.generation + 1)
    answer, shared = (fresh_uuid, False) if reclaim is None else reclaim(old, fresh_uuid)
    if answer != fresh_uuid and answer not in plan:
        log.info(
            "Generation %s %s; another run already replaces it with %s: re-attaching to that one "
            "(one new generation between them, not one each)",
            old.label,
            reason,
            answer,
        )
        return plan.replacing(task_uuid, old.replaced_by(answer, shared=shared)), answer
    log.warning(
        "Generation %s %s: replacing it with %s (generation %d); this bills %d more image(s), about %.2f USD",
        old.label,
        reason,
        fresh_uuid,
        old.generation + 1,
        old.number_results,
        old.number_results * price_per_image,
    )
    return plan.replacing(
        task_uuid, old.replaced_by(fresh_uuid, shared=shared and answer == fresh_uuid)
    ), fresh_uuid


def submit(
    hook: BflHook,
    plan: GenerationPlan,
    identity: TaskIdentity,
    *,
    outgoing: Callable[[PlannedGeneration], ImageInferenceRequest],
    remember: Callable[[GenerationPlan], None],
    price_per_image: float,
    log: Log,
    only: Sequence[str] | None = None,
    reclaim: Reclaim | None = None,
) -> Submission:
    """
    Submit the plan's generations (or ``only`` these), replacing those an earlier try left unusable.

    ``remember`` is called with the plan before every submission, so the taskUUIDs are on record
    before any of them can be billed. Re-attached generations are checked once: one that failed or
    that the server no longer knows is replaced (see :func:`replacement`, which ``reclaim`` is
    passed to). Re-attached ones are marked so; those the caller gave or another run fixed
    (``shared``) were billed to someone else, and their cost is reported as re-used.
    """
    to_send = list(plan) if only is None else list(only)
    outcome: SubmitOutcome | None = None
    while to_send:
        remember(plan)
        batch = hook.submit([outgoing(plan[uuid]) for uuid in to_send])
        outcome = batch if outcome is None else _merged(outcome, batch)
        unusable = _unusable(hook, plan, batch) if batch.reattached else {}
        to_send = []
        for old_uuid, reason in unusable.items():
            plan, fresh_uuid = replacement(
                plan,
                old_uuid,
                identity,
                reason=reason,
                price_per_image=price_per_image,
                log=log,
                reclaim=reclaim,
            )
            outcome.statuses.pop(old_uuid, None)
            outcome.reattached.remove(old_uuid)
            to_send.append(fresh_uuid)
    assert outcome is not None
    reattached = set(outcome.reattached)
    for uuid in outcome.reattached:
        entry = plan[uuid]
        if entry.explicit:
            log.info(
                "Generation %s: re-attached to the taskUUID given explicitly; it was billed when it "
                "was first generated and is not billed again (its cost is reported as re-used)",
                entry.label,
            )
        elif entry.shared:
            log.info(
                "Generation %s: another run submitted it first (the reuse index gave both runs this "
                "taskUUID); re-attached to its generation, not billed again (cost reported as re-used)",
                entry.label,
            )
    plan = GenerationPlan(
        replace(entry, reattached=True, reused=entry.explicit or entry.shared)
        if uuid in reattached
        else entry
        for uuid, entry in plan.items()
    )
    return Submission(plan, outcome)


def _unusable(hook: BflHook, plan: GenerationPlan, outcome: SubmitOutcome) -> dict[str, str]:
    """Re-attached generations that cannot deliver images: {taskUUID: why}."""
    expected = {uuid: plan[uuid].number_results for uuid in outcome.reattached}
    statuses = hook.get_status(expected, unknown_as_missing=True)
    unusable = {}
    for uuid, status in statuses.items():
        outcome.statuses[uuid] = status
        if status.state is TaskState.ERROR:
            code = status.error.code if status.error is not None else None
            unusable[uuid] = (
                "is no longer known to the API"
                if code == "taskNotFound"
                else f"failed in an earlier try ({code or 'error'})"
            )
    return unusable


def _merged(first: SubmitOutcome, second: SubmitOutcome) -> SubmitOutcome:
    first.accepted.extend(second.accepted)
    first.reattached.extend(uuid for uuid in second.reattached if uuid not in first.reattached)
    first.rejected.update(second.rejected)
    first.statuses.update(second.statuses)
    return first
