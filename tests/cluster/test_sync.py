"""The feeds-sync plan: only what differs is written, moved feeds leave one partition."""

from __future__ import annotations

from monitor.cluster import feed_partition, feed_to_record
from monitor.cluster.sync import FeedWrite, plan_sync
from monitor.model import Feed


def _feed(url: str, interval: float = 300.0) -> Feed:
    return Feed(url=url, interval=interval)


def _topic(feeds: list[Feed], partitions: int) -> dict[str, dict[int, bytes]]:
    return {f.url: {feed_partition(f.url, partitions): feed_to_record(f)[1]} for f in feeds}


def test_a_sync_adds_changes_and_tombstones_only_what_differs():
    same, changed, gone = _feed("https://a.example/rss"), _feed("https://b.example/rss"), _feed("https://c.example/rss")
    new = _feed("https://d.example/rss")
    current = _topic([same, changed, gone], 3)
    plan = plan_sync(current, [same, _feed(changed.url, 60.0), new], 3)
    assert (plan.added, plan.changed, plan.removed, plan.unchanged) == ([new.url], [changed.url], [gone.url], [same.url])
    assert plan.writes == [
        FeedWrite(changed.url, feed_partition(changed.url, 3), feed_to_record(_feed(changed.url, 60.0))[1]),
        FeedWrite(new.url, feed_partition(new.url, 3), feed_to_record(new)[1]),
        FeedWrite(gone.url, feed_partition(gone.url, 3), None),
    ]
    assert plan.summary() == {"added": 1, "changed": 1, "moved": 0, "removed": 1, "unchanged": 1, "records": 3}


def test_the_same_feeds_again_plan_nothing():
    feeds = [_feed(f"https://host{i}.example/rss") for i in range(20)]
    assert plan_sync(_topic(feeds, 4), feeds, 4).writes == []


def test_a_feed_whose_partition_changed_moves_there_and_is_tombstoned_where_it_was():
    # Find a feed whose partition differs between 2 and 3 partitions.
    feed = next(f for i in range(50) if feed_partition((f := _feed(f"https://m{i}.example/rss")).url, 2) != feed_partition(f.url, 3))
    old, new = feed_partition(feed.url, 2), feed_partition(feed.url, 3)
    plan = plan_sync(_topic([feed], 2), [feed], 3)
    assert plan.writes == [FeedWrite(feed.url, new, feed_to_record(feed)[1]), FeedWrite(feed.url, old, None)]
    assert plan.changed == plan.moved == [feed.url] and not plan.unchanged
    # Once moved, it is unchanged.
    assert plan_sync(_topic([feed], 3), [feed], 3).writes == []


def test_an_unreadable_value_is_replaced_or_tombstoned():
    kept, junk = _feed("https://k.example/rss"), "https://junk.example/rss"
    current = {kept.url: {feed_partition(kept.url, 3): b""}, junk: {1: b""}}
    plan = plan_sync(current, [kept], 3)
    assert plan.changed == [kept.url] and plan.removed == [junk]
    assert FeedWrite(junk, 1, None) in plan.writes
