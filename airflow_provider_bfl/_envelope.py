"""
Runware response envelopes, parsed in one place for the sync and async paths alike.

Every variant the API is known to send is accepted: ``errors`` (list) or the older ``error``
(object or list), ``data`` as a list or a single object, ``parameter`` as a string or a list, and
``data`` next to ``errors`` (partial success). Anything else becomes
:class:`~airflow_provider_bfl.exceptions.BflMalformedResponseError`, never a KeyError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_bfl.exceptions import (
    BflAuthenticationError,
    BflContentModeratedError,
    BflError,
    BflInsufficientCreditsError,
    BflInvalidRequestError,
    BflMalformedResponseError,
    BflRateLimitError,
    BflServerError,
    BflTaskFailedError,
    BflTaskNotFoundError,
)

CONFLICT = "conflictTaskUUID"

_CODE_FAMILIES: dict[type[BflError], frozenset[str]] = {
    BflAuthenticationError: frozenset(
        {
            "invalidApiKey",
            "missingApiKey",
            "unauthorized",
            "forbidden",
            "permissionDenied",
            "accountSuspended",
        }
    ),
    BflInsufficientCreditsError: frozenset(
        {"insufficientCredits", "providerInsufficientCredits", "quotaExceeded", "paymentRequired"}
    ),
    BflRateLimitError: frozenset(
        {"rateLimitExceeded", "inferenceRateLimitExceeded", "providerRateLimitExceeded"}
    ),
    BflServerError: frozenset(
        {
            "timeoutProvider",
            "providerTimeout",
            "providerGatewayTimeout",
            "requestTimeout",
            "internalServerError",
            "serviceUnavailable",
            "unknownError",
            "noAvailableServer",
        }
    ),
    BflContentModeratedError: frozenset(
        {
            "contentPolicyViolation",
            "providerContentPolicyViolation",
            "nsfwContentDetected",
            "promptBlocked",
            "imageBlocked",
            "moderationFailed",
        }
    ),
    BflTaskFailedError: frozenset(
        {
            "inferenceError",
            "processingFailed",
            "taskFailed",
            "uploadFailed",
            "providerError",
            "providerInternalError",
        }
    ),
    BflTaskNotFoundError: frozenset({"taskNotFound", "taskExpired", "taskFailedOrNotFound"}),
    BflInvalidRequestError: frozenset(
        {"modelNotFound", "unknownModel", "unknownParameter", "incompatibleParameters", CONFLICT}
    ),
}
_FAMILY_OF_CODE = {code: family for family, codes in _CODE_FAMILIES.items() for code in codes}
_FAMILY_OF_STATUS: dict[int, type[BflError]] = {
    400: BflInvalidRequestError,
    401: BflAuthenticationError,
    402: BflInsufficientCreditsError,
    403: BflAuthenticationError,
    404: BflTaskNotFoundError,
    429: BflRateLimitError,
}


@dataclass(frozen=True)
class ApiError:
    """One item of an ``errors`` array."""

    code: str
    message: str
    parameter: str | tuple[str, ...] | None = None
    task_uuid: str | None = None
    task_type: str | None = None


@dataclass
class Envelope:
    status_code: int
    data: list[dict[str, Any]] = field(default_factory=list)
    errors: list[ApiError] = field(default_factory=list)


def family_for_status(status_code: int) -> type[BflError]:
    if status_code in _FAMILY_OF_STATUS:
        return _FAMILY_OF_STATUS[status_code]
    return BflServerError if status_code >= 500 else BflError


def family_of(code: str, status_code: int | None = None) -> type[BflError]:
    if code in _FAMILY_OF_CODE:
        return _FAMILY_OF_CODE[code]
    if code.startswith(("invalid", "missing", "unsupported")):
        return BflInvalidRequestError
    if status_code is not None and status_code >= 400:
        return family_for_status(status_code)
    return BflTaskFailedError


def to_exception(error: ApiError, status_code: int | None = None) -> BflError:
    """The provider exception for one API error item."""
    family = family_of(error.code, status_code)
    return family(
        error.message or "The API reported an error",
        code=error.code,
        parameter=error.parameter,
        task_uuid=error.task_uuid,
        status_code=status_code if status_code and status_code >= 400 else None,
    )


#: Longest server-supplied message kept in an error (a server can send megabytes of "message").
MESSAGE_LIMIT = 500


def server_text(value: Any, limit: int = MESSAGE_LIMIT) -> str:
    """A string the server sent, as text of at most ``limit`` characters (cut with '...')."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | dict):  # str() of a deeply nested value would recurse
        text = f"<a JSON {'array' if isinstance(value, list) else 'object'}>"
    else:
        text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def body_snippet(content: bytes, limit: int = 120) -> str:
    text = content[:limit].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text + ("..." if len(content) > limit else "")


def parse_envelope(status_code: int, content: bytes) -> Envelope:
    try:
        payload = json.loads(content)
    except RecursionError:
        raise BflMalformedResponseError(
            f"The API answered with JSON nested too deeply to read ({len(content)} bytes)",
            status_code=status_code,
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise BflMalformedResponseError(
            f"The API answered with a body that is not JSON ({len(content)} bytes): {body_snippet(content)!r}",
            status_code=status_code,
        ) from None
    if not isinstance(payload, Mapping):
        raise BflMalformedResponseError(
            f"The API answered with JSON that is not an envelope object: {body_snippet(content)!r}",
            status_code=status_code,
        )
    raw_errors = payload.get("errors", payload.get("error"))
    raw_data = payload.get("data")
    if raw_errors is None and raw_data is None:
        raise BflMalformedResponseError(
            f"The API answered with neither 'data' nor 'errors': {body_snippet(content)!r}",
            status_code=status_code,
        )
    return Envelope(
        status_code=status_code,
        data=_data_items(raw_data, status_code),
        errors=[_api_error(item, status_code) for item in _as_list(raw_errors)],
    )


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _data_items(raw: Any, status_code: int) -> list[dict[str, Any]]:
    items = _as_list(raw)
    for item in items:
        if type(item) is not dict:  # json.loads makes plain dicts: nothing to copy or convert
            raise BflMalformedResponseError(
                f"A 'data' item is not an object: {_shown(item)}", status_code=status_code
            )
    return items


def _api_error(item: Any, status_code: int) -> ApiError:
    if isinstance(item, str):
        return ApiError(code="unknownError", message=server_text(item))
    if not isinstance(item, Mapping):
        raise BflMalformedResponseError(
            f"An 'errors' item is not an object: {_shown(item)}", status_code=status_code
        )
    parameter = item.get("parameter")
    if isinstance(parameter, Sequence) and not isinstance(parameter, str):
        parameter = tuple(server_text(part, limit=80) for part in parameter[:20])
    elif parameter is not None:
        parameter = server_text(parameter, limit=80)
    task_uuid = item.get("taskUUID")
    return ApiError(
        code=server_text(item.get("code") or "unknownError", limit=80),
        message=server_text(item.get("message") or ""),
        parameter=parameter,
        task_uuid=task_uuid if isinstance(task_uuid, str) else None,
        task_type=item.get("taskType") if isinstance(item.get("taskType"), str) else None,
    )


def _shown(value: Any) -> str:
    """A short quote of a JSON value, safe for any depth."""
    return repr(server_text(value, limit=80))
