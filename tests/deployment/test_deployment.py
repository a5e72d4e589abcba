"""
The provider in a real Airflow 3 deployment: api-server, scheduler (LocalExecutor), dag-processor and
triggerer as separate processes that get killed and restarted, against the emulator in a process of
its own. DAG runs are triggered and read back over Airflow's REST API; what was paid for is read from
the emulator's counters. Run alone with ``pytest -m deployment``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.deployment import dags
from tests.deployment.airflow_api import AirflowApi, wait_for
from tests.deployment.deployment import TASK_HEARTBEAT_TIMEOUT, Deployment
from tests.deployment.scenario import Scenario

# Generous: the first test on a topology also waits for its start-up (minutes on a loaded machine).
pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]

RUN_TIMEOUT = 300.0  # a loaded 2-core machine runs the celery topology slowly
#: Everything a BflImageInferenceTrigger may hold in the metadata DB.
TRIGGER_KWARGS = {
    "task_uuids",
    "bfl_conn_id",
    "deadline",
    "poll_interval",
    "poll_max_interval",
    "max_poll_failures",
}


def task_instances(api: AirflowApi, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    return {ti["task_id"]: ti for ti in api.task_instances(dag_id, run_id)}


def wait_deferred_and_assigned(
    api: AirflowApi, dag_id: str, run_id: str, task_ids: list[str]
) -> dict[str, Any]:
    """Wait until every task is deferred and its trigger is running in a triggerer."""

    def assigned() -> dict[str, Any] | None:
        tis = task_instances(api, dag_id, run_id)
        ready = all(
            tis[task_id]["state"] == "deferred"
            and tis[task_id]["trigger"] is not None
            and tis[task_id]["trigger"]["triggerer_id"] is not None
            for task_id in task_ids
        )
        return tis if ready else None

    return wait_for(
        f"{task_ids} to be deferred in a triggerer",
        assigned,
        90.0,
        context=lambda: api.describe_run(dag_id, run_id),
    )


def wait_for_more_polls(scenario: Scenario, than: int, timeout: float = 30.0) -> int:
    return wait_for(
        f"getResponse polls beyond {than}",
        lambda: (n := scenario.requests_since_start("getResponse")) > than and n,
        timeout,
    )


def billed_per_task(scenario: Scenario) -> dict[str, int]:
    return {task_uuid: counts["images_billed"] for task_uuid, counts in scenario.tasks().items()}


# -- 1 ---------------------------------------------------------------------------------------------
@pytest.mark.smoke
@pytest.mark.scenario("1 deferrable generation")
def test_deferrable_generation_completes_through_the_real_triggerer(
    scenario: Scenario, repetition: int
) -> None:
    api = scenario.api
    scenario.emulator.configure(latency=2.0)
    run_id = scenario.trigger(dags.DEFERRABLE)
    scenario.expect(generations=3, images=4)
    run = api.wait_for_run(dags.DEFERRABLE, run_id, RUN_TIMEOUT)

    assert run["state"] == "success", api.describe_run(dags.DEFERRABLE, run_id)
    tis = task_instances(api, dags.DEFERRABLE, run_id)
    assert {task_id: (ti["state"], ti["try_number"]) for task_id, ti in tis.items()} == {
        "hero": ("success", 1),
        "variants": ("success", 1),
        "wait_variants": ("success", 1),
    }
    # The trigger's own lines reach the task log only from the triggerer process.
    hero_log = api.wait_for_log(
        dags.DEFERRABLE,
        run_id,
        "hero",
        1,
        "Waiting for 1 Runware generation(s) on connection 'bfl_default'",
        "Runware wait ended with status success: 2 image(s) from 1 generation(s)",
    )
    assert "Waiting for 1 Runware generation(s) on connection 'bfl_default'" in hero_log
    assert "Runware wait ended with status success: 2 image(s) from 1 generation(s)" in hero_log
    sensor_log = api.wait_for_log(
        dags.DEFERRABLE, run_id, "wait_variants", 1, "Waiting for 2 Runware generation(s)"
    )
    assert "Waiting for 2 Runware generation(s)" in sensor_log

    hero = api.xcom(dags.DEFERRABLE, run_id, "hero")
    assert [entry["seed"] for entry in hero] == [42, 43]
    assert all(entry["imageURL"].startswith(scenario.deployment.emulator_origin) for entry in hero)
    hero_uuids = api.xcom(dags.DEFERRABLE, run_id, "hero", key="task_uuids")
    assert hero_uuids == {hero[0]["taskUUID"]: 2}
    assert tis["hero"]["rendered_fields"]["positive_prompt"] == (
        "Studio photo of a brass desk lamp, seamless grey background"
    )
    variant_uuids = api.xcom(dags.DEFERRABLE, run_id, "variants")
    waited = api.xcom(dags.DEFERRABLE, run_id, "wait_variants")
    assert len(variant_uuids) == 2 and {entry["taskUUID"] for entry in waited} == set(variant_uuids)

    tasks = scenario.tasks()
    assert set(tasks) == {*hero_uuids, *variant_uuids}
    assert all(counts["submissions"] == 1 and counts["accepted"] == 1 for counts in tasks.values())
    assert billed_per_task(scenario) == {**hero_uuids, **variant_uuids}


# -- 2 ---------------------------------------------------------------------------------------------
@pytest.mark.scenario("2 triggerer SIGKILL + restart")
def test_triggerer_killed_while_polling_resumes_without_paying_twice(
    scenario: Scenario, deployment: Deployment, repetition: int
) -> None:
    api = scenario.api
    dag_id = dags.TRIGGERER_CRASH
    scenario.emulator.configure(latency=20.0)
    run_id = scenario.trigger(dag_id)
    scenario.expect(generations=5, images=6)
    tis = wait_deferred_and_assigned(api, dag_id, run_id, ["batch", "pair", "single"])
    first_triggerer = {ti["trigger"]["triggerer_id"] for ti in tis.values()}
    rows = [
        row
        for row in scenario.capture_trigger_rows()
        if row["classpath"].endswith("BflImageInferenceTrigger")
    ]
    assert len(rows) == 3
    for row in rows:  # ids, connection id, poll settings and a deadline: no key, prompt or header
        assert set(json.loads(row["kwargs"])) == TRIGGER_KWARGS, row
        assert "kettle" not in row["kwargs"] and "teapot" not in row["kwargs"] and "cup" not in row["kwargs"]
    polls = wait_for_more_polls(scenario, scenario.requests_since_start("getResponse"))

    for triggerer in deployment.triggerers:  # every triggerer of the topology goes down
        killed = deployment.crash(triggerer)
        assert len(killed) >= 2  # the triggerer and its trigger runner subprocess
    polls_at_crash = scenario.requests_since_start("getResponse")
    assert polls_at_crash >= polls
    time.sleep(2.0)  # no triggerer at all for a while
    assert scenario.requests_since_start("getResponse") == polls_at_crash
    for triggerer in deployment.triggerers:
        deployment.restart(triggerer)

    run = api.wait_for_run(dag_id, run_id, RUN_TIMEOUT)
    assert run["state"] == "success", api.describe_run(dag_id, run_id)
    tis = task_instances(api, dag_id, run_id)
    assert {task_id: (ti["state"], ti["try_number"]) for task_id, ti in tis.items()} == {
        "batch": ("success", 1),
        "pair": ("success", 1),
        "single": ("success", 1),
    }
    assert scenario.requests_since_start("getResponse") > polls_at_crash  # the new triggerer polled
    for task_id in tis:
        # The successor's lines reach the log store after the task's state changed: wait for them.
        log = api.wait_for_log(
            dag_id,
            run_id,
            task_id,
            1,
            "Runware generation(s) on connection 'bfl_default'",
            "Runware wait ended with status success",
        )
        # Log sources: one file per triggerer job that ran the trigger; the successor's is among them.
        # (Airflow buffers these files: lines the killed triggerer had not flushed died with it.)
        ran_in = {int(job) for job in re.findall(r"attempt=1\.log\.trigger\.(\d+)\.log", log)}
        assert ran_in - first_triggerer, (ran_in, first_triggerer)
        assert "Runware generation(s) on connection 'bfl_default'" in log
        assert "Runware wait ended with status success" in log

    tasks = scenario.tasks()
    assert len(tasks) == 5
    assert all(
        counts == {"submissions": 1, "accepted": 1, "images_billed": counts["images_billed"]}
        for counts in tasks.values()
    )
    assert sorted(billed_per_task(scenario).values()) == [1, 1, 1, 1, 2]
    results = [entry for task_id in tis for entry in api.xcom(dag_id, run_id, task_id)]
    assert len(results) == 6 and len({entry["imageUUID"] for entry in results}) == 6


# -- 3 ---------------------------------------------------------------------------------------------
@pytest.mark.smoke
@pytest.mark.scenario("3 worker SIGKILL after submit")
def test_worker_killed_after_submitting_retry_reattaches_and_bills_nothing_extra(
    scenario: Scenario, deployment: Deployment, repetition: int
) -> None:
    api = scenario.api
    dag_id, task_id = dags.WORKER_CRASH, "in_worker"
    scenario.emulator.configure(latency=15.0)
    run_id = scenario.trigger(dag_id)
    scenario.expect(generations=1, images=2)
    task_uuids = wait_for(
        "the task to record its taskUUIDs", lambda: api.xcom(dag_id, run_id, task_id, key="task_uuids"), 90.0
    )
    scenario.wait_for_accepted(list(task_uuids))
    ti = api.task_instance(dag_id, run_id, task_id)
    assert ti["state"] == "running" and ti["try_number"] == 1 and ti["pid"]
    deployment.kill_pid(ti["pid"])

    run = api.wait_for_run(dag_id, run_id, RUN_TIMEOUT)
    assert run["state"] == "success", api.describe_run(dag_id, run_id)
    ti = api.task_instance(dag_id, run_id, task_id)
    assert ti["try_number"] == 2
    [task_uuid] = task_uuids
    counts = scenario.tasks()[task_uuid]
    assert counts == {"submissions": 2, "accepted": 1, "images_billed": 2}
    assert set(scenario.tasks()) == {task_uuid}
    retry_log = api.wait_for_log(
        dag_id, run_id, task_id, 2, "Re-attached to 1 generation(s) already submitted"
    )
    assert "Re-attached to 1 generation(s) already submitted" in retry_log
    results = api.xcom(dag_id, run_id, task_id)
    assert [entry["taskUUID"] for entry in results] == [task_uuid, task_uuid]


@pytest.mark.scenario("3b worker + supervisor SIGKILL")
def test_whole_worker_killed_after_submitting_heartbeat_timeout_retry_reattaches(
    scenario: Scenario, deployment: Deployment, repetition: int
) -> None:
    """The LocalExecutor worker (the task's supervisor) dies with the task: no one reports the failure,
    the scheduler notices the missing heartbeat, and the retry re-attaches."""
    api = scenario.api
    dag_id, task_id = dags.WORKER_CRASH, "in_worker"
    scenario.emulator.configure(latency=30.0)
    run_id = scenario.trigger(dag_id)
    scenario.expect(generations=1, images=2)
    task_uuids = wait_for(
        "the task to record its taskUUIDs", lambda: api.xcom(dag_id, run_id, task_id, key="task_uuids"), 90.0
    )
    scenario.wait_for_accepted(list(task_uuids))
    ti = api.task_instance(dag_id, run_id, task_id)
    assert ti["state"] == "running" and ti["try_number"] == 1
    supervisor = deployment.parent_of(ti["pid"])
    deployment.kill_pid(supervisor)

    run = api.wait_for_run(dag_id, run_id, RUN_TIMEOUT + TASK_HEARTBEAT_TIMEOUT)
    assert run["state"] == "success", api.describe_run(dag_id, run_id)
    assert api.task_instance(dag_id, run_id, task_id)["try_number"] == 2
    [task_uuid] = task_uuids
    assert scenario.tasks() == {task_uuid: {"submissions": 2, "accepted": 1, "images_billed": 2}}
    assert "Re-attached to 1 generation(s) already submitted" in api.wait_for_log(
        dag_id, run_id, task_id, 2, "Re-attached to 1 generation(s) already submitted"
    )


# -- 4 ---------------------------------------------------------------------------------------------
#: One burst per kind against the submission (in the worker), then against the polls (in the
#: triggerer). "drop" and a stall processed "before" accept the tasks and lose the answer: the
#: retry meets conflictTaskUUID and must re-attach.
SUBMIT_STORM: list[dict[str, Any]] = [
    {"kind": "status", "status": 429, "retry_after": 1},
    {"kind": "status", "status": 429},
    {"kind": "html", "status": 502},
    {"kind": "status", "status": 503},
    {"kind": "status", "status": 504},
    {"kind": "drop"},
    {"kind": "stall", "seconds": 5, "process": "before"},
]
POLL_STORM: list[dict[str, Any]] = [
    {"kind": "status", "status": 502},
    {"kind": "drop_before"},
    {"kind": "status", "status": 429, "retry_after": 0.5},
    {"kind": "stall", "seconds": 5, "process": "never"},
    {"kind": "status", "status": 503},
    {"kind": "status", "status": 504},
]


@pytest.mark.scenario("4a API fault storm within budget")
def test_fault_storm_during_a_batch_completes_within_the_retry_budget_paying_once(
    scenario: Scenario, repetition: int
) -> None:
    api = scenario.api
    dag_id = dags.FAULT_STORM
    scenario.emulator.configure(latency=2.0)
    scenario.emulator.inject(
        *[{**fault, "only_task_type": "imageInference"} for fault in SUBMIT_STORM],
        *[{**fault, "only_task_type": "getResponse"} for fault in POLL_STORM],
    )
    faults_before = scenario.emulator.counters()["faults_triggered"]
    run_id = scenario.trigger(dag_id)
    scenario.expect(generations=6, images=6)
    run = api.wait_for_run(dag_id, run_id, RUN_TIMEOUT)

    assert run["state"] == "success", api.describe_run(dag_id, run_id)
    assert api.task_instance(dag_id, run_id, "batch")["try_number"] == 1  # absorbed by the hook's retries
    assert scenario.emulator.pending_faults() == []
    faults_after = scenario.emulator.counters()["faults_triggered"]
    triggered = sum(faults_after.values()) - sum(faults_before.values())
    assert triggered == len(SUBMIT_STORM) + len(POLL_STORM)
    results = api.xcom(dag_id, run_id, "batch")
    assert len(results) == 6 and len({entry["taskUUID"] for entry in results}) == 6
    # Every taskUUID was sent once per submit attempt (7 faults + the answered one), run once, paid once.
    assert scenario.tasks() == {
        entry["taskUUID"]: {"submissions": len(SUBMIT_STORM) + 1, "accepted": 1, "images_billed": 1}
        for entry in results
    }
    log = api.wait_for_log(
        dag_id,
        run_id,
        "batch",
        1,
        f"retry {len(SUBMIT_STORM)}/10",
        f"retry {len(POLL_STORM)}/10",
    )
    assert f"retry {len(SUBMIT_STORM)}/10" in log  # the submission (worker) used 7 retries
    assert f"retry {len(POLL_STORM)}/10" in log  # a poll (triggerer) used 6
    assert "was already accepted by the API: re-attaching, not resubmitting" in log
    for symptom in ("HTTP 429", "HTTP 502", "HTTP 503", "HTTP 504", "ReadTimeout", "RemoteProtocolError"):
        assert symptom in log, symptom


@pytest.mark.scenario("4b retry budget exhausted")
def test_exhausted_retry_budget_fails_the_task_naming_the_cause(scenario: Scenario, repetition: int) -> None:
    api = scenario.api
    dag_id = dags.RETRY_BUDGET
    attempts = 3  # bfl_tight: max_retries=2
    scenario.emulator.inject(
        {
            "kind": "status",
            "status": 429,
            "retry_after": 0.2,
            "count": attempts,
            "only_task_type": "imageInference",
        },
        {"kind": "drop_before", "count": attempts, "only_task_type": "imageInference"},
    )
    run_id = scenario.trigger(dag_id)
    scenario.expect(generations=0, images=0)
    run = api.wait_for_run(dag_id, run_id, RUN_TIMEOUT)

    assert run["state"] == "failed"
    tis = task_instances(api, dag_id, run_id)
    assert {task_id: (ti["state"], ti["try_number"]) for task_id, ti in tis.items()} == {
        "rate_limited": ("failed", 1),
        "disconnected": ("failed", 1),
    }
    assert scenario.emulator.pending_faults() == []
    kind, message = api.failure(dag_id, run_id, "rate_limited", 1)
    assert kind == "BflRateLimitError"
    assert message.startswith("The API answered HTTP 429: ") and "rateLimitExceeded" in message
    assert f"gave up after {attempts} attempts" in message
    kind, message = api.failure(dag_id, run_id, "disconnected", 1)
    assert kind == "BflServerError"
    assert message.startswith("The request failed: RemoteProtocolError: Server disconnected")
    assert f"gave up after {attempts} attempts" in message
    # Each task sent its one taskUUID three times; the API never accepted it, so nothing was billed.
    tasks = scenario.tasks()
    assert len(tasks) == 2
    assert all(
        counts == {"submissions": attempts, "accepted": 0, "images_billed": 0} for counts in tasks.values()
    )


# -- 5 ---------------------------------------------------------------------------------------------
MODERATED_MESSAGE = "The request was blocked by the content moderation policy"
FAILED_MESSAGE = "The inference provider failed to process the task"


@pytest.mark.scenario("5 moderation / task error in a batch")
def test_failed_generations_are_named_and_their_siblings_kept(scenario: Scenario, repetition: int) -> None:
    api = scenario.api
    dag_id = dags.API_FAILURES
    scenario.emulator.configure(latency=2.0)
    run_id = scenario.trigger(dag_id)
    scenario.expect(generations=8, images=4)
    run = api.wait_for_run(dag_id, run_id, RUN_TIMEOUT)

    assert run["state"] == "failed"
    for task_id in ("deferred_batch", "worker_batch"):
        ti = api.task_instance(dag_id, run_id, task_id)
        assert (ti["state"], ti["try_number"]) == ("failed", 1)
        # taskUUIDs in prompt order: 0 calm lake, 1 moderated, 2 forest, 3 failing vase.
        # The taskUUIDs XCom is a mapping, and PostgreSQL keeps XCom values as JSONB, which does not
        # keep key order: each generation's role is read from what happened to it, not its position.
        task_uuids = set(api.xcom(dag_id, run_id, task_id, key="task_uuids"))
        log = api.wait_for_log(
            dag_id, run_id, task_id, 1, "BflContentModeratedError", "Kept 2 image(s) that did arrive"
        )
        assert "BflContentModeratedError" in log
        assert "2 of 4 generation(s) failed" in log
        assert "Kept 2 image(s) that did arrive (XCom 'partial_results')" in log
        kept = api.xcom(dag_id, run_id, task_id, key="partial_results")
        assert all(entry["imageURL"] and entry["cost"] == 0.04 for entry in kept)
        kept_uuids = [entry["taskUUID"] for entry in kept]
        failed = task_uuids - set(kept_uuids)
        assert len(task_uuids) == 4 and len(set(kept_uuids)) == 2 and len(failed) == 2
        moderated = {u for u in failed if f"{u}: contentPolicyViolation: {MODERATED_MESSAGE}" in log}
        vase = {u for u in failed if f"{u}: processingFailed: {FAILED_MESSAGE}" in log}
        assert len(moderated) == 1 and len(vase) == 1 and moderated | vase == failed, log[-3000:]
        billed = billed_per_task(scenario)
        assert {u: billed[u] for u in task_uuids} == {
            **dict.fromkeys(kept_uuids, 1),
            **dict.fromkeys(failed, 0),
        }
    assert all(counts["submissions"] == 1 for counts in scenario.tasks().values())


# -- 6 ---------------------------------------------------------------------------------------------
@pytest.mark.scenario("6 mark failed / clear while deferred")
def test_user_marking_failed_or_clearing_a_deferred_task_is_handled_and_logged(
    scenario: Scenario, repetition: int
) -> None:
    api = scenario.api
    dag_id = dags.USER_KILL
    scenario.emulator.configure(latency=20.0)
    run_id = scenario.trigger(dag_id)
    scenario.expect(generations=2, images=2)
    wait_deferred_and_assigned(api, dag_id, run_id, ["marked_failed", "cleared"])
    scenario.capture_trigger_rows()
    wait_for_more_polls(scenario, scenario.requests_since_start("getResponse"))
    [abandoned] = api.xcom(dag_id, run_id, "marked_failed", key="task_uuids")
    [cleared] = api.xcom(dag_id, run_id, "cleared", key="task_uuids")

    api.set_task_state(dag_id, run_id, "marked_failed", "failed")
    api.clear_task(dag_id, run_id, "cleared")

    run = api.wait_for_run(dag_id, run_id, RUN_TIMEOUT)
    assert run["state"] == "failed"
    tis = task_instances(api, dag_id, run_id)
    assert (tis["marked_failed"]["state"], tis["marked_failed"]["try_number"]) == ("failed", 1)
    assert (tis["cleared"]["state"], tis["cleared"]["try_number"]) == ("success", 2)
    for task_id, task_uuid in (("marked_failed", abandoned), ("cleared", cleared)):
        log = api.wait_for_log(
            dag_id, run_id, task_id, 1, "Trigger cancelled by user action", "Runware has no cancel endpoint"
        )
        assert "Trigger cancelled by user action, invoking on_kill" in log
        assert (
            f"Deferred task killed by a user: stopped waiting for 1 Runware generation(s): {task_uuid}" in log
        ), log[-3000:]
        assert "Runware has no cancel endpoint" in log
    # The cleared task's next try re-attached to the same generation instead of paying again.
    assert "Re-attached to 1 generation(s) already submitted" in api.wait_for_log(
        dag_id, run_id, "cleared", 2, "Re-attached to 1 generation(s) already submitted"
    )
    assert [entry["taskUUID"] for entry in api.xcom(dag_id, run_id, "cleared")] == [cleared]
    assert scenario.tasks()[cleared] == {"submissions": 2, "accepted": 1, "images_billed": 1}
    # The abandoned generation runs to its end (no cancel endpoint) and is paid once, not twice.
    wait_for(
        "the abandoned generation to finish", lambda: scenario.tasks()[abandoned]["images_billed"] == 1, 30.0
    )
    assert scenario.tasks()[abandoned] == {"submissions": 1, "accepted": 1, "images_billed": 1}
