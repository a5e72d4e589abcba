"""Thin clients for what the deployment tests read back: Airflow's REST API (v2) and the emulator's control API.

Outcomes are read the way an operator of the deployment would read them, over HTTP: DAG run and
task instance states, tries, XCom, rendered fields and logs. Nothing here imports Airflow internals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

T = TypeVar("T")

FINISHED_RUN_STATES = frozenset({"success", "failed"})


class WaitTimeout(AssertionError):
    """A condition the test waited for did not come true in time (an assertion failure, with context)."""


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 0.25,
    context: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something other than None/False; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            detail = f"\n{context()}" if context is not None else ""
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def _check(response: httpx.Response) -> None:
    """raise_for_status, with the API's explanation in the message."""
    if response.is_error:
        raise AssertionError(
            f"{response.request.method} {response.request.url} answered {response.status_code}: {response.text[:500]}"
        )


def _q(value: str) -> str:
    return quote(value, safe="")


class AirflowApi:
    """The parts of ``/api/v2`` the scenarios use (simple auth manager, all admins: no login)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        # Generous: on a loaded 2-core machine the API server can stall for tens of seconds.
        self.http = httpx.Client(base_url=f"{self.base_url}/api/v2", timeout=90.0, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params or None)
        _check(response)
        return response.json()

    # -- health and DAGs ----------------------------------------------------------------------------
    def healthy(self) -> bool:
        try:
            response = self.http.get("/monitor/health")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/monitor/health")
        return result

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        response = self.http.get(f"/dags/{_q(dag_id)}")
        if response.status_code == 404:
            return None
        _check(response)
        result: dict[str, Any] = response.json()
        return result

    def import_errors(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get("/importErrors")["import_errors"]
        return result

    # -- runs -----------------------------------------------------------------------------------
    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})}
        response = self.http.post(f"/dags/{_q(dag_id)}/dagRuns", json=body)
        _check(response)
        result: dict[str, Any] = response.json()
        return result

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._get(f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")
        return result

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            run = self.dag_run(dag_id, run_id)
            return run if run["state"] in FINISHED_RUN_STATES else None

        return wait_for(
            f"DAG run {dag_id}/{run_id} to finish",
            finished,
            timeout,
            interval=0.5,
            context=lambda: self.describe_run(dag_id, run_id),
        )

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> None:
        response = self.http.patch(f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}", json={"state": state})
        _check(response)

    def describe_run(self, dag_id: str, run_id: str) -> str:
        """Run and task states, for failure messages."""
        try:
            run = self.dag_run(dag_id, run_id)
            tis = self.task_instances(dag_id, run_id)
        except httpx.HTTPError as exc:
            return f"(could not read the run: {exc})"
        states = ", ".join(f"{ti['task_id']}={ti['state']} (try {ti['try_number']})" for ti in tis)
        return f"run state={run['state']}; tasks: {states}"

    # -- task instances -------------------------------------------------------------------------
    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get(f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances")[
            "task_instances"
        ]
        return result

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._get(
            f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}"
        )
        return result

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, states: Iterable[str], timeout: float
    ) -> dict[str, Any]:
        wanted = set(states)

        def reached() -> dict[str, Any] | None:
            ti = self.task_instance(dag_id, run_id, task_id)
            return ti if ti["state"] in wanted else None

        return wait_for(
            f"task {dag_id}/{run_id}/{task_id} to reach {sorted(wanted)}",
            reached,
            timeout,
            context=lambda: self.describe_run(dag_id, run_id),
        )

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        mapped = f"/{map_index}" if map_index >= 0 else ""
        result: list[dict[str, Any]] = self._get(
            f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}{mapped}/tries"
        )["task_instances"]
        return result

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, new_state: str) -> Any:
        response = self.http.patch(
            f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}",
            json={"new_state": new_state},
        )
        _check(response)
        return response.json()

    def clear_task(self, dag_id: str, run_id: str, task_id: str) -> Any:
        response = self.http.post(
            f"/dags/{_q(dag_id)}/clearTaskInstances",
            json={
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": [task_id],
                "only_failed": False,
                "reset_dag_runs": True,
            },
        )
        _check(response)
        return response.json()

    def state_store(self, dag_id: str, run_id: str, task_id: str) -> Any:
        return self._get(f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/state-store")

    def create_pool(self, name: str, slots: int, include_deferred: bool = False) -> None:
        response = self.http.post(
            "/pools", json={"name": name, "slots": slots, "include_deferred": include_deferred}
        )
        if response.status_code == 409:  # exists (an earlier repetition): set its slots again
            response = self.http.patch(f"/pools/{_q(name)}", json={"name": name, "slots": slots})
        _check(response)

    # -- XCom and logs --------------------------------------------------------------------------
    def xcom_entries(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get(
            f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries",
            map_index=map_index,
        )["xcom_entries"]
        return result

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        """The deserialized XCom value, or None when the task pushed none under ``key``."""
        response = self.http.get(
            f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/{_q(key)}",
            params={"deserialize": "true", "map_index": map_index},
        )
        if response.status_code == 404:
            return None
        _check(response)
        return response.json()["value"]

    def log_events(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
    ) -> list[Any]:
        """The full log of one try as Airflow's structured events (task and, if deferred, trigger)."""
        response = self.http.get(
            f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        _check(response)
        content = response.json()["content"]
        return content if isinstance(content, list) else [content]

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The full log of one try as text, exceptions rendered as ``Type: message`` lines."""
        return _log_text(self.log_events(dag_id, run_id, task_id, try_number, map_index))

    def wait_for_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, *needles: str, timeout: float = 60.0
    ) -> str:
        """
        The try's log once it holds every one of ``needles``.

        A finished task's log can lag behind its state: the triggerer and the workers write (and, with
        remote logging, upload) their lines asynchronously, so a line may land after the state changed.
        """
        seen = ""

        def complete() -> str | None:
            nonlocal seen
            seen = self.log(dag_id, run_id, task_id, try_number)
            return seen if all(needle in seen for needle in needles) else None

        def missing() -> str:
            absent = [needle for needle in needles if needle not in seen]
            return f"missing from the log: {absent}\n{seen[-3000:]}"

        return wait_for(
            f"the log of {dag_id}/{run_id}/{task_id} try {try_number}",
            complete,
            timeout,
            interval=1.0,
            context=missing,
        )

    def failure(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, timeout: float = 60.0
    ) -> tuple[str, str]:
        """``(exception type, message)`` the try failed with, once its log records it (see :meth:`wait_for_log`)."""

        def recorded() -> tuple[str, str] | None:
            for event in self.log_events(dag_id, run_id, task_id, try_number):
                if isinstance(event, Mapping) and event.get("error_detail"):
                    detail = event["error_detail"][-1]
                    return str(detail["exc_type"]), str(detail["exc_value"])
            return None

        return wait_for(
            f"an exception in the log of {dag_id}/{run_id}/{task_id} try {try_number}",
            recorded,
            timeout,
            interval=1.0,
        )

    def event_logs(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get("/eventLogs", limit=1000)["event_logs"]
        return result


def _log_text(content: Iterable[Any]) -> str:
    """Structured log events (or plain strings) as text lines."""
    lines = []
    for item in content:
        if not isinstance(item, Mapping):
            lines.append(str(item))
            continue
        extras = " ".join(
            f"{key}={value}"
            for key, value in item.items()
            if key not in ("event", "timestamp", "level", "error_detail")
        )
        lines.append(f"{item.get('timestamp', '')} {item.get('level', '')} {item.get('event', '')} {extras}")
        for detail in item.get("error_detail") or []:
            lines.append(f"{detail.get('exc_type')}: {detail.get('exc_value')}")
    return "\n".join(lines)


class EmulatorControl:
    """The emulator's ``/_emulator/`` control API, from the test process."""

    def __init__(self, origin: str) -> None:
        self.http = httpx.Client(base_url=f"{origin.rstrip('/')}/_emulator", timeout=10.0, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, route: str, body: Any = None) -> Any:
        response = self.http.request(method, route, json=body)
        _check(response)
        return response.json()

    def healthy(self) -> bool:
        try:
            return bool(self._call("GET", "health")["ok"])
        except httpx.HTTPError:
            return False

    def counters(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "counters")
        return result

    def configure(self, **settings: Any) -> None:
        self._call("POST", "config", settings)

    def inject(self, *faults: Mapping[str, Any]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("POST", "faults", [dict(fault) for fault in faults])[
            "pending"
        ]
        return result

    def pending_faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "faults")["pending"]
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")
