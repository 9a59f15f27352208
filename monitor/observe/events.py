"""Feed-health events on the ``[health] topic``, published without ever blocking a poll.

Each event is written to the durable outbox and handed to delivery by a background task
of its own, so a full delivery queue (broker away) pauses this task, never polling. At
shutdown what could not be handed over in time is left in the outbox for the next start.
"""

from __future__ import annotations

import asyncio

from monitor.errors import StoreError
from monitor.log import get_logger
from monitor.model import Record
from monitor.observe.wiring import Wiring

__all__ = ["HealthEvents"]

log = get_logger("observer")


class HealthEvents:
    """A queue of health-event records and the task that hands them to delivery."""

    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._queue: asyncio.Queue[Record] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._publish(), name="feed-health-events")

    def put(self, record: Record) -> None:
        """Queue one event (dropped before :meth:`start`: nothing would send it)."""
        if self._queue is not None:
            self._queue.put_nowait(record)

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event so far is in the outbox and queued for delivery."""
        if self._queue is None:
            return True
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self, timeout: float = 5.0) -> None:
        """Hand queued events to delivery; what cannot be handed over in time is written
        to the outbox, so it is sent on the next start."""
        await self.flush(timeout)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        left: list[Record] = []
        while self._queue is not None and not self._queue.empty():
            left.append(self._queue.get_nowait())
        store = self._wiring.store
        if left and store is not None:
            try:
                await store.enqueue(left)
            except StoreError as exc:
                log.error("feed.health.events.lost", count=len(left), error=str(exc))
                return
            log.warning("feed.health.events.deferred", count=len(left), hint="kept in the outbox; sent on next start")

    async def _publish(self) -> None:
        assert self._queue is not None
        while True:
            record = await self._queue.get()
            try:
                await self._hand_over(record)
            finally:
                self._queue.task_done()

    async def _hand_over(self, record: Record) -> None:
        store, delivery = self._wiring.store, self._wiring.delivery
        if store is not None:
            try:
                await store.enqueue([record])
            except StoreError as exc:
                # Not durable, but still sent while the daemon runs.
                log.warning("feed.health.event.unsaved", topic=record.topic, error=str(exc))
        if delivery is not None:
            await delivery.submit([record])
