"""What other producers may put on the cluster's topics (a damaged record, a writer whose
clock is far ahead, a hand-written one) must not silence a feed or stop a role
(docs/scaling.md, "Feed state", "What happens on failure")."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path
from typing import Any

from monitor.adapters.kafka import KafkaPublisher
from monitor.app.matcher_role import MatcherRole
from monitor.app.roles import RoleContext
from monitor.cluster import RememberedArticle, feed_partition, state_to_record
from monitor.cluster.feed_state import feed_state_to_value
from monitor.feeds.health import FeedHealthTracker, HealthPolicy
from monitor.feeds.state import FeedState
from monitor.lifecycle import Shutdown
from monitor.model import Feed, Record
from monitor.observe.observer import Observer
from monitor.observe.status import status
from monitor.settings import Settings
from tests.app.test_poller_role import RunningPoller, articles, cluster_settings, ids, write_feeds
from tests.support import FeedServer, rss, until


async def write_state(settings: Settings, state: FeedState, owner: str, *, elsewhere: bool = False) -> None:
    """A feed-state record as another poller would write it, in the feed's partition (or,
    ``elsewhere``, in the next one, as a producer with another partitioner would)."""
    topic = settings.cluster.feed_state_topic
    publisher = KafkaPublisher(settings.kafka, settings.kafka.bootstrap_servers)
    await publisher.start()
    try:
        partitions = await publisher.partition_count(topic)
        partition = (feed_partition(state.url, partitions) + elsewhere) % partitions
        value = feed_state_to_value(state, {}, owner=owner, written_at=time.time())
        await publisher.publish(Record("", state.url, topic, state.url.encode(), value, ()), partition=partition)
    finally:
        await publisher.stop()


async def test_a_restored_next_poll_no_poller_would_schedule_is_not_waited_for(
    broker: Any, feed_server: FeedServer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    settings = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-a", tag)
    far = feed_server.serve(f"/{tag}/far.xml", rss([("far", "far", "x")]))
    near = feed_server.serve(f"/{tag}/near.xml", rss([("near", "near", "y")]))
    await write_feeds(settings, Feed(url=far, interval=60.0), Feed(url=near, interval=60.0))
    # A month ahead (a damaged record, a clock far ahead): waited for, the feed would go
    # unpolled for a month. Ten minutes ahead is a schedule a poller does make: honoured.
    await write_state(settings, FeedState(url=far, next_poll=time.time() + 30 * 86400.0, interval=60.0), "poller-old")
    await write_state(settings, FeedState(url=near, next_poll=time.time() + 600.0, interval=60.0), "poller-old")
    async with RunningPoller(settings) as role:
        assert ids(await articles(settings, 1)) == ["urn:t:far"]
        await until(lambda: role.counts["restored"] == 2, what="both states restored")
    assert feed_server.resources[f"/{tag}/near.xml"].hits == 0


async def test_a_feed_state_outside_its_feeds_partition_is_not_restored(
    broker: Any, feed_server: FeedServer, tmp_path: Path
) -> None:
    """Only the feed's own partition holds its state: a record elsewhere (here one that
    says the feed is gone) is passed over, so it cannot stand for the feed's state."""
    tag = uuid.uuid4().hex[:10]
    settings = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-a", tag, topic_partitions=2)
    url = feed_server.serve(f"/{tag}/a.xml", rss([("a", "a", "x")]))
    await write_feeds(settings, Feed(url=url, interval=60.0))
    await write_state(settings, FeedState(url=url, disabled="410 Gone", interval=60.0), "poller-old", elsewhere=True)
    async with RunningPoller(settings) as role:
        assert ids(await articles(settings, 1)) == ["urn:t:a"]
    assert role.counts["restored"] == 0


async def test_a_tombstone_on_the_matcher_state_forgets_the_article_before_compaction_too(broker: Any, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:10]
    settings = cluster_settings(tmp_path, broker.bootstrap_servers, "matcher-a", tag)
    topic = settings.cluster.matcher_state_topic
    publisher = KafkaPublisher(settings.kafka, settings.kafka.bootstrap_servers)
    await publisher.start()
    try:
        await publisher.ensure_topics([], compacted=[topic])

        def remembered(key: str, rules: frozenset[str]) -> Record:
            article = RememberedArticle(key, key, None, "https://f.example/rss", "h", rules, None, time.time())
            return Record("", key, topic, *state_to_record(article), ())

        kept = (remembered("kept", frozenset({"grain"})), remembered("kept", frozenset({"summit"})))
        for record in (*kept, remembered("forgotten", frozenset())):
            await publisher.publish(record, partition=0)
        await publisher.publish(Record("", "forgotten", topic, b"forgotten", b"", ()), partition=0, tombstone=True)
        context = RoleContext(settings=settings, bootstrap_servers=settings.kafka.bootstrap_servers, publisher=publisher,
                              rules=object(), observer=Observer([]), shutdown=Shutdown(5.0), instance_id="matcher-a")  # type: ignore[arg-type]
        articles, skipped, expired = await MatcherRole(context)._read_state({0})
    finally:
        await publisher.stop()
    # The tombstoned article is not taken over (it was, and the tombstone was logged as unreadable);
    # of the kept one, its latest record, with every rule any of its records named.
    assert [(a.key, a.rules) for a in articles] == [("kept", frozenset({"grain", "summit"}))]
    assert (skipped, expired) == (0, 0)


def test_status_cluster_shows_no_terminal_escape_a_record_carries() -> None:
    # The url is a config's or the feeds topic's, the owner and the last error a feed-state record's.
    url = "/srv/feeds/a\x1b]0;title\x07.xml"
    tracker = FeedHealthTracker([Feed(url=url)], HealthPolicy(failing_after=1), started=1000.0)
    tracker.load_all([FeedState(url=url, last_error="boom\x1b[2J", last_error_at=990.0, consecutive_errors=3, health="failing")])
    tracker.sweep(1000.0)
    for fmt in ("plain", "table"):
        out = io.StringIO()
        assert status(tracker, out, now=1000.0, fmt=fmt, owners={url: "poller\x1b[31m-7"}, err=io.StringIO()) == 1
        assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    out = io.StringIO()
    status(tracker, out, now=1000.0, fmt="plain", owners={url: "poller\x1b[31m-7"}, err=io.StringIO())
    assert "poller?[31m-7  /srv/feeds/a?]0;title?.xml" in out.getvalue() and "boom [2J" in out.getvalue()
