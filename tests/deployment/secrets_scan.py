"""Searching every artifact of a deployment run for the API key.

Material, by source:

- files: everything under every AIRFLOW_HOME of the deployment (one, or one per Celery worker and
  triggerer too) - task logs (and the triggerers' per-task files), the dag-processor's logs, the
  stdout/stderr of every Airflow process, the SQLite metadata DB with its journal, ``airflow.cfg``;
- S3 objects (``celery`` topology): every object on the S3 server - remote task and trigger logs,
  landed images;
- REST: every DAG run, task instance (with its rendered template fields), try, XCom entry and
  value, and the full log of every try, plus the event log;
- trigger rows: kwargs of every trigger seen in the DB's ``trigger`` table while tasks were
  deferred (decrypted with the deployment's Fernet key), since rows are deleted once a trigger
  fires (the REST API always shows trigger kwargs as ``{}``);
- DB rows: every row of every table at the end.

The emulator's own output is not searched: it plays the remote API, and prints the key it accepts.

A key can leak in transformed form, so the needles are the key itself and its base64 encodings
(for any alignment), as a Basic auth header or an encoded blob would carry them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.deployment.deployment import Deployment
from tests.deployment.scenario import Evidence


def needles(secret: str) -> list[bytes]:
    """The key, and the part of its base64 encoding that does not depend on neighbouring bytes, for
    each of the three positions the key can start at within a 3-byte group."""
    raw = secret.encode()
    found = [raw]
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        complete_groups = (offset + len(raw)) // 3
        found.append(encoded[4 if offset else 0 : complete_groups * 4])
    return found


@dataclass
class ScanReport:
    """What was searched (per source) and where the key was found."""

    items: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    canary_hits: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return "\n".join(
            f"{source:24} {self.items[source]:6} items {self.sizes[source]:10} bytes "
            f"{self.canary_hits.get(source, 0):6} taskUUID sightings"
            for source in self.items
        )

    def add(
        self, source: str, where: str, content: bytes, patterns: list[bytes], canaries: list[bytes]
    ) -> None:
        self.items[source] = self.items.get(source, 0) + 1
        self.sizes[source] = self.sizes.get(source, 0) + len(content)
        for pattern in patterns:
            if pattern in content:
                self.hits.append(f"{source}: {where}")
                break
        self.canary_hits[source] = self.canary_hits.get(source, 0) + sum(c in content for c in canaries)


def _files(root: Path) -> Iterable[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def scan(deployment: Deployment, evidence: Evidence, canaries: list[str]) -> ScanReport:
    """
    Search all material for the key; ``canaries`` are strings known to be in the material (the run's
    taskUUIDs), counted per source to prove each source held real content from the scenarios.
    """
    patterns = needles(deployment.api_key)
    canary_bytes = [canary.encode() for canary in canaries]
    report = ScanReport()

    def add(source: str, where: str, content: str | bytes) -> None:
        data = content if isinstance(content, bytes) else content.encode()
        report.add(source, where, data, patterns, canary_bytes)

    for home in deployment.homes():
        for path in _files(home):
            add("files", str(path.relative_to(deployment.root)), path.read_bytes())
    if deployment.topology.celery:
        s3 = deployment.s3_client()
        for bucket in (entry["Name"] for entry in s3.list_buckets()["Buckets"]):
            for key in deployment.s3_objects(bucket):
                add(
                    "s3_objects", f"s3://{bucket}/{key}", s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                )

    api = deployment.api
    for dag_id, run_id in evidence.runs:
        add("rest:dag_runs", f"{dag_id}/{run_id}", json.dumps(api.dag_run(dag_id, run_id)))
        for ti in api.task_instances(dag_id, run_id):  # the API's first page: a sample of a mapped run
            task_id, index = ti["task_id"], ti["map_index"]
            where = f"{dag_id}/{run_id}/{task_id}" + (f"[{index}]" if index >= 0 else "")
            add("rest:task_instances", where, json.dumps(ti))
            add("rest:rendered_fields", where, json.dumps(ti.get("rendered_fields")))
            for attempt in api.tries(dag_id, run_id, task_id, index):
                try_number = attempt["try_number"]
                add("rest:tries", f"{where}#{try_number}", json.dumps(attempt))
                add("rest:logs", f"{where}#{try_number}", api.log(dag_id, run_id, task_id, try_number, index))
            for entry in api.xcom_entries(dag_id, run_id, task_id, index):
                add("rest:xcom", f"{where}:{entry['key']}", json.dumps(entry))
                value = api.xcom(dag_id, run_id, task_id, key=entry["key"], map_index=index)
                add("rest:xcom", f"{where}:{entry['key']} (value)", json.dumps(value, default=str))
    add("rest:event_logs", "eventLogs", json.dumps(api.event_logs()))

    for index, row in enumerate(evidence.db_trigger_rows):
        add("trigger_kwargs:db", f"trigger row #{index}", row)
    for trigger in deployment.trigger_rows():
        add("trigger_kwargs:db", f"trigger {trigger['id']} (at the end)", json.dumps(trigger))

    for table, rows in deployment.db_tables().items():
        for number, values in enumerate(rows):
            add("db_rows", f"{table} row {number}", repr(values))
    return report
