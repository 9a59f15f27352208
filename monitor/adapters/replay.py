"""Reading every partition of a topic from a point in time to its end, publishing nothing
(``news-monitor backtest``; docs/scaling.md, "Backtest").

Where a partition's span starts: the broker's time index (``offsets_for_times``), checked
against the records themselves: the record at the offset found must not be older than
``since``, and the one before it must be older. Apache Kafka passes the check; Tansu
answers offset 0 whatever the time (``../shared/notes/tansu.md``), fails it, and the
partition is read from its beginning (the caller drops the records before ``since``).

Where it ends: at the high watermark the broker reports with the first fetch of the
partition (or its end offset, if larger), so records written while the reader runs do not
keep it going. No marker record is written (a reader of the articles topic must not write
to it). Tansu's ListOffsets end offset falls short, but the high watermark in its fetch
responses is right (measured: 3,335 records read, end offset said 3,320, watermark 3,335).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from monitor.adapters.kafka import TopicAdmin, connection_options, kafka_error_text
from monitor.errors import BrokerError, MonitorError
from monitor.settings import KafkaSettings

__all__ = ["SpanReader"]


class SpanReader:
    """Reads ``topic`` from ``since_ms`` (Unix milliseconds; None: the beginning) to its
    end, as :meth:`records`. :attr:`starts` says, per partition, how the start was found:
    ``"beginning"``, ``"time index"`` or ``"scan"`` (the time index failed the check)."""

    def __init__(self, settings: KafkaSettings, bootstrap_servers: str, topic: str, *, timeout: float = 30.0) -> None:
        self._settings = settings
        self._bootstrap = bootstrap_servers
        self.topic = topic
        self._timeout = timeout
        self.starts: dict[int, str] = {}

    async def records(self, since_ms: int | None) -> AsyncIterator[Any]:
        """Every record from the span's start in each partition to that partition's end,
        oldest first per partition (partitions interleaved). :class:`MonitorError` when the
        topic does not exist, :class:`BrokerError` when the broker cannot be read."""
        counts = await TopicAdmin(self._settings, self._bootstrap).partition_counts([self.topic])
        if self.topic not in counts:
            raise MonitorError(f"topic {self.topic!r} does not exist at {self._bootstrap}", hint="check the articles topic setting")
        partitions = [TopicPartition(self.topic, p) for p in range(counts[self.topic])]
        consumer = AIOKafkaConsumer(
            **connection_options(self._settings, self._bootstrap),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            await asyncio.wait_for(consumer.start(), self._timeout)
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            await self._seek_starts(consumer, partitions, since_ms)
            async for record in self._read(consumer, partitions, ends):
                yield record
        except (KafkaError, TimeoutError) as exc:
            raise BrokerError(f"cannot read {self.topic}: {kafka_error_text(exc)}", hint="check the broker") from exc
        finally:
            await consumer.stop()

    async def _seek_starts(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since_ms: int | None) -> None:
        await consumer.seek_to_beginning(*partitions)
        if since_ms is None:
            self.starts = {tp.partition: "beginning" for tp in partitions}
            return
        found = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
        beginnings = await consumer.beginning_offsets(partitions)
        for tp in partitions:
            hit = found.get(tp)
            if hit is not None and await self._starts_at(consumer, tp, hit.offset, beginnings[tp], since_ms):
                consumer.seek(tp, hit.offset)
                self.starts[tp.partition] = "time index"
            else:
                # No answer (nothing at or after the time, or a broker without a time
                # index) or a wrong one: read it all, the caller drops what is older.
                await consumer.seek_to_beginning(tp)
                self.starts[tp.partition] = "scan"

    async def _starts_at(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, beginning: int, since_ms: int) -> bool:
        """Whether ``offset`` is where records of ``since_ms`` and later begin in ``tp``."""
        first = await self._record_at(consumer, tp, offset)
        if first is None or first.offset != offset or first.timestamp < since_ms:
            return False
        if offset <= beginning:
            return True
        before = await self._record_at(consumer, tp, offset - 1)
        # A gap before the offset (compaction, retention) leaves nothing to check there.
        return before is not None and (before.offset == offset or before.timestamp < since_ms)

    async def _record_at(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> Any:
        """The first record at or after ``offset`` in ``tp``; None when there is none (the
        watermark of a fetch from there says so) or the broker gives none in time."""
        consumer.seek(tp, offset)
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            fetched = await consumer.getmany(tp, timeout_ms=200, max_records=1)
            if fetched.get(tp):
                return fetched[tp][0]
            watermark = consumer.highwater(tp)
            if watermark is not None and watermark <= offset:
                return None
        return None

    async def _read(
        self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition], ends: dict[TopicPartition, int]
    ) -> AsyncIterator[Any]:
        # Only this loop fetches from here on: a partition is paused once read.
        targets: dict[TopicPartition, int] = {}
        open_partitions = set(partitions)
        deadline = time.monotonic() + self._timeout
        while open_partitions:
            fetched = await consumer.getmany(*open_partitions, timeout_ms=500, max_records=5000)
            if fetched:
                deadline = time.monotonic() + self._timeout
            for batch in fetched.values():
                for record in batch:
                    yield record
            for tp in list(open_partitions):
                watermark = consumer.highwater(tp)
                if watermark is None:
                    continue
                target = targets.setdefault(tp, max(watermark, ends.get(tp, 0)))
                if await consumer.position(tp) >= target:
                    open_partitions.discard(tp)
                    consumer.pause(tp)
            if open_partitions and time.monotonic() > deadline:
                raise BrokerError(
                    f"reading {self.topic} stalled: partitions {sorted(tp.partition for tp in open_partitions)} "
                    f"gave nothing for {self._timeout:g}s before their end",
                    hint="check the broker",
                )
