"""Hooks of one event loop share a connection lookup: a triggerer adopting hundreds of triggers reads it once."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from airflow.sdk import BaseHook
from pytest_mock import MockerFixture

from airflow_provider_bfl import defaults, events
from airflow_provider_bfl.exceptions import BflAuthenticationError
from airflow_provider_bfl.hooks.bfl import BflHook
from airflow_provider_bfl.testing.emulator import RunwareEmulator
from airflow_provider_bfl.triggers.bfl import BflImageInferenceTrigger
from tests.conftest import connection_json
from tests.submissions import submit


def _with_key(emulator: RunwareEmulator, key: str) -> str:
    conn = json.loads(connection_json(emulator))
    conn["password"] = key
    return json.dumps(conn)


async def test_triggers_starting_together_read_their_connection_once(
    bfl_conn: RunwareEmulator, mocker: MockerFixture
) -> None:
    """200 triggers started in one loop iteration (an adoption) cost one lookup, and all succeed."""
    lookups = mocker.spy(BaseHook, "aget_connection")
    expected = submit(*(f"a lamp, variant {n}" for n in range(200)))

    async def fire(trigger: BflImageInferenceTrigger) -> str:
        async for event in trigger.run():
            return str(event.payload["status"])
        raise AssertionError("no event")

    statuses = await asyncio.gather(
        *(
            fire(BflImageInferenceTrigger({uuid: n}, deadline=time.time() + 60))
            for uuid, n in expected.items()
        )
    )
    assert statuses == [events.SUCCESS] * 200
    assert lookups.call_count == 1


async def test_a_changed_key_reaches_hooks_that_start_after_the_reuse_window(
    emulator: RunwareEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "SETTINGS_REUSE_SECONDS", 0.2)
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", _with_key(emulator, "first-key-0123456789"))
    first = await BflHook().asettings()
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", _with_key(emulator, "second-key-0123456789"))
    within = await BflHook().asettings()
    await asyncio.sleep(0.3)
    after = await BflHook().asettings()
    assert (first.api_key, within.api_key, after.api_key) == (
        "first-key-0123456789",
        "first-key-0123456789",
        "second-key-0123456789",
    )


async def test_a_failed_lookup_is_not_reused(
    emulator: RunwareEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_BFL_DEFAULT", raising=False)
    with pytest.raises(BflAuthenticationError, match="'bfl_default' \\(bfl_conn_id\\) could not be read"):
        await BflHook().asettings()
    monkeypatch.setenv("AIRFLOW_CONN_BFL_DEFAULT", connection_json(emulator))
    settings = await BflHook().asettings()  # at once, well within the reuse window
    assert settings.base_url == emulator.base_url


async def test_a_caller_cancelled_while_waiting_leaves_the_lookup_to_the_others(
    bfl_conn: RunwareEmulator, mocker: MockerFixture
) -> None:
    release = asyncio.Event()
    real = BaseHook.aget_connection

    async def held(conn_id: str) -> object:
        await release.wait()
        return await real(conn_id)

    lookups = mocker.patch.object(BaseHook, "aget_connection", autospec=True, side_effect=held)
    cancelled = asyncio.ensure_future(BflHook().asettings())
    waiting = asyncio.ensure_future(BflHook().asettings())
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await asyncio.sleep(0.01)
    release.set()
    settings = await waiting
    assert cancelled.cancelled()
    assert settings.base_url == bfl_conn.base_url
    assert lookups.call_count == 1


async def test_hooks_with_different_overrides_or_connections_look_up_their_own(
    bfl_conn: RunwareEmulator, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BFL_NIGHTLY", connection_json(bfl_conn, poll_interval=0.05))
    lookups = mocker.spy(BaseHook, "aget_connection")
    plain, tuned, nightly = await asyncio.gather(
        BflHook().asettings(), BflHook(poll_interval=0.07).asettings(), BflHook("bfl_nightly").asettings()
    )
    assert (plain.poll.interval, tuned.poll.interval, nightly.poll.interval) == (0.02, 0.07, 0.05)
    assert sorted(call.args[0] for call in lookups.call_args_list) == [
        "bfl_default",
        "bfl_default",
        "bfl_nightly",
    ]


def test_event_loops_never_share_a_lookup(bfl_conn: RunwareEmulator, mocker: MockerFixture) -> None:
    lookups = mocker.spy(BaseHook, "aget_connection")
    asyncio.run(BflHook().asettings())
    asyncio.run(BflHook().asettings())
    assert lookups.call_count == 2
