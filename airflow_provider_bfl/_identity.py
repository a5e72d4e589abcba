"""
taskUUIDs derived from where a generation belongs, so a retried Airflow task finds it again.

A UUID v4 is 122 random bits; here those bits come from a hash of the task instance's identity
(deployment namespace, dag, task, run, map index, position in the batch, request content,
generation number) instead of the OS's random source. The result is a valid v4 UUID that every try
of the same task instance computes identically: a retry submits the same taskUUID, the API answers
``conflictTaskUUID``, and the provider re-attaches instead of paying again. This needs no state, so
it holds on every Airflow version and even when a worker dies between submitting and recording
what it submitted.

The namespace keeps two deployments that share one Runware account (staging and production run
the same DAGs with the same scheduled run_ids) from deriving the same taskUUIDs, which would make
the second one silently receive the first one's images.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class TaskIdentity:
    """Where a batch belongs; every field is stable across retries, clears, restarts and workers."""

    namespace: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    #: A user's explicit request for new images (any non-empty text); "" for the normal case.
    regenerate: str = ""

    def task_uuid(self, position: int, wire: Mapping[str, Any], generation: int = 0) -> str:
        """The taskUUID of the request at ``position``; ``generation`` moves past unusable ones."""
        content = {key: value for key, value in wire.items() if key != "taskUUID"}
        identity = asdict(self)
        if not self.regenerate:
            del identity["regenerate"]  # unchanged UUIDs for runs that never asked to regenerate
        material = json.dumps(
            {"identity": {**identity, "index": position}, "request": content, "generation": generation},
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        digest = hashlib.sha256(material.encode()).digest()[:16]
        return str(uuid.UUID(bytes=digest, version=4))
