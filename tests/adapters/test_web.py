"""The HTTP endpoint on its own: a real aiohttp server on loopback around an Observer."""

from __future__ import annotations

import html.parser
import time
from datetime import UTC, datetime

import aiohttp
import pytest

from monitor.adapters.broker import free_port
from monitor.adapters.kafka import probe_broker
from monitor.adapters.web import WebServer, parse_listen, render_status_page
from monitor.errors import ConfigError
from monitor.feeds.state import FeedState
from monitor.model import Alert, Feed
from monitor.observe.observer import Observer

pytestmark = pytest.mark.integration

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
        detected_at=datetime(2026, 11, 25, tzinfo=UTC), ruleset_version="v1",
    )


def _observer_with_hostile_data() -> Observer:
    feed = Feed(f"https://feeds.example/{HOSTILE}", name=HOSTILE)
    observer = Observer([feed])
    observer.tracker.observe(FeedState(feed.url, polls=3, consecutive_errors=3, last_error=HOSTILE, last_error_at=1.0), 2.0)
    observer.alert_raised(_alert(HOSTILE, "javascript:alert(3)"))
    observer.alert_raised(_alert("fine", "https://news.example/story?a=1&b=2"))
    return observer


def test_status_page_escapes_everything_from_feeds():
    page = render_status_page(_observer_with_hostile_data().status.snapshot(), refresh=5)
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
    assert "http-equiv" not in render_status_page(Observer([]).status.snapshot(), refresh=0)


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
        reachable, _error = await probe_broker(f"127.0.0.1:{http_only.address[1]}", timeout=2)
    assert not reachable


async def test_credentials_in_feed_urls_stay_off_the_page_and_metrics():
    feed = Feed("https://bob:hunter2@feeds.example/rss?token=hunter2")
    observer = Observer([feed])
    observer.tracker.observe(FeedState(feed.url, polls=1, last_success=1.0, last_error=f"{feed.url}: HTTP 500"), 2.0)
    async with WebServer(observer, "127.0.0.1:0", refresh=0) as server, aiohttp.ClientSession() as http:
        for path in ("/", "/metrics", "/status.json"):
            async with http.get(server.url + path) as response:
                text = await response.text()
                assert "feeds.example" in text and "hunter2" not in text, path


# -- many feeds: a bounded page, problems first, filters and paging ------------------------


def _many_feeds(ok: int, *, bad: int = 2) -> Observer:
    """``ok`` healthy feeds (a new item i seconds ago) and ``bad`` feeds of every other health."""
    now = 1_800_000_000.0
    feeds = [Feed(f"https://ok{i % 7}.example/feed-{i:05d}.xml", name=f"Healthy {i}") for i in range(ok)]
    feeds += [Feed(f"https://bad.example/{kind}-{i}.xml", name=f"{kind} {i}", expected_update_period=3600)
              for kind in ("failing", "stale", "disabled") for i in range(bad)]
    observer = Observer(feeds, clock=lambda: now)
    observer.status.started = now - 86400
    tracker = observer.tracker
    for i in range(ok):
        tracker.observe(FeedState(feeds[i].url, polls=2, last_success=now, last_new_item=now - i), now)
    for i in range(bad):
        tracker.observe(FeedState(f"https://bad.example/failing-{i}.xml", polls=4, consecutive_errors=4,
                                  last_error="HTTP 503", last_error_at=now), now)
        tracker.observe(FeedState(f"https://bad.example/stale-{i}.xml", polls=4, last_success=now,
                                  last_new_item=now - 7200 - i), now)
        tracker.observe(FeedState(f"https://bad.example/disabled-{i}.xml", polls=4, disabled="HTTP 410 Gone"), now)
    return observer


class _Page(html.parser.HTMLParser):
    """The feed rows (url, health), the links by id and the form fields of a status page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[tuple[str, str]] = []
        self.links: dict[str, str] = {}
        self.inputs: dict[str, str] = {}
        self.table: dict[str, str] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-url" in attrs:
            self.rows.append((attrs["data-url"], attrs["data-health"]))
        elif tag == "a" and "id" in attrs:
            self.links[attrs["id"]] = attrs["href"]
        elif tag == "input" and "name" in attrs:
            self.inputs[attrs["name"]] = attrs.get("value", "")
        elif tag == "table" and attrs.get("id") == "feeds":
            self.table = attrs


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


async def test_the_page_is_bounded_problems_first_with_links_to_the_next_pages():
    async with WebServer(_many_feeds(444), "127.0.0.1:0", refresh=0) as server, aiohttp.ClientSession() as http:
        status, text = await _get(http, server.url + "/")
        page = _Page(text)
        assert status == 200 and len(page.rows) == 200
        assert [health for _, health in page.rows[:7]] == ["disabled"] * 2 + ["failing"] * 2 + ["stale"] * 2 + ["ok"]
        assert page.rows[6][0] == "https://ok0.example/feed-00000.xml", "then the most recent new item first"
        assert page.table["data-total"] == page.table["data-matched"] == "450"
        assert "450:" in text and ">444 ok<" in text and ">2 failing<" in text
        assert page.links["count-failing"] == "?health=failing"
        assert "prev-page" not in page.links and page.links["next-page"] == "?offset=200"

        seen = [url for url, _ in page.rows]
        while "next-page" in page.links:
            status, text = await _get(http, server.url + "/" + page.links["next-page"])
            page = _Page(text)
            seen += [url for url, _ in page.rows]
        assert page.table["data-offset"] == "400" and len(page.rows) == 50 and page.links["prev-page"] == "?offset=200"
        assert len(seen) == len(set(seen)) == 450


async def test_status_json_pages_through_every_feed_with_the_summary_on_each_page():
    observer = _many_feeds(444)
    async with WebServer(observer, "127.0.0.1:0", refresh=0) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url + "/status.json") as response:
            first = await response.json()
        assert len(first["feeds"]) == 200 and first["feeds_total"] == first["feeds_matched"] == 450
        assert first["feeds_next_offset"] == 200 and [f["health"] for f in first["feeds"][:2]] == ["disabled"] * 2
        assert first["feeds_query"] == {"health": [], "q": "", "order": "health", "offset": 0, "limit": 200}

        urls: list[str] = []
        offset = 0
        while offset is not None:
            async with http.get(server.url + f"/status.json?order=url&limit=128&offset={offset}") as response:
                data = await response.json()
            assert data["health_counts"] == {"ok": 444, "stale": 2, "failing": 2, "disabled": 2}
            assert {"ready", "not_ready", "polls", "alerts_raised", "rules", "alerts"} <= data.keys()
            assert len(data["feeds"]) <= 128
            urls += [feed["url"] for feed in data["feeds"]]
            offset = data["feeds_next_offset"]
        assert urls == sorted(urls) and len(set(urls)) == 450


async def test_filters_by_health_and_by_url_or_name():
    async with WebServer(_many_feeds(444), "127.0.0.1:0", refresh=0) as server, aiohttp.ClientSession() as http:
        async def feeds(query: str) -> dict:
            async with http.get(server.url + "/status.json?" + query) as response:
                assert response.status == 200, await response.text()
                return await response.json()

        failing = await feeds("health=failing")
        assert failing["feeds_matched"] == 2 and {f["health"] for f in failing["feeds"]} == {"failing"}
        assert failing["feeds_total"] == 450 and failing["health_counts"]["ok"] == 444
        for query in ("health=stale,disabled", "health=stale&health=disabled", "health=Stale,%20disabled"):
            data = await feeds(query)
            assert [f["health"] for f in data["feeds"]] == ["disabled", "disabled", "stale", "stale"], query
        named = await feeds("q=HEALTHY%2044")  # case-insensitive, in the name
        assert sorted(f["name"] for f in named["feeds"]) == ["Healthy 44", "Healthy 440", "Healthy 441", "Healthy 442", "Healthy 443"]
        by_url = await feeds("q=ok3.example&limit=10&offset=60")
        assert by_url["feeds_matched"] == 63 and len(by_url["feeds"]) == 3 and by_url["feeds_next_offset"] is None
        assert all("ok3.example" in f["url"] for f in by_url["feeds"])
        both = await feeds("health=ok&q=bad.example")
        assert both["feeds_matched"] == 0 and both["feeds"] == []

        status, text = await _get(http, server.url + "/?q=ok3.example&health=ok")
        page = _Page(text)
        assert status == 200 and len(page.rows) == 63 and page.inputs["q"] == "ok3.example"
        assert 'option value="ok" selected' in text and "of 63 matching" in text


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=abc", "limit"), ("offset=-1", "offset"),
        ("offset=1e3", "offset"), ("health=broken", "health"), ("order=newest", "order"), ("q=" + "x" * 201, "q"),
    ],
)
async def test_an_invalid_parameter_is_a_400_that_names_it(query, named):
    async with WebServer(_many_feeds(3), "127.0.0.1:0", refresh=0) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url + "/status.json?" + query) as response:
            body = await response.json()
            assert response.status == 400 and body["error"].startswith(named) and body["hint"]
        status, text = await _get(http, server.url + "/?" + query)
        assert status == 400 and f'<p class="err" id="error">{named}' in text


def _best_of(runs: int, work) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def test_the_page_and_its_build_time_do_not_grow_with_the_number_of_feeds():
    small, large = _many_feeds(1_000), _many_feeds(32_000)
    sizes, times = [], []
    for observer in (small, large):
        render_status_page(observer.status.snapshot())  # the index is built on first use
        sizes.append(len(render_status_page(observer.status.snapshot())))
        times.append(_best_of(5, lambda observer=observer: render_status_page(observer.status.snapshot())))
    # 32 times the feeds: the same page (it grew 32-fold when every feed was listed).
    assert sizes[1] < 1.2 * sizes[0], sizes
    assert times[1] < 4 * times[0], times


async def test_a_text_filter_cannot_probe_credentials_the_page_hides():
    feed = Feed("https://bob:hunter2@feeds.example/rss?token=hunter2")
    async with WebServer(Observer([feed]), "127.0.0.1:0", refresh=0) as server, aiohttp.ClientSession() as http:
        for needle, matched in (("hunter2", 0), ("bob", 0), ("feeds.example/rss", 1)):
            async with http.get(server.url + f"/status.json?q={needle}") as response:
                assert (await response.json())["feeds_matched"] == matched, needle


def test_status_page_masks_a_long_error_before_cutting_it():
    secret = "hunter2"
    url = f"https://bob:{secret}@feeds.example/rss"
    feed = Feed(url)
    observer = Observer([feed])
    # The 500-character cut falls inside the user-info: cut first, the '@' would be gone.
    error = "x" * 476 + f" GET {url}: HTTP 401"  # character 500 is the "@"
    observer.tracker.observe(FeedState(feed.url, polls=3, consecutive_errors=3, last_error=error, last_error_at=1.0), 2.0)
    page = render_status_page(observer.status.snapshot(), refresh=5)
    assert secret not in page and "https://***@feeds.example/rss" in page
