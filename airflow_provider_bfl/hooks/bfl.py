"""
:class:`BflHook`: the connection to Runware and every HTTP call the provider makes.

The logic lives in :mod:`airflow_provider_bfl._flows`; this module only resolves the connection and
runs those flows with a blocking client (worker) or an async one (triggerer). Both directions share
one implementation of retries, envelope parsing, error mapping and re-attachment.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, TypeVar

import httpx
from airflow.sdk import BaseHook

from airflow_provider_bfl import _flows, defaults
from airflow_provider_bfl._compat import amask_secret, mask_secret
from airflow_provider_bfl._flows import Flow, SubmitOutcome
from airflow_provider_bfl._task_uuids import expected_images
from airflow_provider_bfl.exceptions import (
    BflAuthenticationError,
    BflError,
    BflMalformedResponseError,
    BflWaitTimeoutError,
)
from airflow_provider_bfl.hooks._coalescer import coalescer_for
from airflow_provider_bfl.hooks._loop_settings import shared_lookup
from airflow_provider_bfl.hooks._transport import (
    ConnectionSettings,
    arun_flow,
    new_async_client,
    new_client,
    run_flow,
    settings_from_connection,
)
from airflow_provider_bfl.models.request import ImageInferenceRequest
from airflow_provider_bfl.models.results import ImageResult, TaskStatus

__all__ = ["BflHook", "ConnectionSettings"]

T = TypeVar("T")

RequestLike = ImageInferenceRequest | Mapping[str, Any]
#: Tasks to ask about: UUIDs, ``{uuid: images expected}``, or ``{uuid: TaskStatus}`` to update in place.
Expected = Mapping[str, int] | Mapping[str, TaskStatus] | Iterable[str]

#: One settings object per distinct value, shared by every hook that resolves it: a triggerer with
#: 2,000 waiting triggers on one connection keeps one copy instead of 2,000 (fewer objects for each
#: full garbage collection to walk, and a full collection pauses the whole event loop).
_SHARED_SETTINGS: weakref.WeakValueDictionary[ConnectionSettings, ConnectionSettings] = (
    weakref.WeakValueDictionary()
)


def _shared(settings: ConnectionSettings) -> ConnectionSettings:
    return _SHARED_SETTINGS.setdefault(settings, settings)


def as_requests(requests: Iterable[RequestLike]) -> list[ImageInferenceRequest]:
    """Validated requests of any registered model (a wire dict dispatches on its ``model``)."""
    from airflow_provider_bfl.models.registry import validate_request

    return [
        request if isinstance(request, ImageInferenceRequest) else validate_request(request)
        for request in requests
    ]


class BflHook(BaseHook):
    """
    Talks to the Runware task API for FLUX.1.1 [pro] (``bfl:2@1``).

    :param bfl_conn_id: Airflow connection of type ``bfl``: password = API key, host = base URL
        (default ``https://api.runware.ai/v1``). Extras ``timeout`` (total seconds per HTTP
        call), ``max_retries``, ``retry_max_elapsed``, ``retry_backoff_base``,
        ``retry_backoff_max``, ``poll_interval``, ``poll_max_interval``, ``poll_steady_polls``,
        ``max_poll_failures``, ``max_tasks_per_request``, ``max_response_bytes_per_image`` (the
        decoded size an answer may reach per image it can carry) and ``progress_log_interval``
        tune the client; keyword arguments of the same names override them.

    Billing safety: a retried submission always reuses its taskUUIDs. When the API answers
    ``conflictTaskUUID`` the generation already exists, and the hook re-attaches to it through
    getResponse instead of failing or paying again.
    """

    conn_name_attr = "bfl_conn_id"
    default_conn_name = defaults.DEFAULT_CONN_ID
    conn_type = defaults.CONN_TYPE
    hook_name = "Runware FLUX.1.1 pro"

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
            try:
                conn = self.get_connection(self.bfl_conn_id)
            except Exception as exc:  # AirflowNotFoundException, or a secrets backend failing
                self._missing_connection(exc)
            self._settings = _shared(settings_from_connection(conn, self._overrides))
            mask_secret(self._settings.api_key)
        return self._settings

    async def asettings(self) -> ConnectionSettings:
        """The connection's settings; hooks of one event loop share a lookup (see ``_loop_settings``)."""
        if self._settings is None:
            key = (self.bfl_conn_id, tuple(sorted(self._overrides.items())))
            self._settings = await shared_lookup(key, self._alookup)
        return self._settings

    async def _alookup(self) -> ConnectionSettings:
        try:
            conn = await self.aget_connection(self.bfl_conn_id)
        except Exception as exc:
            self._missing_connection(exc)
        settings = _shared(settings_from_connection(conn, self._overrides))
        await amask_secret(settings.api_key)
        return settings

    def _missing_connection(self, cause: Exception) -> NoReturn:
        raise BflAuthenticationError(
            f"The Runware connection {self.bfl_conn_id!r} (bfl_conn_id) could not be read: "
            f"{type(cause).__name__}: {str(cause)[:200]}. Create it (type 'bfl', the API key as "
            "password) or pass the right bfl_conn_id",
            code="connectionNotFound",
        ) from None

    def _named(self, error: BflError) -> BflError:
        """An authentication error names the connection to fix; other errors are left as they are."""
        if not isinstance(error, BflAuthenticationError) or "(bfl_conn_id)" in error.message:
            return error
        return error.with_context(
            suffix=f"; check the API key of the Runware connection {self.bfl_conn_id!r} (bfl_conn_id)"
        )

    def get_conn(self) -> httpx.Client:
        """The pooled HTTP client of this hook (created on first use)."""
        if self._client is None:
            self._client = new_client(self.settings)
        return self._client

    async def aget_conn(self) -> httpx.AsyncClient:
        if self._async_client is None:
            self._async_client = new_async_client(await self.asettings())
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
        try:
            return run_flow(self.get_conn(), self.settings, flow)
        except BflError as error:
            raise self._named(error) from error.__cause__

    async def _arun(self, flow: Flow[T]) -> T:
        try:
            client = await self.aget_conn()
            return await arun_flow(client, await self.asettings(), flow)
        except BflError as error:
            raise self._named(error) from error.__cause__

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

    def get_status(self, expected: Expected, *, unknown_as_missing: bool = False) -> dict[str, TaskStatus]:
        """
        One getResponse round for many taskUUIDs (``{uuid: images expected}`` or UUIDs).

        ``unknown_as_missing=True`` turns a task the API does not mention into a
        ``taskNotFound`` error at once (for a generation that must already exist, e.g. one the
        API just answered ``conflictTaskUUID`` for), instead of waiting several polls for it.
        """
        statuses = _statuses(expected)
        mentioned = self._run(
            _flows.get_status(statuses, self.settings.retry, self.settings.max_tasks_per_request)
        )
        if unknown_as_missing:
            _flows.mark_missing(statuses, mentioned)
        return statuses

    async def aget_status(self, expected: Expected) -> dict[str, TaskStatus]:
        settings = await self.asettings()
        statuses = _statuses(expected)
        await self._arun(_flows.get_status(statuses, settings.retry, settings.max_tasks_per_request))
        return statuses

    def poll_until_done(self, expected: Expected, *, timeout: float | None = None) -> dict[str, TaskStatus]:
        """
        Poll getResponse with capped backoff until every task is terminal or ``timeout`` passes.

        Tasks still processing at the deadline come back with ``done == False``. The deadline
        holds whatever the server does: every HTTP call of the wait ends by it (the last poll, made
        at the deadline, gets ``defaults.LAST_POLL_GRACE`` seconds). While waiting, one progress
        line is logged every ``progress_log_interval`` seconds (longer when many shared waits run in
        one event loop: see ``PollSettings.progress_every``).
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
            coalescer = coalescer_for(settings)
            wait = coalescer.join(statuses, settings.poll, deadline)
            try:
                await wait.future
            except BflError as error:
                raise self._named(error) from error.__cause__
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


def _new_uuid() -> str:
    import uuid

    return str(uuid.uuid4())


def _statuses(expected: Expected) -> dict[str, TaskStatus]:
    """``{uuid: TaskStatus}`` from UUIDs or ``{uuid: image count}``; a dict of statuses is used as it is."""
    if isinstance(expected, dict) and all(isinstance(value, TaskStatus) for value in expected.values()):
        return expected  # also {}: nothing to ask about
    if isinstance(expected, list | tuple | set | frozenset) and not expected:
        return {}
    counts = expected_images(expected, parameter="taskUUID")
    return {uuid: TaskStatus(uuid, expected_images=count) for uuid, count in counts.items()}


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
