"""
What the operator does with finished images: land them, verify uploads, account for the cost.

Each function takes the task's plan, ``{taskUUID: planned generation}``. Only attributes shared
by :class:`~airflow_provider_bfl.plan.PlannedGeneration` and ``ImageInferenceRequest`` are used
(:class:`Planned`), plus ``prompt``/``key`` when the plan has them, which every record then carries.

Failures come back as ``(entry, error)`` pairs, never raised, so the images that did land are kept;
each error is a typed :class:`BflError` the operator can act on: :class:`BflImageExpiredError`
(the URL is gone: only a new generation helps), :class:`BflUploadMissingError` (Runware's upload
never arrived: likewise), anything else a :class:`BflLandingError` or its integrity subclass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_bfl.exceptions import (
    BflError,
    BflLandingError,
    BflMalformedResponseError,
    BflUploadMissingError,
)
from airflow_provider_bfl.models.wire import BYTE_OUTPUTS
from airflow_provider_bfl.storage.landing import ImageLander, image_key, landing_error, requested_of

if TYPE_CHECKING:
    from airflow_provider_bfl.hooks.bfl import BflHook

#: Byte outputs are fetched again in chunks of this many tasks, so memory stays bounded.
BYTES_FETCH_CHUNK = 8
UPLOAD_POLL_SECONDS = 0.5

Failures = list[tuple[Mapping[str, Any], BflError]]


class Planned(Protocol):
    """What landing reads of one planned generation (a plan entry or a request)."""

    @property
    def task_uuid(self) -> str: ...
    @property
    def width(self) -> int | None: ...  # None: the model chose the size (e.g. FLUX.2 [max] without one)
    @property
    def height(self) -> int | None: ...
    @property
    def output_format(self) -> str: ...
    @property
    def output_type(self) -> str: ...
    @property
    def number_results(self) -> int: ...


def land(
    lander: ImageLander,
    hook: BflHook,
    entries: Sequence[dict[str, Any]],
    plan: Mapping[str, Planned],
) -> tuple[list[dict[str, Any]], Failures]:
    """Land every entry (URL outputs downloaded, byte outputs fetched again); (records, failures)."""
    entries, failures = _planned_entries(entries, plan)
    requested = {uuid: requested_of(planned) for uuid, planned in plan.items()}
    by_url = [e for e in entries if plan[e["taskUUID"]].output_type not in BYTE_OUTPUTS]
    by_bytes = [e for e in entries if plan[e["taskUUID"]].output_type in BYTE_OUTPUTS]
    records, url_failures = lander.land_urls(by_url, requested)
    failures.extend(url_failures)
    records.extend(_land_bytes(lander, hook, by_bytes, requested, failures))
    order = {entry["imageUUID"]: index for index, entry in enumerate(entries)}
    records.sort(key=lambda record: order.get(record["imageUUID"], len(order)))
    return records, failures


def _planned_entries(
    entries: Sequence[dict[str, Any]], plan: Mapping[str, Planned]
) -> tuple[list[dict[str, Any]], Failures]:
    """The entries landing can place (a planned taskUUID and an imageUUID), and failures for the rest."""
    usable: list[dict[str, Any]] = []
    failures: Failures = []
    for entry in entries:
        task_uuid, image_uuid = entry.get("taskUUID"), entry.get("imageUUID")
        if not isinstance(task_uuid, str) or task_uuid not in plan:
            failures.append(
                (
                    entry,
                    BflMalformedResponseError(
                        f"image {image_uuid!s:.64}: a result for a taskUUID this task did not submit"
                    ),
                )
            )
        elif not isinstance(image_uuid, str) or not image_uuid:
            failures.append(
                (
                    entry,
                    BflMalformedResponseError(
                        "a result without an imageUUID: it has no key to be stored under", task_uuid=task_uuid
                    ),
                )
            )
        else:
            usable.append(entry)
    return usable, failures


def _land_bytes(
    lander: ImageLander,
    hook: BflHook,
    entries: Sequence[dict[str, Any]],
    requested: Mapping[str, Mapping[str, Any]],
    failures: Failures,
) -> list[dict[str, Any]]:
    """Fetch base64/dataURI images (never in events or XCom) chunk by chunk and land them."""
    wanted = {entry["imageUUID"]: entry for entry in entries}
    uuids = list(dict.fromkeys(entry["taskUUID"] for entry in entries))
    records: list[dict[str, Any]] = []
    for start in range(0, len(uuids), BYTES_FETCH_CHUNK):
        chunk = uuids[start : start + BYTES_FETCH_CHUNK]
        try:
            statuses = hook.get_status(chunk)
        except BflError as error:
            # The images of this chunk stay unlanded (a retry fetches them again); the rest go on.
            for image_uuid, entry in list(wanted.items()):
                if entry["taskUUID"] in chunk:
                    failures.append((wanted.pop(image_uuid), error))
            continue
        for status in statuses.values():
            for result in status.results:
                if result.image_uuid not in wanted:
                    continue
                entry = wanted.pop(result.image_uuid)
                try:
                    data = result.image_bytes()
                    if data is None:
                        raise BflLandingError(
                            f"image {result.image_uuid}: the API returned no image data",
                            task_uuid=status.task_uuid,
                        )
                    records.append(lander.land_bytes(entry, data, requested[status.task_uuid]))
                except ValueError as error:  # undecodable base64 / dataURI
                    failures.append(
                        (
                            entry,
                            BflMalformedResponseError(
                                f"image {result.image_uuid}: {error}", task_uuid=status.task_uuid
                            ),
                        )
                    )
                except Exception as error:
                    failures.append((entry, landing_error(error, entry)))
    failures.extend(
        (
            entry,
            BflLandingError(f"image {uuid}: the API no longer returns its data", task_uuid=entry["taskUUID"]),
        )
        for uuid, entry in wanted.items()
    )
    return records


def upload_target(lander: ImageLander, planned: Planned) -> Any:
    """Where Runware uploads a generation's image: one object per task (numberResults must be 1)."""
    return image_key(
        lander.root, lander.dag_id, lander.run_id, planned.task_uuid, "uploaded", planned.output_format
    )


def verify_uploads(
    lander: ImageLander,
    entries: Sequence[dict[str, Any]],
    plan: Mapping[str, Planned],
    timeout: float,
) -> tuple[list[dict[str, Any]], Failures]:
    """
    Wait for each uploaded object to appear, then verify it like a landed image.

    An object that is not there by the deadline is a :class:`BflUploadMissingError`: the
    generation is paid for but unusable, and only a new one can supply the image.
    """
    deadline = time.monotonic() + timeout
    records: list[dict[str, Any]] = []
    entries, failures = _planned_entries(entries, plan)
    for entry in entries:
        planned = plan[entry["taskUUID"]]
        try:
            target = upload_target(lander, planned)
            while not target.exists() and time.monotonic() < deadline:
                time.sleep(UPLOAD_POLL_SECONDS)
            record = lander.record_stored(target, entry, requested_of(planned))
            if record is None:
                raise BflUploadMissingError(
                    f"image {entry['imageUUID']}: Runware did not upload it to {target} within {timeout:g}s",
                    task_uuid=entry["taskUUID"],
                )
            records.append(record)
        except Exception as error:
            failures.append((entry, landing_error(error, entry)))
    return records, failures


def total_cost(entries: Sequence[Mapping[str, Any]]) -> float | None:
    """The sum of the entries' costs that are real amounts (finite, not negative); None if there are none."""
    costs = [cost for cost in (_amount(entry.get("cost")) for entry in entries) if cost is not None]
    return round(sum(costs), 6) if costs else None


def _amount(value: object) -> float | None:
    """``value`` as a cost if it is one: a finite, non-negative number (a NaN, -1 or "3" is not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None
