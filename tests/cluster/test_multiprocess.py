"""The scale-out roles as separate OS processes on the real broker (issue #15's proof).

3 pollers and 2 matchers (``news-monitor run --role poller|matcher``), each its own
process with its own state dir and HTTP port, share 600 feeds that ``news-monitor feeds
sync`` put on the feeds topic. The feeds live on 12 loopback hosts (two in each of the 6
partitions: feeds are sharded by host), served by a local aiohttp server that logs every
request with the poller's User-Agent. Matching items appear in three waves while it runs:
before anything dies, after a poller was SIGKILLed and after a matcher was SIGKILLed.

Checked: each feed is polled by one poller at a time (no two requests for one feed within
half an interval, ever) and about once per interval; the dead poller's feeds are polled
again by the others within session_timeout + one interval + 10 s, and the survivors' own
/status.json lists every partition between them; after the dead matcher, the survivor
owns every partition and alerts on articles of each; at the end every expected alert is on
its topic (duplicates, same alert_id, are counted and printed; a missing alert fails),
no feed was re-published wholesale after a move (the first items of every feed are on the
articles topic exactly once), and nothing went to the dead-letter topic.
"""

from __future__ import annotations

import collections
import itertools
import random
import time

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from tests.cluster.harness import Cluster, HostedFeeds, TopicTail, spread_hosts, wait_for
from tests.support import alerts_from

pytestmark = pytest.mark.integration

PARTITIONS = 6
FEEDS = 600
INTERVAL = 5.0
SESSION_TIMEOUT = 6.0
WAVE = 48  # matching items per wave


def _words(rng: random.Random, n: int) -> str:
    """Distinct filler text: no two items look like copies of one story."""
    return " ".join("".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(3)) for _ in range(n))


def _on_every_partition(urls: list[str], wave: str) -> list[str]:
    """WAVE feeds whose new item's article (id ``urn:mp:<wave>-<feed>``) lands on each
    partition of the articles topic alike, by the producer's default partitioner."""
    partitioner = DefaultPartitioner()
    by_partition: dict[int, list[str]] = collections.defaultdict(list)
    for n, url in enumerate(urls):
        by_partition[partitioner(f"urn:mp:{wave}-{n}".encode(), list(range(PARTITIONS)), [])].append(url)
    return [url for p in range(PARTITIONS) for url in by_partition[p][: WAVE // PARTITIONS]]


async def _partitions(cluster: Cluster, name: str, role: str) -> list[int]:
    """The partitions process ``name`` says (``/status.json``) its ``role`` owns."""
    status = await cluster.status(name)
    return sorted(status["extra"]["roles"][role]["partitions"])


@pytest.fixture
async def feeds():
    hosted = await HostedFeeds(spread_hosts(PARTITIONS, 2)).start()
    try:
        yield hosted
    finally:
        await hosted.stop()


async def test_pollers_and_matchers_share_the_work_and_survive_sigkill(broker, feeds, tmp_path):
    rng = random.Random(15)
    urls = feeds.add(FEEDS, lambda n: [(f"{n}-{k}", f"Feed {n} item {k}", _words(rng, 30)) for k in range(2)])
    first_items = {f"urn:mp:{n}-{k}" for n in range(FEEDS) for k in range(2)}
    rules = tmp_path / "rules"
    rules.mkdir()
    cluster = Cluster(broker.bootstrap_servers, tmp_path, partitions=PARTITIONS, rules=(str(rules),), session_timeout=SESSION_TIMEOUT,
                      feeds={"interval": INTERVAL, "max_interval": INTERVAL}, extra={"kafka": {"linger_ms": 1}})
    alerts_topic = f"mp.{cluster.uid}.alerts"
    (rules / "zorblax.yaml").write_text(f"rules:\n  - id: zorblax\n    query: zorblax\n    topic: {alerts_topic}\n")
    dead_letters = f"mp.{cluster.uid}.dead-letter"
    await cluster.create_topics([alerts_topic, dead_letters])
    tail = await TopicTail(broker.bootstrap_servers, [alerts_topic, cluster.topics["articles_topic"], dead_letters], PARTITIONS).start()
    expected: dict[str, str] = {}  # alerted title -> wave

    def wave(name: str, chosen: list[str]) -> None:
        for url in chosen:
            guid = f"{name}-{urls.index(url)}"
            title = f"Zorblax sighted {guid}"
            feeds.publish(url, (guid, title, f"zorblax {_words(rng, 30)}"))
            expected[title] = name

    def alerted(name: str) -> bool:
        titles = {orjson.loads(r.value)["article"]["title"] for r in tail.records[alerts_topic]}
        return all(title in titles for title, w in expected.items() if w == name)

    try:
        result = cluster.sync(urls)
        assert result.returncode == 0, result.stderr
        pollers = [cluster.start(f"poller-{n}", "poller") for n in range(3)]
        matchers = [cluster.start(f"matcher-{n}", "matcher") for n in range(2)]
        everyone_polled = await wait_for(
            lambda: len({h.feed for h in feeds.hits}) == FEEDS, 120, "a first poll of every feed", cluster=cluster, on_timeout=cluster.logs
        )
        started = feeds.hits[-1].at

        wave("a", rng.sample(urls, WAVE))
        await wait_for(lambda: alerted("a"), 60, "the alerts of the first wave", cluster=cluster, on_timeout=cluster.logs)
        # Three more intervals of steady polling before anything dies.
        await wait_for(lambda: feeds.hits[-1].at >= started + 3 * INTERVAL, 4 * INTERVAL, "three intervals of polling", cluster=cluster)
        steady = (started + INTERVAL, feeds.hits[-1].at)

        # -- a poller dies --------------------------------------------------------------------
        victim = pollers[1]
        last_agent = {h.feed: h.agent for h in feeds.hits}
        orphans = {url for url, agent in last_agent.items() if agent == f"mp-test/{victim.name}"}
        victim.kill()
        killed_at = time.monotonic()
        limit = SESSION_TIMEOUT + INTERVAL + 10

        def adopted() -> set[str]:
            # The victim's last requests may still be read by the server after its death.
            return {h.feed for h in feeds.hits if h.at > killed_at and h.feed in orphans and h.agent != f"mp-test/{victim.name}"}

        handover = await wait_for(lambda: adopted() == orphans, limit, f"the {len(orphans)} feeds of the killed poller to be polled again",
                                  cluster=cluster, on_timeout=lambda: f"{len(orphans - adopted())} not yet\n{cluster.logs()}")
        owned = [await _partitions(cluster, p.name, "poller") for p in pollers if p is not victim]
        assert sorted(owned[0] + owned[1]) == list(range(PARTITIONS)), f"the surviving pollers own {owned}"
        wave("b", rng.sample(sorted(orphans), WAVE // 2) + rng.sample(sorted(set(urls) - orphans), WAVE // 2))
        await wait_for(lambda: alerted("b"), 60, "the alerts of the second wave", cluster=cluster, on_timeout=cluster.logs)

        # -- a matcher dies ---------------------------------------------------------------------
        matchers[0].kill()
        wave("c", _on_every_partition(urls, "c"))
        await wait_for(lambda: alerted("c"), SESSION_TIMEOUT + 60, "the alerts of the third wave, by the surviving matcher",
                       cluster=cluster, on_timeout=cluster.logs)
        survivor = await _partitions(cluster, matchers[1].name, "matcher")
        assert survivor == list(range(PARTITIONS)), f"the surviving matcher owns {survivor}"
        codes = cluster.stop_all()
    finally:
        cluster.stop_all()
        await tail.stop()

    assert all(code == 0 for code in codes.values()), f"a role did not stop cleanly on SIGTERM: {codes}\n{cluster.logs()}"
    agents = {h.agent for h in feeds.hits if steady[0] <= h.at < steady[1]}
    assert agents == {f"mp-test/{p.name}" for p in pollers}, f"not every poller polled: {agents}"

    # Each feed polled by one poller at a time: never two requests within half an interval.
    by_feed = collections.defaultdict(list)
    for hit in feeds.hits:
        by_feed[hit.feed].append(hit)
    doubled = {url: [(round(a.at, 2), a.agent, round(b.at, 2), b.agent)]
               for url, hits in by_feed.items() for a, b in itertools.pairwise(hits) if b.at - a.at < INTERVAL / 2}
    assert not doubled, f"{len(doubled)} feeds polled twice within half an interval, e.g. {list(doubled.items())[:3]}"
    # About once per interval while nothing died.
    span = steady[1] - steady[0]
    counts = collections.Counter(sum(steady[0] <= h.at < steady[1] for h in hits) for hits in by_feed.values())
    low, high = int(span / INTERVAL) - 1, int(span / INTERVAL) + 1
    assert set(counts) <= set(range(low, high + 1)), f"polls per feed in {span:.1f}s at a {INTERVAL:g}s interval: {sorted(counts.items())}"

    # Every expected alert, exactly one alert id each; duplicates counted and reported.
    alerts = alerts_from(tail.records[alerts_topic])  # each checked against schemas/alert-v1.json
    ids_by_title = collections.defaultdict(set)
    for alert in alerts:
        ids_by_title[alert["article"]["title"]].add(alert["alert_id"])
    missing = sorted(set(expected) - set(ids_by_title))
    assert not missing, f"{len(missing)} expected alerts missing, e.g. {missing[:5]}\n{cluster.logs()}"
    assert set(ids_by_title) == set(expected), f"unexpected alerts: {sorted(set(ids_by_title) - set(expected))[:5]}"
    assert all(len(ids) == 1 for ids in ids_by_title.values()), "a repeated alert must carry the same alert_id"
    duplicates = len(alerts) - len(expected)
    print(f"\nalerts: {len(expected)} expected, {len(alerts)} on {alerts_topic} ({duplicates} duplicates, same alert_id)")

    # The third wave's articles were on every partition (as chosen): the surviving matcher took them all.
    articles = tail.records[cluster.topics["articles_topic"]]
    guid_partitions = {orjson.loads(r.value)["guid"]: r.partition for r in articles}
    third = {guid_partitions[f"urn:mp:{t.rsplit(' ', 1)[1]}"] for t, w in expected.items() if w == "c"}
    assert third == set(range(PARTITIONS)), f"the third wave reached partitions {sorted(third)} only"

    # No feed re-published wholesale after a move: its first items are on the articles topic once.
    published = collections.Counter(orjson.loads(r.value)["guid"] for r in articles)
    repeated = {g: n for g, n in published.items() if g in first_items and n > 1}
    assert set(published) >= first_items and not repeated, f"{len(repeated)} first items published again, e.g. {list(repeated.items())[:5]}"
    later_repeats = sum(n - 1 for g, n in published.items() if g not in first_items)
    print(f"articles: {len(articles)} records, {len(published)} distinct; wave items published twice: {later_repeats}")
    print(f"first poll of all {FEEDS} feeds after {everyone_polled:.1f}s; the killed poller's {len(orphans)} feeds polled again after {handover:.1f}s")
    assert not tail.records[dead_letters], f"dead letters: {[r.headers for r in tail.records[dead_letters]][:3]}"
