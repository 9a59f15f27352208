"""The stop signal and its deadline, shared by the worker, the poller and the upkeep tasks.

A stop (SIGINT/SIGTERM, or :meth:`Shutdown.stop`) starts a shutdown that must be over
within ``[delivery] shutdown_timeout``: polls in flight finish, pending alerts drain.
A second signal (:meth:`Shutdown.stop_now`) ends the waiting at once: every step that
waits does so through :meth:`Shutdown.unless_stopping_now`, and a step that hands over
what it could not finish (the drain) is run again with no time left
(:meth:`Shutdown.bounded`). A step that a stop makes pointless (taking over partitions
the member is about to leave) is abandoned at the first stop (:meth:`Shutdown.unless_stopping`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from monitor.log import get_logger

__all__ = ["Shutdown", "finish", "install_signal_handlers", "unless_set"]

log = get_logger("worker")

T = TypeVar("T")


async def unless_set(event: asyncio.Event | None, work: Awaitable[T]) -> tuple[bool, T | None]:
    """(True, ``work``'s result) once it is done; (False, None) when ``event`` is set first
    (``work`` is then cancelled). With no event, ``work`` is simply awaited."""
    task = asyncio.ensure_future(work)
    if event is None:
        return True, await task
    waiting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return False, None
    return True, task.result()


class Shutdown:
    """Whether to stop, and by when (monotonic clock)."""

    def __init__(self, timeout: float) -> None:
        #: The whole budget of a shutdown, in seconds (``[delivery] shutdown_timeout``).
        self.timeout = timeout
        #: Set by :meth:`stop`: loops end, nothing new starts.
        self.stopping = asyncio.Event()
        #: Set by :meth:`stop_now`: steps that wait stop waiting.
        self.stopping_now = asyncio.Event()
        self.deadline: float | None = None

    @property
    def asked(self) -> bool:
        """Whether a stop was asked."""
        return self.stopping.is_set()

    def stop(self) -> None:
        """Stop within the shutdown timeout (the first stop sets the deadline)."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.timeout
        self.stopping.set()

    def stop_now(self) -> None:
        """Stop at once: the deadline is now and every wait ends."""
        self.deadline = time.monotonic()
        self.stopping_now.set()
        self.stop()

    def remaining(self) -> float:
        """Seconds left of the deadline (the whole budget when no stop was asked)."""
        if self.deadline is None:
            return self.timeout
        return max(0.0, self.deadline - time.monotonic())

    async def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, less when a stop comes; whether one came."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=timeout)
        except TimeoutError:
            return False
        return True

    async def unless_stopping(self, work: Coroutine[Any, Any, T]) -> T | None:
        """``work``'s result; None (it is cancelled) when a stop comes first or came before."""
        if self.asked:
            work.close()
            return None
        return (await unless_set(self.stopping, work))[1]

    async def until_deadline(self, work: Coroutine[Any, Any, T]) -> T | None:
        """``work``'s result; None (it is cancelled) when it is still running at the
        deadline of a stop (one that came before or comes meanwhile)."""
        task = asyncio.ensure_future(work)
        try:
            if not self.asked:
                stop = asyncio.ensure_future(self.stopping.wait())
                try:
                    await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
            if not task.done():
                await asyncio.wait({task}, timeout=self.remaining())
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return None if task.cancelled() else task.result()

    async def unless_stopping_now(self, awaitable: Awaitable[Any]) -> tuple[bool, Any]:
        """(True, its result) once ``awaitable`` is done; (False, None) when :meth:`stop_now`
        comes first (then it is cancelled)."""
        return await unless_set(self.stopping_now, awaitable)

    async def bounded(self, step: Callable[[float], Awaitable[Any]], timeout: float) -> Any:
        """``step(timeout)``; if :meth:`stop_now` interrupts it, ``step(0)`` instead (a step
        that hands over what it could not finish, e.g. the drain); ``step(0)`` at once
        after one."""
        if self.stopping_now.is_set():
            return await step(0.0)
        done, result = await self.unless_stopping_now(step(timeout))
        return result if done else await step(0.0)


async def finish(task: asyncio.Task[Any]) -> None:
    """Cancel a helper task and wait for it, letting only its cancellation pass."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def install_signal_handlers(
    shutdown: Shutdown,
    *,
    stop: Callable[[], None],
    stop_now: Callable[[], None],
    hangup: Callable[[], None] | None,
    second_hint: str,
) -> Callable[[], None]:
    """SIGINT/SIGTERM on the running loop: the first calls ``stop``, a second one during the
    shutdown ``stop_now`` (logged with ``second_hint``); SIGHUP calls ``hangup``, or stops as
    SIGTERM does when there is none. Returns what removes the handlers."""

    def on_signal(sig: signal.Signals) -> None:
        if shutdown.deadline is None:
            log.info("monitor.stopping", signal=sig.name)
            stop()
        elif not shutdown.stopping_now.is_set():
            log.warning("monitor.stopping.now", signal=sig.name, hint=second_hint)
            stop_now()

    def on_hangup(sig: signal.Signals) -> None:
        log.info("monitor.reload.requested", signal=sig.name)
        assert hangup is not None
        hangup()

    loop = asyncio.get_running_loop()
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in handled[:2]:
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, on_signal if hangup is None else on_hangup, signal.SIGHUP)

    def remove() -> None:
        for sig in handled:
            loop.remove_signal_handler(sig)

    return remove
