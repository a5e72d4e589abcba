"""Publishing approved images: a verified copy under a published prefix, idempotent on re-runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from airflow_provider_bfl.exceptions import BflLandingError
from airflow_provider_bfl.storage.landing import CHUNK, stored_uri
from airflow_provider_bfl.storage.manifest import (
    MANIFEST_FOLDER,
    MANIFEST_SUFFIX,
    ManifestRef,
    first_manifest_ref,
    iter_records,
    write_manifest,
)

#: The published records of a manifest input: ``{published_prefix}/_manifests/published.jsonl``.
PUBLISHED_MANIFEST = f"{MANIFEST_FOLDER}/published{MANIFEST_SUFFIX}"


def publish_images(
    records: Iterable[Mapping[str, Any]] | Mapping[str, Any],
    published_prefix: str,
    *,
    conn_id: str | None = None,
    manifest: str | None = None,
) -> list[dict[str, Any]] | ManifestRef:
    """
    Copy each landed image to ``{published_prefix}/{taskUUID}/{file name}``; records gain ``publishedURI``.

    An object already published with the same size is left alone, so a re-run copies nothing.
    ``conn_id`` is the store's connection (default: the manifest's, when ``records`` names one).
    ``records`` is a list of records, or a ManifestRef (e.g. a review's ``approved`` of a large
    batch), or a list of these; given a manifest, the published records are written to one too
    (``manifest``, default ``{published_prefix}/_manifests/published.jsonl``) and its ref returned.
    """
    source = first_manifest_ref(records)
    # Images and their manifest share a store: without a conn_id, the manifest's is used.
    conn_id = conn_id or (source or {}).get("conn_id")
    published = _published(iter_records(records, conn_id=conn_id), published_prefix, conn_id)
    if source is None:
        return list(published)
    target = manifest or f"{published_prefix.rstrip('/')}/{PUBLISHED_MANIFEST}"
    return write_manifest(published, target, conn_id=conn_id)


def _published(
    records: Iterable[Mapping[str, Any]], published_prefix: str, conn_id: str | None
) -> Iterator[dict[str, Any]]:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    root = (
        ObjectStoragePath(published_prefix, conn_id=conn_id)
        if conn_id
        else ObjectStoragePath(published_prefix)
    )
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
        yield {**record, "publishedURI": stored_uri(target)}
