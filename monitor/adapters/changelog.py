"""Reading partitions of a topic from their beginning to "now", for state that moves with
the work (the feed state a poller takes over, the seen articles a matcher takes over).

"Now" is found with a marker record, not with the broker's end offset: Tansu's end
offset can fall short by most of the last batch (``../shared/notes/tansu.md``), and a
reader that stops early restores old state. The reader writes a marker (key
:data:`monitor.cluster.MARKER_KEY`, a fresh random value) to each partition it wants,
then reads each from its beginning until it meets its own marker: everything written
before the marker has been read, on any Kafka-protocol broker. It costs one small record
per partition and restore; readers of these topics skip markers.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from monitor.adapters.kafka import KafkaPublisher, connection_options, kafka_error_text
from monitor.cluster import MARKER_KEY, is_marker
from monitor.errors import BrokerError
from monitor.model import Record
from monitor.settings import KafkaSettings

__all__ = ["read_latest", "read_to_end"]

T = TypeVar("T")


async def read_to_end(
    publisher: KafkaPublisher,
    settings: KafkaSettings,
    bootstrap_servers: str,
    topic: str,
    partitions: Iterable[int],
    *,
    timeout: float = 60.0,
) -> AsyncIterator[Any]:
    """Yield every record (markers skipped) of ``partitions`` of ``topic`` written before
    this call, oldest first per partition. :class:`BrokerError` when the end is not reached
    within ``timeout`` seconds (the broker is away, or the partition is huge)."""
    wanted = sorted(set(partitions))
    if not wanted:
        return
    token = secrets.token_hex(16).encode()
    for partition in wanted:
        await publisher.publish(Record("", "", topic, MARKER_KEY, token, ()), partition=partition)
    consumer = AIOKafkaConsumer(
        **connection_options(settings, bootstrap_servers), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    deadline = time.monotonic() + timeout
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        assigned = [TopicPartition(topic, partition) for partition in wanted]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        open_partitions = set(assigned)
        while open_partitions:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerError(
                    f"reading {topic} partitions {sorted(tp.partition for tp in open_partitions)} to their end took over {timeout:g}s",
                    hint="check the broker; a very long uncompacted topic needs cleanup.policy=compact",
                )
            fetched = await consumer.getmany(*open_partitions, timeout_ms=int(min(left, 1.0) * 1000), max_records=5000)
            for tp, records in fetched.items():
                for record in records:
                    if is_marker(record.key):
                        if record.value == token:
                            open_partitions.discard(tp)
                            consumer.pause(tp)
                            break
                        continue
                    yield record
    except KafkaError as exc:
        raise BrokerError(f"cannot read {topic} to its end: {kafka_error_text(exc)}", hint="check the broker") from exc
    finally:
        await consumer.stop()


async def read_latest(
    publisher: KafkaPublisher,
    settings: KafkaSettings,
    bootstrap_servers: str,
    topic: str,
    partitions: Iterable[int],
    decode: Callable[[bytes | None, bytes], T],
    on_malformed: Callable[[Any, ValueError], None],
    *,
    timeout: float = 60.0,
    refuse: Callable[[Any], str | None] | None = None,
) -> dict[str, T]:
    """The latest value per key (UTF-8) of a compacted topic's ``partitions``, as
    :func:`read_to_end` reads them, each ``decode(key, value)``d: a tombstone removes its
    key; a record ``decode`` refuses (a ValueError), or a record or tombstone for which
    ``refuse(record)`` gives a reason, goes to ``on_malformed`` and is passed over."""
    latest: dict[str, T] = {}
    async for record in read_to_end(publisher, settings, bootstrap_servers, topic, partitions, timeout=timeout):
        if refuse is not None and (reason := refuse(record)) is not None:
            on_malformed(record, ValueError(reason))
            continue
        key = record.key.decode("utf-8", "replace") if record.key else ""
        if record.value is None:
            latest.pop(key, None)
            continue
        try:
            latest[key] = decode(record.key, record.value)
        except ValueError as exc:
            on_malformed(record, exc)
    return latest
