"""Sending one record to Kafka: its topic made sure of, the outcome classified, and the
broker's health, back-off and counters kept (see :mod:`monitor.delivery.outbox` for
what is done with each outcome)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from monitor.errors import PublishError, RecordRefused, RecordRejected, error_text
from monitor.log import get_logger
from monitor.model import Record

_ALERT_TYPE = b"news.alert.v1"
_SIGNAL_TYPE = b"news.signal."

__all__ = ["DeliveryStats", "Publisher", "Sender"]

log = get_logger("delivery")


class Publisher(Protocol):
    """What delivery needs from a Kafka producer."""

    async def publish(self, record: Record) -> object:
        """Send and wait for the ack; PublishError (retry) or RecordRejected (give up)."""

    async def ensure_topics(self, topics: Iterable[str]) -> Any:
        """Create missing topics; PublishError when the broker cannot be asked."""


@dataclass
class DeliveryStats:
    """Counters for metrics and the run summary."""

    published: int = 0
    #: Of those, alerts (``ce_type`` ``news.alert.v1``) and story signals (``news.signal.<kind>.v1``).
    alerts_published: int = 0
    signals_published: int = 0
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


def _event_type(record: Record) -> bytes:
    """The record's CloudEvents type (``b""`` without one)."""
    return next((value for name, value in record.headers if name == "ce_type"), b"")


class Sender:
    """Publishes records one at a time and keeps what the attempts say about the broker.

    ``healthy`` is the readiness signal: False from the first failed send until a send
    succeeds again.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        dead_letter_topic: str,
        topics: Iterable[str] = (),
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        on_published: Callable[[Record, float], None] | None = None,
        on_error: Callable[[Record, BaseException], None] | None = None,
        pending: Callable[[], int] = lambda: 0,
    ) -> None:
        self._publisher = publisher
        self.dead_letter_topic = dead_letter_topic
        self._known_topics: set[str] = set(topics)
        self._verified_topics: set[str] = set()
        self._topic_lock = asyncio.Lock()
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._backoff = backoff_initial
        self._on_published = on_published
        self._on_error = on_error
        self._pending = pending
        self.stats = DeliveryStats()
        self.healthy = True

    async def send(self, record: Record) -> PublishError | RecordRejected | asyncio.TimeoutError | None:
        """Make sure of the record's topic and publish it: None once Kafka acknowledged it,
        else the error: RecordRejected (for good), RecordRefused (this record; a bounded
        number of tries may help), PublishError or TimeoutError (the broker is away)."""
        try:
            await self._ensure_topic(record.topic)
            await self._publisher.publish(record)
        except (TimeoutError, PublishError, RecordRejected) as exc:  # RecordRefused is a PublishError
            return exc
        return None

    async def _ensure_topic(self, topic: str) -> None:
        if topic in self._verified_topics:
            return
        async with self._topic_lock:
            if topic in self._verified_topics:
                return
            self._known_topics.add(topic)
            wanted = sorted(self._known_topics | {self.dead_letter_topic})
            await self._publisher.ensure_topics(wanted)
            self._verified_topics.update(wanted)

    def refusal_backoff(self, refusals: int) -> float:
        return min(self._backoff_max, self._backoff_initial * 2.0 ** (refusals - 1))

    def next_backoff(self) -> float:
        delay = self._backoff
        self._backoff = min(self._backoff_max, self._backoff * 2)
        return delay

    def failed(self, record: Record, exc: BaseException) -> None:
        """An outage: the broker did not answer ``record``."""
        first = self.healthy
        self.healthy = False
        # Any failure may mean the broker restarted, possibly empty: check topics again.
        self._verified_topics.clear()
        self._count_error(record, exc)
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

    def refused(self, record: Record, exc: RecordRefused) -> None:
        """The broker answered ``record`` with an error: it is up, so this is no outage."""
        self.mark_healthy()
        self._count_error(record, exc)
        log.warning("alert.publish.refused", topic=record.topic, alert_id=record.alert_id, error=self.stats.last_error)

    def _count_error(self, record: Record, exc: BaseException) -> None:
        self.stats.failed_attempts += 1
        self.stats.last_error = error_text(exc)
        if self._on_error is not None:
            self._on_error(record, exc)

    def mark_healthy(self) -> None:
        if not self.healthy:
            log.info("delivery.recovered", failed_attempts=self.stats.failed_attempts, pending=self._pending())
        self.healthy = True
        self._backoff = self._backoff_initial

    def published(self, record: Record, latency: float) -> None:
        """Kafka acknowledged ``record``, ``latency`` seconds after it was queued."""
        self.mark_healthy()
        self.stats.published += 1
        event_type = _event_type(record)
        if event_type == _ALERT_TYPE:
            self.stats.alerts_published += 1
        elif event_type.startswith(_SIGNAL_TYPE):
            self.stats.signals_published += 1
        self.stats.by_topic[record.topic] = self.stats.by_topic.get(record.topic, 0) + 1
        self.stats.last_latency = latency
        log.info("alert.published", topic=record.topic, alert_id=record.alert_id, article_id=record.article_id)
        if self._on_published is not None:
            self._on_published(record, latency)
