"""
taskUUIDs derived from where a generation belongs, so a retried Airflow task finds it again.

A UUID v4 is 122 random bits; here those bits come from a hash of the task instance's identity
(dag, task, run, map index, position in the batch, request content, generation number) instead of
the OS's random source. The result is a valid v4 UUID that every try of the same task instance
computes identically: a retry submits the same taskUUID, the API answers ``conflictTaskUUID``, and
the provider re-attaches instead of paying again. This needs no state, so it holds on every Airflow
version and even when a worker dies between submitting and recording what it submitted.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any


def derived_task_uuid(identity: Mapping[str, Any], wire: Mapping[str, Any], generation: int = 0) -> str:
    """The taskUUID for one request of one task instance; ``generation`` moves past failed ones."""
    content = {key: value for key, value in wire.items() if key != "taskUUID"}
    material = json.dumps(
        {"identity": dict(identity), "request": content, "generation": generation},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    digest = hashlib.sha256(material.encode()).digest()[:16]
    return str(uuid.UUID(bytes=digest, version=4))
