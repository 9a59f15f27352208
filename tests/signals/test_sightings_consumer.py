"""``news-monitor signals`` on the matchers' sightings (``[signals] sightings_topic``), through
the real broker: a story's copies, which raise no alert, count as in the single process; a
record that is not a sighting is skipped with its reason; a restart repeats nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from structlog.testing import capture_logs

from monitor.adapters.kafka import KafkaPublisher
from monitor.app.matcher_role import MatcherRole
from monitor.app.roles import RoleHost
from monitor.app.signals import SignalsProcess
from monitor.delivery.records import article_record, sighting_record
from monitor.model import Article, Record, Rule, SignalArticle
from monitor.settings import Settings
from tests.support import make_settings, read_topic, until, validate_sighting, validate_signal

pytestmark = pytest.mark.integration

WIRE = (
    "Leaders of the two countries will meet at a summit in Reykjavik next month to discuss "
    "arms control, trade and the war, officials from both governments said on Tuesday {word}."
)


def _rules(tmp_path: Path, word: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"rules:\n  - id: copy-{word}\n    query: {word}\n    topic: alerts.copy-{word}\n    severity: high\n"
        "    burst: {min_outlets: 3, window: 30m, cooldown: 6h}\n"
    )
    return path


def _settings(tmp_path: Path, bootstrap: str, word: str) -> Settings:
    return make_settings(
        tmp_path,
        bootstrap,
        rules=[_rules(tmp_path, word)],
        overrides={
            "cluster": {
                "articles_topic": f"news.articles.{word}", "matcher_state_topic": f"news.matcher-state.{word}",
                "feeds_topic": f"news.feeds.{word}", "feed_state_topic": f"news.feed-state.{word}",
                "matcher_group": f"matchers-{word}", "poller_group": f"pollers-{word}", "session_timeout": 6.0,
            },
            "kafka": {"dead_letter_topic": f"alerts.dead-letter.{word}", "topic_partitions": 2},
            "rules": {"watch": False},
            # As deployed: the matchers leave the signals to news-monitor signals.
            "signals": {
                "enabled": False, "escalation": (3,), "sightings_topic": f"news.sightings.{word}", "group": f"signals-{word}",
                "state_dir": str(tmp_path / "signals"), "from_beginning": True,
            },
        },
    )  # fmt: skip


@contextlib.asynccontextmanager
async def _running(process: SignalsProcess) -> AsyncIterator[SignalsProcess]:
    task = asyncio.create_task(process.run(handle_signals=False))
    try:
        yield process
    finally:
        process.stop()
        assert await asyncio.wait_for(task, timeout=30) == 0


async def _records(bootstrap: str, topic: str, expect: int) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_topic(bootstrap, topic, until=lambda rs: len(rs) >= expect, idle=0.5)]


async def test_a_story_copied_by_three_outlets_alerts_once_and_bursts_once_from_the_sightings(broker, tmp_path):
    """One matcher owning both partitions of the articles topic (so one story index): the
    copies, on either partition, raise no alert but are sighted, and news-monitor signals
    counts their outlets as the single process does: one burst, one escalation."""
    word = f"w{uuid.uuid4().hex[:8]}"
    settings = _settings(tmp_path, broker.bootstrap_servers, word)
    now = datetime.now(UTC).replace(microsecond=0)
    copies = [
        Article(id=f"urn:{word}:{n}", feed_url=f"https://feeds.{outlet}/rss", title=f"Summit in Reykjavik ({outlet})",
                body=WIRE.format(word=word), url=f"https://www.{outlet}/world/{word}", published=now)
        for n, outlet in enumerate(("bbc.co.uk", "lemonde.fr", "reuters.com"))
    ]  # fmt: skip
    host = RoleHost(settings, ("matcher",))
    matching = asyncio.create_task(host.run(handle_signals=False))
    publisher = KafkaPublisher(settings.kafka, broker.bootstrap_servers)
    await publisher.start()
    try:
        async with _running(SignalsProcess(settings)) as signals:
            await until(lambda: bool(host.roles) or matching.done(), timeout=30, what="the matcher to start")
            matcher = host.roles[0]
            assert isinstance(matcher, MatcherRole)
            await until(lambda: matcher.status()["partitions"] == [0, 1], timeout=30, what="both partitions")
            for partition, article in zip((0, 1, 0), copies):
                await publisher.publish(article_record(article, settings.cluster.articles_topic), partition=partition)
            await until(lambda: signals.published >= 2, timeout=30, what="the burst and the escalation")
            assert matcher.counts["alerts"] == 1 and matcher.counts["sightings"] == 3
    finally:
        host.stop()
        await asyncio.wait_for(matching, timeout=30)
        await publisher.stop()

    bootstrap = broker.bootstrap_servers
    alerts = await _records(bootstrap, f"alerts.copy-{word}", 1)
    # The first copy matched (either partition may come first) alerts; the others do not.
    assert len(alerts) == 1 and alerts[0]["article"]["id"] in {c.id for c in copies}
    sightings = await _records(bootstrap, settings.signals.sightings_topic, 3)
    for sighting in sightings:
        validate_sighting(sighting)
    assert sorted(s["article"]["outlet"] for s in sightings) == ["bbc.co.uk", "lemonde.fr", "reuters.com"]
    assert len({s["article"]["story_id"] for s in sightings}) == 1 and sightings[0]["rules"][0]["id"] == f"copy-{word}"
    found = await _records(bootstrap, f"alerts.copy-{word}.signals", 2)
    for signal in found:
        validate_signal(signal)
    assert sorted((s["kind"], s["counts"]["outlets"], s["level"]) for s in found) == [("burst", 3, None), ("escalation", 3, 3)]


async def test_garbage_on_the_sightings_topic_is_skipped_and_a_restart_repeats_nothing(broker, tmp_path):
    """Two outlets, a stop; then garbage, the same two sightings again (a matcher that
    published them again after a crash) and a third outlet. The restart reads the topic
    from its beginning again (its state kept, its offsets not: as after a crash before a
    commit), so every earlier sighting comes twice more: one burst of three articles."""
    word = f"w{uuid.uuid4().hex[:8]}"
    settings = _settings(tmp_path, broker.bootstrap_servers, word)
    rule = Rule(id=f"copy-{word}", query=word, topic=f"alerts.copy-{word}", severity="high")
    topic = settings.signals.sightings_topic
    now = datetime.now(UTC).timestamp()

    def sighting(outlet: str, minutes: float) -> Record:
        seen = SignalArticle(f"urn:{outlet}", f"https://www.{outlet}/{word}", "Summit", outlet, now - 600 + minutes * 60, None)
        return sighting_record(seen, [rule], now - 600 + minutes * 60, topic, feed_url=f"https://{outlet}/rss", record_article=seen.id)

    def window() -> int:
        burst = first.signals.bursts.get(rule.id) if first.signals else None
        return len(burst.entries) if burst is not None else 0

    publisher = KafkaPublisher(settings.kafka, broker.bootstrap_servers)
    await publisher.start()
    try:
        first = SignalsProcess(settings)
        async with _running(first):
            for record in (sighting("bbc.co.uk", 1), sighting("lemonde.fr", 2)):
                await publisher.publish(record)
            await until(lambda: window() == 2, timeout=30, what="two sightings counted")
        assert first.published == 0
        stream = [
            Record("", "", topic, b"junk", b"{not json", ()),
            Record("", "", topic, b"urn:x", orjson.dumps({"schema_version": 1, "alert_id": "a"}), ()),
            sighting("cnn.com", 60 * 24 * 365),  # detected a year ahead: would make a burst of it
            sighting("bbc.co.uk", 1), sighting("lemonde.fr", 2), sighting("reuters.com", 3),
        ]  # fmt: skip
        for record in stream:
            await publisher.publish(record)
        # A group of its own: no committed offset, so all is read again (and no wait for the
        # first member's session to lapse: Tansu's first generation is 0, which aiokafka never leaves).
        again = dataclasses.replace(settings, signals=dataclasses.replace(settings.signals, group=f"signals-{word}-again"))
        second = SignalsProcess(again)
        with capture_logs() as logs:
            async with _running(second):
                await until(lambda: second.published >= 1, timeout=30, what="the burst")
                await until(lambda: _skipped(logs) >= 3, timeout=10, what="the garbage logged")
    finally:
        await publisher.stop()

    [burst] = await _records(broker.bootstrap_servers, f"alerts.copy-{word}.signals", 1)
    validate_signal(burst)
    assert burst["kind"] == "burst" and burst["counts"] == {"articles": 3, "outlets": 3}
    assert burst["outlets"] == ["bbc.co.uk", "lemonde.fr", "reuters.com"]
    reasons = sorted(e["reason"] for e in logs if e["event"] == "signals.record.skipped")
    assert reasons[0].startswith("detected_at") and reasons[1].startswith("no sighting_id") and reasons[2].startswith("not JSON")
    # Committed past the garbage: nothing is left to read again.
    assert await _committed(again, topic) == 8


def _skipped(logs: list[dict[str, Any]]) -> int:
    return sum(1 for e in logs if e["event"] == "signals.record.skipped")


async def _committed(settings: Settings, topic: str) -> int:
    """The offsets the signals group committed on ``topic``, summed over its partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=settings.signals.group,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        await consumer.topics()  # the metadata, for partitions_for_topic
        partitions = consumer.partitions_for_topic(topic) or set()
        return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in partitions])
    finally:
        await consumer.stop()
