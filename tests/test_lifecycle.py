"""The stop and its deadline (monitor/lifecycle.py): work bounded by a stop's deadline."""

from __future__ import annotations

import asyncio

from monitor.lifecycle import Shutdown


async def test_work_is_cut_at_the_deadline_of_a_stop_that_comes_meanwhile() -> None:
    """A step that must end by a stop's deadline (a matcher's state write and commit) runs
    unbounded without a stop, is cancelled at the deadline of one that comes meanwhile,
    and ends normally when it finishes first."""
    shutdown = Shutdown(0.2)
    never = asyncio.Event()
    cancelled = asyncio.Event()

    async def hangs() -> bool:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    async def quick() -> str:
        await asyncio.sleep(0)
        return "done"

    assert await shutdown.until_deadline(quick()) == "done"
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, shutdown.stop)
    started = loop.time()
    assert await shutdown.until_deadline(hangs()) is None
    # The stop's deadline, not the stop itself, ends the work.
    assert 0.2 <= loop.time() - started < 2.0 and cancelled.is_set()
    # After the deadline, work that is not done at once is cut at once.
    assert await shutdown.until_deadline(hangs()) is None
