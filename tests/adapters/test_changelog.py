"""Reading partitions to their end with a marker, on the real broker."""

from __future__ import annotations

import asyncio
import uuid

from monitor.adapters.changelog import read_to_end
from monitor.adapters.kafka import KafkaPublisher
from monitor.cluster import MARKER_KEY
from monitor.model import Record
from monitor.settings import KafkaSettings


async def test_read_to_end_returns_everything_written_before_it_and_skips_markers(broker):
    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, enable_idempotence="false", topic_partitions=3)
    publisher = KafkaPublisher(settings, broker.bootstrap_servers)
    await publisher.start()
    try:
        await publisher.ensure_topics([], compacted=[topic])
        assert await publisher.partition_count(topic) == 3
        # Records in batches of several: Tansu's end offset falls short of such a batch.
        for start in range(0, 250, 50):
            await asyncio.gather(*(
                publisher.publish(Record("", "", topic, f"k{i % 40}".encode(), f"v{i}".encode(), ()), partition=i % 2)
                for i in range(start, start + 50)
            ))
        first = [(r.partition, r.key, r.value) async for r in read_to_end(publisher, settings, broker.bootstrap_servers, topic, [0, 1, 2])]
        assert len(first) == 250
        latest = {key: value for _partition, key, value in first}
        assert latest[b"k39"] == b"v239" and latest[b"k0"] == b"v240"
        await publisher.publish(Record("", "", topic, b"late", b"x", ()), partition=2)
        # A second reader skips the first reader's markers and sees the later record.
        again = [r async for r in read_to_end(publisher, settings, broker.bootstrap_servers, topic, [2])]
        assert [(r.key, r.value) for r in again] == [(b"late", b"x")]
        assert all(r.key != MARKER_KEY for r in again)
    finally:
        await publisher.stop()
