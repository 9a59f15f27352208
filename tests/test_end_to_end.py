"""The whole pipeline against a real broker and a real local HTTP server.

feed (aiohttp on loopback) -> fetch -> parse -> dedupe -> match -> Kafka (Tansu).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from monitor.worker import Monitor
from tests.support import REFERENCE_TOPICS, SEEDS, FeedServer, make_settings, read_alerts

pytestmark = pytest.mark.integration

REFERENCE_LINK = "https://news.example.org/world/2025/08/14/trump-putin-anchorage-meeting"


def _serve_seeds(server: FeedServer) -> list[str]:
    rss = server.serve("/world.rss", (SEEDS / "world-news.rss.xml").read_bytes())
    atom = server.serve(
        "/world.atom",
        (SEEDS / "world-news.atom.xml").read_bytes(),
        headers={"Content-Type": "application/atom+xml"},
    )
    return [rss, atom]


async def test_reference_article_raises_one_alert_per_topic(broker, feed_server, tmp_path):
    feeds = _serve_seeds(feed_server)
    settings = make_settings(tmp_path, broker.bootstrap_servers, feeds)

    summary = await Monitor(settings).run(once=True, handle_signals=False)

    assert summary.polls == 2 and not summary.failed
    assert dict(summary.alerts_by_topic) == {topic: 1 for topic in REFERENCE_TOPICS}
    assert summary.published == 3
    alerts = await read_alerts(broker.bootstrap_servers, feeds, expect=3)
    assert sorted(a["rule_id"] for a in alerts) == ["arms-control", "sanctions", "summit"]
    assert {a["topic"] for a in alerts} == set(REFERENCE_TOPICS)
    # One article: both feeds carry it under the same canonical link.
    assert len({a["article"]["id"] for a in alerts}) == 1
    assert len({a["alert_id"] for a in alerts}) == 3
    for alert in alerts:
        article = alert["article"]
        assert article["url"] == REFERENCE_LINK
        assert article["title"].startswith("Trump and Putin to meet in Anchorage")
        assert article["published"] == "2025-08-14T16:30:00Z"
        assert article["feed_url"] in feeds
        assert alert["detected_at"].endswith("Z")
        assert alert["matches"], "an alert explains itself with the matched terms"
        for hit in alert["matches"]:
            assert hit["field"] in {"title", "summary", "body"}
            assert hit["end"] > hit["start"] >= 0
            assert hit["text"]
        first = alert["matches"][0]["text"]
        assert first.lower() in alert["snippet"].lower()


async def test_second_run_over_same_feed_publishes_nothing_new(broker, feed_server, tmp_path):
    feeds = _serve_seeds(feed_server)
    settings = make_settings(tmp_path, broker.bootstrap_servers, feeds)
    first = await Monitor(settings).run(once=True, handle_signals=False)
    assert sum(first.alerts_by_topic.values()) == 3

    # The server ignores conditional GET here, so the body is parsed again.
    second = await Monitor(settings).run(once=True, handle_signals=False)

    assert sum(second.alerts_by_topic.values()) == 0
    assert second.published == 0
    alerts = await read_alerts(broker.bootstrap_servers, feeds)
    assert len(alerts) == 3


RSS_ONE = """<?xml version="1.0"?>
<rss version="2.0"><channel><title>t</title><link>https://example.net/</link>
<item><title>{title}</title><link>{link}</link><guid isPermaLink="false">urn:example:story-7</guid>
<pubDate>Thu, 14 Aug 2025 16:30:00 +0000</pubDate>
<description>{text}</description></item>
</channel></rss>"""

SANCTIONS_TEXT = (
    "The European Union agreed a new package of economic sanctions against Russia on Friday, "
    "targeting oil exports and banks, diplomats said."
)


async def test_changed_link_same_guid_is_not_realerted(broker, feed_server, tmp_path):
    url = feed_server.serve(
        "/moving.rss",
        RSS_ONE.format(title="EU adopts new sanctions on Russia", link="https://example.net/a/1", text=SANCTIONS_TEXT),
    )
    settings = make_settings(tmp_path, broker.bootstrap_servers, [url])
    first = await Monitor(settings).run(once=True, handle_signals=False)
    assert dict(first.alerts_by_topic) == {"alerts.sanctions": 1}

    feed_server.serve(
        "/moving.rss",
        RSS_ONE.format(title="EU adopts new sanctions on Russia", link="https://example.net/b/renamed", text=SANCTIONS_TEXT),
    )
    second = await Monitor(settings).run(once=True, handle_signals=False)

    assert sum(second.alerts_by_topic.values()) == 0
    assert second.duplicates == 1
    alerts = await read_alerts(broker.bootstrap_servers, [url], ["alerts.sanctions"])
    assert len(alerts) == 1


async def test_unreachable_feed_is_retried_without_stopping_others(broker, feed_server, tmp_path):
    good = _serve_seeds(feed_server)[0]
    # A port nothing listens on: connection refused at once.
    from monitor.adapters.broker import free_port

    dead = f"http://127.0.0.1:{free_port()}/feed.xml"
    settings = make_settings(tmp_path, broker.bootstrap_servers, [good, {"url": dead, "interval": 1}], overrides={"feeds": {"interval": 1.0, "max_interval": 2.0}})
    monitor = Monitor(settings)
    run = asyncio.create_task(monitor.run(handle_signals=False))
    try:
        async def dead_retried() -> None:
            while sum(1 for url, _ in monitor.summary.failed if url == dead) < 2:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(dead_retried(), timeout=20)
        alerts = await read_alerts(broker.bootstrap_servers, [good], expect=3)
        assert len(alerts) == 3
        errors = [error for url, error in monitor.summary.failed if url == dead]
        assert all(dead in error for error in errors), "each error names the feed url"
        assert not run.done()
    finally:
        monitor.stop()
        await asyncio.wait_for(run, timeout=20)
    from monitor.adapters.store import Store

    state = Store(Path(settings.state_dir)).feed_state(dead)
    assert state.error_count >= 2 and state.last_error and "127.0.0.1" in state.last_error


async def test_feed_served_from_local_file_path(broker, tmp_path):
    settings = make_settings(tmp_path, broker.bootstrap_servers, [str(SEEDS / "world-news.rss.xml"), (SEEDS / "world-news.atom.xml").as_uri()])
    summary = await Monitor(settings).run(once=True, handle_signals=False)
    assert dict(summary.alerts_by_topic) == {topic: 1 for topic in REFERENCE_TOPICS}
    assert not summary.failed


async def test_decoys_raise_no_alert(broker, feed_server, tmp_path):
    body = (SEEDS / "world-news.rss.xml").read_text()
    # Drop the reference item: only the decoys remain.
    start = body.index("<item>")
    end = body.index("</item>") + len("</item>")
    url = feed_server.serve("/decoys.rss", body[:start] + body[end:])
    settings = make_settings(tmp_path, broker.bootstrap_servers, [url])
    summary = await Monitor(settings).run(once=True, handle_signals=False)
    assert summary.new_articles == 3
    assert sum(summary.alerts_by_topic.values()) == 0


def test_make_settings_is_isolated(tmp_path):
    settings = make_settings(tmp_path, "127.0.0.1:1", ["http://127.0.0.1:1/x"])
    assert dataclasses.asdict(settings.kafka)["bootstrap_servers"] == "127.0.0.1:1"
    assert settings.state_dir == tmp_path / "state"
