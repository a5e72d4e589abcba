"""
A catalogue of hostile and careless input, and of hostile API responses, each with the error it must give.

Bad input (the user's fault): every spec limit just outside its range, wrong types, unknown fields,
empty and 3001-character prompts, non-UUID taskUUIDs, ``ftp://``/``file://`` webhook and upload URLs,
ttl with a non-URL output, templated values that render to invalid ones. Each row runs as a task of
one real DAG run (``dag.test()``) against an in-process emulator; the row's error must name the
parameter (and the Airflow task), and the emulator must have received nothing at all.

Hostile responses (the API's fault): truncated JSON, an HTML 502 page, a 200 with neither data nor
errors, results for a taskUUID never submitted, an imageURL that is not http(s), JSON nested
100,000 deep, a result without imageUUID, a 300 MB body, a 1 MB gzip body inflating to 1 GB, a
slow drip (one byte every 0.5 s), NaN costs, and image URLs whose body is not an image or is
oversized. Each must give an error naming the cause, through the
hook and through the trigger, which must end with exactly one clean error event (a triggerer
never sees an exception from it).

Rows under ``FINDING_*`` are what this catalogue found wrong when it was written; each text says
what was wrong and how it was fixed, and the rows stay as regression tests.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bfl import events
from airflow_provider_bfl.exceptions import (
    BflError,
    BflInvalidRequestError,
    BflMalformedResponseError,
    BflResponseTooLargeError,
    BflServerError,
)
from airflow_provider_bfl.hooks.bfl import BflHook
from airflow_provider_bfl.operators._requests import is_templated
from airflow_provider_bfl.operators.bfl import BflImageInferenceOperator
from airflow_provider_bfl.storage.integrity import MAX_BYTES
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger
from tests.conftest import API_KEY, DAGS_FOLDER, connection_json
from tests.dag_runs import task_states, write_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

VALID = {"positive_prompt": "a red bicycle", "width": 512, "height": 512}
A_UUID = "8c1a4a80-cc8f-4330-931a-073dfa20b87c"
#: What templated rows render from (DAG params).
PARAMS = {
    "w": 1000,
    "blank": "",
    "seed": -5,
    "n": 30,
    "ttl": 30,
    "hook": "ftp://hooks.example.com/in",
    "req": json.dumps({"positivePrompt": "a red bicycle", "width": 512, "height": 512, "outputQuality": 5}),
    "prompts": json.dumps(["a fine prompt", "x"]),
    "uuids": "['not-a-uuid']",
}


@dataclass(frozen=True)
class Row:
    """One careless or hostile input, as a task of the catalogue DAG, and what its error must say."""

    task_id: str
    kwargs: dict[str, Any]
    says: tuple[str, ...]
    error: str = "BflInvalidRequestError"
    #: Words the message must not contain (e.g. a parameter the user never gave).
    not_says: tuple[str, ...] = ()
    sensor: bool = False


def row(
    task_id: str, says: str | tuple[str, ...], error: str = "BflInvalidRequestError", **kwargs: Any
) -> Row:
    return Row(task_id, kwargs, (says,) if isinstance(says, str) else says, error)


def keywords(task_id: str, says: str | tuple[str, ...], **changes: Any) -> Row:
    """A row built from the valid keyword request with ``changes`` (``...`` removes a keyword)."""
    kwargs = {key: value for key, value in {**VALID, **changes}.items() if value is not ...}
    return row(task_id, says, **kwargs)


SIZE_RULE = "allowed: an integer from 256 to 1440 in steps of 32"
OPERATOR_ROWS = [
    # -- every spec limit just outside its range ------------------------------------------------
    keywords(
        "prompt_1_char", ("positivePrompt: got 'a'", "a string of 2 to 3000 characters"), positive_prompt="a"
    ),
    keywords("prompt_empty", ("positivePrompt: got ''", "2 to 3000 characters"), positive_prompt=""),
    keywords(
        "prompt_3001_chars",
        ("positivePrompt: got a 3001-character string", "at most 3000"),
        positive_prompt="x" * 3001,
    ),
    keywords("width_224", ("width: got 224", SIZE_RULE), width=224),
    keywords("width_1472", ("width: got 1472", SIZE_RULE), width=1472),
    keywords("width_off_step", ("width: got 1000", "nearest: 992 or 1024"), width=1000),
    keywords("height_224", ("height: got 224", SIZE_RULE), height=224),
    keywords("height_1472", ("height: got 1472", SIZE_RULE), height=1472),
    keywords("seed_minus_1", ("seed: got -1", "from 0 to 9223372036854775807"), seed=-1),
    keywords("seed_2_pow_63", ("seed: got 9223372036854775808", "from 0 to 9223372036854775807"), seed=2**63),
    keywords("number_results_0", ("numberResults: got 0", "from 1 to 20"), number_results=0),
    keywords("number_results_21", ("numberResults: got 21", "from 1 to 20"), number_results=21),
    keywords("output_quality_19", ("outputQuality: got 19", "from 20 to 99"), output_quality=19),
    keywords("output_quality_100", ("outputQuality: got 100", "from 20 to 99"), output_quality=100),
    keywords("ttl_59", ("ttl: got 59", "at least 60"), ttl=59),
    keywords(
        "safety_tolerance_minus_1",
        ("providerSettings.bfl.safetyTolerance: got -1", "0 (strictest) to 6"),
        safety_tolerance=-1,
    ),
    keywords(
        "safety_tolerance_7",
        ("providerSettings.bfl.safetyTolerance: got 7", "0 (strictest) to 6"),
        safety_tolerance=7,
    ),
    keywords(
        "output_type_unknown",
        ("outputType: got 'PNG'", "'URL', 'dataURI' or 'base64Data'"),
        output_type="PNG",
    ),
    keywords("output_format_gif", ("outputFormat: got 'GIF'", "'JPG', 'PNG' or 'WEBP'"), output_format="GIF"),
    keywords(
        "delivery_method_unknown",
        ("deliveryMethod: got 'webhook'", "'sync' or 'async'"),
        delivery_method="webhook",
    ),
    keywords(
        "safety_mode_full",
        ("safety.mode: got 'full'", "'none' or 'fast'"),
        safety={"checkContent": True, "mode": "full"},
    ),
    keywords("model_other", ("model: got 'bfl:1@1'", "'bfl:2@1'"), model="bfl:1@1"),
    # -- wrong types ------------------------------------------------------------------------------
    keywords("width_text", ("width: got '1024px'", "valid integer"), width="1024px"),
    keywords("width_fraction", ("width: got 512.5", "fractional part"), width=512.5),
    keywords("width_boolean", ("width: got True", "a boolean is not an integer"), width=True),
    keywords("width_missing", "width is required", width=...),
    keywords("seed_text", ("seed: got 'abc'", "valid integer"), seed="abc"),
    keywords("safety_text", ("safety: got 'on'", "{checkContent, mode}"), safety="on"),
    keywords(
        "check_content_maybe",
        ("safety.checkContent: got 'maybe'", "true or false"),
        safety={"checkContent": "maybe"},
    ),
    keywords(
        "prompts_item_number",
        ("request 2 of 2", "positivePrompt: got 42", "valid string"),
        positive_prompt=...,
        prompts=["a fine prompt", 42],
    ),
    row("request_number", ("request must be a request object", "got int"), request=5),
    row("request_not_json", ("neither JSON nor a Python literal", "request"), request="width=512"),
    # -- unknown fields -----------------------------------------------------------------------------
    row(
        "request_unknown_field",
        ("unknown parameter 'widht'", "did you mean 'width'"),
        request={**{"positivePrompt": "a red bicycle", "width": 512, "height": 512}, "widht": 512},
    ),
    row(
        "request_nested_unknown_field",
        ("unknown parameter 'providerSettings.bfl.tolerance'", "did you mean 'safetyTolerance'"),
        request={
            "positivePrompt": "a red bicycle",
            "width": 512,
            "height": 512,
            "providerSettings": {"bfl": {"tolerance": 2}},
        },
    ),
    keywords(
        "safety_unknown_field",
        ("unknown parameter 'safety.checkContnet'", "did you mean 'checkContent'"),
        safety={"checkContnet": True},
    ),
    row(
        "request_other_task_type",
        ("taskType: got 'imageUpscale'", "'imageInference'"),
        request={"taskType": "imageUpscale", "positivePrompt": "a red bicycle", "width": 512, "height": 512},
    ),
    # -- empty and conflicting ----------------------------------------------------------------------
    row("prompts_empty", "prompts is empty", prompts=[], width=512, height=512),
    keywords(
        "prompts_blank_item",
        ("request 2 of 2", "positivePrompt: got ''"),
        positive_prompt=...,
        prompts=["a fine prompt", ""],
    ),
    keywords("prompt_and_prompts", "Give positive_prompt or prompts, not both", prompts=["a fine prompt"]),
    row(
        "request_and_keywords",
        ("Give either request= or keyword parameters", "width"),
        request={"positivePrompt": "a red bicycle", "width": 512, "height": 512},
        width=512,
    ),
    # -- non-UUID taskUUIDs -----------------------------------------------------------------------------
    keywords(
        "task_uuid_not_a_uuid", ("taskUUID: got 'not-a-uuid'", "a UUID v4 string"), task_uuid="not-a-uuid"
    ),
    keywords(
        "task_uuid_version_1",
        ("taskUUID: got '6ba7b810-9dad-11d1-80b4-00c04fd430c8'", "version 1, not 4"),
        task_uuid="6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    ),
    keywords("task_uuid_empty", ("taskUUID: got ''", "a UUID v4 string"), task_uuid=""),
    # -- ftp:// and file:// webhook and upload URLs -------------------------------------------------------
    keywords(
        "webhook_ftp",
        ("webhookURL: got 'ftp://hooks.example.com/in'", "http:// or https://"),
        webhook_url="ftp://hooks.example.com/in",
    ),
    keywords(
        "webhook_file",
        ("webhookURL: got 'file:///etc/passwd'", "http:// or https://"),
        webhook_url="file:///etc/passwd",
    ),
    keywords(
        "upload_ftp",
        ("uploadEndpoint: got 'ftp://files.example.com/put'", "http:// or https://"),
        upload_endpoint="ftp://files.example.com/put",
    ),
    keywords(
        "upload_file",
        ("uploadEndpoint: got 'file:///tmp/image.jpg'", "http:// or https://"),
        upload_endpoint="file:///tmp/image.jpg",
    ),
    # -- ttl with a non-URL output type ---------------------------------------------------------------------
    keywords(
        "ttl_with_base64_output",
        ("ttl: got 120", "ttl only applies when outputType is 'URL', not 'base64Data'"),
        ttl=120,
        output_type="base64Data",
    ),
    keywords(
        "base64_output_without_destination",
        ("outputType 'base64Data' returns image bytes", "set destination="),
        output_type="base64Data",
    ),
    # -- budget guards ------------------------------------------------------------------------------------------
    Row(
        "over_max_images",
        {**VALID, "number_results": 4, "max_images": 3},
        ("asks for 4 images", "over max_images=3"),
        "BflBudgetExceededError",
    ),
    Row(
        "over_max_cost",
        {**VALID, "number_results": 4, "max_cost": 0.1},
        ("would cost 0.16 USD", "over max_cost=0.1"),
        "BflBudgetExceededError",
    ),
    # -- templated values that render to invalid ones ------------------------------------------------------------
    keywords("templated_width", ("width: got '1000'", SIZE_RULE), width="{{ params.w }}"),
    keywords(
        "templated_prompt",
        ("positivePrompt: got ''", "2 to 3000 characters"),
        positive_prompt="{{ params.blank }}",
    ),
    keywords("templated_seed", ("seed: got '-5'", "from 0 to"), seed="{{ params.seed }}"),
    keywords(
        "templated_number_results",
        ("numberResults: got '30'", "from 1 to 20"),
        number_results="{{ params.n }}",
    ),
    keywords("templated_ttl", ("ttl: got '30'", "at least 60"), ttl="{{ params.ttl }}"),
    keywords(
        "templated_webhook",
        ("webhookURL: got 'ftp://hooks.example.com/in'", "http:// or https://"),
        webhook_url="{{ params.hook }}",
    ),
    row("templated_request", ("outputQuality: got 5", "from 20 to 99"), request="{{ params.req }}"),
    row(
        "templated_prompts",
        ("request 2 of 2", "positivePrompt: got 'x'"),
        prompts="{{ params.prompts }}",
        width=512,
        height=512,
    ),
]
SENSOR_ROWS = [
    Row(
        "sensor_not_a_uuid",
        {"task_uuids": "not-a-uuid"},
        ("task_uuids must be", "'not-a-uuid' is not a taskUUID"),
        sensor=True,
    ),
    Row(
        "sensor_broken_json",
        {"task_uuids": '["' + A_UUID + '"'},
        ("task_uuids: got", "neither JSON nor a Python literal"),
        sensor=True,
    ),
    Row(
        "sensor_zero_images",
        {"task_uuids": {A_UUID: 0}},
        ("task_uuids must be", f"image count (numberResults) of {A_UUID}", "got 0"),
        sensor=True,
    ),
    Row("sensor_number", {"task_uuids": 42}, ("task_uuids must be", "a int is not accepted"), sensor=True),
    Row("sensor_empty", {"task_uuids": []}, ("task_uuids must be", "it holds no taskUUID"), sensor=True),
    Row(
        "sensor_templated",
        {"task_uuids": "{{ params.uuids }}"},
        ("task_uuids must be", "'not-a-uuid' is not a taskUUID"),
        sensor=True,
    ),
]
ROWS = [*OPERATOR_ROWS, *SENSOR_ROWS]
#: Operator rows written literally fail the DAG's import (the parse-time check); the rest reach a run.
LITERAL_ROWS = [item for item in OPERATOR_ROWS if not is_templated(item.kwargs)]
RUN_ROWS = [item for item in ROWS if item.sensor or is_templated(item.kwargs)]


def parse_error(item: Row) -> Exception | None:
    """The error constructing the row's operator raises (what a DAG import shows), if any."""
    try:
        BflImageInferenceOperator(task_id=item.task_id, deferrable=False, **item.kwargs)
    except Exception as error:
        return error
    return None


def _dag_source(rows: list[Row], record_to: Path, **extra_args: Any) -> str:
    tasks = []
    for item in rows:
        cls = "BflImageInferenceSensor" if item.sensor else "BflImageInferenceOperator"
        options = "poke_interval=0.1, timeout=10" if item.sensor else "deferrable=False"
        tasks.append(f"    {cls}(task_id={item.task_id!r}, {options}, **{item.kwargs!r})")
    return (
        textwrap.dedent(
            f"""
        import json, pathlib

        def record(context):
            error = context.get("exception")
            line = {{"task_id": context["ti"].task_id, "type": type(error).__name__, "message": str(error)}}
            with pathlib.Path({str(record_to)!r}).open("a") as out:
                out.write(json.dumps(line) + "\\n")

        with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1), params={PARAMS!r},
                 default_args={{"on_failure_callback": record, **{extra_args!r}}}) as dag:
        """
        )
        + "\n".join(tasks)
        + "\n"
    )


@dataclass
class CatalogueRun:
    states: dict[str, str]
    failures: dict[str, dict[str, str]]
    requests: int
    received: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CatalogueRun]:
    """Every bad-input row as one task of one DAG run, against an emulator that must stay untouched."""
    record_to = tmp_path_factory.mktemp("catalogue") / "failures.jsonl"
    with RunwareEmulator(api_key=API_KEY) as emulator, pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(emulator))
        dag = write_dag(DAGS_FOLDER, _dag_source(RUN_ROWS, record_to))
        run = dag.test()
        lines = [json.loads(line) for line in record_to.read_text().splitlines()]
        yield CatalogueRun(
            states=task_states(run),
            failures={line["task_id"]: line for line in lines},
            requests=emulator.snapshot().requests,
            received=emulator.received_tasks(),
        )


@pytest.mark.parametrize("item", LITERAL_ROWS, ids=[item.task_id for item in LITERAL_ROWS])
def test_literal_bad_input_fails_when_the_dag_is_parsed(item: Row) -> None:
    """Written in the DAG file, not templated: the import fails, naming the task and the parameter."""
    error = parse_error(item)
    assert error is not None, f"{item.task_id} was accepted when the DAG was parsed"
    assert type(error).__name__ == item.error, error
    message = str(error)
    assert message.startswith(f"Task {item.task_id!r}: "), message
    for words in item.says:
        assert words in message, message
    for words in item.not_says:
        assert words not in message, message


@pytest.mark.parametrize("item", RUN_ROWS, ids=[item.task_id for item in RUN_ROWS])
def test_bad_input_fails_with_an_error_naming_the_parameter(catalogue: CatalogueRun, item: Row) -> None:
    assert catalogue.states[item.task_id] == "failed"
    failure = catalogue.failures[item.task_id]
    assert failure["type"] == item.error, failure
    for words in item.says:
        assert words in failure["message"], failure["message"]
    for words in item.not_says:
        assert words not in failure["message"], failure["message"]
    if not item.sensor:
        assert failure["message"].startswith(f"Task {item.task_id!r}: "), failure["message"]


def test_no_bad_input_reached_the_api(catalogue: CatalogueRun) -> None:
    assert len(catalogue.failures) == len(RUN_ROWS)  # every row ran and failed...
    assert catalogue.requests == 0, catalogue.received  # ...before sending anything


def test_unknown_operator_keyword_fails_when_the_dag_is_parsed() -> None:
    with pytest.raises(TypeError, match="widht"):
        BflImageInferenceOperator(task_id="typo", positive_prompt="a red bicycle", widht=512, height=512)


# -- findings: rows this catalogue found wrong, now fixed (kept as regression tests) -------------------------------

FINDING_POLL_INTERVAL = (
    "poll_interval <= 0 is not refused: the hook polls getResponse in a hot loop (hundreds of requests "
    "a second). Fix: settings_from_connection() must reject poll_interval/poll_max_interval <= 0 "
    "(and timeout <= 0, max_retries < 0) with BflInvalidRequestError naming the extra."
)
FINDING_GENERATION_TIMEOUT = (
    "generation_timeout <= 0 is not refused: the operator pays for the generation, then fails at once "
    "with a wait timeout. Fix: BflImageInferenceOperator.build_requests() must reject "
    "generation_timeout <= 0 (parameter='generation_timeout') before submitting."
)
FINDING_REQUEST_LIST_ITEM = (
    "request=[{...}, 'second'] says 'got list' (a list is allowed; the bad item is not named). Fix: "
    "_requests.request_dicts() names the item: f'request item {i + 1} is a {type(item).__name__}: {item!r:.80}'."
)
FINDING_REQUEST_EMPTY = (
    "request=[] is reported as 'prompts is empty', a parameter the user did not give. Fix: "
    "_requests.validated() receives which argument was empty, e.g. 'request is an empty list'."
)


FINDING_ROWS = [
    pytest.param(
        Row("poll_interval_zero", {**VALID, "poll_interval": 0}, ("poll_interval",)),
        FINDING_POLL_INTERVAL,
        id="poll_interval_zero",
    ),
    pytest.param(
        Row("generation_timeout_zero", {**VALID, "generation_timeout": 0}, ("generation_timeout",)),
        FINDING_GENERATION_TIMEOUT,
        id="generation_timeout_zero",
    ),
    pytest.param(
        Row(
            "request_list_with_a_string",
            {"request": [{"positivePrompt": "a red bicycle", "width": 512, "height": 512}, "second"]},
            ("item 2", "str", "'second'"),
        ),
        FINDING_REQUEST_LIST_ITEM,
        id="request_list_with_a_string",
    ),
    pytest.param(
        Row("request_empty_list", {"request": []}, ("request",), not_says=("prompts",)),
        FINDING_REQUEST_EMPTY,
        id="request_empty_list",
    ),
]


@pytest.mark.parametrize(("item", "reason"), FINDING_ROWS)
def test_finding_bad_operator_input(
    bfl_conn: RunwareEmulator, tmp_path: Path, item: Row, reason: str, request: pytest.FixtureRequest
) -> None:
    record_to = tmp_path / "failures.jsonl"
    bfl_conn.latency = 0.2
    error = parse_error(item)
    if error is not None:  # caught when the DAG is parsed: nothing can have been sent
        failure = {"type": type(error).__name__, "message": str(error)}
    else:
        run = write_dag(DAGS_FOLDER, _dag_source([item], record_to)).test()
        assert task_states(run) == {item.task_id: "failed"}
        [failure] = [json.loads(line) for line in record_to.read_text().splitlines()]
    assert failure["type"] == item.error
    assert all(words in failure["message"] for words in item.says), failure["message"]
    assert not any(words in failure["message"] for words in item.not_says), failure["message"]
    assert bfl_conn.snapshot().requests == 0


# -- the hook and the trigger, given bad input directly -------------------------------------------------------------

HOOK_SUBMIT_ROWS = [
    pytest.param(
        [{"positivePrompt": "a", "width": 512, "height": 512}], "positivePrompt: got 'a'", id="prompt_1_char"
    ),
    pytest.param(
        [{"positivePrompt": "x" * 3001, "width": 512, "height": 512}], "3001-character", id="prompt_3001"
    ),
    pytest.param(
        [{"positivePrompt": "a red bicycle", "width": 1472, "height": 512}],
        "width: got 1472",
        id="width_1472",
    ),
    pytest.param(
        [
            {
                "positivePrompt": "a red bicycle",
                "width": 512,
                "height": 512,
                "ttl": 90,
                "outputType": "dataURI",
            }
        ],
        "not 'dataURI'",
        id="ttl_non_url",
    ),
    pytest.param(
        [
            {
                "positivePrompt": "a red bicycle",
                "width": 512,
                "height": 512,
                "webhookURL": "file:///etc/passwd",
            }
        ],
        "webhookURL",
        id="webhook_file",
    ),
    pytest.param(
        [{"positivePrompt": "a red bicycle", "width": 512, "height": 512, "taskUUID": "123"}],
        "taskUUID: got '123'",
        id="task_uuid_123",
    ),
    pytest.param(
        [{"positivePrompt": "a red bicycle", "width": 512, "height": 512, "colour": "red"}],
        "unknown parameter 'colour'",
        id="unknown_field",
    ),
    pytest.param(
        [{"positivePrompt": "a red bicycle", "width": 512, "height": 512, "taskUUID": A_UUID}] * 2,
        "The same taskUUID appears twice",
        id="duplicate_task_uuid",
    ),
]


@pytest.mark.parametrize(("requests", "says"), HOOK_SUBMIT_ROWS)
def test_hook_refuses_bad_requests_before_any_http_request(
    bfl_conn: RunwareEmulator, requests: list[Any], says: str
) -> None:
    hook = BflHook()
    try:
        with pytest.raises(BflInvalidRequestError) as caught:
            hook.submit(requests)
    finally:
        hook.close()
    assert says in str(caught.value)
    assert bfl_conn.snapshot().requests == 0


FINDING_NOT_AN_OBJECT = (
    "BflHook.submit(['a red bicycle']) (a prompt where a request object belongs) says "
    "\"Invalid imageInference request: : got 'a red bicycle'\": the parameter path is empty. Fix: "
    "models/_base.py describe() names the request itself when the error location is empty, e.g. "
    "'the request must be an object (a dict of API fields), got ...'."
)


def test_finding_hook_submit_of_a_bare_prompt(bfl_conn: RunwareEmulator) -> None:
    hook = BflHook()
    try:
        with pytest.raises(BflInvalidRequestError) as caught:
            hook.submit(["a red bicycle"])
    finally:
        hook.close()
    assert bfl_conn.snapshot().requests == 0
    assert ": : got" not in str(caught.value) and "object" in str(caught.value), str(caught.value)


FINDING_STATUS_UUIDS = (
    "BflHook.get_status()/poll_until_done() send getResponse for any string and any count: 'not-a-uuid' "
    "and an image count of 0 reach the API. Fix: hooks/bfl.py _statuses() validates each taskUUID "
    "(uuid.UUID) and count (int >= 1) and raises BflInvalidRequestError(parameter='taskUUID')."
)
FINDING_TRIGGER_UUIDS = (
    "BflImageInferenceTrigger(task_uuids={'not-a-uuid': 1}) is accepted and polls the API for it. Fix: "
    "the trigger, the hook and the sensor now share one validator (_task_uuids.expected_images)."
)


@pytest.mark.parametrize("expected", [["not-a-uuid"], {A_UUID: 0}], ids=["not_a_uuid", "zero_images"])
def test_finding_hook_status_of_bad_task_uuids(bfl_conn: RunwareEmulator, expected: Any) -> None:
    hook = BflHook()
    try:
        with pytest.raises(BflInvalidRequestError, match=r"taskUUID|image"):
            hook.get_status(expected)
    finally:
        hook.close()
    assert bfl_conn.snapshot().requests == 0


def test_finding_trigger_refuses_a_non_uuid() -> None:
    with pytest.raises(ValueError, match="not-a-uuid"):
        BflImageInferenceTrigger(task_uuids={"not-a-uuid": 1})


@pytest.mark.parametrize(
    ("task_uuids", "says"),
    [
        ("not a mapping", "a str is not accepted"),
        ({}, "it is empty"),
        ({A_UUID: 0}, "(numberResults) of 8c1a4a80-cc8f-4330-931a-073dfa20b87c must be an integer >= 1"),
        ({A_UUID: True}, "must be an integer >= 1, got True"),
        ({"": 1}, "'' is not a taskUUID"),
    ],
)
def test_trigger_refuses_bad_task_uuids_when_built(task_uuids: Any, says: str) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        BflImageInferenceTrigger(task_uuids=task_uuids)
    assert says in str(caught.value)


# -- hostile responses -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    name: str
    fault: dict[str, Any]
    error: type[BflError]
    says: str


HOSTILE = [
    Hostile("truncated_json", {"kind": "invalid_json"}, BflMalformedResponseError, "a body that is not JSON"),
    Hostile(
        "html_502_page", {"kind": "html", "status": 502}, BflServerError, "The API answered HTTP 502: '<html>"
    ),
    Hostile(
        "neither_data_nor_errors",
        {"kind": "empty_envelope"},
        BflMalformedResponseError,
        "neither 'data' nor 'errors'",
    ),
    Hostile(
        "result_for_a_uuid_never_submitted",
        {"kind": "foreign_result"},
        BflMalformedResponseError,
        "a taskUUID that was not asked about",
    ),
    Hostile(
        "ftp_image_url",
        {"kind": "bad_image_url"},
        BflMalformedResponseError,
        "imageURL must be an http(s) URL, got 'ftp://",
    ),
    Hostile(
        "json_nested_100000_deep",
        {"kind": "nested_json", "depth": 100_000},
        BflMalformedResponseError,
        "nested too deeply",
    ),
    Hostile(
        "result_without_image_uuid",
        {"kind": "missing_image_uuid"},
        BflMalformedResponseError,
        "imageUUID: Field required",
    ),
    Hostile(
        "body_of_300_mb",
        {"kind": "huge_body", "size": 300 * 1024 * 1024},
        BflResponseTooLargeError,
        "byte limit of this request (decoded size",
    ),
    Hostile(
        "gzip_bomb_1_mb_to_1_gb",
        {"kind": "gzip_bomb", "size": 1024 * 1024 * 1024},
        BflResponseTooLargeError,
        "byte limit of this request (decoded size",
    ),
    Hostile(
        "file_image_url",
        {"kind": "bad_image_url", "url_scheme": "file"},
        BflMalformedResponseError,
        "imageURL must be an http(s) URL, got 'file://",
    ),
]


def _submitted(emulator: RunwareEmulator) -> dict[str, int]:
    """One finished generation to poll for (zero latency), so the hostile part is only the fault."""
    hook = BflHook()
    try:
        outcome = hook.submit(
            [{"positivePrompt": "a red bicycle", "width": 256, "height": 256, "deliveryMethod": "async"}]
        )
    finally:
        hook.close()
    assert list(outcome.pending.values()) == [1] and emulator.snapshot().tasks_accepted == 1
    return outcome.pending


def _inject(emulator: RunwareEmulator, hostile: Hostile) -> None:
    fault = dict(hostile.fault)
    emulator.inject(fault.pop("kind"), count=1000, only_task_type="getResponse", **fault)


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.name for h in HOSTILE])
def test_hostile_response_through_the_hook_names_the_cause(
    bfl_conn: RunwareEmulator, hostile: Hostile
) -> None:
    expected = _submitted(bfl_conn)
    _inject(bfl_conn, hostile)
    hook = BflHook()
    try:
        with pytest.raises(hostile.error) as caught:
            hook.poll_until_done(expected, timeout=30)
    finally:
        hook.close()
    assert hostile.says in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert bfl_conn.snapshot().faults_triggered  # the hostile answer was really served


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.name for h in HOSTILE])
async def test_hostile_response_gives_the_trigger_one_clean_error_event(
    bfl_conn: RunwareEmulator, hostile: Hostile
) -> None:
    expected = await asyncio.to_thread(_submitted, bfl_conn)
    _inject(bfl_conn, hostile)
    trigger = BflImageInferenceTrigger(task_uuids=expected, poll_interval=0.01, max_poll_failures=1)
    fired = await asyncio.wait_for(_all_events(trigger), timeout=30)
    assert len(fired) == 1  # exactly one event, and the generator ended without raising
    event = events.validate(fired[0])
    assert event["status"] == events.ERROR
    assert hostile.says in event["message"]
    assert event["failures"][0]["error"] == hostile.error.__name__
    assert event["pending"] == list(expected) and event["results"] == []
    assert API_KEY not in json.dumps(event)


async def _all_events(trigger: BflImageInferenceTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def test_slow_drip_answer_ends_the_wait_at_its_deadline(bfl_conn: RunwareEmulator) -> None:
    """One byte every 0.5 s: before, poll_until_done(timeout=2) returned after 12 s; now at ~2 s."""
    expected = _submitted(bfl_conn)
    bfl_conn.inject("slow_drip", count=1000, interval=0.5, only_task_type="getResponse")
    hook = BflHook()
    started = time.monotonic()
    try:
        statuses = hook.poll_until_done(expected, timeout=2)
    finally:
        hook.close()
    assert time.monotonic() - started < 2.9
    assert not any(status.done for status in statuses.values())
    assert bfl_conn.snapshot().faults_triggered == {"slow_drip": 1}


async def test_slow_drip_answer_gives_the_trigger_a_timeout_event_at_its_deadline(
    bfl_conn: RunwareEmulator,
) -> None:
    expected = await asyncio.to_thread(_submitted, bfl_conn)
    bfl_conn.inject("slow_drip", count=1000, interval=0.5, only_task_type="getResponse")
    started = time.monotonic()
    trigger = BflImageInferenceTrigger(task_uuids=expected, deadline=time.time() + 2)
    fired = await asyncio.wait_for(_all_events(trigger), timeout=30)
    assert time.monotonic() - started < 2.9
    assert [event["status"] for event in fired] == [events.TIMEOUT]


def test_nan_cost_is_dropped_not_summed(bfl_conn: RunwareEmulator) -> None:
    expected = _submitted(bfl_conn)
    bfl_conn.inject("insane_cost", count=1000, only_task_type="getResponse")
    hook = BflHook()
    try:
        statuses = hook.poll_until_done(expected, timeout=30)
    finally:
        hook.close()
    [status] = statuses.values()
    assert status.done and [result.cost for result in status.results] == [None]


# -- hostile image bodies, met when the operator lands the images -------------------------------------------------------

IMAGE_BODIES = [
    pytest.param(
        {"image_corruption": "html"},
        "the bytes are not an image (no JPG, PNG, WEBP signature at the start)",
        id="html_page",
    ),
    pytest.param({"image_corruption": "garbage"}, "the bytes are not an image", id="garbage"),
    pytest.param({"image_corruption": "truncated"}, "the image is damaged", id="truncated"),
    pytest.param({"image_extra_bytes": MAX_BYTES}, f"larger than the {MAX_BYTES}-byte limit", id="oversized"),
]


@pytest.mark.parametrize(("knobs", "says"), IMAGE_BODIES)
def test_hostile_image_body_fails_landing_naming_the_cause(
    bfl_conn: RunwareEmulator, tmp_path: Path, knobs: dict[str, Any], says: str
) -> None:
    bfl_conn.configure(**knobs)
    record_to = tmp_path / "failures.jsonl"
    destination = f"file://{tmp_path / 'landed'}"
    item = Row("land", {**VALID, "output_format": "PNG", "destination": destination}, (says,))
    run = write_dag(DAGS_FOLDER, _dag_source([item], record_to, retries=0)).test()
    assert task_states(run) == {"land": "failed"}
    [failure] = [json.loads(line) for line in record_to.read_text().splitlines()]
    assert failure["type"] == "BflImageIntegrityError"
    assert failure["message"].startswith("Task 'land': 1 image(s) could not be stored: ")
    assert says in failure["message"]
    assert bfl_conn.snapshot().image_downloads >= 1  # the hostile body was really served
