"""The HTTP endpoint on its own: a real aiohttp server on loopback around an Observer."""

from __future__ import annotations

import html.parser
from datetime import datetime, timezone

import aiohttp
import pytest

from monitor.adapters.broker import free_port
from monitor.adapters.store import FeedState
from monitor.adapters.web import WebServer, parse_listen, probe_broker, render_status_page
from monitor.errors import ConfigError
from monitor.metrics import Observer
from monitor.model import Alert, Feed

HOSTILE = '<script>alert(1)</script>"\'><img src=x onerror=alert(2)>'


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _alert(title: str, url: str | None) -> Alert:
    return Alert(
        alert_id="a1", rule_id="summit", topic="alerts.summit", severity="high", tags=(), article_id="x",
        url=url, title=title, published=None, feed_url="https://feeds.example/x", matches=(), snippet="",
        detected_at=datetime(2026, 11, 25, tzinfo=timezone.utc), ruleset_version="v1",
    )


def _observer_with_hostile_data() -> Observer:
    feed = Feed(f"https://feeds.example/{HOSTILE}", name=HOSTILE)
    observer = Observer([feed])
    observer.tracker.observe(FeedState(feed.url, polls=3, consecutive_errors=3, last_error=HOSTILE, last_error_at=1.0), 2.0)
    observer._alert_raised(_alert(HOSTILE, "javascript:alert(3)"))
    observer._alert_raised(_alert("fine", "https://news.example/story?a=1&b=2"))
    return observer


def test_status_page_escapes_everything_from_feeds():
    page = render_status_page(_observer_with_hostile_data().snapshot(), refresh=5)
    parser = _Tags()
    parser.feed(page)
    tags = [tag for tag, _ in parser.tags]
    assert "script" not in tags and "img" not in tags
    hrefs = [attrs["href"] for tag, attrs in parser.tags if tag == "a"]
    assert not any(href.lower().startswith("javascript:") for href in hrefs), "only http(s) links"
    assert "https://news.example/story?a=1&b=2" in hrefs
    assert "&lt;script&gt;" in page
    assert '<meta http-equiv="refresh" content="5">' in page


def test_no_refresh_when_turned_off():
    assert "http-equiv" not in render_status_page(Observer([]).snapshot(), refresh=0)


@pytest.mark.parametrize(("listen", "expected"), [("127.0.0.1:8765", ("127.0.0.1", 8765)), ("[::1]:0", ("::1", 0))])
def test_parse_listen(listen, expected):
    assert parse_listen(listen) == expected


async def test_endpoints_and_not_ready_before_start():
    observer = _observer_with_hostile_data()
    async with WebServer(observer, "127.0.0.1:0", refresh=0) as server:
        assert server.address[1] > 0
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/healthz") as response:
                assert response.status == 200
            async with http.get(server.url + "/readyz") as response:
                body = await response.json()
                # No broker check and no delivery yet: not ready, and it says why.
                assert response.status == 503 and not body["ready"]
                assert any("broker" in problem for problem in body["problems"])
            async with http.get(server.url + "/") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/html")
                assert "default-src 'none'" in response.headers["Content-Security-Policy"]
            async with http.get(server.url + "/metrics") as response:
                text = await response.text()
                assert response.headers["Content-Type"].startswith("text/plain")
                assert 'news_monitor_alerts_total{rule="summit",topic="alerts.summit"} 2.0' in text
                assert 'news_monitor_feeds{health="failing"} 1.0' in text
            async with http.get(server.url + "/status.json") as response:
                data = await response.json()
                assert data["alerts_raised"] == 2 and data["feeds"][0]["health"] == "failing"


async def test_a_taken_port_is_one_clear_config_error():
    async with WebServer(Observer([]), "127.0.0.1:0") as first:
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+.*\[http\] listen"):
            await WebServer(Observer([]), f"127.0.0.1:{first.address[1]}").start()


async def test_probe_speaks_kafka_to_a_real_broker(broker):
    assert await probe_broker(broker.bootstrap_servers) == (True, None)


async def test_probe_reports_what_is_unreachable():
    port = free_port()
    reachable, error = await probe_broker(f"127.0.0.1:{port}", timeout=1)
    assert not reachable and f"127.0.0.1:{port}" in error


async def test_probe_rejects_a_server_that_is_not_kafka():
    async with WebServer(Observer([]), "127.0.0.1:0") as http_only:
        reachable, error = await probe_broker(f"127.0.0.1:{http_only.address[1]}", timeout=2)
    assert not reachable


async def test_credentials_in_feed_urls_stay_off_the_page_and_metrics():
    feed = Feed("https://bob:hunter2@feeds.example/rss?token=hunter2")
    observer = Observer([feed])
    observer.tracker.observe(FeedState(feed.url, polls=1, last_success=1.0, last_error=f"{feed.url}: HTTP 500"), 2.0)
    async with WebServer(observer, "127.0.0.1:0", refresh=0) as server:
        async with aiohttp.ClientSession() as http:
            for path in ("/", "/metrics", "/status.json"):
                async with http.get(server.url + path) as response:
                    text = await response.text()
                    assert "feeds.example" in text and "hunter2" not in text, path
