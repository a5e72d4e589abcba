"""
Connection lookups shared by the hooks of one event loop for a few seconds.

A triggerer that adopts hundreds of triggers (another triggerer died) starts them within a second
or two, and each would read the same connection through Airflow's secrets backends: a thread hop,
a round trip to the triggerer's supervisor and its metadata DB, JSON decoding and masking, hundreds
of times over, beside the event loop every running trigger shares. Here one lookup in flight serves
every hook that asks for the same connection meanwhile, and its answer serves hooks asking within
:data:`~airflow_provider_bfl.defaults.SETTINGS_REUSE_SECONDS`. A failed lookup is never reused, and
a caller cancelled while it waits leaves the lookup running for the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import weakref
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

from airflow_provider_bfl import defaults
from airflow_provider_bfl.hooks._transport import ConnectionSettings

Lookup = Callable[[], Coroutine[Any, Any, ConnectionSettings]]


@dataclasses.dataclass(eq=False, slots=True)
class _Shared:
    task: asyncio.Task[ConnectionSettings]
    #: Loop time until which a finished lookup answers new callers (infinite while in flight).
    fresh_until: float = math.inf


_LOOKUPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, _Shared]] = (
    weakref.WeakKeyDictionary()
)


async def shared_lookup(key: Hashable, lookup: Lookup) -> ConnectionSettings:
    """``lookup()``'s settings, shared with every caller of this event loop asking for ``key``."""
    try:
        hash(key)
    except TypeError:  # overrides nobody else can share
        return await lookup()
    loop = asyncio.get_running_loop()
    per_loop = _LOOKUPS.setdefault(loop, {})
    shared = per_loop.get(key)
    if shared is None or loop.time() > shared.fresh_until:
        shared = per_loop[key] = _Shared(loop.create_task(lookup()))
        shared.task.add_done_callback(functools.partial(_settled, per_loop, key, shared))
    return await asyncio.shield(shared.task)


def _settled(
    per_loop: dict[Hashable, _Shared], key: Hashable, shared: _Shared, task: asyncio.Task[ConnectionSettings]
) -> None:
    if not task.cancelled() and task.exception() is None:  # exception() also marks a failure as seen
        shared.fresh_until = asyncio.get_running_loop().time() + defaults.SETTINGS_REUSE_SECONDS
    elif per_loop.get(key) is shared:  # the next caller looks the connection up again
        del per_loop[key]
