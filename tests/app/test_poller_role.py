"""The poller role against the real broker and a local feed server: the feeds of its
partitions polled, new and changed articles published once, the feed state written and
taken over by the next owner (conditional GET goes on), feeds added and removed while it
runs, a malformed feed record dead-lettered, a broker outage that loses nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import io
import time
import uuid
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import aiohttp
import orjson
import pytest

from monitor.adapters.kafka import KafkaPublisher
from monitor.app.cluster_status import cluster_tracker
from monitor.app.poller_role import PollerRole
from monitor.app.roles import RoleContext, RoleHost
from monitor.cluster import feed_partition, feed_to_record
from monitor.errors import BrokerError, MonitorError
from monitor.feeds.state import FeedState
from monitor.lifecycle import Shutdown
from monitor.model import Feed, Record
from monitor.observe.observer import Observer
from monitor.observe.status import status
from monitor.settings import Settings
from tests.kafka_proxy import KafkaProxy
from tests.support import SHARED, FeedServer, make_settings, read_alerts, read_topic, rss, until

SEED = SHARED / "seeds" / "000_2d2ab9e6ed23a7ee.txt"


def cluster_settings(tmp_path: Path, bootstrap: str, instance: str, tag: str, **kafka: Any) -> Settings:
    """Settings with this test's own topics and group."""
    return make_settings(
        tmp_path / instance,
        bootstrap,
        overrides={
            "cluster": {
                "feeds_topic": f"feeds-{tag}",
                "articles_topic": f"articles-{tag}",
                "feed_state_topic": f"feed-state-{tag}",
                "matcher_state_topic": f"matcher-state-{tag}",
                "poller_group": f"pollers-{tag}",
                "matcher_group": f"matchers-{tag}",
                "session_timeout": 6.0,
                "instance_id": instance,
            },
            "kafka": {"dead_letter_topic": f"dead-{tag}", **kafka},
            "state": {"flush_interval": 0.5},
            "health": {"failing_after": 1},
        },
    )


class RunningPoller:
    """A poller role running in the background for the body of an ``async with``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.publisher = KafkaPublisher(settings.kafka, settings.kafka.bootstrap_servers)
        self.shutdown = Shutdown(10.0)
        self.role: PollerRole | None = None
        self.task: asyncio.Task[None] | None = None
        #: Called with the role before it starts.
        self.prepare: Any = None

    async def __aenter__(self) -> PollerRole:
        await self.publisher.start()
        self.role = PollerRole(
            RoleContext(
                settings=self.settings,
                bootstrap_servers=self.settings.kafka.bootstrap_servers,
                publisher=self.publisher,
                rules=None,
                observer=Observer([]),
                shutdown=self.shutdown,
                instance_id=self.settings.cluster.instance_id,
            )
        )
        if self.prepare is not None:
            self.prepare(self.role)
        await self.role.start()
        self.task = asyncio.create_task(self.role.run())
        return self.role

    async def __aexit__(self, *exc: object) -> None:
        self.shutdown.stop()
        try:
            assert self.task is not None and self.role is not None
            try:
                await asyncio.wait_for(self.task, timeout=30)
            finally:
                await self.role.stop()
        finally:
            await self.publisher.stop()


async def write_feeds(settings: Settings, *changes: Feed | str | tuple[str, bytes]) -> None:
    """Write feed records (a Feed), tombstones (a url) or raw values ((url, value)) where
    ``feeds sync`` would: the partition of the feed's host."""
    cluster = settings.cluster
    publisher = KafkaPublisher(settings.kafka, settings.kafka.bootstrap_servers)
    await publisher.start()
    try:
        await publisher.ensure_topics(
            [cluster.articles_topic, settings.kafka.dead_letter_topic], compacted=[cluster.feeds_topic, cluster.feed_state_topic]
        )
        partitions = await publisher.partition_count(cluster.feeds_topic)
        for change in changes:
            if isinstance(change, Feed):
                key, value = feed_to_record(change)
                url = change.url
            elif isinstance(change, tuple):
                url, value = change
                key = url.encode()
            else:
                url, key, value = change, change.encode(), None
            record = Record("", url, cluster.feeds_topic, key, value, ())  # type: ignore[arg-type]
            await publisher.publish(record, partition=feed_partition(url, partitions))
    finally:
        await publisher.stop()


async def articles(settings: Settings, count: int) -> list[dict[str, Any]]:
    """The article documents on the articles topic, once there are at least ``count``."""
    records = await read_topic(
        settings.kafka.bootstrap_servers, settings.cluster.articles_topic, until=lambda rs: len(rs) >= count, timeout=20
    )
    return [orjson.loads(r.value) for r in records]


async def feed_states(settings: Settings, until_holds: Any) -> dict[str, dict[str, Any]]:
    """The latest feed-state value per feed url, once ``until_holds(states)``."""
    def latest(records: list[Any]) -> dict[str, dict[str, Any]]:
        return {r.key.decode(): orjson.loads(r.value) for r in records if r.value and r.key != b"__news-monitor-marker__"}

    records = await read_topic(
        settings.kafka.bootstrap_servers, settings.cluster.feed_state_topic, until=lambda rs: until_holds(latest(rs)), timeout=20
    )
    return latest(records)


def ids(documents: list[dict[str, Any]]) -> list[str]:
    return sorted(d["id"] for d in documents)


async def test_a_poller_publishes_new_and_changed_articles_once_and_follows_the_feed_list(
    broker: Any, feed_server: FeedServer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    settings = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-a", tag)
    first = feed_server.serve(f"/{tag}/a.xml", rss([("1", "one", "x"), ("2", "two", "y")]), etag='"a1"')
    await write_feeds(settings, Feed(url=first, interval=1.0))
    async with RunningPoller(settings) as role:
        assert ids(await articles(settings, 2)) == ["urn:t:1", "urn:t:2"]
        resource = feed_server.resources[f"/{tag}/a.xml"]
        await until(lambda: resource.hits >= 3, what="two conditional polls")
        assert [h.get("If-None-Match") for p, h in feed_server.requests if p == f"/{tag}/a.xml"][1:3] == ['"a1"', '"a1"']

        # A changed body: only the new item is published.
        feed_server.serve(f"/{tag}/a.xml", rss([("3", "three", "z"), ("1", "one", "x"), ("2", "two", "y")]), etag='"a2"')
        assert ids(await articles(settings, 3)) == ["urn:t:1", "urn:t:2", "urn:t:3"]

        # A feed added while it runs is polled; a malformed record goes to the dead-letter topic.
        second = feed_server.serve(f"/{tag}/b.xml", rss([("b1", "bee", "b")]))
        bad = f"http://127.0.0.1:{feed_server.port}/{tag}/bad.xml"
        await write_feeds(settings, Feed(url=second, interval=1.0), (bad, b"not json"))
        assert "urn:t:b1" in ids(await articles(settings, 4))
        letters = await read_topic(settings.kafka.bootstrap_servers, settings.kafka.dead_letter_topic, until=bool, timeout=15)
        reason = dict(letters[0].headers)["dlq_reason"].decode()
        assert letters[0].key == bad.encode() and "not UTF-8 JSON" in reason and "offset" in reason

        # A tombstone stops it.
        await write_feeds(settings, second)
        await until(lambda: second not in role.poller.feeds, what="the tombstone applied")
        hits = feed_server.resources[f"/{tag}/b.xml"].hits
        polls_of_first = feed_server.resources[f"/{tag}/a.xml"].hits
        await until(lambda: feed_server.resources[f"/{tag}/a.xml"].hits >= polls_of_first + 2, what="two more polls")
        assert feed_server.resources[f"/{tag}/b.xml"].hits == hits

        states = await feed_states(settings, lambda s: s.get(first, {}).get("etag") == '"a2"')
        assert states[first]["owner"] == "poller-a" and set(states[first]["seen"]) == {"urn:t:1", "urn:t:2", "urn:t:3"}

        # status --cluster: every feed with its owner; one that cannot be reached shows as in one process.
        missing = f"http://127.0.0.1:{feed_server.port}/{tag}/missing.xml"
        await write_feeds(settings, Feed(url=missing, interval=1.0))
        await feed_states(settings, lambda s: s.get(missing, {}).get("consecutive_errors", 0) >= 1)
        tracker, owners = await cluster_tracker(settings)
        out = io.StringIO()
        code = status(tracker, out, now=time.time(), fmt="json", owners=owners, err=io.StringIO())
        rows = {row["url"]: row for row in map(orjson.loads, out.getvalue().splitlines())}
        assert code == 1 and set(rows) == {first, missing}
        assert rows[missing]["health"] == "failing" and "HTTP 404" in rows[missing]["last_error"]
        assert rows[first]["health"] == "ok" and rows[first]["owner"] == rows[missing]["owner"] == "poller-a"
    # Nothing was published twice.
    assert len(await articles(settings, 4)) == 4


def count_detections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The samples the language detector classifies from now on (parsing on a thread: ``parse_workers = 0``)."""
    detection = importlib.import_module("monitor.language.detect")  # the package's detect() shadows the module
    detection.preload()
    classify = detection._classify
    assert classify is not None
    samples: list[str] = []

    def counted(sample: str) -> tuple[str, float]:
        samples.append(sample)
        return classify(sample)

    monkeypatch.setattr(detection, "_classify", counted)
    return samples


GERMAN = [(f"de{n}", f"Die Staats- und Regierungschefs der EU treffen sich in Brüssel ({n})",
           "Beim Gipfel geht es um neue Sanktionen gegen Russland.") for n in range(3)]  # fmt: skip
FRENCH = ("fr1", "Les dirigeants du G7 se retrouvent à Évian pour un sommet", "Un sommet consacré à la guerre en Ukraine.")


async def test_a_poller_detects_the_language_of_the_articles_it_publishes_only(
    broker: Any, feed_server: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Detection costs more than the rest of a parse: the entries the feed's seen map knows
    are not detected again, and every published article still has its language."""
    detected = count_detections(monkeypatch)
    tag = uuid.uuid4().hex[:10]
    settings = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-a", tag)
    url = feed_server.serve(f"/{tag}/de.xml", rss(GERMAN), etag='"1"')
    await write_feeds(settings, Feed(url=url, interval=1.0))
    async with RunningPoller(settings):
        assert [d["lang"] for d in await articles(settings, 3)] == ["de"] * 3
        assert len(detected) == 3
        feed_server.serve(f"/{tag}/de.xml", rss([FRENCH, *GERMAN]), etag='"2"')
        published = await articles(settings, 4)
        assert published[3]["id"] == "urn:t:fr1" and published[3]["lang"] == "fr"
        # One detection for the new entry, none for the three it had published before.
        assert len(detected) == 4


async def test_a_poller_writes_a_feed_state_when_a_new_owner_needs_it_not_after_every_poll(
    broker: Any, feed_server: FeedServer, tmp_path: Path
) -> None:
    """A 304 changes the counters and the next poll only: no record for it (docs/scaling.md,
    "Feed state"). New validators and seen items are written after their poll; at the stop,
    the state as it is, counters and all."""
    tag = uuid.uuid4().hex[:10]
    settings = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-a", tag)
    # Polled every second: a quiet feed's interval would grow poll after poll.
    settings = dataclasses.replace(settings, feeds=dataclasses.replace(settings.feeds, max_interval=1.0))
    url = feed_server.serve(f"/{tag}/a.xml", rss([("1", "one", "x")]), etag='"a1"')
    resource = feed_server.resources[f"/{tag}/a.xml"]
    await write_feeds(settings, Feed(url=url, interval=1.0))

    async def records() -> list[dict[str, Any]]:
        found = await read_topic(settings.kafka.bootstrap_servers, settings.cluster.feed_state_topic, until=bool, timeout=15)
        return [orjson.loads(r.value) for r in found if r.key == url.encode() and r.value]

    async with RunningPoller(settings) as role:
        await until(lambda: resource.hits >= 5, what="four conditional polls after the first")
        await until(lambda: not role.feed_states.dirty, what="the flush after the last poll")
        quiet = await records()
        # The first poll's state, and its first schedule: none for the 304s.
        assert 1 <= len(quiet) <= 2, f"{len(quiet)} records after {resource.hits} polls"
        assert role.store.skipped >= 3
        assert quiet[-1]["etag"] == '"a1"' and list(quiet[-1]["seen"]) == ["urn:t:1"]
        feed_server.serve(f"/{tag}/a.xml", rss([("2", "two", "y"), ("1", "one", "x")]), etag='"a2"')
        changed = await feed_states(settings, lambda s: s.get(url, {}).get("etag") == '"a2"')
        assert list(changed[url]["seen"]) == ["urn:t:2", "urn:t:1"]
    state = role.feed_states.peek(url)
    final = (await records())[-1]
    assert state is not None and final["polls"] == state.polls and final["next_poll"] == state.next_poll


async def test_status_cluster_without_a_feed_list_says_so(broker: Any, tmp_path: Path) -> None:
    settings = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-a", uuid.uuid4().hex[:10])
    with pytest.raises(MonitorError, match="no feed list was published") as caught:
        await cluster_tracker(settings)
    assert "feeds sync" in (caught.value.hint or "")


async def test_feeds_move_between_pollers_with_their_validators_and_seen_items(
    broker: Any, feed_server: FeedServer, tmp_path: Path
) -> None:
    """A second poller joins (a rebalance: the first writes the states of the partition it
    loses), then the first leaves (the second takes its partition too). Each moved feed
    goes on with its old validators and counters; nothing is published again but the one
    new item of a server that ignores conditional GET."""
    tag = uuid.uuid4().hex[:10]
    first = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-a", tag, topic_partitions=2)
    second = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-b", tag, topic_partitions=2)
    port = feed_server.port
    # Two hosts (127.0.0.1 and localhost: one server) in the two partitions.
    feeds = {f"http://{host}:{port}/{tag}/{host}.xml": f"/{tag}/{host}.xml" for host in ("127.0.0.1", "localhost")}
    for n, path in enumerate(feeds.values()):
        feed_server.serve(path, rss([(f"{n}a", "first", "x")]), etag=f'"v{n}"')
    assert sorted(feed_partition(url, 2) for url in feeds) == [0, 1]
    # Polled once an hour: after a move, only the new owner's claim names it as the owner.
    hourly = feed_server.serve(f"/{tag}/hourly.xml", rss([("h1", "hourly", "h")]))
    await write_feeds(first, *(Feed(url=url, interval=1.0) for url in feeds), Feed(url=hourly, interval=3600.0))
    joining = RunningPoller(second)
    try:
        async with RunningPoller(first) as a:
            assert ids(await articles(first, 3)) == ["urn:t:0a", "urn:t:1a", "urn:t:h1"]
            await until(lambda: all(feed_server.resources[path].hits >= 3 for path in feeds.values()), what="polls by the first")
            polls_by_a = min(a.feed_states.peek(url).polls for url in feeds)  # type: ignore[union-attr]
            b = await joining.__aenter__()
            await until(lambda: len(a.owned) == len(b.owned) == 1, timeout=40, what="the partitions split between two pollers")
            moved = next(url for url in feeds if feed_partition(url, 2) in b.owned)
            await until(lambda: (b.feed_states.peek(moved) or FeedState(moved)).polls > polls_by_a, what="a poll by the new owner")
            state = b.feed_states.peek(moved)
            assert state is not None and state.etag == f'"v{list(feeds).index(moved)}"' and b.counts["restored"] >= 1
            stays = next(url for url in feeds if url != moved)
        # The first poller left: the second takes its partition; that server now ignores conditional GET.
        feed_server.serve(feeds[stays], rss([("new", "new", "z"), (f"{list(feeds).index(stays)}a", "first", "x")]))
        await until(lambda: b.owned == {0, 1}, timeout=40, what="the second poller to own both partitions")
        published = await articles(first, 4)
        states = await feed_states(first, lambda s: all(s.get(url, {}).get("owner") == "poller-b" for url in [*feeds, hourly]))
        assert {states[url]["owner"] for url in [*feeds, hourly]} == {"poller-b"} and states[stays]["polls"] > polls_by_a
    finally:
        await joining.__aexit__(None, None, None)
    assert ids(published) == ["urn:t:0a", "urn:t:1a", "urn:t:h1", "urn:t:new"]
    assert len(await articles(first, 4)) == 4 and feed_server.resources[f"/{tag}/hourly.xml"].hits == 1


async def test_a_poller_stopped_during_a_rebalance_leaves_at_once_and_hands_its_feeds_over(
    broker: Any, feed_server: FeedServer, tmp_path: Path
) -> None:
    """A stop in the middle of a rebalance (here, while the poller restores the states of
    the partitions it was given, which a slow broker can stretch up to the restore's minute)
    does not wait for it: the poller leaves the group and exits cleanly, in a fraction of
    the session timeout; the other poller goes on from the states it wrote, with their
    validators, and publishes nothing again."""
    tag = uuid.uuid4().hex[:10]
    first = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-a", tag, topic_partitions=2)
    second = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-b", tag, topic_partitions=2)
    port = feed_server.port
    feeds = {f"http://{host}:{port}/{tag}/{host}.xml": f"/{tag}/{host}.xml" for host in ("127.0.0.1", "localhost")}
    for n, path in enumerate(feeds.values()):
        feed_server.serve(path, rss([(f"{n}a", "first", "x")]), etag=f'"v{n}"')
    await write_feeds(first, *(Feed(url=url, interval=1.0) for url in feeds))
    restoring, never = asyncio.Event(), asyncio.Event()

    def slow_restores(role: PollerRole) -> None:
        restore = role.store.restore

        async def restore_after_the_first(partitions: Any, timeout: float = 60.0) -> list[str]:
            if role.counts["rebalances"]:
                restoring.set()
                await never.wait()  # a restore that does not end while the test runs
            return await restore(partitions, timeout)

        role.store.restore = restore_after_the_first  # type: ignore[method-assign]

    leaving, joining = RunningPoller(first), RunningPoller(second)
    leaving.prepare = slow_restores
    try:
        a = await leaving.__aenter__()
        assert ids(await articles(first, 2)) == ["urn:t:0a", "urn:t:1a"]
        await until(lambda: all(feed_server.resources[path].hits >= 2 for path in feeds.values()), what="conditional polls")
        b_starting = asyncio.ensure_future(joining.__aenter__())
        await asyncio.wait_for(restoring.wait(), 40)
        started, requests = time.monotonic(), len(feed_server.requests)
        leaving.shutdown.stop()
        assert leaving.task is not None
        await asyncio.wait_for(asyncio.shield(leaving.task), 20)
        await asyncio.wait_for(a.stop(), 20)
        stopped = time.monotonic() - started
        assert stopped < first.cluster.session_timeout / 3, f"the stop took {stopped:.1f}s"
        assert not a.problems()
        b = await b_starting
        await until(lambda: b.owned == {0, 1}, timeout=40, what="the second poller to own both partitions")
        def polled_by_b() -> dict[str, str | None]:
            first_requests: dict[str, str | None] = {}
            for path, headers in feed_server.requests[requests:]:
                first_requests.setdefault(path, headers.get("If-None-Match"))
            return first_requests

        await until(lambda: set(polled_by_b()) >= set(feeds.values()), what="polls by the second")
        # Its first request of each feed carried the validators the first poller wrote.
        assert polled_by_b() == {path: f'"v{n}"' for n, path in enumerate(feeds.values())}
    finally:
        never.set()
        leaving.shutdown.stop()
        await asyncio.gather(*(t for t in (leaving.task,) if t is not None), return_exceptions=True)
        await leaving.publisher.stop()
        await joining.__aexit__(None, None, None)
    # Each article once: the second poller went on from the first one's seen items and validators.
    assert ids(await articles(first, 2)) == ["urn:t:0a", "urn:t:1a"]


async def test_a_broker_outage_loses_no_article(feed_server: FeedServer, tmp_path: Path) -> None:
    proxy = await KafkaProxy().start()
    try:
        tag = uuid.uuid4().hex[:10]
        settings = cluster_settings(tmp_path, proxy.bootstrap_servers, "poller-a", tag, request_timeout_ms=1500)
        path = f"/{tag}/a.xml"
        url = feed_server.serve(path, rss([("1", "one", "x")]), etag='"v1"')
        await write_feeds(settings, Feed(url=url, interval=1.0))
        async with RunningPoller(settings):
            assert ids(await articles(settings, 1)) == ["urn:t:1"]
            await until(lambda: feed_server.resources[path].hits >= 2, what="a conditional poll")
            proxy.down = True
            proxy.cut()
            feed_server.serve(path, rss([("2", "two", "y"), ("1", "one", "x")]), etag='"v2"')
            start = len(feed_server.requests)

            def failed_polls() -> int:
                return sum(p == path and h.get("If-None-Match") == '"v1"' for p, h in feed_server.requests[start:])

            # The changed body is fetched, cannot be published, and fetched again with the old validators.
            await until(lambda: failed_polls() >= 2, timeout=30, what="polls while the broker is away")
            proxy.down = False
            assert ids(await articles(settings, 2)) == ["urn:t:1", "urn:t:2"]
    finally:
        await proxy.stop()


async def test_a_restore_that_fails_stops_the_poller_before_any_poll(broker: Any, feed_server: FeedServer, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:10]
    settings = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-a", tag)
    url = feed_server.serve(f"/{tag}/a.xml", rss([("1", "one", "x")]))
    await write_feeds(settings, Feed(url=url, interval=1.0))

    async def broker_away(partitions: Any, timeout: float = 60.0) -> list[str]:
        raise BrokerError("reading feed-state partitions to their end took over 60s")

    running = RunningPoller(settings)
    # As if the broker went away between the assignment and the end of the state partitions.
    running.prepare = lambda role: setattr(role.store, "restore", broker_away)
    stopped: set[Any] = set()
    with pytest.raises(BrokerError, match="cannot restore"):  # the host stops the process with it (exit 3)
        async with running as role:
            assert running.task is not None
            stopped, _ = await asyncio.wait({running.task}, timeout=20)
    assert stopped, "the poller went on after its restore failed"
    assert role.problems()
    assert feed_server.resources[f"/{tag}/a.xml"].hits == 0


async def test_poller_and_matcher_in_one_process_turn_a_feed_into_alerts(broker: Any, feed_server: FeedServer, tmp_path: Path) -> None:
    """``run --role poller,matcher``: the role host runs both; the feed's article becomes the
    single process's alerts, and the endpoint shows the poller's part and its feed."""
    if not SEED.exists():
        pytest.skip("../shared/seeds is not present")
    tag = uuid.uuid4().hex[:10]
    settings = cluster_settings(tmp_path, broker.bootstrap_servers, "both", tag)
    settings = dataclasses.replace(
        settings,
        http=dataclasses.replace(settings.http, enabled=True, listen="127.0.0.1:0"),
        rules=dataclasses.replace(settings.rules, watch=False),
        health=dataclasses.replace(settings.health, check_interval=1.0),
    )
    text = escape(" ".join(SEED.read_text(encoding="utf-8").split()))
    url = feed_server.serve(f"/{tag}/summit.xml", rss([("s1", "Trump and Putin to meet in Anchorage", text)]))
    await write_feeds(settings, Feed(url=url, interval=1.0))
    host = RoleHost(settings, ("poller", "matcher"))
    task = asyncio.create_task(host.run(handle_signals=False))
    try:
        alerts = await read_alerts(broker.bootstrap_servers, [url], expect=3, timeout=30)
        assert {a["rule_id"] for a in alerts} >= {"summit"} and len({a["alert_id"] for a in alerts}) == len(alerts)
        assert host.http_address is not None
        base = "http://{}:{}".format(*host.http_address)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/status.json") as response:
                status = await response.json()
            async with session.get(f"{base}/metrics") as response:
                metrics = await response.text()
        poller = status["extra"]["roles"]["poller"]
        assert poller["feeds"] == 1 and poller["articles_published"] == 1 and poller["instance_id"] == "both"
        assert [feed["url"] for feed in status["feeds"]] == [url]
        assert "news_monitor_poller_articles_published_total 1.0" in metrics
    finally:
        host.stop()
        await asyncio.wait_for(task, timeout=30)


async def test_overlapping_exact_writes_each_write_every_state_they_were_given(broker: Any, tmp_path: Path) -> None:
    """A hand-over's write and the stop's overlap (the second waits for the first's lock):
    the second still writes its states as they are, though nothing a new owner needs
    changed (here, a few 304s), so the next owner goes on from the latest counters."""
    tag = uuid.uuid4().hex[:10]
    settings = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-a", tag, topic_partitions=2)
    await write_feeds(settings)  # the topics
    publisher = KafkaPublisher(settings.kafka, settings.kafka.bootstrap_servers)
    await publisher.start()
    try:
        role = PollerRole(
            RoleContext(
                settings=settings, bootstrap_servers=settings.kafka.bootstrap_servers, publisher=publisher, rules=None,
                observer=Observer([]), shutdown=Shutdown(10.0), instance_id="poller-a",
            )
        )  # fmt: skip
        urls = [f"https://{tag}-{n}.example/rss" for n in range(2)]
        for partition, url in enumerate(urls):
            role.store.partitions[url] = partition
            role.feed_states.put(FeedState(url, next_poll=time.time() + 60, polls=1))
        assert await role.writer.flush()
        for url in urls:
            state = role.feed_states.peek(url)
            assert state is not None
            state.polls += 5  # a few 304s: nothing a new owner needs changed
        handing_over = asyncio.ensure_future(role._write_exactly(urls[:1], {0}))
        await asyncio.sleep(0)  # one turn of the loop: its write is now waiting for Kafka
        assert not handing_over.done() and not role.feed_states.dirty
        skipped = role.store.skipped
        assert await role._write_exactly(urls, {0, 1}) and await handing_over
        assert role.store.skipped == skipped
        written = await feed_states(settings, lambda s: all(s.get(url, {}).get("polls") == 6 for url in urls))
        assert {url: written[url]["polls"] for url in urls} == dict.fromkeys(urls, 6)
    finally:
        await publisher.stop()


async def test_a_second_stop_ends_the_pollers_leave_when_the_broker_is_down(feed_server: FeedServer, tmp_path: Path) -> None:
    """The broker gone, a poller's stop waits for its last state write and its leave until
    the deadline (README: a second SIGTERM stops at once): a second stop ends the wait, and
    the leave gets its last second."""
    proxy = await KafkaProxy().start()
    try:
        tag = uuid.uuid4().hex[:10]
        settings = cluster_settings(tmp_path, proxy.bootstrap_servers, "poller-a", tag)
        url = feed_server.serve(f"/{tag}/a.xml", rss([("1", "one", "x")]))
        await write_feeds(settings, Feed(url=url, interval=60.0))
        poller = RunningPoller(settings)
        poller.shutdown = Shutdown(20.0)
        role = await poller.__aenter__()
        try:
            await until(lambda: role.assigned.is_set() and not role.feed_states.dirty, timeout=30, what="the first poll's state")
            proxy.down = True
            proxy.cut()
            role.shutdown.stop()
            assert poller.task is not None
            await asyncio.wait_for(poller.task, 20)
            # The state write and the leave wait for the broker, up to the deadline (20 s away).
            asyncio.get_running_loop().call_later(0.5, role.shutdown.stop_now)
            started = time.monotonic()
            await asyncio.wait_for(role.stop(), 40)
            stopped = time.monotonic() - started
            assert stopped < role.shutdown.timeout / 4, f"the stop took {stopped:.1f}s"
        finally:
            role.shutdown.stop_now()
            if poller.task is not None:
                await asyncio.gather(poller.task, return_exceptions=True)
            await poller.publisher.stop(0.0)
    finally:
        await proxy.stop()


async def test_a_feed_record_outside_its_hosts_partition_moves_nothing_and_stops_no_state_write(
    broker: Any, feed_server: FeedServer, tmp_path: Path
) -> None:
    """A copy of a feed's record in another partition than its host's (a producer with
    another partitioner) is passed over (docs/scaling.md, "a misplaced record"): a rebalance
    that takes that partition away neither stops the feed's state writes nor forgets its seen
    items, and a feed whose only record is misplaced is polled by no one."""
    tag = uuid.uuid4().hex[:10]
    first = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-a", tag, topic_partitions=2)
    second = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-b", tag, topic_partitions=2)
    path, stray_path = f"/{tag}/a.xml", f"/{tag}/stray.xml"
    url = feed_server.serve(path, rss([("1", "one", "x")]), etag='"a1"')
    stray = feed_server.serve(stray_path, rss([("s", "stray", "s")]))
    home = feed_partition(url, 2)
    await write_feeds(first, Feed(url=url, interval=1.0))
    joining = RunningPoller(second)
    try:
        async with RunningPoller(first) as a:
            assert ids(await articles(first, 1)) == ["urn:t:1"]
            await until(lambda: feed_server.resources[path].hits >= 2, what="a conditional poll")
            publisher = KafkaPublisher(first.kafka, first.kafka.bootstrap_servers)
            await publisher.start()
            try:
                for feed in (Feed(url=url, interval=1.0), Feed(url=stray, interval=1.0)):
                    key, value = feed_to_record(feed)
                    record = Record("", feed.url, first.cluster.feeds_topic, key, value, ())
                    await publisher.publish(record, partition=1 - home)
                # Not a feed at all (a key that is not UTF-8): dead-lettered, wherever it is.
                bad = next(k for k in (b"\xff", b"\xff\xff", b"x\xff", b"y\xff", b"z\xff") if feed_partition(k.decode("utf-8", "replace"), 2) != 1 - home)
                await publisher.publish(Record("", "", first.cluster.feeds_topic, bad, b"{}", ()), partition=1 - home)
            finally:
                await publisher.stop()
            read = lambda: a.counts["feed_records_misplaced"] >= 2 or feed_server.resources[stray_path].hits > 0  # noqa: E731
            await until(read, what="the misplaced records read")
            await until(lambda: a.counts["feed_records_dead_lettered"] == 1, what="the record that is not a feed dead-lettered")
            b = await joining.__aenter__()
            await until(lambda: len(a.owned) == len(b.owned) == 1, timeout=40, what="the partitions split between two pollers")
            owner = a if home in a.owned else b
            polls = (owner.feed_states.peek(url) or FeedState(url)).polls
            feed_server.serve(path, rss([("2", "two", "y"), ("1", "one", "x")]), etag='"a2"')
            states = await feed_states(first, lambda s: s.get(url, {}).get("etag") == '"a2"')
            assert states[url]["polls"] > polls and states[url]["owner"] == owner.owner
            published = await articles(first, 2)
    finally:
        if joining.task is not None:
            await joining.__aexit__(None, None, None)
    assert ids(published) == ["urn:t:1", "urn:t:2"]
    assert feed_server.resources[stray_path].hits == 0
    written = await read_topic(first.kafka.bootstrap_servers, first.cluster.feed_state_topic)
    assert {r.partition for r in written if r.key == url.encode()} == {home}


async def test_a_feed_a_410_disabled_is_polled_again_once_removed_and_put_back(
    broker: Any, feed_server: FeedServer, tmp_path: Path
) -> None:
    """As in one process (docs/polling.md): the feed's removal from the feeds topic clears
    its 410 mark, on news.feed-state too, so put back it is polled again."""
    tag = uuid.uuid4().hex[:10]
    settings = cluster_settings(tmp_path, broker.bootstrap_servers, "poller-a", tag)
    path = f"/{tag}/back.xml"
    url = feed_server.serve(path, "", status=410)
    await write_feeds(settings, Feed(url=url, interval=1.0))
    async with RunningPoller(settings):
        await feed_states(settings, lambda s: "410" in s.get(url, {}).get("disabled", ""))
        await write_feeds(settings, url)
        await feed_states(settings, lambda s: url in s and "disabled" not in s[url])
        feed_server.serve(path, rss([("back", "back", "x")]))
        await write_feeds(settings, Feed(url=url, interval=1.0))
        assert ids(await articles(settings, 1)) == ["urn:t:back"]
