"""What the operator does with finished images: land them, verify uploads, account for the cost."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_bfl.exceptions import BflError, BflLandingError
from airflow_provider_bfl.models.request import BYTE_OUTPUTS
from airflow_provider_bfl.storage.landing import ImageLander, image_key, requested_of

if TYPE_CHECKING:
    from airflow_provider_bfl.hooks.bfl import BflHook
    from airflow_provider_bfl.models.request import ImageInferenceRequest

#: Byte outputs are fetched again in chunks of this many tasks, so memory stays bounded.
BYTES_FETCH_CHUNK = 8
UPLOAD_POLL_SECONDS = 0.5


def land(
    lander: ImageLander,
    hook: BflHook,
    entries: Sequence[dict[str, Any]],
    requests: Mapping[str, ImageInferenceRequest],
) -> tuple[list[dict[str, Any]], list[tuple[Mapping[str, Any], BflError]]]:
    """Land every entry (URL outputs downloaded, byte outputs fetched again); (records, failures)."""
    requested = {uuid: requested_of(request) for uuid, request in requests.items()}
    by_url = [e for e in entries if requests[e["taskUUID"]].output_type not in BYTE_OUTPUTS]
    by_bytes = [e for e in entries if requests[e["taskUUID"]].output_type in BYTE_OUTPUTS]
    records, failures = lander.land_urls(by_url, requested)
    records.extend(_land_bytes(lander, hook, by_bytes, requested, failures))
    order = {entry["imageUUID"]: index for index, entry in enumerate(entries)}
    records.sort(key=lambda record: order.get(record["imageUUID"], len(order)))
    return records, failures


def _land_bytes(
    lander: ImageLander,
    hook: BflHook,
    entries: Sequence[dict[str, Any]],
    requested: Mapping[str, Mapping[str, Any]],
    failures: list[tuple[Mapping[str, Any], BflError]],
) -> list[dict[str, Any]]:
    """Fetch base64/dataURI images (never in events or XCom) chunk by chunk and land them."""
    wanted = {entry["imageUUID"]: entry for entry in entries}
    uuids = list(dict.fromkeys(entry["taskUUID"] for entry in entries))
    records: list[dict[str, Any]] = []
    for start in range(0, len(uuids), BYTES_FETCH_CHUNK):
        statuses = hook.get_status(uuids[start : start + BYTES_FETCH_CHUNK])
        for status in statuses.values():
            for result in status.results:
                entry = wanted.pop(result.image_uuid or "", None)
                if entry is None:
                    continue
                try:
                    data = result.image_bytes()
                    if data is None:
                        raise BflLandingError(f"image {result.image_uuid}: the API returned no image data")
                    records.append(lander.land_bytes(entry, data, requested[status.task_uuid]))
                except (BflError, ValueError) as error:
                    failure = error if isinstance(error, BflError) else BflLandingError(str(error))
                    failures.append((entry, failure))
    failures.extend(
        (
            entry,
            BflLandingError(f"image {uuid}: the API no longer returns its data", task_uuid=entry["taskUUID"]),
        )
        for uuid, entry in wanted.items()
    )
    return records


def upload_target(lander: ImageLander, request: ImageInferenceRequest) -> Any:
    """Where Runware uploads a request's image: one object per task (numberResults must be 1)."""
    return image_key(
        lander.root, lander.dag_id, lander.run_id, request.task_uuid, "uploaded", request.output_format
    )


def verify_uploads(
    lander: ImageLander,
    entries: Sequence[dict[str, Any]],
    requests: Mapping[str, ImageInferenceRequest],
    timeout: float,
) -> tuple[list[dict[str, Any]], list[tuple[Mapping[str, Any], BflError]]]:
    """Wait for each uploaded object to appear, then verify it like a landed image."""
    deadline = time.monotonic() + timeout
    records: list[dict[str, Any]] = []
    failures: list[tuple[Mapping[str, Any], BflError]] = []
    for entry in entries:
        request = requests[entry["taskUUID"]]
        target = upload_target(lander, request)
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(UPLOAD_POLL_SECONDS)
        try:
            record = lander.record_stored(target, entry, requested_of(request))
            if record is None:
                raise BflLandingError(
                    f"image {entry.get('imageUUID')}: Runware did not upload it to {target} within {timeout:.0f}s",
                    task_uuid=entry["taskUUID"],
                )
            records.append(record)
        except BflError as error:
            failures.append((entry, error))
    return records, failures


def total_cost(entries: Sequence[Mapping[str, Any]]) -> float | None:
    costs = [entry["cost"] for entry in entries if isinstance(entry.get("cost"), int | float)]
    return round(sum(costs), 6) if costs else None
