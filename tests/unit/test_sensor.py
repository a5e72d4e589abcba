"""BflImageInferenceSensor in poke, reschedule and deferrable mode against the emulator over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from airflow_provider_bfl import events
from airflow_provider_bfl._compat import sdk_exception
from airflow_provider_bfl.exceptions import (
    BflAuthenticationError,
    BflContentModeratedError,
    BflError,
    BflInvalidRequestError,
    BflTaskFailedError,
    BflWaitTimeoutError,
)
from airflow_provider_bfl.models.results import ImageResult, TaskState, TaskStatus
from airflow_provider_bfl.sensors.bfl import (
    DEFER_TIMEOUT_GRACE,
    BflImageInferenceSensor,
    normalize_task_uuids,
)
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger
from tests.submissions import submit

# Airflow 3.1 keeps these in core; the task SDK has them from 3.2 on.
AirflowRescheduleException, AirflowSkipException, TaskDeferred = (
    sdk_exception(name) for name in ("AirflowRescheduleException", "AirflowSkipException", "TaskDeferred")
)

PROMPT = "a red bicycle"
U1 = "6bb2a3c4-0000-4000-8000-000000000001"
U2 = "6bb2a3c4-0000-4000-8000-000000000002"


def sensor(task_uuids: Any, **kwargs: Any) -> BflImageInferenceSensor:
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 10)
    return BflImageInferenceSensor(task_id="wait_for_images", task_uuids=task_uuids, **kwargs)


def wait_until_ready(emulator: RunwareEmulator, task_uuids: dict[str, int]) -> None:
    """Until the emulator has billed every task (it bills on completion)."""
    stop = time.monotonic() + 5
    while any(emulator.billed_for(task_uuid) == 0 for task_uuid in task_uuids):
        assert time.monotonic() < stop
        time.sleep(0.01)


class FakeTaskInstance:
    """Just enough of a RuntimeTaskInstance for reschedule mode and XCom pushes (no server involved)."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def get_first_reschedule_date(self, context: Any) -> datetime | None:
        return None

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = json.loads(json.dumps(value))  # XCom must be JSON


# -- task_uuids normalisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (U1, {U1: 1}),
        (f"  {U1}\n", {U1: 1}),
        ([U1, U2], {U1: 1, U2: 1}),
        ((U1, U1), {U1: 1}),
        ({U1: 3, U2: 1}, {U1: 3, U2: 1}),
        (json.dumps([U1, U2]), {U1: 1, U2: 1}),
        (json.dumps({U1: 4}), {U1: 4}),
        (json.dumps(U1), {U1: 1}),
        (str([U1, U2]), {U1: 1, U2: 1}),  # what a non-native Jinja render makes of an XCom list
        (str({U1: 2}), {U1: 2}),
    ],
)
def test_task_uuids_are_normalised(value: Any, expected: dict[str, int]) -> None:
    assert normalize_task_uuids(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "NoneType is not accepted"),
        (42, "int is not accepted"),
        ("", "'' is not a taskUUID"),
        ("None", "'None' is not a taskUUID"),
        ([], "holds no taskUUID"),
        ("{}", "holds no taskUUID"),
        ([U1, 7], "7 is not a taskUUID"),
        ({U1: 0}, "must be an integer >= 1, got 0"),
        ({U1: True}, "must be an integer >= 1, got True"),
        ({U1: "2"}, "must be an integer >= 1, got '2'"),
        ("[not json", "neither JSON nor a Python literal"),
    ],
)
def test_invalid_task_uuids_name_the_value(value: Any, reason: str) -> None:
    with pytest.raises(BflInvalidRequestError) as caught:
        normalize_task_uuids(value)
    assert caught.value.parameter == "task_uuids"
    assert f"got {value!r}" in str(caught.value)
    assert reason in str(caught.value)


def test_task_uuids_is_templated_and_rendered_json_is_accepted() -> None:
    waiter = sensor("{{ params.uuids | tojson }}")
    assert "task_uuids" in waiter.template_fields
    waiter.render_template_fields({"params": {"uuids": {U1: 2}}})
    assert normalize_task_uuids(waiter.task_uuids) == {U1: 2}


def test_invalid_task_uuids_fail_the_poke_before_any_request(bfl_conn: RunwareEmulator) -> None:
    with pytest.raises(BflInvalidRequestError, match="task_uuids"):
        sensor("{{ not rendered }}").poke({})
    assert bfl_conn.snapshot().requests == 0


def test_module_import_stays_light() -> None:
    """
    DAG parsing imports the sensor constantly: no hook, HTTP client or trigger at import time.

    Beyond what Airflow's own sensor base loads (on 3.1 that is ``airflow.triggers.base`` already).
    """
    code = (
        "import sys; from airflow.sdk import BaseSensorOperator; before = set(sys.modules);"
        "import airflow_provider_bfl.sensors.bfl;"
        "print(sorted(m for m in ('airflow_provider_bfl.hooks.bfl', 'airflow_provider_bfl.triggers.bfl',"
        " 'airflow_provider_bfl._flows', 'airflow.triggers.base') if m in set(sys.modules) - before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- poke and reschedule mode ----------------------------------------------------------------------


def test_poke_is_not_done_then_done_and_keeps_finished_tasks(bfl_conn: RunwareEmulator) -> None:
    """In poke mode a finished task is not asked about again; its images survive to the result."""
    bfl_conn.latency = 0
    fast = submit(PROMPT, number_results=2)
    bfl_conn.latency = 0.3
    slow = submit(PROMPT)
    waiter = sensor({**fast, **slow})
    context: Any = {}
    first = waiter.poke(context)
    assert not first.is_done and first.xcom_value is None
    wait_until_ready(bfl_conn, slow)
    second = waiter.poke(context)
    assert second.is_done
    results = second.xcom_value
    assert results is not None
    assert [r["taskUUID"] for r in results] == [*fast, *fast, *slow]
    assert {"taskUUID", "imageUUID", "imageURL", "seed"} <= results[0].keys()
    assert bfl_conn.snapshot().requests_by_task_type["getResponse"] == 3  # 2 + only the slow one


def test_execute_in_poke_mode_returns_the_operator_result_shape(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.latency = 0.15
    expected = submit(PROMPT, number_results=3)
    results = sensor(expected).execute({})
    assert len(results) == 3
    assert all(
        set(r) <= {"taskType", "taskUUID", "imageUUID", "imageURL", "seed", "cost", "NSFWContent"}
        for r in results
    )
    assert bfl_conn.snapshot().tasks_accepted == 1


def test_reschedule_mode_re_fetches_each_poke(bfl_conn: RunwareEmulator) -> None:
    """Each reschedule runs a fresh sensor: nothing is kept in memory, getResponse is cumulative."""
    bfl_conn.latency = 0.3
    expected = submit(PROMPT, number_results=2)
    context: Any = {"ti": FakeTaskInstance()}
    first = sensor(expected, mode="reschedule", poke_interval=1)
    with pytest.raises(AirflowRescheduleException):
        first.execute(context)
    assert first._statuses is None
    wait_until_ready(bfl_conn, expected)
    results = sensor(expected, mode="reschedule").execute(context)
    assert len({r["imageUUID"] for r in results}) == 2


@pytest.mark.parametrize(
    ("marker", "family", "code"),
    [
        ("fail-marker", BflTaskFailedError, "processingFailed"),
        ("moderation-marker", BflContentModeratedError, "contentPolicyViolation"),
    ],
)
def test_failed_generation_raises_its_family_at_once(
    bfl_conn: RunwareEmulator, marker: str, family: type[BflError], code: str
) -> None:
    """No waiting out the timeout: the first poke that sees the failure raises."""
    expected = submit(f"{PROMPT} {marker}")
    (task_uuid,) = expected
    started = time.monotonic()
    with pytest.raises(family) as caught:
        sensor(expected, timeout=60).execute({})
    assert time.monotonic() - started < 5
    assert caught.value.task_uuid == task_uuid and caught.value.code == code
    assert task_uuid in str(caught.value) and code in str(caught.value)


def test_failure_waits_for_the_rest_of_the_batch_and_keeps_its_images(bfl_conn: RunwareEmulator) -> None:
    """Like the trigger: raise once every generation is terminal, with the paid images in XCom."""
    bfl_conn.latency = 0
    (bad,) = submit(f"{PROMPT} moderation-marker")
    bfl_conn.latency = 0.3
    good = submit(PROMPT, number_results=2)
    ti = FakeTaskInstance()
    context: Any = {"ti": ti}
    waiter = sensor({bad: 1, **good})
    assert not waiter.poke(context).is_done  # the failure is known, the other task still runs
    wait_until_ready(bfl_conn, good)
    with pytest.raises(BflContentModeratedError, match=bad):
        waiter.poke(context)
    assert [r["taskUUID"] for r in ti.xcom["partial_results"]] == [*good, *good]


def test_rejected_key_raises_authentication_error(
    bfl_conn: RunwareEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = json.loads(os.environ["AIRFLOW_CONN_BFL_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", json.dumps({**conn, "password": "wrong"}))
    with pytest.raises(BflAuthenticationError, match="invalidApiKey"):
        sensor([U1]).poke({})


@pytest.mark.parametrize("flag", ["soft_fail", "never_fail"])
def test_api_error_with_soft_fail_skips(bfl_conn: RunwareEmulator, flag: str) -> None:
    """Airflow skips only its own timeout/fail exceptions on soft_fail; the sensor must map API errors."""
    expected = submit(f"{PROMPT} moderation-marker")
    with pytest.raises(AirflowSkipException) as caught:
        sensor(expected, **{flag: True}).execute({})
    assert isinstance(caught.value.__cause__, BflContentModeratedError)
    assert "contentPolicyViolation" in str(caught.value)


def test_poke_timeout_with_soft_fail_skips(bfl_conn: RunwareEmulator) -> None:
    bfl_conn.latency = 5
    expected = submit(PROMPT)
    with pytest.raises(AirflowSkipException, match="timed out"):
        sensor(expected, timeout=0.2, soft_fail=True).execute({})


# -- deferrable mode -------------------------------------------------------------------------------


async def test_deferrable_defers_with_ids_only_then_completes(bfl_conn: RunwareEmulator) -> None:
    """execute() defers without any HTTP; the trigger it built finishes and execute_complete returns."""
    bfl_conn.latency = 0.1
    expected = submit(PROMPT, number_results=2)
    requests_before = bfl_conn.snapshot().requests
    waiter = sensor(list(expected), deferrable=True, timeout=600, poll_interval=0.05)
    waiter.task_uuids = json.dumps(expected)  # as rendered from a template
    started = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        waiter.execute({})
    assert bfl_conn.snapshot().requests == requests_before

    trigger = deferred.value.trigger
    assert isinstance(trigger, BflImageInferenceTrigger)
    assert deferred.value.method_name == "execute_complete"
    _, kwargs = trigger.serialize()
    assert kwargs["task_uuids"] == expected
    assert kwargs["bfl_conn_id"] == "bfl_default"
    assert kwargs["poll_interval"] == 0.05
    assert started + 600 <= kwargs["deadline"] <= time.time() + 600
    assert deferred.value.timeout == timedelta(seconds=600) + DEFER_TIMEOUT_GRACE > timedelta(seconds=600)

    event = await trigger.run().__anext__()
    results = waiter.execute_complete({}, event=event.payload)
    assert len(results) == 2 and {r["taskUUID"] for r in results} == set(expected)


def statuses_event(**overrides: Any) -> dict[str, Any]:
    status = TaskStatus(U1, expected_images=2)
    image = {"taskUUID": U1, "imageUUID": U2, "imageURL": "https://im.runware.ai/a.jpg", "seed": 1}
    status.results.append(ImageResult.model_validate(image))
    for key, value in overrides.items():
        setattr(status, key, value)
    return events.from_statuses({U1: status})


def test_execute_complete_success_returns_results() -> None:
    event = statuses_event(state=TaskState.SUCCESS, expected_images=1)
    assert sensor([U1]).execute_complete({}, event=event) == [
        {
            "taskType": "imageInference",
            "taskUUID": U1,
            "imageUUID": U2,
            "imageURL": "https://im.runware.ai/a.jpg",
            "seed": 1,
        }
    ]


def test_execute_complete_error_raises_the_reported_family() -> None:
    moderated = BflContentModeratedError("blocked", code="promptBlocked", task_uuid=U1)
    event = statuses_event(state=TaskState.ERROR, error=moderated)
    ti = FakeTaskInstance()
    with pytest.raises(BflContentModeratedError) as caught:
        sensor([U1]).execute_complete({"ti": ti}, event=event)  # type: ignore[typeddict-item]
    assert caught.value.code == "promptBlocked" and caught.value.task_uuid == U1
    assert [r["imageUUID"] for r in ti.xcom["partial_results"]] == [U2]


def test_execute_complete_timeout_raises_wait_timeout_or_skips() -> None:
    event = statuses_event()
    assert event["status"] == events.TIMEOUT
    with pytest.raises(BflWaitTimeoutError, match=U1):
        sensor([U1]).execute_complete({}, event=event)
    with pytest.raises(AirflowSkipException) as caught:
        sensor([U1], soft_fail=True).execute_complete({}, event=event)
    assert isinstance(caught.value.__cause__, BflWaitTimeoutError)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (None, "Expected a trigger event"),
        ({"status": "success"}, "missing task_uuids"),
        ({**events.from_statuses({}), "status": "running"}, "Unknown trigger event status 'running'"),
    ],
)
def test_execute_complete_refuses_a_missing_or_unknown_event(event: Any, message: str) -> None:
    with pytest.raises(BflError, match=message):
        sensor([U1]).execute_complete({}, event=event)


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, "{" * 5_000, "(" * 100_000 + ")" * 100_000],
    ids=["list_100000_deep", "unclosed_5000_deep", "tuple_100000_deep"],
)
def test_rendered_text_nested_too_deeply_is_a_clear_error(text: str) -> None:
    """The one decoder of rendered text never lets a RecursionError or MemoryError escape."""
    with pytest.raises(BflInvalidRequestError, match="neither JSON nor a Python literal") as caught:
        normalize_task_uuids(text)
    assert caught.value.parameter == "task_uuids"


def test_sensor_trigger_and_hook_share_one_task_uuid_validator(bfl_conn: RunwareEmulator) -> None:
    """The same bad input gives the same message everywhere (one validator, not four copies)."""
    from airflow_provider_bfl.hooks.bfl import BflHook
    from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger

    bad = {U1: 0}
    messages = []
    for attempt in (
        lambda: normalize_task_uuids(bad),
        lambda: BflImageInferenceTrigger(bad),
        lambda: BflHook().get_status(bad),
    ):
        with pytest.raises(BflInvalidRequestError) as caught:
            attempt()
        messages.append(caught.value.message.split("; got ")[1])
    assert len(set(messages)) == 1, messages
    assert bfl_conn.snapshot().requests == 0
