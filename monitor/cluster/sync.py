"""What ``news-monitor feeds sync`` must write to the feeds topic (docs/scaling.md, "Feeds sync").

Pure: the topic's current content and the configured feeds in, a :class:`SyncPlan` out.
The plan holds only what differs, so a second sync publishes nothing:

* a feed not on the topic: its record, to ``feed_partition(url, partitions)`` (added);
* a feed whose record differs (settings changed): the new record (changed);
* a feed whose record sits in another partition than ``feed_partition`` gives now (the
  topic's partition count changed): the record to its new partition, then a tombstone
  in each old one, so exactly one partition holds it (moved, counted as changed);
* a feed on the topic that the config no longer lists: a tombstone in every partition
  that holds it (removed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from monitor.cluster.records import feed_to_record
from monitor.cluster.sharding import feed_partition
from monitor.model import Feed

__all__ = ["FeedWrite", "SyncPlan", "TopicFeeds", "plan_sync"]

#: The feeds topic as read: feed URL -> {partition: the latest record value there}.
#: Tombstoned keys are absent.
TopicFeeds = Mapping[str, Mapping[int, bytes]]


@dataclass(frozen=True, slots=True)
class FeedWrite:
    """One record to publish: ``value`` None is a tombstone."""

    url: str
    partition: int
    value: bytes | None

    @property
    def key(self) -> bytes:
        return self.url.encode("utf-8")


@dataclass
class SyncPlan:
    """The records a sync publishes, in order, and the feeds by outcome (URLs, sorted)."""

    writes: list[FeedWrite] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    #: The changed feeds that also moved partition (a subset of ``changed``).
    moved: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        """Counts by outcome, for the one-line summary and ``--format json``."""
        return {
            "added": len(self.added),
            "changed": len(self.changed),
            "moved": len(self.moved),
            "removed": len(self.removed),
            "unchanged": len(self.unchanged),
            "records": len(self.writes),
        }


def plan_sync(current: TopicFeeds, feeds: Iterable[Feed], partitions: int) -> SyncPlan:
    """The records that make the feeds topic (``current``, with ``partitions`` partitions)
    hold exactly ``feeds``, one partition per feed."""
    plan = SyncPlan()
    wanted: dict[str, Feed] = {feed.url: feed for feed in feeds}
    for url in sorted(wanted):
        _, value = feed_to_record(wanted[url])
        target = feed_partition(url, partitions)
        held = current.get(url, {})
        stale = sorted(p for p in held if p != target)
        if held.get(target) != value:
            plan.writes.append(FeedWrite(url, target, value))
        plan.writes.extend(FeedWrite(url, p, None) for p in stale)
        if not held:
            plan.added.append(url)
        elif held.get(target) == value and not stale:
            plan.unchanged.append(url)
        else:
            plan.changed.append(url)
            if stale:
                plan.moved.append(url)
    for url in sorted(set(current) - set(wanted)):
        plan.writes.extend(FeedWrite(url, p, None) for p in sorted(current[url]))
        plan.removed.append(url)
    return plan
