"""
Errors raised by the provider, one family per way a generation can go wrong.

Every error derives from :class:`BflError`, so ``except BflError`` catches them all. Callers decide
on the family, never on message text::

    BflError
    ├── BflInvalidRequestError       bad parameters (caught before sending, or rejected by the API)
    ├── BflAuthenticationError       missing, invalid or unauthorised API key
    ├── BflInsufficientCreditsError  the account cannot pay for the generation
    ├── BflRateLimitError            429 / rate codes that outlived the retry budget
    ├── BflServerError               5xx, timeouts, dropped connections that outlived the retry budget
    ├── BflMalformedResponseError    a response that is not a Runware envelope
    │   └── BflResponseTooLargeError a response larger than the request can legitimately get
    ├── BflContentModeratedError     the API refused the prompt or the image on safety grounds
    ├── BflTaskFailedError           the generation itself failed on the API side
    ├── BflTaskNotFoundError         the API does not know (or no longer keeps) the taskUUID
    ├── BflWaitTimeoutError          the generation did not finish before the caller's deadline
    ├── BflBudgetExceededError       a batch would cost more than its guard allows (nothing sent)
    ├── BflReuseError                the index of landed images cannot be trusted or reached
    ├── BflManifestError             a records manifest cannot be written or read back (or is not one)
    └── BflLandingError              an image could not be stored
        ├── BflImageExpiredError     its URL expired before it was downloaded
        └── BflImageIntegrityError   the bytes are not the image that was asked for

Messages carry the API's code, message, parameter and the taskUUID; they never carry the API key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

_E = TypeVar("_E", bound="BflError")

#: What :meth:`BflError.with_context` may replace (besides the message).
_CONTEXT_FIELDS = frozenset({"code", "parameter", "task_uuid", "status_code"})


class BflError(Exception):
    """Base class of every error raised by airflow-provider-bfl."""

    #: True when trying the same call again later may succeed.
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        parameter: str | Sequence[str] | None = None,
        task_uuid: str | None = None,
        status_code: int | None = None,
    ) -> None:
        self.message = message
        self.code = code
        self.parameter = parameter
        self.task_uuid = task_uuid
        self.status_code = status_code
        super().__init__(self._render())

    def _render(self) -> str:
        details = []
        if self.code:
            details.append(f"code={self.code}")
        if self.parameter:
            parameter = self.parameter if isinstance(self.parameter, str) else ",".join(self.parameter)
            details.append(f"parameter={parameter}")
        if self.task_uuid:
            details.append(f"taskUUID={self.task_uuid}")
        if self.status_code:
            details.append(f"HTTP {self.status_code}")
        return f"{self.message} ({', '.join(details)})" if details else self.message

    def with_context(
        self: _E, *, message: str | None = None, prefix: str = "", suffix: str = "", **fields: Any
    ) -> _E:
        """
        A new error of the same family with more context; this one is left untouched.

        ``message`` replaces the message, ``prefix``/``suffix`` wrap it, and ``fields`` (``code``,
        ``parameter``, ``task_uuid``, ``status_code``) replace those attributes; everything else
        (e.g. the violations of an invalid request) is carried over. Errors are shared (a status
        holds one, an event is built from it), so adding context must never edit them in place.
        """
        unknown = set(fields) - _CONTEXT_FIELDS
        if unknown:
            raise TypeError(f"with_context() got unknown fields: {', '.join(sorted(unknown))}")
        text = f"{prefix}{self.message if message is None else message}{suffix}"
        return type(self)(text, **{**self._state(), **fields})

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive pickling by default; Airflow pickles exceptions
        # when it ships them between processes.
        return (_rebuild, (type(self), self.message, self._state()))

    def _state(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "parameter": self.parameter,
            "task_uuid": self.task_uuid,
            "status_code": self.status_code,
        }


def _rebuild(cls: type[BflError], message: str, state: dict[str, Any]) -> BflError:
    return cls(message, **state)


class BflInvalidRequestError(BflError, ValueError):
    """The request breaks the model's rules: fix the parameters, retrying cannot help."""

    def __init__(self, message: str, *, violations: Sequence[str] = (), **kwargs: Any) -> None:
        self.violations = list(violations)
        super().__init__(message, **kwargs)

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "violations": self.violations}


class BflAuthenticationError(BflError):
    """The API key is missing, wrong, suspended or lacks permission."""


class BflInsufficientCreditsError(BflError):
    """The account balance cannot pay for the generation."""


class BflRateLimitError(BflError):
    """Runware's queue is full for this account; raised once the retry budget is spent."""

    retryable = True


class BflServerError(BflError):
    """A transient server or network failure; raised once the retry budget is spent."""

    retryable = True


class BflMalformedResponseError(BflError):
    """The API answered with something that is not a Runware envelope (HTML page, bad JSON, ...)."""

    retryable = True


class BflResponseTooLargeError(BflMalformedResponseError):
    """
    A response passed the size budget of its request (decoded size) and was not read further.

    Not retried: asking again would only read another budget's worth of the same answer.
    """

    retryable = False


class BflContentModeratedError(BflError):
    """The prompt or the image was refused on content-safety grounds."""


class BflTaskFailedError(BflError):
    """The generation failed on the API side."""


class BflTaskNotFoundError(BflError):
    """The API does not know the taskUUID, or its results have expired."""


class BflWaitTimeoutError(BflError):
    """The generation did not finish before the caller's deadline; it may still finish later."""


class BflBudgetExceededError(BflError):
    """A batch is over its ``max_images``/``max_cost`` guard; nothing was submitted."""


class BflManifestError(BflError):
    """
    A manifest of image records (JSON Lines) cannot be written, or what was read is not one.

    Truncated, garbled, oversized or missing manifests stay that way: retrying cannot help.
    """


class BflLandingError(BflError):
    """An image could not be written to its destination."""

    retryable = True


class BflImageExpiredError(BflLandingError):
    """The image URL answered 404/410: it expired (``ttl``) before it was downloaded."""

    retryable = False


class BflImageIntegrityError(BflLandingError):
    """The downloaded bytes are not a plausible image of the requested format."""

    retryable = False


class BflUploadMissingError(BflLandingError):
    """An image Runware was to upload (``uploadEndpoint``) never arrived: the generation is unusable."""


class BflReuseError(BflError):
    """
    The reuse index (landed images by request fingerprint) cannot be used as asked.

    ``code`` says why: ``referenceNotHashed`` (a request names an image by location only, whose
    content may change), ``indexConflict`` (the fingerprint is held by another generation),
    ``indexUnavailable`` (the store failed), ``invalidRecord`` (a record cannot be indexed),
    ``notFingerprintable`` (a request whose content is not plain JSON).
    The caller acts on the code: generate instead of reusing, or keep the images and log.
    """
