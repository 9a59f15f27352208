"""The matcher role (``run --role matcher``) on the real broker: article records in,
the single process's alerts out, offsets committed only after the alerts' acks, state
handed over through news.matcher-state, bad records dead-lettered.

Each test has its own topics and consumer group. Joining a group on Tansu takes a few
seconds (half the session timeout), so there are few tests and each checks a lot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from monitor.adapters.kafka import KafkaPublisher, TopicAdmin
from monitor.app import matcher_role
from monitor.app.matcher_role import MatcherRole
from monitor.app.roles import RoleHost
from monitor.cluster import is_marker, state_from_record
from monitor.delivery.records import article_record
from monitor.errors import ConfigError
from monitor.model import Article, Record, alert_id_for
from tests.kafka_proxy import KafkaProxy
from tests.support import REFERENCE_TOPICS, SHARED, make_settings, read_alerts, read_topic, until

pytestmark = pytest.mark.integration

SEED = SHARED / "seeds" / "000_2d2ab9e6ed23a7ee.txt"


def _seed_article(run: str, n: int = 0) -> Article:
    if not SEED.exists():
        pytest.skip("../shared/seeds is not present")
    body = " ".join(SEED.read_text(encoding="utf-8").split())
    return Article(
        id=f"urn:matcher-test:{run}:{n}",
        feed_url=f"https://matcher-test.example/{run}/feed.xml",
        title="Trump and Putin to meet in Anchorage",
        body=body,
        url=f"https://matcher-test.example/{run}/story-{n}",
    )


def _settings(tmp_path: Path, bootstrap: str, run: str, name: str = "a", **cluster: Any):
    return make_settings(
        tmp_path / name,
        bootstrap,
        overrides={
            "cluster": {
                "articles_topic": f"news.articles.{run}",
                "matcher_state_topic": f"news.matcher-state.{run}",
                "feeds_topic": f"news.feeds.{run}",
                "feed_state_topic": f"news.feed-state.{run}",
                "matcher_group": f"matchers-{run}",
                "poller_group": f"pollers-{run}",
                "session_timeout": 6.0,
                "instance_id": name,
                **cluster,
            },
            "kafka": {"dead_letter_topic": f"alerts.dead-letter.{run}", "topic_partitions": 2},
            "rules": {"watch": False},
            # The test articles share one text: as stories they would alert once in all.
            "stories": {"enabled": False},
            "health": {"check_interval": 1.0},
        },
    )


@contextlib.asynccontextmanager
async def _matcher(settings) -> AsyncIterator[MatcherRole]:
    """A matcher process (its role host) running in the background; the host is ``role.host``."""
    host = RoleHost(settings, ("matcher",))
    task = asyncio.create_task(host.run(handle_signals=False))
    try:
        await until(lambda: bool(host.roles) or task.done(), timeout=30, what="the matcher to start")
        if task.done():
            task.result()
        role = host.roles[0]
        assert isinstance(role, MatcherRole)
        role.host = host  # type: ignore[attr-defined]
        yield role
    finally:
        host.stop()
        await asyncio.wait_for(task, timeout=30)


async def _publisher(settings) -> KafkaPublisher:
    publisher = KafkaPublisher(settings.kafka, settings.kafka.bootstrap_servers)
    await publisher.start()
    return publisher


async def test_a_matcher_alerts_as_the_single_process_through_refusals_and_dead_letters_garbage(tmp_path):
    """Article records in, the single process's alerts out. While Kafka refuses the alerts
    (a retriable error, as in an outage) the batch is neither remembered nor committed;
    once it takes them they go out and the batch commits. Garbage is dead-lettered."""
    run = uuid.uuid4().hex[:8]
    proxy = await KafkaProxy(marker=b"alerts.", error_code=7).start()  # REQUEST_TIMED_OUT, for every alert topic
    bootstrap = proxy.bootstrap_servers
    settings = _settings(tmp_path, bootstrap, run)
    settings = dataclasses.replace(
        settings,
        http=dataclasses.replace(settings.http, enabled=True, listen="127.0.0.1:0"),
        kafka=dataclasses.replace(
            settings.kafka, request_timeout_ms=1000, enable_idempotence="false", dead_letter_topic=f"dead-letters.{run}"
        ),
        delivery=dataclasses.replace(settings.delivery, retry_backoff_initial=0.05, retry_backoff_max=0.2, max_attempts=1),
    )
    topic = settings.cluster.articles_topic
    article = _seed_article(run)
    publisher = await _publisher(settings)
    try:
        async with _matcher(settings) as matcher:
            await until(lambda: matcher.status()["partitions"] == [0, 1], timeout=30, what="both partitions")
            await publisher.publish(article_record(article, topic), partition=0)
            await publisher.publish(Record("", "", topic, b"garbage-key", b"{not json", (("origin", b"test"),)), partition=1)
            await until(lambda: proxy.refused >= 3, timeout=30, what="the broker to refuse the alerts")
            assert matcher.counts["alerts"] == 3 and matcher.counts["batches"] == 0
            assert 0 not in matcher.committed
            proxy.marker = b"nothing-is-refused-now"
            await until(lambda: matcher.status()["committed"] == {"0": 1, "1": 1}, timeout=30, what="both records committed")
            alerts = await read_alerts(bootstrap, [article.feed_url], expect=3)
            assert matcher.status()["alerts"] == 3 and matcher.status()["dead_lettered"] == 1
            await _check_endpoint(matcher.host)
        # The same alerts as the single process: one per reference topic, deterministic ids.
        assert sorted(a["topic"] for a in alerts) == sorted(REFERENCE_TOPICS)
        assert {a["alert_id"] for a in alerts} == {alert_id_for(a["rule_id"], article.id) for a in alerts}
        assert all(a["article"]["id"] == article.id for a in alerts)
        summit = await read_topic(bootstrap, "alerts.summit", until=lambda rs: any(_about(r, article) for r in rs))
        headers = dict(next(r for r in summit if _about(r, article)).headers)
        assert headers["ce_type"] == b"news.alert.v1" and headers["ce_subject"] == article.id.encode()
        # The garbage went to the dead-letter topic with its reason, its key, value and headers kept.
        letters = await read_topic(bootstrap, settings.kafka.dead_letter_topic, until=bool)
        letter = dict(letters[0].headers)
        assert letters[0].value == b"{not json" and letters[0].key == b"garbage-key" and letter["origin"] == b"test"
        assert letter["dlq_reason"].startswith(b"not JSON") and letter["dlq_original_topic"] == topic.encode()
        # What the matcher remembers of the article, on its partition of the state topic.
        states = await read_topic(
            bootstrap, settings.cluster.matcher_state_topic, until=lambda rs: any(not is_marker(r.key) for r in rs)
        )
        states = [r for r in states if not is_marker(r.key)]
        remembered = state_from_record(states[0].key, states[0].value)
        assert states[0].partition == 0 and remembered.id == article.id
        assert remembered.rules == {"summit", "sanctions", "arms-control"}

        # Committed in the group: a restart (or a new owner) reads from there on.
        assert await _committed(settings, topic) == {0: 1, 1: 1}
    finally:
        await publisher.stop()
        await proxy.stop()


async def _check_endpoint(host: RoleHost) -> None:
    """The HTTP endpoint shows the matcher's part: its partitions, counts and alerts."""
    assert host.http_address is not None
    host_name, port = host.http_address
    base = f"http://{host_name}:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/status.json") as response:
            status = await response.json()
        async with session.get(f"{base}/metrics") as response:
            metrics = await response.text()
        async with session.get(f"{base}/") as response:
            page = await response.text()
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{base}/readyz") as response:
            ready = await response.json()
    assert ready == {"ready": True, "problems": []}
    part = status["extra"]["roles"]["matcher"]
    assert part["partitions"] == [0, 1] and part["dead_lettered"] == 1 and part["committed"] == {"0": 1, "1": 1}
    assert status["alerts_raised"] == 3 and len(status["alerts"]) == 3
    assert "news_monitor_matcher_records_total 2.0" in metrics and "news_monitor_matcher_partitions 2.0" in metrics
    assert 'news_monitor_alerts_total{rule="summit",topic="alerts.summit"} 1.0' in metrics
    assert '<tr data-role="matcher">' in page


async def _committed(settings, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=settings.cluster.matcher_group,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in (0, 1)}
    finally:
        await consumer.stop()


def _about(record: Any, article: Article) -> bool:
    return orjson.loads(record.value)["article"]["id"] == article.id


async def test_a_joining_matcher_takes_partitions_with_their_state(broker, tmp_path):
    run = uuid.uuid4().hex[:8]
    first_settings = _settings(tmp_path, broker.bootstrap_servers, run, "first")
    second_settings = _settings(tmp_path, broker.bootstrap_servers, run, "second")
    topic = first_settings.cluster.articles_topic
    articles = [_seed_article(run, 0), _seed_article(run, 1)]
    publisher = await _publisher(first_settings)
    try:
        async with _matcher(first_settings) as first:
            await until(lambda: first.status()["partitions"] == [0, 1], timeout=30, what="both partitions")
            for partition, article in enumerate(articles):
                await publisher.publish(article_record(article, topic), partition=partition)
            await until(lambda: first.status()["committed"] == {"0": 1, "1": 1}, what="the first batches committed")
            assert first.counts["alerts"] == 6
            async with _matcher(second_settings) as second:
                def split() -> bool:
                    owned = (set(first.status()["partitions"]), set(second.status()["partitions"]))
                    return all(owned) and owned[0] | owned[1] == {0, 1}

                await until(split, timeout=30, what="the group to split the partitions")
                # The new owner starts at the committed offsets: nothing is read twice.
                assert second.counts["restored"] == 1 and second.counts["records"] == 0
                # The partition the first matcher kept is not read again from the state topic.
                assert first.counts["restored"] == 0
                # The same articles again: known on whichever matcher owns them now.
                for partition, article in enumerate(articles):
                    await publisher.publish(article_record(article, topic), partition=partition)
                def repeats_committed() -> bool:
                    return all(max(m.committed.get(p, 0) for m in (first, second)) == 2 for p in (0, 1))

                await until(repeats_committed, what="the repeats committed")
                assert first.counts["records"] + second.counts["records"] == 4
                assert first.counts["duplicate"] + second.counts["duplicate"] == 2
                assert first.counts["alerts"] == 6 and second.counts["alerts"] == 0
    finally:
        await publisher.stop()
    alerts = await read_alerts(broker.bootstrap_servers, [articles[0].feed_url])
    assert len(alerts) == 6 and len({a["alert_id"] for a in alerts}) == 6



async def test_a_matcher_stopped_during_a_rebalance_leaves_at_once_and_the_other_takes_over(broker, tmp_path, monkeypatch):
    """A stop in the middle of a rebalance (here, while the joining matcher restores the
    state of the partition it was given, which a slow broker can stretch up to the
    restore's minute) does not wait for it: the matcher abandons the restore, leaves the
    group and exits cleanly in a fraction of the session timeout; the other matcher takes
    the partition back and matches what was published to it meanwhile, each alert once."""
    run = uuid.uuid4().hex[:8]
    first_settings = _settings(tmp_path, broker.bootstrap_servers, run, "first")
    second_settings = _settings(tmp_path, broker.bootstrap_servers, run, "second")
    topic = first_settings.cluster.articles_topic
    articles = [_seed_article(run, n) for n in range(3)]
    armed, restoring, never = asyncio.Event(), asyncio.Event(), asyncio.Event()
    given: set[int] = set()
    read = matcher_role.read_to_end

    async def slow_read(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if armed.is_set() and not restoring.is_set():
            given.update(args[4])
            restoring.set()
            await never.wait()  # a restore that does not end while the test runs
        async for record in read(*args, **kwargs):
            yield record

    monkeypatch.setattr(matcher_role, "read_to_end", slow_read)
    publisher = await _publisher(first_settings)
    second = RoleHost(second_settings, ("matcher",))
    leaving: asyncio.Task[None] | None = None
    try:
        async with _matcher(first_settings) as first:
            await until(lambda: first.status()["partitions"] == [0, 1], timeout=30, what="both partitions")
            for partition, article in enumerate(articles[:2]):
                await publisher.publish(article_record(article, topic), partition=partition)
            await until(lambda: first.status()["committed"] == {"0": 1, "1": 1}, what="the first batches committed")
            armed.set()
            leaving = asyncio.create_task(second.run(handle_signals=False))
            await asyncio.wait_for(restoring.wait(), 30)
            (moved,) = given
            # Published while the partition is between owners: a new article and a repeat.
            await publisher.publish(article_record(articles[2], topic), partition=moved)
            await publisher.publish(article_record(articles[moved], topic), partition=moved)
            started = time.monotonic()
            second.stop()
            done, _ = await asyncio.wait({leaving}, timeout=first_settings.cluster.session_timeout)
            stopped = time.monotonic() - started
            assert leaving in done, f"the stop still waited for the restore after {stopped:.1f}s"
            leaving.result()
            assert stopped < first_settings.cluster.session_timeout / 3, f"the stop took {stopped:.1f}s"
            await until(lambda: first.committed.get(moved) == 3, timeout=30, what="the first matcher to take the partition back")
            assert first.status()["partitions"] == [0, 1]
            assert first.counts["alerts"] == 9 and first.counts["duplicate"] == 1
    finally:
        never.set()
        second.stop()
        if leaving is not None:
            await asyncio.gather(leaving, return_exceptions=True)
        await publisher.stop()
    alerts = await read_alerts(broker.bootstrap_servers, [articles[0].feed_url], expect=9)
    assert len(alerts) == 9 and len({a["alert_id"] for a in alerts}) == 9


async def test_a_matcher_refuses_a_state_topic_not_co_partitioned_with_the_articles(broker, tmp_path):
    run = uuid.uuid4().hex[:8]
    settings = _settings(tmp_path, broker.bootstrap_servers, run)
    wider = dataclasses.replace(settings.kafka, topic_partitions=3)
    await TopicAdmin(wider, broker.bootstrap_servers).ensure([settings.cluster.matcher_state_topic])
    with pytest.raises(ConfigError, match=r"has 2 partitions but news\.matcher-state\.\w+ has 3") as caught:
        await RoleHost(settings, ("matcher",)).run(handle_signals=False)
    assert "give news.matcher-state" in str(caught.value)


async def test_an_article_whose_matching_raises_is_dead_lettered_and_its_neighbours_alert(broker, tmp_path, monkeypatch):
    """A bug met on one article of a batch (here building its alert raises) dead-letters
    that article, with nothing of it written; the articles before and after it alert and
    the batch commits past it, so a restart does not read it again. It ended the matcher, and
    every restart read the same uncommitted batch and ended again."""
    from monitor import matching

    run = uuid.uuid4().hex[:8]
    settings = _settings(tmp_path, broker.bootstrap_servers, run)
    topic = settings.cluster.articles_topic
    before, poison, after = (_seed_article(run, n) for n in range(3))
    real_build = matching.build_alert

    def build_alert(match, article, **kwargs):
        if article.id == poison.id:
            raise ValueError("injected bug")
        return real_build(match, article, **kwargs)

    monkeypatch.setattr(matching, "build_alert", build_alert)
    # Made before the records are published to it, with the partitions of the state topic.
    await TopicAdmin(settings.kafka, broker.bootstrap_servers).ensure([topic, settings.cluster.matcher_state_topic])
    publisher = await _publisher(settings)
    try:
        for article in (before, poison, after):
            await publisher.publish(article_record(article, topic), partition=0)
        async with _matcher(settings) as matcher:
            await until(lambda: matcher.status()["committed"].get("0") == 3, timeout=30, what="the batch committed")
            assert matcher.status()["failed"] == 1 and matcher.counts["alerts"] == 6 and matcher.counts["new"] == 2
            assert [m.value for m in matcher.metrics() if m.name == "matcher_articles_failed"] == [1]
        letters = await read_topic(broker.bootstrap_servers, settings.kafka.dead_letter_topic, until=bool)
        assert [letter.key for letter in letters] == [poison.id.encode()]
        reason = dict(letters[0].headers)["dlq_reason"].decode()
        assert reason == "matching the article failed on a bug (ValueError: injected bug): please report it"
        assert orjson.loads(letters[0].value)["id"] == poison.id
        # Committed in the group past the poison: a restart (or a new owner) reads on from there.
        assert (await _committed(settings, topic))[0] == 3
    finally:
        await publisher.stop()
    alerts = await read_alerts(broker.bootstrap_servers, [before.feed_url], expect=6)
    assert {a["article"]["id"] for a in alerts} == {before.id, after.id} and len(alerts) == 6
