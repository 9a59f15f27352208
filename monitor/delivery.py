"""Draining the outbox into Kafka: at-least-once, through outages, with back-pressure.

Every record handed to :class:`Delivery` is already durable in the store's outbox.
Delivery sends it, and only when Kafka acknowledges it is it deleted from the outbox.
While the broker is away, sends are retried with capped exponential back-off; the
bounded queue fills, and :meth:`Delivery.submit` then blocks, which pauses polling
(back-pressure) instead of dropping anything. After any failure the publisher makes
sure its topics exist again before it sends more (a broker that came back empty would
otherwise accept records for topics it no longer has).

A record Kafka rejects for good (too large, or otherwise unsendable) goes to the
dead-letter topic with the reason in a header, so it never blocks the pipeline.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from monitor.adapters.store import AsyncStore
from monitor.errors import PublishError, RecordRejected
from monitor.log import get_logger
from monitor.model import Record

__all__ = ["Delivery", "DeliveryStats", "Publisher"]

log = get_logger("delivery")

class Publisher(Protocol):
    """What delivery needs from a Kafka producer."""

    async def publish(self, record: Record) -> None:
        """Send and wait for the ack; PublishError (retry) or RecordRejected (give up)."""

    async def ensure_topics(self, topics: Iterable[str]) -> Any:
        """Create missing topics; PublishError when the broker cannot be asked."""


@dataclass
class DeliveryStats:
    published: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    #: Seconds from submit to acknowledgement, last value (for metrics).
    last_latency: float = 0.0


class Delivery:
    """Sends outbox records and deletes them on acknowledgement."""

    def __init__(
        self,
        publisher: Publisher,
        store: AsyncStore,
        *,
        queue_size: int = 10000,
        dead_letter_topic: str = "alerts.dead-letter",
        topics: Iterable[str] = (),
        max_in_flight: int = 2000,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        on_published: Callable[[Record, float], None] | None = None,
        on_error: Callable[[Record, BaseException], None] | None = None,
    ) -> None:
        self._publisher = publisher
        self._store = store
        self._queue: asyncio.Queue[tuple[Record, float]] = asyncio.Queue(maxsize=queue_size)
        self._dead_letter_topic = dead_letter_topic
        self._known_topics: set[str] = set(topics)
        self._verified_topics: set[str] = set()
        self._topic_lock = asyncio.Lock()
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._on_published = on_published
        self._on_error = on_error
        self._sender: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Records taken from the queue but not yet acknowledged.
        self._unacked = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.stats = DeliveryStats()
        #: False from the first failed send until a send succeeds again (readiness).
        self.healthy = True

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, *, resend_outbox: bool = True) -> int:
        """Start sending; with ``resend_outbox`` first queue what a previous run left. Returns that count."""
        self._sender = asyncio.create_task(self._send_loop(), name="delivery-sender")
        if not resend_outbox:
            return 0
        leftovers = await self._store.pending()
        if leftovers:
            log.info("delivery.outbox.resend", count=len(leftovers))
            self._spawn(self.submit(leftovers))
        return len(leftovers)

    async def submit(self, records: Iterable[Record]) -> None:
        """Queue records that are already in the outbox; blocks while the queue is full."""
        for record in records:
            self._idle.clear()
            await self._queue.put((record, time.monotonic()))

    @property
    def pending(self) -> int:
        """Records queued or in flight."""
        return self._queue.qsize() + self._unacked

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted is acknowledged; False on timeout."""
        try:
            while self.pending:
                self._idle.clear()
                await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def stop(self, timeout: float = 30.0) -> bool:
        """Drain for up to ``timeout`` s, then stop; what is left stays in the outbox."""
        drained = await self.wait_idle(timeout)
        tasks = [t for t in (self._sender, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sender = None
        if not drained:
            log.warning("delivery.stop.undelivered", pending=self.pending, hint="left in the outbox; sent on next start")
        return drained

    # -- sending -----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_loop(self) -> None:
        while True:
            record, submitted = await self._queue.get()
            self._unacked += 1
            self._queue.task_done()
            await self._in_flight.acquire()
            self._spawn(self._deliver(record, submitted))

    async def _deliver(self, record: Record, submitted: float) -> None:
        try:
            backoff = self._backoff_initial
            while True:
                try:
                    await self._ensure_topic(record.topic)
                    await self._publisher.publish(record)
                except RecordRejected as exc:
                    await self._dead_letter(record, exc)
                    break
                except (PublishError, asyncio.TimeoutError) as exc:
                    self._note_failure(record, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(self._backoff_max, backoff * 2)
                    continue
                await self._store.ack(record.alert_id, record.topic, record.article_id)
                self._note_success(record, time.monotonic() - submitted)
                break
        finally:
            self._in_flight.release()
            self._unacked -= 1
            if not self.pending:
                self._idle.set()

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
            log.warning("alert.publish.retrying", topic=record.topic, alert_id=record.alert_id, error=self.stats.last_error)

    def _note_success(self, record: Record, latency: float) -> None:
        if not self.healthy:
            log.info("delivery.recovered", failed_attempts=self.stats.failed_attempts)
        self.healthy = True
        self.stats.published += 1
        self.stats.by_topic[record.topic] = self.stats.by_topic.get(record.topic, 0) + 1
        self.stats.last_latency = latency
        log.info("alert.published", topic=record.topic, alert_id=record.alert_id, article_id=record.article_id)
        if self._on_published is not None:
            self._on_published(record, latency)

    async def _dead_letter(self, record: Record, exc: BaseException) -> None:
        reason = str(exc)[:500]
        log.error("alert.dead_lettered", topic=record.topic, alert_id=record.alert_id, reason=reason)
        # Keep only the evidence that fits: a too-large value cannot go to the DLQ as is.
        value = record.value if len(record.value) < 512 * 1024 else record.value[: 64 * 1024]
        letter = Record(
            alert_id=record.alert_id,
            article_id=record.article_id,
            topic=self._dead_letter_topic,
            key=record.key,
            value=value,
            headers=(*record.headers, ("dlq_reason", reason.encode()), ("dlq_original_topic", record.topic.encode())),
        )
        backoff = self._backoff_initial
        while True:
            try:
                await self._ensure_topic(letter.topic)
                await self._publisher.publish(letter)
                break
            except RecordRejected as letter_exc:
                # Even the trimmed letter is refused: the log line is the only trace left.
                log.error("alert.dead_letter.rejected", alert_id=record.alert_id, reason=str(letter_exc))
                break
            except (PublishError, asyncio.TimeoutError) as retry_exc:
                self._note_failure(letter, retry_exc)
                await asyncio.sleep(backoff)
                backoff = min(self._backoff_max, backoff * 2)
        await self._store.ack(record.alert_id, record.topic, record.article_id)
        self.stats.dead_lettered += 1
