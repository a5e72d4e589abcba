"""
The API key in no artifact of a deployment's runs. Collected after the scenario modules, so on each
topology it searches what every scenario before it left behind (logs, XCom, DB rows, trigger rows,
and on the ``celery`` topology the S3 objects: remote logs and landed images).
"""

from __future__ import annotations

import base64

import pytest

from tests.deployment.deployment import Deployment, Evidence
from tests.deployment.secrets_scan import ScanReport, needles, scan

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(600)]

#: DAG runs of a full scenario set on one topology; the floors below are for that many.
FULL_SET_RUNS = 7
#: ``{source: (items, bytes)}`` a full scenario set leaves at least; scaled down for a smoke set.
FLOORS = {
    "files": (20, 500_000),
    "rest:logs": (15, 80_000),
    "rest:xcom": (20, 2_000),
    "rest:rendered_fields": (15, 1_000),
    "rest:task_instances": (15, 10_000),
    "trigger_kwargs:db": (5, 500),
    "db_rows": (150, 50_000),
}


@pytest.mark.smoke
def test_no_artifact_of_the_run_contains_the_api_key(deployment: Deployment, evidence: Evidence) -> None:
    key = deployment.api_key
    assert key in deployment.registry.env["AIRFLOW_CONN_BFL_DEFAULT"]  # the key was really in play
    assert evidence.runs, "run the scenarios first: this test searches what they left behind"
    control = ScanReport()
    for blob in (f"Authorization: Bearer {key}", base64.b64encode(f"user:{key}".encode()).decode()):
        control.add("control", blob[:10], blob.encode(), needles(key), [])
    assert len(control.hits) == 2  # the search does find the key, plain or base64-encoded

    canaries = list(deployment.emulator.counters()["tasks"])  # every taskUUID the session submitted
    report = scan(deployment, evidence, canaries)
    print(report.summary())

    assert report.hits == [], f"the API key leaked into: {report.hits}"
    # Not vacuous: every source held real material from the scenarios (their taskUUIDs).
    share = min(1.0, len(evidence.runs) / FULL_SET_RUNS)
    floors = dict(FLOORS)
    if deployment.topology.celery:
        floors["s3_objects"] = (3, 1_000)  # remote task and trigger logs at least
    for source, (items, size) in floors.items():
        if source == "trigger_kwargs:db" and not any("trigger" in row for row in evidence.db_trigger_rows):
            continue  # the smoke set may capture no trigger rows; a full set does (scenarios 2 and 6)
        assert report.items.get(source, 0) >= max(1, int(items * share)), (source, report.items)
        assert report.sizes.get(source, 0) >= int(size * share), (source, report.sizes)
        if source == "files" and deployment.topology.celery:
            # No metadata DB under an AIRFLOW_HOME there (it is PostgreSQL's): the task and trigger
            # logs, local copies and S3 objects together, must hold the runs' taskUUIDs.
            sightings = report.canary_hits.get("files", 0) + report.canary_hits.get("s3_objects", 0)
            assert sightings > 0, report.canary_hits
            continue
        assert report.canary_hits.get(source, 0) > 0, (source, report.canary_hits)
