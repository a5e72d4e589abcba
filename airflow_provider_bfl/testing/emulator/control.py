"""The ``/_emulator/*`` control API, so a test harness in another process can steer the emulator.

It mirrors the Python API one to one (same field names as ``inject``/``script_task``/``configure``).
Control calls are not API requests: they touch no counter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_bfl.testing.emulator.faults import Fault, ScriptedOutcome

if TYPE_CHECKING:
    from airflow_provider_bfl.testing.emulator.emulator import RunwareEmulator

ENDPOINTS = {
    ("GET", "health"): "liveness, base URL and API key",
    ("GET", "counters"): "counter snapshot",
    ("GET", "config"): "current settings",
    ("POST", "config"): "change settings (any EmulatorConfig field, plus blank_next_images, "
    "lapse_issued_urls: true, forget_tasks: [uuid, ...] or 'all')",
    ("GET", "faults"): "pending faults",
    ("POST", "faults"): "inject one fault object or a list of them",
    ("DELETE", "faults"): "drop pending faults",
    ("POST", "reset"): "clear counters, faults, tasks and scripts ({restore_config: true} also settings)",
    (
        "POST",
        "script",
    ): "script a task outcome (task_uuid, outcome, code, message, fail, http_status, latency)",
}


def handle(emulator: RunwareEmulator, method: str, route: str, payload: Any) -> tuple[int, dict[str, Any]]:
    route = route.strip("/")
    if (method, route) not in ENDPOINTS:
        known = [f"{m} /_emulator/{r}" for m, r in ENDPOINTS]
        return 404, {"error": f"unknown control endpoint {method} /_emulator/{route}", "endpoints": known}
    try:
        return 200, _dispatch(emulator, method, route, payload)
    except (ValueError, TypeError) as error:
        return 400, {"error": str(error)}


def _dispatch(emulator: RunwareEmulator, method: str, route: str, payload: Any) -> dict[str, Any]:
    if route == "health":
        return {"ok": True, "baseUrl": emulator.base_url, "apiKey": emulator.api_key}
    if route == "counters":
        return emulator.counters.snapshot().to_dict()
    if route == "config":
        if method == "POST":
            changes = dict(_mapping(payload))
            blank = changes.pop("blank_next_images", None)
            if changes.pop("lapse_issued_urls", False):
                emulator.lapse_issued_urls()
            forget = changes.pop("forget_tasks", None)
            if forget is not None:
                emulator.forget_tasks(None if forget == "all" else list(forget))
            emulator.configure(**changes)
            if blank is not None:
                if not isinstance(blank, int) or isinstance(blank, bool) or blank < 0:
                    raise ValueError("blank_next_images must be a non-negative integer")
                emulator.blank_next_images(blank)
        return {"config": emulator.config.to_dict()}
    if route == "faults":
        if method == "POST":
            items = payload if isinstance(payload, list) else [payload]
            faults = [Fault.from_mapping(_mapping(item)) for item in items]
            for fault in faults:
                emulator.faults.add(fault)
        elif method == "DELETE":
            emulator.faults.clear()
        return {"pending": [fault.to_dict() for fault in emulator.faults.pending()]}
    if route == "reset":
        emulator.reset(restore_config=bool(_mapping(payload or {}).get("restore_config", False)))
        return {"ok": True}
    options = dict(_mapping(payload))
    task_uuid = options.pop("task_uuid", None) or options.pop("taskUUID", None)
    if not isinstance(task_uuid, str):
        raise ValueError("script needs a task_uuid string")
    fail = options.pop("fail", None)
    if fail is not None:
        if not isinstance(fail, list | tuple) or len(fail) != 2:
            raise ValueError("fail must be [code, message]")
        options["fail"] = (str(fail[0]), str(fail[1]))
    emulator.store.script(task_uuid, ScriptedOutcome.build(**options))
    return {"ok": True, "task_uuid": task_uuid}


def _mapping(payload: Any) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise ValueError("expected a JSON object")
    return payload
