"""The first trigger of a triggerer process imports what it runs on off the event loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from airflow_provider_bfl.testing.emulator import RunwareEmulator
from tests.conftest import connection_json

#: A fresh interpreter, as a triggerer's runner is: imports the trigger module (as Airflow does
#: before the first trigger), records which modules are first imported on the loop's thread and
#: which in other threads while one trigger runs, and prints them with the trigger's event.
FIRST_TRIGGER = """
import asyncio, json, sys, threading
from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger

imported = {"loop": [], "elsewhere": []}

class Recorder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        on_loop = threading.current_thread() is threading.main_thread()
        imported["loop" if on_loop else "elsewhere"].append(name)
        return None  # only watches: the next finder imports

async def first_trigger():
    sys.meta_path.insert(0, Recorder)
    trigger = BflImageInferenceTrigger(task_uuids=[sys.argv[1]], bfl_conn_id="bfl_default", poll_interval=0.02)
    async for event in trigger.run():
        return event.payload

payload = asyncio.run(first_trigger())
print(json.dumps({"status": payload["status"], "message": payload["message"], **imported}))
"""
#: What a trigger's run needs: the provider's modules, httpx and its async backend.
RUN_PACKAGES = ("airflow_provider_bfl", "httpx", "httpcore", "anyio", "pydantic")


def test_the_first_trigger_imports_the_hook_and_the_http_backend_in_a_worker_thread(
    emulator: RunwareEmulator,
) -> None:
    task_uuid = str(uuid.uuid4())  # never submitted: the emulator answers taskNotFound on the first poll
    env = {**os.environ, "AIRFLOW_CONN_BFL_DEFAULT": connection_json(emulator)}
    done = subprocess.run(
        [sys.executable, "-c", FIRST_TRIGGER, task_uuid], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["status"] == "error" and "taskNotFound" in report["message"]  # it really polled
    assert "airflow_provider_bfl.hooks.bfl" in report["elsewhere"]
    assert "anyio._backends._asyncio" in report["elsewhere"]
    on_loop = [name for name in report["loop"] if name.split(".")[0] in RUN_PACKAGES]
    assert on_loop == [], on_loop
