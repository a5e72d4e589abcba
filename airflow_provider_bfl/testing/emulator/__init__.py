"""An offline Runware task API for ``bfl:2@1`` (FLUX.1.1 [pro]), served over real HTTP on loopback.

    from airflow_provider_bfl.testing.emulator import RunwareEmulator

    with RunwareEmulator(api_key="test-key", latency=0.0) as emu:
        emu.base_url                      # POST task arrays here, "Authorization: Bearer test-key"
        emu.inject("status", status=503, retry_after=1)
        emu.script_task(task_uuid, outcome="moderated")
        emu.counters.snapshot()

Prompt markers (case-insensitive substrings; an empty marker is off): ``fail-marker`` fails the task
with ``processingFailed``, ``moderation-marker`` with ``contentPolicyViolation``, ``blank`` renders
uniform images, ``nsfw`` sets ``NSFWContent: true`` when ``safety.checkContent`` is on.

Hostile answers for client tests: faults ``foreign_result`` (an extra result for a taskUUID never
asked about) and ``bad_image_url`` (image URLs under another scheme, ``ftp`` by default), and the
settings ``image_corruption`` (``html``, ``garbage`` or ``truncated`` image bodies) and
``image_extra_bytes`` (oversized image bodies).

Another process steers it over HTTP under ``/_emulator/``: ``GET health|counters|config|faults``,
``POST config|faults|reset|script``, ``DELETE faults``. Run it standalone with
``python -m airflow_provider_bfl.testing.emulator --port 8765``. Pillow (the ``emulator`` extra) is
imported only once an image is rendered.
"""

from airflow_provider_bfl.testing.emulator.config import MODEL_ID, EmulatorConfig
from airflow_provider_bfl.testing.emulator.counters import Counters, CountersSnapshot, TaskCounters
from airflow_provider_bfl.testing.emulator.emulator import RunwareEmulator
from airflow_provider_bfl.testing.emulator.faults import FAULT_KINDS, Fault, FaultKind, ScriptedOutcome

__all__ = [
    "FAULT_KINDS",
    "MODEL_ID",
    "Counters",
    "CountersSnapshot",
    "EmulatorConfig",
    "Fault",
    "FaultKind",
    "RunwareEmulator",
    "ScriptedOutcome",
    "TaskCounters",
]
