"""
Rebuilding the reuse index from what was landed: the manifests beside the images.

Every run's records are in ``{destination}/{dag_id}/{run_id}/_manifests/*.jsonl``
(:mod:`airflow_provider_bfl.storage.manifest`); records that carry a ``fingerprint`` restore
their entries (:meth:`~airflow_provider_bfl.storage.reuse.index.ReuseIndex.rebuild`, which
checks each image is still stored). The folders are walked one level at a time, so an object
store lists folders, never the images in them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from airflow_provider_bfl.exceptions import BflManifestError
from airflow_provider_bfl.storage.manifest import MANIFEST_FOLDER, MANIFEST_SUFFIX, read_manifest
from airflow_provider_bfl.storage.reuse.index import INDEX_FOLDER, ReuseIndex

log = logging.getLogger(__name__)


def rebuild_from_manifests(destination: str, conn_id: str | None = None) -> dict[str, int]:
    """
    Restore the index of ``destination`` from every manifest under it.

    Returns :meth:`ReuseIndex.rebuild`'s counts, plus ``manifests`` read and ``damagedManifests``
    (unreadable, or truncated: their complete lines still count, since each image is checked).
    """
    index = ReuseIndex(destination, conn_id=conn_id)
    tally = {"manifests": 0, "damagedManifests": 0}
    counts = index.rebuild(_records(manifest_uris(index), conn_id, tally), owner="rebuild-from-manifests")
    return {**counts, **tally}


def manifest_uris(index: ReuseIndex) -> list[str]:
    """The URIs of every manifest under the index's destination."""
    root = index.root
    fs: Any = root.fs
    base = str(root.path).rstrip("/")
    found: list[str] = []
    for dag in _folders(fs, base):
        if dag.rpartition("/")[2] == INDEX_FOLDER:
            continue
        for run in _folders(fs, dag):
            manifests = f"{run}/{MANIFEST_FOLDER}"
            found.extend(
                index.root_uri + name[len(base) :]
                for name in _names(fs, manifests, "file")
                if name.endswith(MANIFEST_SUFFIX)
            )
    return sorted(found)


def _folders(fs: Any, path: str) -> list[str]:
    return _names(fs, path, "directory")


def _names(fs: Any, path: str, kind: str) -> list[str]:
    """The entries of one folder (one listing, not recursive) of ``kind``; none if it does not exist."""
    try:
        fs.invalidate_cache(path)
        listed = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return [str(item["name"]).rstrip("/") for item in listed if item.get("type") == kind]


def _records(uris: Iterable[str], conn_id: str | None, tally: dict[str, int]) -> Iterator[dict[str, Any]]:
    for uri in uris:
        tally["manifests"] += 1
        try:
            yield from read_manifest(uri, conn_id=conn_id)
        except BflManifestError as exc:
            tally["damagedManifests"] += 1
            log.warning("Manifest %s is damaged (%s): only its complete records were used", uri, exc)
