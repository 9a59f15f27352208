"""Draining the outbox into Kafka: at-least-once, through outages, with back-pressure.

Every record handed to :class:`Delivery` is already durable in the store's outbox.
Delivery sends it, and only when Kafka acknowledges it is it deleted from the outbox.

While the broker is away, one record at a time probes it, with capped exponential
back-off between probes; every other record waits for the probe to succeed instead of
hammering a dead broker. The bounded queue fills, and :meth:`Delivery.submit` then
blocks, which pauses polling (back-pressure) instead of dropping anything. After any
failure the publisher makes sure its topics exist again before it sends more (a broker
that came back empty would otherwise accept records for topics it no longer has).

Records with the same topic and key (the alerts of one article on one topic) are sent
one after the other, each only after the previous one was acknowledged, so retries
never reorder them.

A record Kafka rejects for good (too large, invalid), or one that could not be
serialised (marked by :func:`monitor.delivery.records.alert_record`), goes to the dead-letter
topic with the reason in the ``dlq_reason`` header, is counted, and is removed from the
outbox: it never blocks the pipeline. So does a record the broker answers with any other
error (an unknown code) ``max_attempts`` times in a row: unlike an outage, such an error
may never go away. See ``docs/delivery.md`` for the whole contract.

A failing state store (disk full, damaged) can leave records in the outbox that no one
hands to delivery (a poll's transaction committed, the next step failed), and
acknowledgements whose outbox rows could not be deleted. When the store works again,
and at :meth:`Delivery.stop`, delivery saves those acknowledgements and queues every
outbox record it is not already sending (``delivery.outbox.requeued``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Protocol

from monitor.delivery.dead_letters import DeadLetters
from monitor.delivery.records import rejection_reason
from monitor.delivery.sender import DeliveryStats, Publisher, Sender
from monitor.errors import RecordRefused, RecordRejected, StoreError
from monitor.log import get_logger
from monitor.model import Record

__all__ = ["Delivery", "OutboxStore"]

log = get_logger("delivery")

#: Records read from the outbox per batch when re-queuing at start-up.
_RESEND_PAGE = 1000


class OutboxStore(Protocol):
    """The part of the state store delivery needs (``monitor.adapters.store.AsyncStore``)."""

    #: Called with the StoreError when the store starts failing, and when it works again.
    failure_listeners: list[Callable[[StoreError], None]]
    recovery_listeners: list[Callable[[], None]]

    @property
    def failure(self) -> StoreError | None:
        """The store's fault while it is failing, else None."""

    async def pending_count(self) -> int: ...

    async def pending_page(self, after_seq: int = 0, limit: int = 1000) -> list[tuple[int, Record]]: ...

    async def ack(self, alert_id: str, topic: str, article_id: str) -> None: ...

    async def ack_many(self, acks: Sequence[tuple[str, str, str]]) -> None:
        """``ack`` each (alert id, topic, article id), in one transaction."""


class Delivery:
    """Sends outbox records and deletes them on acknowledgement.

    ``healthy`` is the readiness signal: False from the first failed send until a send
    succeeds again. Sending one record is the :class:`~monitor.delivery.sender.Sender`'s
    job, dead letters the :class:`~monitor.delivery.dead_letters.DeadLetters`'; what stays
    here (about twenty methods) is what shares one set of tracking state: the queue, the
    per-key order, the resend at start-up and the sweep after a store failure.
    """

    def __init__(
        self,
        publisher: Publisher,
        store: OutboxStore,
        *,
        queue_size: int = 10000,
        dead_letter_topic: str = "alerts.dead-letter",
        topics: Iterable[str] = (),
        max_in_flight: int = 2000,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_attempts: int = 10,
        on_published: Callable[[Record, float], None] | None = None,
        on_error: Callable[[Record, BaseException], None] | None = None,
        on_dead_letter: Callable[[Record, str], None] | None = None,
    ) -> None:
        self._store = store
        self._queue: asyncio.Queue[tuple[Record, float]] = asyncio.Queue(maxsize=queue_size)
        self._sender = Sender(
            publisher, dead_letter_topic=dead_letter_topic, topics=topics, backoff_initial=backoff_initial,
            backoff_max=backoff_max, on_published=on_published, on_error=on_error, pending=lambda: self.pending,
        )
        self._dead_letters = DeadLetters(self._sender, ack=self._ack, max_attempts=max_attempts, on_dead_letter=on_dead_letter)
        # While unhealthy, only the holder of this lock talks to the broker.
        self._probe_lock = asyncio.Lock()
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._max_attempts = max_attempts
        self._loop: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: The completion event of the last record queued per (topic, key).
        self._tails: dict[tuple[str, bytes | None], asyncio.Event] = {}
        #: Records taken from the queue but not yet acknowledged.
        self._unacked = 0
        #: Outbox records still to be re-queued by :meth:`start`.
        self._resending = 0
        #: (alert id, topic) of every record queued or in flight.
        self._tracked: set[tuple[str, str]] = set()
        #: Records the last outbox sweep queued: a poll handing them over later is a no-op.
        self._swept: set[tuple[str, str]] = set()
        #: Acknowledged records whose outbox rows could not be deleted (store failing) -> article id.
        self._unsaved_acks: dict[tuple[str, str], str] = {}
        self._sweep_needed = False
        self._sweeping = 0
        #: Acknowledged records waiting for their outbox rows' deletion, and the task deleting them.
        self._acks: list[tuple[Record, asyncio.Future[None]]] = []
        self._acking: asyncio.Task[None] | None = None
        store.failure_listeners.append(self._store_failed)
        store.recovery_listeners.append(self._store_recovered)
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def stats(self) -> DeliveryStats:
        """Counters for metrics and the run summary."""
        return self._sender.stats

    @property
    def healthy(self) -> bool:
        """False from the first failed send until a send succeeds again (readiness)."""
        return self._sender.healthy

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, *, resend_outbox: bool = True) -> int:
        """Start sending; with ``resend_outbox`` first queue what a previous run left.

        Returns how many outbox records were left. They are queued in the background,
        oldest first, so a large outbox never holds up start-up.
        """
        self._loop = asyncio.create_task(self._send_loop(), name="delivery-sender")
        if not resend_outbox:
            return 0
        count = await self._store.pending_count()
        if count:
            log.info("delivery.outbox.resend", count=count)
            self._resending = count
            self._idle.clear()
            self._spawn(self._resend(count))
        return count

    async def _resend(self, count: int) -> None:
        try:
            async for record in self._outbox():
                self._resending = max(0, self._resending - 1)
                self.stats.resent += 1
                await self.submit([record])
        except StoreError as exc:
            # Unhandled, it ended this task with "Task exception was never retrieved", and
            # the rest of the outbox waited for the next start.
            self._sweep_needed = True
            log.warning("delivery.outbox.resend_failed", error=str(exc), hint="the rest is sent once the state store works again")
        finally:
            self._resending = 0
            self._maybe_idle()

    async def _outbox(self) -> AsyncIterator[Record]:
        """Every record in the outbox, oldest first, read a page at a time: an outbox grown
        large during a long outage is never loaded whole."""
        after = 0
        while True:
            page = await self._store.pending_page(after, _RESEND_PAGE)
            if not page:
                return
            after = page[-1][0]
            for _seq, record in page:
                yield record

    async def submit(self, records: Iterable[Record]) -> None:
        """Queue records that are already in the outbox; blocks while the queue is full.

        A record already queued or in flight (the same alert id and topic), or queued
        by an outbox sweep, is not queued twice.
        """
        for record in records:
            key = (record.alert_id, record.topic)
            if key in self._tracked:
                continue
            if key in self._swept:
                self._swept.discard(key)
                continue
            await self._put(record)

    async def _put(self, record: Record) -> None:
        self._tracked.add((record.alert_id, record.topic))
        self._idle.clear()
        await self._queue.put((record, time.monotonic()))

    async def undelivered(self) -> int:
        """Records left in the outbox, for the run summary; when the store cannot say, the
        records this run still holds (logged)."""
        try:
            return await self._store.pending_count()
        except StoreError as exc:
            log.warning("delivery.outbox.uncounted", error=str(exc), pending=self.pending)
            return self.pending + len(self._unsaved_acks)

    @property
    def pending(self) -> int:
        """Records queued, in flight, or still to be re-queued from the outbox."""
        return self._queue.qsize() + self._unacked + self._resending

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted is acknowledged; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while self.pending or self._sweeping:
                self._idle.clear()
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                await asyncio.wait_for(self._idle.wait(), remaining)
            return True
        except TimeoutError:
            return False

    async def stop(self, timeout: float = 30.0) -> bool:
        """Drain for up to ``timeout`` s, then stop; what is left stays in the outbox.

        After a store failure in this run, the outbox is swept first, so records a
        failing store kept from delivery are sent in the drain, not only at the next start.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        if self._sweep_needed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_outbox(), max(0.0, timeout))
        drained = await self.wait_idle(max(0.0, deadline - time.monotonic()))
        left = self.pending
        tasks = [t for t in (self._loop, self._acking, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop = None
        if not drained:
            log.warning(
                "delivery.stop.undelivered",
                pending=left,
                hint="kept in the outbox of the state store; sent again on the next start",
            )
        return drained

    # -- sending -----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _maybe_idle(self) -> None:
        if not self.pending and not self._sweeping:
            self._idle.set()

    # -- store failures ----------------------------------------------------------------

    def _store_failed(self, _error: StoreError) -> None:
        self._sweep_needed = True

    def _store_recovered(self) -> None:
        # One sweep at a time: one running sweeps again when it ends (see _sweep_outbox).
        if self._sweep_needed and not self._sweeping and self._loop is not None:
            self._spawn(self._sweep_outbox())

    async def _sweep_outbox(self) -> None:
        """Save the acknowledgements a failing store refused, then queue every outbox record
        nobody is sending (a poll committed it, then failed before handing it over)."""
        self._sweep_needed = False
        self._sweeping += 1
        self._idle.clear()
        queued = 0
        try:
            for key, article_id in list(self._unsaved_acks.items()):
                await self._store.ack(key[0], key[1], article_id)
                del self._unsaved_acks[key]
            self._swept.clear()
            async for record in self._outbox():
                key = (record.alert_id, record.topic)
                if key in self._tracked or key in self._unsaved_acks:
                    continue
                self._swept.add(key)
                queued += 1
                self.stats.requeued += 1
                await self._put(record)
        except StoreError as exc:
            # Failing again: the next recovery (or the shutdown) sweeps again.
            self._sweep_needed = True
            log.warning("delivery.outbox.sweep_failed", error=str(exc), queued=queued)
        finally:
            self._sweeping -= 1
            self._maybe_idle()
        if queued:
            log.warning(
                "delivery.outbox.requeued",
                count=queued,
                hint="alerts a failing state store had kept from delivery are sent now",
            )
        if self._sweep_needed and self._store.failure is None and self._loop is not None:
            # The store failed and recovered again while this sweep ran.
            self._spawn(self._sweep_outbox())

    async def _send_loop(self) -> None:
        while True:
            record, submitted = await self._queue.get()
            self._unacked += 1
            self._queue.task_done()
            await self._in_flight.acquire()
            key = (record.topic, record.key)
            previous = self._tails.get(key)
            done = asyncio.Event()
            self._tails[key] = done
            self._spawn(self._deliver(record, submitted, previous, done))

    async def _deliver(
        self, record: Record, submitted: float, previous: asyncio.Event | None, done: asyncio.Event
    ) -> None:
        key = (record.topic, record.key)
        try:
            if previous is not None:
                await previous.wait()
            reason = rejection_reason(record)
            if reason is not None:
                await self._dead_letters.send(record, reason)
                return
            refusals = 0
            while True:
                outcome = await self._attempt(record, submitted)
                if outcome is True:
                    break
                if isinstance(outcome, RecordRefused):
                    refusals += 1
                    if refusals >= self._max_attempts:
                        await self._dead_letters.send(record, f"refused {refusals} times (max_attempts): {outcome}")
                        break
                    await asyncio.sleep(self._sender.refusal_backoff(refusals))
        finally:
            done.set()
            if self._tails.get(key) is done:
                del self._tails[key]
            self._tracked.discard((record.alert_id, record.topic))
            self._in_flight.release()
            self._unacked -= 1
            self._maybe_idle()

    async def _attempt(self, record: Record, submitted: float) -> bool | RecordRefused:
        """One try at sending ``record``: True when it is settled (acknowledged or
        dead-lettered), the error when the broker refused it, False after an outage."""
        if self.healthy:
            return await self._try_send(record, submitted)
        async with self._probe_lock:
            if self.healthy:
                return await self._try_send(record, submitted)
            return await self._try_send(record, submitted, probing=True)

    async def _try_send(self, record: Record, submitted: float, *, probing: bool = False) -> bool | RecordRefused:
        error = await self._sender.send(record)
        if error is None:
            await self._ack(record)
            self._sender.published(record, time.monotonic() - submitted)
            return True
        if isinstance(error, RecordRejected):
            await self._dead_letters.send(record, str(error))
            return True
        if isinstance(error, RecordRefused):
            self._sender.refused(record, error)
            return error
        self._sender.failed(record, error)
        if probing:
            # Sleeping while holding the probe lock is the back-off for everyone; a record
            # that failed outside it just queues up behind the probe.
            await asyncio.sleep(self._sender.next_backoff())
        return False

    async def _ack(self, record: Record) -> None:
        """Delete an acknowledged record from the outbox; while the store fails, remember
        to (the record is not sent again in this run; a crash before then resends it).

        The records acknowledged while one deletion runs are deleted together, in one
        transaction: one each fell behind Kafka's acknowledgements (about 300 a second
        against thousands), and a crash then sent again every record acknowledged but
        not yet deleted (docs/delivery.md)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.append((record, done))
        if self._acking is None or self._acking.done():
            self._acking = asyncio.create_task(self._delete_acked())
        await asyncio.shield(done)

    async def _delete_acked(self) -> None:
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                await self._store.ack_many([(record.alert_id, record.topic, record.article_id) for record, _ in batch])
            except StoreError:
                for record, _ in batch:
                    self._unsaved_acks[(record.alert_id, record.topic)] = record.article_id
                self._sweep_needed = True
            except asyncio.CancelledError:
                for _, done in batch:
                    done.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - a bug: raised in each record's delivery, as before the batching
                for _, done in batch:
                    done.set_exception(exc)
                continue
            for _, done in batch:
                done.set_result(None)
