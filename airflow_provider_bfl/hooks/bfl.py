"""
:class:`BflHook`: the connection to Runware and every HTTP call the provider makes.

The logic lives in :mod:`airflow_provider_bfl._flows`; this module only resolves the connection and
runs those flows with a blocking client (worker) or an async one (triggerer). Both directions share
one implementation of retries, envelope parsing, error mapping and re-attachment.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx
from airflow.sdk import BaseHook

from airflow_provider_bfl import __version__, _flows, defaults
from airflow_provider_bfl._compat import amask_secret, mask_secret
from airflow_provider_bfl._flows import Flow, PollSettings, Sleep, SubmitOutcome
from airflow_provider_bfl._retry import RetryPolicy
from airflow_provider_bfl.exceptions import (
    BflAuthenticationError,
    BflError,
    BflInvalidRequestError,
    BflMalformedResponseError,
    BflWaitTimeoutError,
)
from airflow_provider_bfl.models.request import ImageInferenceRequest
from airflow_provider_bfl.models.results import ImageResult, TaskStatus

if TYPE_CHECKING:
    from airflow.sdk import Connection

T = TypeVar("T")

RequestLike = ImageInferenceRequest | Mapping[str, Any]
#: Tasks to ask about: UUIDs, ``{uuid: images expected}``, or ``{uuid: TaskStatus}`` to update in place.
Expected = Mapping[str, int] | Mapping[str, TaskStatus] | Iterable[str]


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything the hook needs from an Airflow connection, resolved once."""

    base_url: str
    api_key: str
    timeout: float
    retry: RetryPolicy
    poll: PollSettings
    max_tasks_per_request: int

    def __repr__(self) -> str:  # the key must never reach a log line through a repr
        return f"ConnectionSettings(base_url={self.base_url!r}, api_key=***)"


def _number(extra: Mapping[str, Any], key: str, default: float) -> float:
    value = extra.get(key)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BflError(f"Connection extra {key!r} must be a number, got {value!r}") from None


def _base_url(conn: Connection) -> str:
    host = (conn.host or "").strip()
    if not host:
        return defaults.DEFAULT_BASE_URL
    if "://" in host:
        return host.rstrip("/")
    scheme = str(conn.extra_dejson.get("scheme") or "https")
    port = f":{conn.port}" if conn.port else ""
    path = (conn.schema or "v1").strip("/")
    return f"{scheme}://{host}{port}/{path}"


def settings_from_connection(conn: Connection, overrides: Mapping[str, Any]) -> ConnectionSettings:
    if not conn.password:
        raise BflAuthenticationError(
            f"Connection {conn.conn_id!r} has no API key: put the Runware API key in its password field",
            code="missingApiKey",
        )
    extra = {**conn.extra_dejson, **{key: value for key, value in overrides.items() if value is not None}}
    base_url = _base_url(conn)
    if urlsplit(base_url).scheme not in ("http", "https"):
        raise BflError(f"Connection {conn.conn_id!r} has a base URL that is not http(s): {base_url!r}")
    _check_limits(conn.conn_id, extra)
    return ConnectionSettings(
        base_url=base_url,
        api_key=conn.password,
        timeout=_number(extra, "timeout", defaults.REQUEST_TIMEOUT),
        retry=RetryPolicy(
            max_retries=int(_number(extra, "max_retries", defaults.MAX_RETRIES)),
            max_elapsed=_number(extra, "retry_max_elapsed", defaults.RETRY_MAX_ELAPSED),
            backoff_base=_number(extra, "retry_backoff_base", defaults.BACKOFF_BASE),
            backoff_max=_number(extra, "retry_backoff_max", defaults.BACKOFF_MAX),
        ),
        poll=PollSettings(
            interval=_number(extra, "poll_interval", defaults.POLL_INTERVAL),
            max_interval=_number(extra, "poll_max_interval", defaults.POLL_MAX_INTERVAL),
            max_failures=int(_number(extra, "max_poll_failures", defaults.MAX_POLL_FAILURES)),
            steady_polls=int(_number(extra, "poll_steady_polls", defaults.POLL_STEADY_POLLS)),
        ),
        max_tasks_per_request=int(_number(extra, "max_tasks_per_request", defaults.MAX_TASKS_PER_REQUEST)),
    )


#: Connection extra -> (lowest allowed value, whether that value itself is allowed).
_MINIMUMS: dict[str, tuple[float, bool]] = {
    "timeout": (0, False),
    "poll_interval": (0, False),  # 0 would poll in a hot loop
    "poll_max_interval": (0, False),
    "retry_max_elapsed": (0, False),
    "max_retries": (0, True),
    "max_poll_failures": (0, True),
    "retry_backoff_base": (0, True),
    "retry_backoff_max": (0, True),
    "max_tasks_per_request": (1, True),
}


def _check_limits(conn_id: str, extra: Mapping[str, Any]) -> None:
    """Refuse settings that would make the client misbehave, naming the extra and the rule."""
    for key, (lowest, inclusive) in _MINIMUMS.items():
        if extra.get(key) in (None, ""):
            continue
        value = _number(extra, key, lowest)
        if not math.isfinite(value) or value < lowest or (value == lowest and not inclusive):
            rule = f"{'>=' if inclusive else '>'} {lowest:g}"
            raise BflInvalidRequestError(
                f"Connection {conn_id!r}: {key} must be {rule}, got {extra[key]!r}", parameter=key
            )


#: One settings object per distinct value, shared by every hook that resolves it: a triggerer with
#: 2,000 waiting triggers on one connection keeps one copy instead of 2,000 (fewer objects for each
#: full garbage collection to walk, and a full collection pauses the whole event loop).
_SHARED_SETTINGS: weakref.WeakValueDictionary[ConnectionSettings, ConnectionSettings] = (
    weakref.WeakValueDictionary()
)


def _shared(settings: ConnectionSettings) -> ConnectionSettings:
    return _SHARED_SETTINGS.setdefault(settings, settings)


def as_requests(requests: Iterable[RequestLike]) -> list[ImageInferenceRequest]:
    return [ImageInferenceRequest.model_validate(request) for request in requests]


def client_options(settings: ConnectionSettings) -> dict[str, Any]:
    """
    Keyword arguments of the hook's HTTP clients (sync and async alike).

    The key rides in the client's default headers, set once (httpx shows it as ``[secure]`` in
    any repr), instead of being merged into every request.
    """
    return {
        "timeout": httpx.Timeout(settings.timeout, connect=min(defaults.CONNECT_TIMEOUT, settings.timeout)),
        "headers": {
            "User-Agent": f"airflow-provider-bfl/{__version__}",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {settings.api_key}",
        },
    }


def run_flow(client: httpx.Client, settings: ConnectionSettings, flow: Flow[T]) -> T:
    """Run a flow with blocking I/O on ``client`` (made with :func:`client_options`)."""
    url = settings.base_url
    reply: Any = None
    try:
        while True:
            action = flow.send(reply)
            if isinstance(action, Sleep):
                time.sleep(action.seconds)
                reply = None
                continue
            try:
                reply = client.post(url, json=action.tasks)
            except httpx.TransportError as exc:
                reply = exc
    except StopIteration as done:
        return done.value
    except BflError as exc:
        raise _redacted(exc, settings.api_key) from exc.__cause__
    finally:
        flow.close()


async def arun_flow(client: httpx.AsyncClient, settings: ConnectionSettings, flow: Flow[T]) -> T:
    """Run a flow with async I/O on ``client`` (made with :func:`client_options`); never blocks the loop."""
    url = settings.base_url
    reply: Any = None
    try:
        while True:
            action = flow.send(reply)
            if isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
                reply = None
                continue
            try:
                reply = await client.post(url, json=action.tasks)
            except httpx.TransportError as exc:
                reply = exc
    except StopIteration as done:
        return done.value
    except BflError as exc:
        raise _redacted(exc, settings.api_key) from exc.__cause__
    finally:
        flow.close()


class BflHook(BaseHook):
    """
    Talks to the Runware task API for FLUX.1.1 [pro] (``bfl:2@1``).

    :param bfl_conn_id: Airflow connection of type ``bfl``: password = API key, host = base URL
        (default ``https://api.runware.ai/v1``). Extras ``timeout``, ``max_retries``,
        ``retry_max_elapsed``, ``retry_backoff_base``, ``retry_backoff_max``, ``poll_interval``,
        ``poll_max_interval``, ``poll_steady_polls``, ``max_poll_failures``,
        ``max_tasks_per_request`` tune the client;
        keyword arguments of the same names override them.

    Billing safety: a retried submission always reuses its taskUUIDs. When the API answers
    ``conflictTaskUUID`` the generation already exists, and the hook re-attaches to it through
    getResponse instead of failing or paying again.
    """

    conn_name_attr = "bfl_conn_id"
    default_conn_name = defaults.DEFAULT_CONN_ID
    conn_type = defaults.CONN_TYPE
    hook_name = "Runware FLUX.1.1 [pro]"

    def __init__(self, bfl_conn_id: str = defaults.DEFAULT_CONN_ID, **overrides: Any) -> None:
        super().__init__()
        self.bfl_conn_id = bfl_conn_id
        self._overrides = overrides
        self._settings: ConnectionSettings | None = None
        self._client: httpx.Client | None = None
        self._async_client: httpx.AsyncClient | None = None

    # -- connection -------------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Fallback for Airflow versions that do not read the form from the provider info."""
        from airflow_provider_bfl.get_provider_info import UI_FIELD_BEHAVIOUR

        return {
            "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
            "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
        }

    @property
    def settings(self) -> ConnectionSettings:
        if self._settings is None:
            conn = self.get_connection(self.bfl_conn_id)
            self._settings = _shared(settings_from_connection(conn, self._overrides))
            mask_secret(self._settings.api_key)
        return self._settings

    async def asettings(self) -> ConnectionSettings:
        if self._settings is None:
            conn = await self.aget_connection(self.bfl_conn_id)
            self._settings = _shared(settings_from_connection(conn, self._overrides))
            await amask_secret(self._settings.api_key)
        return self._settings

    def get_conn(self) -> httpx.Client:
        """The pooled HTTP client of this hook (created on first use)."""
        if self._client is None:
            self._client = httpx.Client(**client_options(self.settings))
        return self._client

    async def aget_conn(self) -> httpx.AsyncClient:
        if self._async_client is None:
            self._async_client = httpx.AsyncClient(**client_options(await self.asettings()))
        return self._async_client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

    # -- drivers: run a flow with real I/O --------------------------------------------------

    def _run(self, flow: Flow[T]) -> T:
        return run_flow(self.get_conn(), self.settings, flow)

    async def _arun(self, flow: Flow[T]) -> T:
        client = await self.aget_conn()
        return await arun_flow(client, await self.asettings(), flow)

    # -- the API ----------------------------------------------------------------------------

    def submit(self, requests: Iterable[RequestLike]) -> SubmitOutcome:
        """Submit imageInference tasks in as few HTTP requests as allowed."""
        settings = self.settings
        return self._run(_flows.submit(as_requests(requests), settings.retry, settings.max_tasks_per_request))

    async def asubmit(self, requests: Iterable[RequestLike]) -> SubmitOutcome:
        settings = await self.asettings()
        return await self._arun(
            _flows.submit(as_requests(requests), settings.retry, settings.max_tasks_per_request)
        )

    def get_status(self, expected: Expected) -> dict[str, TaskStatus]:
        """One getResponse round for many taskUUIDs (``{uuid: images expected}`` or UUIDs)."""
        statuses = _statuses(expected)
        self._run(_flows.get_status(statuses, self.settings.retry, self.settings.max_tasks_per_request))
        return statuses

    async def aget_status(self, expected: Expected) -> dict[str, TaskStatus]:
        settings = await self.asettings()
        statuses = _statuses(expected)
        await self._arun(_flows.get_status(statuses, settings.retry, settings.max_tasks_per_request))
        return statuses

    def poll_until_done(self, expected: Expected, *, timeout: float | None = None) -> dict[str, TaskStatus]:
        """
        Poll getResponse with capped backoff until every task is terminal or ``timeout`` passes.

        Tasks still processing at the deadline come back with ``done == False``.
        """
        settings = self.settings
        deadline = None if timeout is None else time.time() + timeout
        flow = _flows.wait(
            _statuses(expected), settings.retry, settings.poll, deadline, settings.max_tasks_per_request
        )
        return self._run(flow)

    async def apoll_until_done(
        self, expected: Expected, *, deadline: float | None = None, shared: bool = False
    ) -> dict[str, TaskStatus]:
        """
        Async twin of :meth:`poll_until_done`, bounded by a wall-clock ``deadline`` (time.time()).

        ``shared=True`` waits through the process-wide poller of the running event loop instead
        of this hook's own client: every shared wait on the same connection settings rides the
        same batched getResponse requests and the same connection pool (what a triggerer running
        many triggers needs). The statuses, errors and deadline behave exactly as without it.
        """
        settings = await self.asettings()
        statuses = _statuses(expected)
        if shared:
            from airflow_provider_bfl.hooks._coalescer import coalescer_for

            coalescer = coalescer_for(settings)
            wait = coalescer.join(statuses, settings.poll, deadline)
            try:
                await wait.future
            finally:
                await coalescer.leave(wait)
            return statuses
        flow = _flows.wait(statuses, settings.retry, settings.poll, deadline, settings.max_tasks_per_request)
        return await self._arun(flow)

    def generate(self, requests: Iterable[RequestLike], *, timeout: float | None = None) -> list[ImageResult]:
        """Submit and wait; every image, or the first task's error."""
        settings = self.settings
        deadline = None if timeout is None else time.time() + timeout
        flow = _flows.generate(
            as_requests(requests), settings.retry, settings.poll, deadline, settings.max_tasks_per_request
        )
        return _results_or_raise(self._run(flow))

    async def agenerate(
        self, requests: Iterable[RequestLike], *, timeout: float | None = None
    ) -> list[ImageResult]:
        settings = await self.asettings()
        deadline = None if timeout is None else time.time() + timeout
        flow = _flows.generate(
            as_requests(requests), settings.retry, settings.poll, deadline, settings.max_tasks_per_request
        )
        return _results_or_raise(await self._arun(flow))

    def get_account_details(self) -> dict[str, Any]:
        """accountManagement/getDetails: free, needs a valid key."""
        task = {"taskType": "accountManagement", "operation": "getDetails", "taskUUID": _new_uuid()}
        envelope = self._run(_flows.call([task], self.settings.retry))
        if not envelope.data:
            raise BflMalformedResponseError("accountManagement answered without data")
        return envelope.data[0]

    def test_connection(self) -> tuple[bool, str]:
        """One free call that needs a valid key (account details); never raises."""
        try:
            details = self.get_account_details()
        except BflError as exc:
            return False, str(exc)
        balance = details.get("balance")
        if isinstance(balance, Mapping):
            balance = f"{balance.get('amount')} {balance.get('currency', '')}".strip()
        return True, f"Connected to {self.settings.base_url}" + (f" (balance: {balance})" if balance else "")


def _redacted(error: BflError, key: str) -> BflError:
    """Strip the key from a message the server may have echoed it into."""
    if key and key in error.message:
        error.message = error.message.replace(key, "***")
        error.args = (error._render(),)
    return error


def _new_uuid() -> str:
    import uuid

    return str(uuid.uuid4())


def _statuses(expected: Expected) -> dict[str, TaskStatus]:
    """``{uuid: TaskStatus}`` from UUIDs, ``{uuid: image count}`` or statuses (used as they are)."""
    if not isinstance(expected, Mapping):
        return {_task_uuid(uuid): TaskStatus(uuid) for uuid in expected}
    if isinstance(expected, dict) and all(isinstance(value, TaskStatus) for value in expected.values()):
        return expected
    return {
        _task_uuid(uuid): value
        if isinstance(value, TaskStatus)
        else TaskStatus(uuid, expected_images=_count(uuid, value))
        for uuid, value in expected.items()
    }


def _task_uuid(value: Any) -> str:
    """A taskUUID to ask the API about; anything else is refused before a request is sent."""
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        raise BflInvalidRequestError(f"{value!r} is not a taskUUID", parameter="taskUUID") from None
    return str(value)


def _count(task_uuid: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BflInvalidRequestError(
            f"taskUUID {task_uuid} must expect an image count >= 1 (numberResults), got {value!r}",
            parameter="numberResults",
        )
    return value


def _results_or_raise(statuses: Mapping[str, TaskStatus]) -> list[ImageResult]:
    for status in statuses.values():
        if status.error is not None:
            raise status.error
    unfinished = sorted(uuid for uuid, status in statuses.items() if not status.done)
    if unfinished:
        raise BflWaitTimeoutError(
            f"{len(unfinished)} generation(s) still running at the deadline: {', '.join(unfinished)}",
            task_uuid=unfinished[0] if len(unfinished) == 1 else None,
        )
    return [result for status in statuses.values() for result in status.results]
