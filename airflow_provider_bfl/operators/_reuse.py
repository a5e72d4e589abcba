"""
The operator's side of re-use: answer unchanged requests from the reuse index, claim the rest.

Before anything is sent, each request the policy allows (:func:`~airflow_provider_bfl.storage.reuse.reusable`)
is fingerprinted and looked up once; a landed, still stored generation answers it with its
records (``reused: true``, cost 0, the original ids), and the request leaves the plan. Every other
fingerprinted request is claimed (or, where the index holds a generation that is gone or is to be
refreshed, replaced), and goes out under the taskUUID the index answers: racing runs submit the
same one, which the API bills once. After landing, complete generations are published.

The index lives in the destination (:class:`~airflow_provider_bfl.storage.reuse.ReuseIndex`);
nothing here knows Airflow: the operator hands in the plan, the index, the owner and a logger.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow_provider_bfl._rendered import decode_rendered, looks_like_literal
from airflow_provider_bfl.exceptions import BflInvalidRequestError, BflReuseError
from airflow_provider_bfl.plan import GenerationPlan, PlannedGeneration

if TYPE_CHECKING:
    from airflow_provider_bfl._submission import Log, Reclaim
    from airflow_provider_bfl.storage.reuse import Claim, Entry, Found, ReuseIndex
    from airflow_provider_bfl.storage.reuse.fingerprints import ReuseMode

#: How a rendered ``reuse=`` reads (Jinja renders to text unless the DAG renders natively).
_RENDERED_FLAGS = {"True": True, "true": True, "False": False, "false": False, "None": None, "": None}
#: Index entries replaced at once (each is a read and a conditional write).
REPLACE_CONCURRENCY = 16


def mode_of(value: Any) -> ReuseMode:
    """The policy ``reuse=`` stands for, as given or as rendered text; a clear error otherwise."""
    from airflow_provider_bfl.storage.reuse.fingerprints import reuse_mode  # the light module of the package

    if isinstance(value, str):
        value = _RENDERED_FLAGS.get(value.strip(), value.strip())
    return reuse_mode(value)


def refresh_items(value: Any) -> list[Any]:
    """``refresh=`` as a list of caller keys and positions (rendered text decoded); not yet checked."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = decode_rendered(value, parameter="refresh") if looks_like_literal(value) else [value]
    if isinstance(value, str | int):
        return [value]
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise BflInvalidRequestError(
            f"refresh takes caller keys or 1-based positions (a list, or one of them), got {value!r:.80}",
            parameter="refresh",
        )
    return list(value)


def refreshed_positions(items: Sequence[Any], keys: Sequence[str | None], count: int) -> frozenset[int]:
    """
    The 1-based positions ``refresh`` names: each item a caller key of this batch or a position
    (a number, or digits when the batch has no keys). Anything else is refused, all at once.
    """
    by_key = {key: index + 1 for index, key in enumerate(keys) if key is not None}
    positions: set[int] = set()
    unknown: list[Any] = []
    for item in items:
        if isinstance(item, str) and item in by_key:
            positions.add(by_key[item])
        elif isinstance(item, str) and not by_key and item.strip().isdigit():
            positions.add(int(item))
        elif isinstance(item, int) and not isinstance(item, bool):
            positions.add(item)
        else:
            unknown.append(item)
    unknown.extend(position for position in sorted(positions) if not 1 <= position <= count)
    if unknown:
        known = (
            f"its keys ({', '.join(list(by_key)[:5])}{', ...' if len(by_key) > 5 else ''}) or "
            if by_key
            else ""
        )
        raise BflInvalidRequestError(
            f"refresh names {unknown[:5]!r:.200}, which is not in this batch: give {known}positions 1..{count}",
            parameter="refresh",
        )
    return frozenset(positions)


@dataclass(frozen=True)
class Reuse:
    """What the index answered for a plan: the generations still to send, and the records re-used."""

    plan: GenerationPlan
    records: list[dict[str, Any]]


def apply(
    plan: GenerationPlan,
    index: ReuseIndex,
    *,
    mode: ReuseMode,
    refresh: Collection[int],
    reference_hashes: Mapping[str, str],
    owner: str,
    first_try: bool,
    log: Log,
    budget: Callable[[Sequence[PlannedGeneration]], None],
) -> Reuse:
    """
    Re-use what the index holds for ``plan`` and fix the taskUUID of everything else (see the module).

    ``refresh`` (positions) asks for new images even where usable ones are indexed, unless this
    ``owner`` made them (an earlier try of the same refresh: it is never paid twice). ``budget``
    is called with what is left to send before anything is claimed (it raises to refuse). On the
    ``first_try`` nothing was submitted before, so a re-attach to any claimed taskUUID means another
    run submitted it first (see :attr:`PlannedGeneration.shared`).
    """
    from airflow_provider_bfl.storage.reuse import fingerprint, reusable

    fingerprints: dict[str, str] = {}
    seedless = unhashed = repeated = 0
    for task_uuid, entry in plan.items():
        if not reusable(entry.wire, mode):
            seedless += 1
            continue
        try:
            fingerprints[task_uuid] = fingerprint(entry.wire, reference_hashes=reference_hashes)
        except BflReuseError as exc:
            unhashed += 1
            log.info("Generation %s is not re-used: %s", entry.label, exc.message)
    held = index.lookup_many(fingerprints.values()) if fingerprints else {}
    records: list[dict[str, Any]] = []
    kept: list[PlannedGeneration] = []
    claims: dict[str, str] = {}
    replaces: dict[str, tuple[str, str]] = {}
    sent: set[str] = set()
    refreshed = 0
    for task_uuid, entry in plan.items():
        fp = fingerprints.get(task_uuid)
        if fp is None:
            kept.append(entry)
            continue
        found = held[fp]
        theirs = found.entry is not None and found.entry.owner != owner
        refreshing = entry.position in refresh and (found.entry is None or theirs)
        if found.usable and not refreshing:
            assert found.entry is not None
            records.extend(reused_records(found.entry, entry))
            continue
        if fp in sent:  # the same content again in this batch: generated apart, indexed once
            repeated += 1
            kept.append(entry)
            continue
        sent.add(fp)
        refreshed += refreshing
        kept.append(replace(entry, fingerprint=fp))
        if entry.explicit:
            continue  # the caller's own taskUUID: looked up, never claimed
        stale = _stale(found, refreshing)
        if stale is None:
            claims[fp] = entry.task_uuid
        else:
            replaces[fp] = (entry.task_uuid, stale)
    budget(kept)
    answers = _claimed(index, claims, replaces, owner)
    remaining = _under_answers(kept, answers, owner, first_try)
    log.info(
        "Reuse (%s): %d image(s) of %d request(s) re-used from %s (not sent); %d generation(s) to send "
        "(%d refreshed, %d shared with another run, %d repeating a request of this batch; not looked "
        "up: %s)",
        mode,
        len(records),
        len(plan) - len(remaining),
        index.root_uri,
        len(remaining),
        refreshed,
        sum(answer.entry.owner != owner for answer in answers.values()),
        repeated,
        _not_looked_up(seedless, unhashed),
    )
    return Reuse(remaining, records)


def reused_records(entry: Entry, planned: PlannedGeneration) -> list[dict[str, Any]]:
    """The index entry's records, with what this batch knows of the request they answer."""
    from airflow_provider_bfl.storage.landing import requested_of

    extra: dict[str, Any] = {
        "prompt": planned.prompt,
        "position": planned.position,
        "requested": {
            k: v for k, v in requested_of(planned).items() if k in ("width", "height", "outputFormat")
        },
    }
    if planned.key is not None:
        extra["key"] = planned.key
    if planned.references:
        extra["references"] = list(planned.references)
    return [{**record, **extra} for record in entry.reused_records()]


def reclaimer(index: ReuseIndex, owner: str, first_try: bool) -> Reclaim:
    """What a replacement asks the index: the taskUUID that generates the content now (see replace())."""

    def reclaim(old: PlannedGeneration, fresh: str) -> tuple[str, bool]:
        if old.fingerprint is None:
            return fresh, False
        claim = index.replace(old.fingerprint, fresh, owner, stale=old.task_uuid)
        return claim.task_uuid, claim.entry.owner != owner or first_try

    return reclaim


def publish(
    index: ReuseIndex,
    plan: GenerationPlan,
    records: Sequence[Mapping[str, Any]],
    *,
    owner: str,
    origin: Mapping[str, Any],
    log: Log,
) -> int:
    """
    Index every generation of ``plan`` whose images all landed (in ``records``); the count indexed.

    Failing to index is only a warning: the images are landed and paid for either way; the next
    run generates them again, or :func:`~airflow_provider_bfl.storage.reuse.rebuild_from_manifests`
    restores the entries from the manifests.
    """
    landed: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        if not record.get("reused") and isinstance(record.get("taskUUID"), str):
            landed.setdefault(record["taskUUID"], []).append(record)
    generations = {
        planned.fingerprint: landed[task_uuid]
        for task_uuid, planned in plan.items()
        if planned.fingerprint is not None and len(landed.get(task_uuid, ())) == planned.number_results
    }
    if not generations:
        return 0
    try:
        outcomes = index.publish_many(generations, owner=owner, origin=origin)
    except BflReuseError as exc:  # the store failed as a whole
        log.warning("Could not index the %d generation(s) landed: %s", len(generations), exc.message)
        return 0
    failed = [outcome for outcome in outcomes.values() if isinstance(outcome, BflReuseError)]
    for error in failed[:5]:
        log.warning("Not indexed (the images stay landed): %s", error.message)
    if len(failed) > 5:
        log.warning("... and %d more generation(s) not indexed", len(failed) - 5)
    return len(generations) - len(failed)


def _stale(found: Found, refreshing: bool) -> str | None:
    """The taskUUID of a landed entry to take over (its images are gone, or refreshed); None: claim."""
    if found.entry is None or not found.entry.landed:
        return None
    return found.entry.task_uuid if refreshing or not found.usable else None


def _claimed(
    index: ReuseIndex, claims: Mapping[str, str], replaces: Mapping[str, tuple[str, str]], owner: str
) -> dict[str, Claim]:
    """Claims for new content (one call), replacements of stale entries (a few at a time)."""
    answers = dict(index.claim_many(claims, owner)) if claims else {}
    if replaces:
        with ThreadPoolExecutor(max_workers=REPLACE_CONCURRENCY, thread_name_prefix="bfl-reuse") as pool:
            replaced = pool.map(
                lambda item: index.replace(item[0], item[1][0], owner, stale=item[1][1]), replaces.items()
            )
            answers.update(zip(replaces, replaced, strict=True))
    return answers


def _under_answers(
    entries: Sequence[PlannedGeneration], answers: Mapping[str, Claim], owner: str, first_try: bool
) -> GenerationPlan:
    """The plan with each claimed generation under the taskUUID the index answered for it."""
    taken = {entry.task_uuid for entry in entries}
    placed: list[PlannedGeneration] = []
    for entry in entries:
        answer = answers.get(entry.fingerprint) if entry.fingerprint else None
        if answer is None:
            placed.append(entry)
        elif answer.task_uuid != entry.task_uuid and answer.task_uuid in taken:
            placed.append(replace(entry, fingerprint=None))  # never two requests under one taskUUID
        else:
            taken.add(answer.task_uuid)
            placed.append(entry.under(answer.task_uuid, shared=answer.entry.owner != owner or first_try))
    return GenerationPlan(placed)


def _not_looked_up(seedless: int, unhashed: int) -> str:
    reasons = [
        f"{seedless} without a seed (reuse='any' re-uses those too)" if seedless else "",
        f"{unhashed} naming a reference image by location only" if unhashed else "",
    ]
    return "; ".join(reason for reason in reasons if reason) or "none"
