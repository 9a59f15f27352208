"""``news-monitor status --cluster``: every feed of the cluster, its owner and health,
read from Kafka (the feeds topic and the feed-state topic) from any machine.

The feeds are the latest record per URL on ``[cluster] feeds_topic`` (tombstones and
``enabled = false`` removed); each one's state is the latest record on
``[cluster] feed_state_topic``, written by the poller that polls it (its owner). Health
is assessed from that state exactly as ``news-monitor status`` assesses the single
process's (:func:`monitor.app.status.health_policy`), so a feed that cannot be reached
shows the same health, last error and counts either way. A feed no poller has polled yet
has no owner ("-"). A record in another partition than its feed's host's is passed over
(logged), as the pollers pass it over.

Both topics are read to their end with a marker record (:mod:`monitor.adapters.changelog`):
the command writes one small record to each of their partitions, which every reader skips.
"""

from __future__ import annotations

import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from monitor.adapters.changelog import read_latest
from monitor.adapters.kafka import KafkaPublisher, connection_options, kafka_error_text
from monitor.app.status import health_policy
from monitor.cluster import feed_from_record, misplaced
from monitor.cluster.feed_state import FeedStateRecord, feed_state_from_record
from monitor.errors import BrokerError, MonitorError
from monitor.feeds.health import FeedHealthTracker
from monitor.log import get_logger
from monitor.model import Feed
from monitor.settings import Settings

__all__ = ["cluster_tracker"]

log = get_logger("status")


async def cluster_tracker(
    settings: Settings, *, now: float | None = None, timeout: float = 60.0
) -> tuple[FeedHealthTracker, dict[str, str]]:
    """Every feed on the feeds topic, its health assessed at ``now``, and its owner
    (feed url -> instance id). MonitorError when there is no feeds topic, BrokerError when
    the broker cannot be read."""
    kafka, cluster = settings.kafka, settings.cluster
    if kafka.embedded:
        raise MonitorError(
            "status --cluster reads the cluster's broker; [kafka] bootstrap_servers is 'embedded'",
            hint="set [kafka] bootstrap_servers (NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS) to the cluster's brokers",
        )
    bootstrap = kafka.bootstrap_servers
    publisher = KafkaPublisher(kafka, bootstrap)
    await publisher.start()
    try:
        partitions = await _partitions(settings, [cluster.feeds_topic, cluster.feed_state_topic])
        feeds = await _feeds(publisher, settings, partitions[cluster.feeds_topic], timeout)
        states = await _states(publisher, settings, partitions[cluster.feed_state_topic], timeout)
    finally:
        await publisher.stop()
    now = time.time() if now is None else now
    tracker = FeedHealthTracker(list(feeds.values()), health_policy(settings), started=now)
    tracker.load_all(states[url].state for url in feeds if url in states)
    tracker.sweep(now)
    return tracker, {url: states[url].owner for url in feeds if url in states}


async def _partitions(settings: Settings, topics: list[str]) -> dict[str, int]:
    """Partitions per topic (0 for a missing one), asked of the admin API: asking a
    producer would create a missing topic on a broker that auto-creates them."""
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka, settings.kafka.bootstrap_servers))
    try:
        await admin.start()
        # Listed first: describing a missing topic creates it on a broker that auto-creates topics.
        present = [topic for topic in topics if topic in set(await admin.list_topics())]
        descriptions = await admin.describe_topics(present) if present else []
        described = {d["topic"]: len(d.get("partitions", ())) for d in descriptions if d.get("error_code", 0) == 0}
    except (KafkaError, OSError) as exc:
        where = settings.kafka.bootstrap_servers
        raise BrokerError(f"cannot describe {', '.join(topics)} at {where}: {kafka_error_text(exc)}") from exc
    finally:
        await admin.close()
    feeds_topic = settings.cluster.feeds_topic
    if not described.get(feeds_topic):
        raise MonitorError(
            f"there is no topic {feeds_topic} at {settings.kafka.bootstrap_servers}: no feed list was published to this cluster",
            hint="publish it with 'news-monitor feeds sync', or check [cluster] feeds_topic",
        )
    return {topic: described.get(topic, 0) for topic in topics}


async def _feeds(publisher: KafkaPublisher, settings: Settings, partitions: int, timeout: float) -> dict[str, Feed]:
    feeds = await read_latest(
        publisher, settings.kafka, settings.kafka.bootstrap_servers, settings.cluster.feeds_topic, range(partitions),
        feed_from_record, _malformed, timeout=timeout, refuse=lambda record: misplaced(record.key, record.partition, partitions),
    )
    return {url: feed for url, feed in feeds.items() if feed.enabled}


async def _states(publisher: KafkaPublisher, settings: Settings, partitions: int, timeout: float) -> dict[str, FeedStateRecord]:
    return await read_latest(
        publisher, settings.kafka, settings.kafka.bootstrap_servers, settings.cluster.feed_state_topic, range(partitions),
        feed_state_from_record, _malformed, timeout=timeout, refuse=lambda record: misplaced(record.key, record.partition, partitions),
    )


def _malformed(record: Any, exc: ValueError) -> None:
    """A record that is not what its topic holds (the pollers dead-letter bad feed records)."""
    log.warning("status.record.malformed", topic=record.topic, partition=record.partition, offset=record.offset, reason=str(exc))
