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
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import orjson

from monitor.errors import PublishError, RecordRefused, RecordRejected, StoreError
from monitor.log import get_logger
from monitor.model import Record
from monitor.delivery.records import DLQ_ORIGINAL_TOPIC_HEADER, DLQ_REASON_HEADER, rejection_reason

__all__ = ["Delivery", "DeliveryStats", "OutboxStore", "Publisher"]

log = get_logger("delivery")

#: Longest ``dlq_reason`` header value, in bytes.
_REASON_LIMIT = 500
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


class Publisher(Protocol):
    """What delivery needs from a Kafka producer."""

    async def publish(self, record: Record) -> None:
        """Send and wait for the ack; PublishError (retry) or RecordRejected (give up)."""

    async def ensure_topics(self, topics: Iterable[str]) -> Any:
        """Create missing topics; PublishError when the broker cannot be asked."""


@dataclass
class DeliveryStats:
    """Counters for metrics and the run summary."""

    published: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    #: Records given up on in this run and left in the outbox (the dead-letter topic
    #: refused them too); sent again at the next start.
    abandoned: int = 0
    #: Records re-queued from the outbox at start-up.
    resent: int = 0
    #: Outbox records queued after a store failure had kept them from delivery.
    requeued: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    #: Seconds from submit to acknowledgement, last value (for metrics).
    last_latency: float = 0.0


class Delivery:
    """Sends outbox records and deletes them on acknowledgement.

    ``healthy`` is the readiness signal: False from the first failed send until a send
    succeeds again.
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
        self._publisher = publisher
        self._store = store
        self._queue: asyncio.Queue[tuple[Record, float]] = asyncio.Queue(maxsize=queue_size)
        self._dead_letter_topic = dead_letter_topic
        self._known_topics: set[str] = set(topics)
        self._verified_topics: set[str] = set()
        self._topic_lock = asyncio.Lock()
        # While unhealthy, only the holder of this lock talks to the broker.
        self._probe_lock = asyncio.Lock()
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._backoff = backoff_initial
        self._max_attempts = max_attempts
        self._on_published = on_published
        self._on_error = on_error
        self._on_dead_letter = on_dead_letter
        self._sender: asyncio.Task[None] | None = None
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
        store.failure_listeners.append(self._store_failed)
        store.recovery_listeners.append(self._store_recovered)
        self._idle = asyncio.Event()
        self._idle.set()
        self.stats = DeliveryStats()
        #: False from the first failed send until a send succeeds again (readiness).
        self.healthy = True

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, *, resend_outbox: bool = True) -> int:
        """Start sending; with ``resend_outbox`` first queue what a previous run left.

        Returns how many outbox records were left. They are queued in the background,
        oldest first, so a large outbox never holds up start-up.
        """
        self._sender = asyncio.create_task(self._send_loop(), name="delivery-sender")
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
        # Paged, so an outbox grown large during a long outage is never loaded whole.
        after = 0
        try:
            while True:
                page = await self._store.pending_page(after, _RESEND_PAGE)
                if not page:
                    break
                after = page[-1][0]
                for _seq, record in page:
                    self._resending = max(0, self._resending - 1)
                    self.stats.resent += 1
                    await self.submit([record])
        finally:
            self._resending = 0
            self._maybe_idle()

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

    async def outbox_count(self) -> int:
        """Records in the durable outbox: everything not yet acknowledged, in this run or before."""
        return await self._store.pending_count()

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
        except asyncio.TimeoutError:
            return False

    async def stop(self, timeout: float = 30.0) -> bool:
        """Drain for up to ``timeout`` s, then stop; what is left stays in the outbox.

        After a store failure in this run, the outbox is swept first, so records a
        failing store kept from delivery are sent in the drain, not only at the next start.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        if self._sweep_needed:
            try:
                await asyncio.wait_for(self._sweep_outbox(), max(0.0, timeout))
            except asyncio.TimeoutError:
                pass
        drained = await self.wait_idle(max(0.0, deadline - time.monotonic()))
        left = self.pending
        tasks = [t for t in (self._sender, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sender = None
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
        if self._sweep_needed and not self._sweeping and self._sender is not None:
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
            after = 0
            while True:
                page = await self._store.pending_page(after, _RESEND_PAGE)
                if not page:
                    break
                after = page[-1][0]
                for _seq, record in page:
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
        if self._sweep_needed and self._store.failure is None and self._sender is not None:
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
                await self._dead_letter(record, reason)
                return
            refusals = 0
            while True:
                outcome = await self._attempt(record, submitted)
                if outcome is True:
                    break
                if isinstance(outcome, RecordRefused):
                    refusals += 1
                    if refusals >= self._max_attempts:
                        await self._dead_letter(record, f"refused {refusals} times (max_attempts): {outcome}")
                        break
                    await asyncio.sleep(self._refusal_backoff(refusals))
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
        try:
            await self._ensure_topic(record.topic)
            await self._publisher.publish(record)
        except RecordRejected as exc:
            await self._dead_letter(record, str(exc))
            return True
        except RecordRefused as exc:
            self._note_refusal(record, exc)
            return exc
        except (PublishError, asyncio.TimeoutError) as exc:
            self._note_failure(record, exc)
            if probing:
                # Sleeping while holding the probe lock is the back-off for everyone; a
                # record that failed outside it just queues up behind the probe.
                await asyncio.sleep(self._next_backoff())
            return False
        await self._ack(record)
        self._note_success(record, time.monotonic() - submitted)
        return True

    async def _ack(self, record: Record) -> None:
        """Delete an acknowledged record from the outbox; while the store fails, remember
        to (the record is not sent again in this run; a crash before then resends it)."""
        try:
            await self._store.ack(record.alert_id, record.topic, record.article_id)
        except StoreError:
            self._unsaved_acks[(record.alert_id, record.topic)] = record.article_id
            self._sweep_needed = True

    def _refusal_backoff(self, refusals: int) -> float:
        return min(self._backoff_max, self._backoff_initial * 2 ** (refusals - 1))

    def _next_backoff(self) -> float:
        delay = self._backoff
        self._backoff = min(self._backoff_max, self._backoff * 2)
        return delay

    async def _ensure_topic(self, topic: str) -> None:
        if topic in self._verified_topics:
            return
        async with self._topic_lock:
            if topic in self._verified_topics:
                return
            self._known_topics.add(topic)
            wanted = sorted(self._known_topics | {self._dead_letter_topic})
            await self._publisher.ensure_topics(wanted)
            self._verified_topics.update(wanted)

    def _note_failure(self, record: Record, exc: BaseException) -> None:
        first = self.healthy
        self.healthy = False
        # Any failure may mean the broker restarted, possibly empty: check topics again.
        self._verified_topics.clear()
        self.stats.failed_attempts += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        if self._on_error is not None:
            self._on_error(record, exc)
        if first:
            log.warning(
                "delivery.unhealthy",
                topic=record.topic,
                alert_id=record.alert_id,
                error=self.stats.last_error,
                hint="alerts wait in the outbox and are retried with back-off until Kafka answers",
            )
        else:
            log.debug("alert.publish.retrying", topic=record.topic, alert_id=record.alert_id, error=self.stats.last_error)

    def _note_refusal(self, record: Record, exc: RecordRefused) -> None:
        # The broker answered: it is up, so this is no outage (readiness stays as it is).
        self._mark_healthy()
        self.stats.failed_attempts += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        if self._on_error is not None:
            self._on_error(record, exc)
        log.warning("alert.publish.refused", topic=record.topic, alert_id=record.alert_id, error=self.stats.last_error)

    def _mark_healthy(self) -> None:
        if not self.healthy:
            log.info("delivery.recovered", failed_attempts=self.stats.failed_attempts, pending=self.pending)
        self.healthy = True
        self._backoff = self._backoff_initial

    def _note_success(self, record: Record, latency: float) -> None:
        self._mark_healthy()
        self.stats.published += 1
        self.stats.by_topic[record.topic] = self.stats.by_topic.get(record.topic, 0) + 1
        self.stats.last_latency = latency
        log.info("alert.published", topic=record.topic, alert_id=record.alert_id, article_id=record.article_id)
        if self._on_published is not None:
            self._on_published(record, latency)

    # -- dead letters ------------------------------------------------------------------

    async def _dead_letter(self, record: Record, reason: str) -> None:
        """Send ``record`` to the dead-letter topic (as is, else as a stub) and drop it from the outbox."""
        reason = reason.encode("utf-8", "replace")[:_REASON_LIMIT].decode("utf-8", "ignore")
        log.error("alert.dead_lettered", topic=record.topic, alert_id=record.alert_id, reason=reason)
        for letter in (_letter(record, reason, self._dead_letter_topic), _stub_letter(record, reason, self._dead_letter_topic)):
            sent = await self._send_letter(letter)
            if sent is None:
                # The dead-letter topic refuses it too: keep the record for the next start
                # rather than lose it, and let this run finish.
                self.stats.abandoned += 1
                log.error(
                    "alert.dead_letter.refused",
                    alert_id=record.alert_id,
                    topic=record.topic,
                    dead_letter_topic=self._dead_letter_topic,
                    reason=reason,
                    hint="kept in the outbox and sent again at the next start; check the broker's log",
                )
                return
            if sent:
                break
        else:
            # Even a few hundred bytes are refused: the dead-letter topic itself is broken.
            # The log line keeps the alert so an operator can replay it by hand.
            log.critical(
                "alert.dead_letter.rejected",
                alert_id=record.alert_id,
                topic=record.topic,
                dead_letter_topic=self._dead_letter_topic,
                value=record.value[:4096].decode("utf-8", "replace"),
                hint="check the dead-letter topic's max.message.bytes and ACLs",
            )
        await self._ack(record)
        self.stats.dead_lettered += 1
        if self._on_dead_letter is not None:
            self._on_dead_letter(record, reason)

    async def _send_letter(self, letter: Record) -> bool | None:
        """True when the broker took the letter, False when it rejected it for good, None
        when it refused it ``max_attempts`` times."""
        refusals = 0
        while True:
            try:
                await self._ensure_topic(letter.topic)
                await self._publisher.publish(letter)
            except RecordRejected as exc:
                log.warning("alert.dead_letter.too_large", alert_id=letter.alert_id, reason=str(exc))
                return False
            except RecordRefused as exc:
                self._note_refusal(letter, exc)
                refusals += 1
                if refusals >= self._max_attempts:
                    return None
                await asyncio.sleep(self._refusal_backoff(refusals))
                continue
            except (PublishError, asyncio.TimeoutError) as exc:
                self._note_failure(letter, exc)
                # Not under the probe lock: this may run inside a probe already.
                await asyncio.sleep(self._next_backoff())
                continue
            self._mark_healthy()
            return True


def _letter(record: Record, reason: str, topic: str) -> Record:
    headers = tuple((k, v) for k, v in record.headers if k not in (DLQ_REASON_HEADER, DLQ_ORIGINAL_TOPIC_HEADER))
    return Record(
        alert_id=record.alert_id,
        article_id=record.article_id,
        topic=topic,
        key=record.key,
        value=record.value,
        headers=(
            *headers,
            (DLQ_REASON_HEADER, reason.encode()),
            (DLQ_ORIGINAL_TOPIC_HEADER, record.topic.encode()),
        ),
    )


def _stub_letter(record: Record, reason: str, topic: str) -> Record:
    """A small stand-in for a record too large for the dead-letter topic: enough to find it again."""
    value = orjson.dumps(
        {
            "dead_letter": True,
            "alert_id": record.alert_id,
            "article_id": record.article_id[:1000],
            "original_topic": record.topic,
            "original_bytes": len(record.value),
            "reason": reason,
        }
    )
    return Record(
        alert_id=record.alert_id,
        article_id=record.article_id,
        topic=topic,
        key=record.key if record.key is None or len(record.key) <= 1000 else None,
        value=value,
        headers=(
            (DLQ_REASON_HEADER, reason.encode()),
            (DLQ_ORIGINAL_TOPIC_HEADER, record.topic.encode()),
            ("content-type", b"application/json"),
        ),
    )
