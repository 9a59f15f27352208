"""``news-monitor feeds sync``: the configured feed list onto the cluster's feeds topic
(docs/scaling.md, "Feeds sync"). The plan is :func:`monitor.cluster.sync.plan_sync`;
this module reads the topic, and publishes the plan unless it is a dry run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from monitor.adapters.changelog import read_to_end
from monitor.adapters.kafka import KafkaPublisher
from monitor.cluster import FeedRecordError, feed_from_record
from monitor.cluster.sync import SyncPlan, TopicFeeds, plan_sync
from monitor.errors import ConfigError
from monitor.log import get_logger
from monitor.model import Feed, Record, SourceLocation
from monitor.settings import Settings

__all__ = ["SyncOutcome", "sync_feeds"]

log = get_logger("cluster.sync")


@dataclass
class SyncOutcome:
    """What a sync found and did: the plan, the topic's partition count, and the records
    of the topic it passed over (key and why), which the command reports on stderr."""

    plan: SyncPlan
    topic: str
    partitions: int
    created: bool
    dry_run: bool
    skipped: list[str] = field(default_factory=list)


async def sync_feeds(settings: Settings, feeds: Sequence[Feed], *, dry_run: bool = False) -> SyncOutcome:
    """Make ``[cluster] feeds_topic`` hold exactly ``feeds`` (created, compacted, when
    missing; a dry run creates and publishes nothing and plans as if the topic were empty)."""
    if settings.kafka.embedded:
        raise ConfigError(
            "feeds sync needs the cluster's broker; the embedded one lives only as long as 'run'",
            location=SourceLocation(str(settings.source or "<defaults>")),
            hint="set [kafka] bootstrap_servers (NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS) to the broker the pollers use",
        )
    topic = settings.cluster.feeds_topic
    bootstrap = settings.kafka.bootstrap_servers
    publisher = KafkaPublisher(settings.kafka, bootstrap)
    await publisher.start()
    try:
        exists = topic in await publisher.admin.partition_counts([topic])
        created = False
        if not exists and not dry_run:
            report = await publisher.ensure_topics([], compacted=[topic])
            created, exists = topic in report.created, True
        partitions = await publisher.partition_count(topic) if exists else settings.kafka.topic_partitions
        skipped: list[str] = []
        # A topic this run created is empty: nothing to read.
        current = await _current(publisher, settings, topic, partitions, skipped) if exists and not created else {}
        plan = plan_sync(current, feeds, partitions)
        if not dry_run:
            for write in plan.writes:
                record = Record("", "", topic, write.key, write.value or b"", ())
                await publisher.publish(record, partition=write.partition, tombstone=write.value is None)
            if plan.writes:
                log.info("cluster.feeds.synced", topic=topic, **plan.summary())
        return SyncOutcome(plan, topic, partitions, created, dry_run, skipped)
    finally:
        await publisher.stop()


async def _current(publisher: KafkaPublisher, settings: Settings, topic: str, partitions: int, skipped: list[str]) -> TopicFeeds:
    """The feeds topic as it stands: the latest value of each key per partition, without
    the tombstoned keys. A record that is not a feed is listed in ``skipped`` and held as
    ``b""``, so the plan replaces it (a listed feed) or tombstones it."""
    current: dict[str, dict[int, bytes]] = {}
    records = read_to_end(publisher, settings.kafka, settings.kafka.bootstrap_servers, topic, range(partitions))
    async for record in records:
        where = f"partition {record.partition} offset {record.offset}"
        try:
            url = (record.key or b"").decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(f"{where}: the key is not UTF-8")
            continue
        if not url:
            skipped.append(f"{where}: no key")
            continue
        if record.value is None:
            current.get(url, {}).pop(record.partition, None)
            continue
        try:
            feed_from_record(record.key, record.value)
        except FeedRecordError as exc:
            skipped.append(f"{where} ({url!r}): {exc}")
            # Held as a value no feed gives: the plan overwrites it, or tombstones it.
            current.setdefault(url, {})[record.partition] = b""
            continue
        current.setdefault(url, {})[record.partition] = record.value
    return {url: held for url, held in current.items() if held}
