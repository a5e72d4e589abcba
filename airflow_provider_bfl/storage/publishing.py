"""Publishing approved images: a verified copy under a published prefix, idempotent on re-runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_bfl.exceptions import BflLandingError
from airflow_provider_bfl.storage.landing import CHUNK, stored_uri


def publish_images(
    records: Iterable[Mapping[str, Any]], published_prefix: str, *, conn_id: str | None = None
) -> list[dict[str, Any]]:
    """
    Copy each landed image to ``{published_prefix}/{taskUUID}/{file name}``; records gain ``publishedURI``.

    An object already published with the same size is left alone, so a re-run copies nothing.
    """
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    root = (
        ObjectStoragePath(published_prefix, conn_id=conn_id)
        if conn_id
        else ObjectStoragePath(published_prefix)
    )
    published = []
    for record in records:
        source = (
            ObjectStoragePath(record["storedURI"], conn_id=conn_id)
            if conn_id
            else ObjectStoragePath(record["storedURI"])
        )
        target = root / record["taskUUID"] / source.name
        if not (target.exists() and target.stat().st_size == record["bytes"]):
            if not source.exists():
                raise BflLandingError(f"Cannot publish {record['storedURI']}: it is not there any more")
            target.parent.mkdir(parents=True, exist_ok=True)
            with source.open("rb") as reader, target.open("wb") as writer:
                shutil.copyfileobj(reader, writer, CHUNK)
        published.append({**record, "publishedURI": stored_uri(target)})
    return published
