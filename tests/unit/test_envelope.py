"""Every envelope variant parses, every error code lands in its family, anything else is malformed."""

from __future__ import annotations

import json

import pytest

from airflow_provider_bfl import exceptions as exc
from airflow_provider_bfl._envelope import ApiError, family_of, parse_envelope, to_exception


def body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_data_list_and_errors_list_together() -> None:
    envelope = parse_envelope(
        200,
        body(
            {
                "data": [{"taskType": "imageInference", "taskUUID": "a"}],
                "errors": [{"code": "invalidWidth", "message": "bad", "parameter": "width", "taskUUID": "b"}],
            }
        ),
    )
    assert envelope.data == [{"taskType": "imageInference", "taskUUID": "a"}]
    assert envelope.errors == [ApiError("invalidWidth", "bad", "width", "b")]


def test_legacy_singular_error_object_and_data_object() -> None:
    envelope = parse_envelope(400, body({"error": {"code": "invalidApiKey", "message": "no"}}))
    assert envelope.errors[0].code == "invalidApiKey"
    envelope = parse_envelope(200, body({"data": {"taskType": "ping", "pong": True}}))
    assert envelope.data == [{"taskType": "ping", "pong": True}]


def test_parameter_as_list() -> None:
    envelope = parse_envelope(
        400, body({"errors": [{"code": "incompatibleParameters", "parameter": ["ttl", "outputType"]}]})
    )
    assert envelope.errors[0].parameter == ("ttl", "outputType")


@pytest.mark.parametrize(
    ("status", "content", "fragment"),
    [
        (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "not JSON"),
        (200, b'{"data": [{"taskUUID": "a"', "not JSON"),
        (200, b"[1, 2]", "not an envelope object"),
        (200, b"{}", "neither 'data' nor 'errors'"),
        (200, b'{"data": ["x"]}', "'data' item is not an object"),
        (200, b'{"errors": [5]}', "'errors' item is not an object"),
    ],
)
def test_anything_else_is_malformed_never_a_key_error(status: int, content: bytes, fragment: str) -> None:
    with pytest.raises(exc.BflMalformedResponseError, match=fragment):
        parse_envelope(status, content)


FAMILIES = {
    exc.BflAuthenticationError: [
        "invalidApiKey",
        "missingApiKey",
        "unauthorized",
        "forbidden",
        "permissionDenied",
        "accountSuspended",
    ],
    exc.BflInsufficientCreditsError: [
        "insufficientCredits",
        "providerInsufficientCredits",
        "quotaExceeded",
        "paymentRequired",
    ],
    exc.BflRateLimitError: ["rateLimitExceeded", "inferenceRateLimitExceeded", "providerRateLimitExceeded"],
    exc.BflServerError: [
        "timeoutProvider",
        "providerTimeout",
        "providerGatewayTimeout",
        "requestTimeout",
        "internalServerError",
        "serviceUnavailable",
        "unknownError",
    ],
    exc.BflContentModeratedError: [
        "contentPolicyViolation",
        "providerContentPolicyViolation",
        "nsfwContentDetected",
        "promptBlocked",
        "imageBlocked",
        "moderationFailed",
    ],
    exc.BflTaskFailedError: [
        "inferenceError",
        "processingFailed",
        "taskFailed",
        "uploadFailed",
        "providerError",
        "providerInternalError",
    ],
    exc.BflTaskNotFoundError: ["taskNotFound", "taskExpired", "taskFailedOrNotFound"],
    exc.BflInvalidRequestError: [
        "invalidWidth",
        "invalidPositivePrompt",
        "missingPositivePrompt",
        "unsupportedOutputFormat",
        "unknownParameter",
        "incompatibleParameters",
        "conflictTaskUUID",
        "modelNotFound",
        "unknownModel",
    ],
}


@pytest.mark.parametrize(("family", "code"), [(f, c) for f, codes in FAMILIES.items() for c in codes])
def test_every_documented_code_maps_to_its_family(family: type[exc.BflError], code: str) -> None:
    assert family_of(code) is family


@pytest.mark.parametrize(
    ("status", "family"),
    [
        (400, exc.BflInvalidRequestError),
        (401, exc.BflAuthenticationError),
        (402, exc.BflInsufficientCreditsError),
        (403, exc.BflAuthenticationError),
        (404, exc.BflTaskNotFoundError),
        (429, exc.BflRateLimitError),
        (500, exc.BflServerError),
        (503, exc.BflServerError),
        (None, exc.BflTaskFailedError),
    ],
)
def test_unknown_codes_fall_back_on_the_http_status(status: int | None, family: type[exc.BflError]) -> None:
    assert family_of("somethingNew", status) is family


def test_exception_message_carries_code_parameter_uuid_and_status() -> None:
    error = to_exception(ApiError("invalidWidth", "Invalid width", "width", "abc-123"), 400)
    assert isinstance(error, exc.BflInvalidRequestError)
    assert str(error) == "Invalid width (code=invalidWidth, parameter=width, taskUUID=abc-123, HTTP 400)"


def test_transient_families_are_retryable_and_permanent_ones_are_not() -> None:
    assert exc.BflServerError("x").retryable and exc.BflRateLimitError("x").retryable
    assert not exc.BflAuthenticationError("x").retryable
    assert not exc.BflInsufficientCreditsError("x").retryable
    assert not exc.BflInvalidRequestError("x").retryable


# -- errors given context without mutating them ------------------------------------------------------------------


def test_with_context_returns_a_new_error_of_the_same_family_and_leaves_the_original() -> None:
    from airflow_provider_bfl.exceptions import BflInvalidRequestError, BflRateLimitError

    original = BflRateLimitError(
        "Too many requests", code="rateLimitExceeded", task_uuid="t-1", status_code=429
    )
    before = (original.message, original.args, str(original))
    added = original.with_context(prefix="Task 'x': ", suffix="; gave up after 3 attempts", parameter="width")
    assert type(added) is BflRateLimitError and added is not original and added.retryable
    assert added.message == "Task 'x': Too many requests; gave up after 3 attempts"
    assert (added.code, added.task_uuid, added.status_code, added.parameter) == (
        "rateLimitExceeded",
        "t-1",
        429,
        "width",
    )
    assert str(added) == added.args[0] and "taskUUID=t-1" in str(added)
    assert (original.message, original.args, str(original)) == before  # untouched

    invalid = BflInvalidRequestError("bad", violations=["width: too big"], parameter="width")
    moved = invalid.with_context(message="worse", task_uuid="t-2")
    assert moved.violations == ["width: too big"] and moved.task_uuid == "t-2" and moved.message == "worse"
    assert invalid.task_uuid is None and invalid.message == "bad"
    with pytest.raises(TypeError, match="unknown fields: colour"):
        invalid.with_context(colour="red")
