"""
``python tests/deployment/loop_lag.py``: an idle asyncio loop that prints, each second, how late its
0.1 s sleeps woke up at worst. Run beside a triggerer, it tells CPU starvation of the machine (every
loop is late) from a trigger blocking the triggerer's loop (only that loop is late).
"""

from __future__ import annotations

import asyncio
import time

TICK = 0.1


async def main() -> None:
    worst, since = 0.0, time.monotonic()
    while True:
        before = time.monotonic()
        await asyncio.sleep(TICK)
        worst = max(worst, time.monotonic() - before - TICK)
        if time.monotonic() - since >= 1.0:
            print(f"{worst:.3f}", flush=True)
            worst, since = 0.0, time.monotonic()


if __name__ == "__main__":
    asyncio.run(main())
