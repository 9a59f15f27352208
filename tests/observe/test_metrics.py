"""The daemon's /metrics and /readyz, scraped over HTTP from a running monitor.

Real parts only: the Tansu broker, a local aiohttp feed server, the monitor's own
aiohttp endpoint, and prometheus-client's parser reading what a Prometheus would read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.adapters.broker import EmbeddedBroker, free_port
from monitor.worker import Monitor
from tests.support import SEEDS, make_settings

pytestmark = pytest.mark.integration

ONE_ITEM = """<?xml version="1.0"?>
<rss version="2.0"><channel><title>t</title><link>https://example.net/</link>
{items}
</channel></rss>"""
ITEM = """<item><title>{title}</title><link>https://example.net/{slug}</link><guid>urn:example:{slug}</guid>
<pubDate>Thu, 14 Aug 2025 16:30:00 +0000</pubDate><description>{text}</description></item>"""
SANCTIONS = (
    "The European Union agreed a new package of economic sanctions against Russia on Friday, "
    "targeting oil exports and banks, diplomats said."
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition") -> None:
    """Re-check an HTTP-visible condition until it holds (the daemon gives no other signal)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Daemon:
    """A Monitor running in the background, with its HTTP endpoint on a free port."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.task: asyncio.Task | None = None
        self.http = aiohttp.ClientSession()

    async def __aenter__(self) -> Daemon:
        self.task = asyncio.create_task(self.monitor.run(handle_signals=False))
        deadline = time.monotonic() + 20
        while self.monitor.http_address is None:
            if self.task.done():
                self.task.result()
            assert time.monotonic() < deadline, "the HTTP endpoint never came up"
            await asyncio.sleep(0.01)
        host, port = self.monitor.http_address
        self.base = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.monitor.stop()
        try:
            await asyncio.wait_for(self.task, timeout=30)
        finally:
            await self.http.close()

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.base + path) as response:
            return response.status, await response.text()

    async def scrape(self) -> dict:
        status, text = await self.get("/metrics")
        assert status == 200
        return samples(text)


def _settings(tmp_path, bootstrap: str, feeds, **health):
    return make_settings(
        tmp_path,
        bootstrap,
        feeds,
        overrides={
            "http": {"enabled": True, "listen": "127.0.0.1:0", "refresh": 0.0},
            "health": {"check_interval": 0.2, **health},
            "feeds": {"interval": 1.0, "max_interval": 2.0},
        },
    )


async def test_counters_move_as_articles_are_published(broker, feed_server, tmp_path):
    url = feed_server.serve("/world.rss", (SEEDS / "world-news.rss.xml").read_bytes())
    monitor = Monitor(_settings(tmp_path, broker.bootstrap_servers, [url]))
    async with Daemon(monitor) as daemon:
        async def first_alerts_published() -> bool:
            scrape = await daemon.scrape()
            return value(scrape, "news_monitor_alerts_published_total", topic="alerts.summit") == 1

        await until(first_alerts_published, what="the reference article's alerts to be acknowledged")
        first = await daemon.scrape()
        assert value(first, "news_monitor_alerts_total", rule="summit", topic="alerts.summit") == 1
        assert value(first, "news_monitor_alerts_total", rule="sanctions", topic="alerts.sanctions") == 1
        assert value(first, "news_monitor_articles_total", verdict="new") == 4
        assert value(first, "news_monitor_feed_polls_total", result="ok", status_class="2xx") >= 1
        assert value(first, "news_monitor_feed_fetch_seconds_count") >= 1
        assert value(first, "news_monitor_publish_seconds_count") >= 3
        assert value(first, "news_monitor_feeds", health="ok") == 1
        assert value(first, "news_monitor_rules") >= 3
        assert 0 <= value(first, "news_monitor_feed_last_success_age_seconds", feed=url) < 30
        assert value(first, "news_monitor_pending_alerts") == 0

        # A new sanctions story appears in the feed: the counters move by exactly one alert.
        feed_server.serve(
            "/world.rss",
            ONE_ITEM.format(items=ITEM.format(title="EU adopts new sanctions on Russia", slug="eu-7", text=SANCTIONS)),
        )

        async def sanctions_twice() -> bool:
            scrape = await daemon.scrape()
            return value(scrape, "news_monitor_alerts_published_total", topic="alerts.sanctions") == 2

        await until(sanctions_twice, what="the new sanctions alert to be acknowledged")
        second = await daemon.scrape()
        assert value(second, "news_monitor_alerts_total", rule="sanctions", topic="alerts.sanctions") == 2
        assert value(second, "news_monitor_alerts_total", rule="summit", topic="alerts.summit") == 1
        assert value(second, "news_monitor_articles_total", verdict="new") == 5
        assert value(second, "news_monitor_feed_polls_total", result="ok", status_class="2xx") > value(
            first, "news_monitor_feed_polls_total", result="ok", status_class="2xx"
        )
        status, body = await daemon.get("/healthz")
        assert status == 200 and "alive" in body


async def test_failed_polls_are_counted_by_status_class(broker, feed_server, tmp_path):
    missing = feed_server.serve("/gone.rss", "not here", status=404)
    garbage = feed_server.serve("/garbage.rss", b"\x00\x01 this is no feed", headers={"Content-Type": "application/octet-stream"})
    monitor = Monitor(_settings(tmp_path, broker.bootstrap_servers, [missing, garbage], failing_after=1))
    async with Daemon(monitor) as daemon:
        async def both_failed() -> bool:
            scrape = await daemon.scrape()
            return (
                value(scrape, "news_monitor_feed_polls_total", result="error", status_class="4xx") >= 1
                and value(scrape, "news_monitor_feed_polls_total", result="error", status_class="parse") >= 1
            )

        await until(both_failed, what="both failures to be counted")
        scrape = await daemon.scrape()
        assert value(scrape, "news_monitor_feed_parse_errors_total", kind="error") >= 1
        assert value(scrape, "news_monitor_feeds", health="failing") == 2
        assert (("news_monitor_feed_last_success_age_seconds", (("feed", missing),))) not in scrape


async def test_readyz_flips_when_the_broker_stops_and_returns(feed_server, tmp_path):
    # A broker of its own: the shared one must stay up for the other tests.
    broker = EmbeddedBroker(port=free_port())
    await asyncio.to_thread(broker.start)
    try:
        url = feed_server.serve("/world.rss", (SEEDS / "world-news.rss.xml").read_bytes())
        monitor = Monitor(_settings(tmp_path, broker.bootstrap_servers, [url]))
        async with Daemon(monitor) as daemon:
            async def ready() -> bool:
                return (await daemon.get("/readyz"))[0] == 200

            async def broker_noticed_gone() -> bool:
                # Delivery may notice first (alerts pending); the broker check follows.
                return (await daemon.get("/readyz"))[0] == 503 and value(await daemon.scrape(), "news_monitor_broker_up") == 0

            await until(ready, what="/readyz to answer ready")
            await asyncio.to_thread(broker.stop)
            await until(broker_noticed_gone, what="/readyz to notice the broker is gone")
            status, body = await daemon.get("/readyz")
            assert status == 503 and "the broker is unreachable" in body

            await asyncio.to_thread(broker.start)  # same port: the daemon's address is unchanged
            await until(ready, what="/readyz to recover when the broker is back")
            assert value(await daemon.scrape(), "news_monitor_broker_up") == 1
            assert value(await daemon.scrape(), "news_monitor_ready") == 1
    finally:
        await asyncio.to_thread(broker.stop)


def _report(status: str, http_status: int | None, fetch: float, whole: float, error_stage: str | None = None):
    from monitor.feeds.schedule import PollOutcome
    from monitor.model import Feed
    from monitor.pipeline import PollReport

    report = PollReport(Feed(url="https://example.net/feed"), status, PollOutcome(ok=error_stage is None))
    report.http_status, report.fetch_elapsed, report.elapsed, report.error_stage = http_status, fetch, whole, error_stage
    return report


async def test_per_poll_metrics_expose_what_prometheus_expects():
    """The lock-free poll counter and histograms read back, through prometheus-client's
    parser, as a Counter and Histograms would: cumulative ``le`` buckets (a value on a
    bound counts in it), +Inf, _count and _sum."""
    from monitor.observe.metrics import FETCH_BUCKETS
    from monitor.observe.observer import Observer

    observer = Observer([])
    reports = [
        _report("not_modified", 304, 0.01, 0.01),  # exactly on the first bound
        _report("not_modified", 304, 0.02, 0.03),
        _report("ok", 200, 0.3, 0.7),
        _report("error", 503, 2.0, 2.0),
        _report("error", None, 100.0, 100.0, error_stage="fetch"),  # beyond every bound
    ]
    for report in reports:
        await observer.poll_finished(report)
    scrape = samples(observer.metrics.render().decode())
    assert value(scrape, "news_monitor_feed_polls_total", result="not_modified", status_class="3xx") == 2
    assert value(scrape, "news_monitor_feed_polls_total", result="ok", status_class="2xx") == 1
    assert value(scrape, "news_monitor_feed_polls_total", result="error", status_class="5xx") == 1
    assert value(scrape, "news_monitor_feed_polls_total", result="error", status_class="network") == 1
    for name, observed in (("fetch", [r.fetch_elapsed for r in reports]), ("poll", [r.elapsed for r in reports])):
        metric = f"news_monitor_feed_{name}_seconds"
        for bound in FETCH_BUCKETS:
            expected = sum(1 for v in observed if v <= bound)
            assert value(scrape, f"{metric}_bucket", le=str(bound)) == expected, (metric, bound)
        assert value(scrape, f"{metric}_bucket", le="+Inf") == len(observed)
        assert value(scrape, f"{metric}_count") == len(observed)
        assert value(scrape, f"{metric}_sum") == pytest.approx(sum(observed))
