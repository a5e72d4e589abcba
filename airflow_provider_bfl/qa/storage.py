"""
Reading landed objects and moving rejected ones to quarantine, through Airflow's ObjectStoragePath.

Where a quarantined object goes is a pure function of its stored URI and taskUUID (never of the
rest of the batch), so a retried or re-run QA task computes the same place and finds the object
already there::

    <quarantine_prefix>/<taskUUID>/<file name>

Without a ``quarantine_prefix`` the prefix is a ``quarantine`` folder beside the image's taskUUID
folder (or, when the image's folder is not named after its taskUUID, inside the image's folder).
With the landing layout ``{destination}/{dag_id}/{run_id}/{taskUUID}/{imageUUID}.{ext}`` that is
one quarantine per DAG run::

    s3://bucket/out/nightly/run_1/3f2c.../9a1b....png -> s3://bucket/out/nightly/run_1/quarantine/3f2c.../9a1b....png

The move stays on the same store and connection, so on object stores it is a server-side copy and
delete, never a download.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from airflow_provider_bfl.qa.errors import QAInputError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

QUARANTINE_DIR = "quarantine"
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def as_uri(location: str) -> str:
    """``location`` as a URI: local paths become absolute ``file://`` URIs, URIs stay as they are."""
    if "://" in location:
        return location
    return "file://" + os.path.abspath(os.path.expanduser(location))


def path_of(uri: str, conn_id: str | None = None) -> ObjectStoragePath:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    return ObjectStoragePath(as_uri(uri), conn_id=conn_id)


def read_bytes(uri: str, conn_id: str | None = None) -> bytes:
    return path_of(uri, conn_id).read_bytes()


def quarantine_uri(stored_uri: str, task_uuid: str | None, prefix: str | None = None) -> str:
    """Where the object at ``stored_uri`` goes when quarantined (see the module docstring)."""
    scheme, _, location = as_uri(stored_uri).partition("://")
    folder, _, name = location.rstrip("/").rpartition("/")
    if not name or (not folder and scheme != "file"):
        raise QAInputError(f"storedURI {stored_uri!r} does not name an object", parameter="storedURI")
    segments = [name]
    if task_uuid:
        if not _SAFE_SEGMENT.match(task_uuid):
            raise QAInputError(
                f"taskUUID {task_uuid!r} cannot be used as a folder name in the quarantine",
                parameter="taskUUID",
                task_uuid=task_uuid,
            )
        segments.insert(0, task_uuid)
    if prefix is not None:
        base = as_uri(prefix).rstrip("/")
    else:
        parent, _, folder_name = folder.rpartition("/")
        # Never climb above a bucket: "s3://bucket/<taskUUID>/x.png" keeps "bucket" as its root.
        climb = bool(task_uuid) and folder_name == task_uuid and (scheme == "file" or bool(parent))
        base = f"{scheme}://{parent if climb else folder}/{QUARANTINE_DIR}"
    return "/".join([base, *segments])


def move_to_quarantine(stored_uri: str, target_uri: str, conn_id: str | None = None) -> bool:
    """
    Move the object to ``target_uri``; True if it moved, False if an earlier run already moved it.

    Raises :class:`FileNotFoundError` when the object is in neither place.
    """
    source = path_of(stored_uri, conn_id)
    target = path_of(target_uri, conn_id)
    if not source.exists():
        if target.exists():
            return False
        raise FileNotFoundError(f"{stored_uri} is gone and {target_uri} does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    source.move(target)
    return True
