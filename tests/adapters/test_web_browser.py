"""The status page in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``),
loaded from a running daemon with a real broker and a local feed server."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest

from monitor.worker import Monitor
from tests.observe.test_metrics import ITEM, ONE_ITEM, SANCTIONS, Daemon, until, value
from tests.support import SEEDS, make_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
        reason="needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver",
    ),
]

REFERENCE_LINK = "https://news.example.org/world/2025/08/14/trump-putin-anchorage-meeting"
HOSTILE_TITLE = "<img src=x onerror=\"document.title='pwned'\"> sanctions & <b>bold</b>"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="news-monitor-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _cells(driver, table: str, column: str) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, f"table#{table} tbody tr[data-{'url' if table == 'feeds' else 'rule'}]")
    key = "data-url" if table == "feeds" else "data-rule"
    return {row.get_attribute(key): row.find_element(By.CSS_SELECTOR, f"td.{column}").text for row in rows}


def _on_one_rendering(check) -> None:
    """Run ``check`` against one rendering of the page. The page reloads itself every
    ``[http] refresh`` seconds, and an element found before a reload is stale after it,
    so a check that straddles a reload is run again, whole, on the new rendering."""
    from selenium.common.exceptions import StaleElementReferenceException

    # Under load one pass over the page can take most of a refresh: allow many reloads.
    attempts = 20
    for attempt in range(attempts):
        try:
            check()
            return
        except StaleElementReferenceException:
            if attempt == attempts - 1:
                raise


async def test_status_page_shows_live_numbers(broker, feed_server, tmp_path, browser):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url = feed_server.serve("/world.rss", (SEEDS / "world-news.rss.xml").read_bytes())
    broken = feed_server.serve("/broken.rss", "nope", status=500)
    settings = make_settings(
        tmp_path,
        broker.bootstrap_servers,
        [url, broken],
        overrides={
            "http": {"enabled": True, "listen": "127.0.0.1:0", "refresh": 1.0},
            "health": {"check_interval": 0.2, "failing_after": 1},
            "feeds": {"interval": 1.0, "max_interval": 1.0},
        },
    )
    async with Daemon(Monitor(settings)) as daemon:

        async def published_three() -> bool:
            scrape = await daemon.scrape()
            return (
                sum(
                    value(scrape, "news_monitor_alerts_published_total", topic=t)
                    for t in ("alerts.summit", "alerts.sanctions", "alerts.arms-control")
                )
                == 3
            )

        await until(published_three, what="three alerts to be acknowledged")
        await asyncio.to_thread(browser.get, daemon.base + "/")

        def page() -> None:
            assert browser.find_element(By.ID, "ready").text == "ready"
            assert _cells(browser, "feeds", "items-seen")[url] == "4"
            health = _cells(browser, "feeds", "health")
            assert health[url].startswith("ok")
            assert health[broken].startswith("failing")
            assert "HTTP 500" in _cells(browser, "feeds", "last-error")[broken]
            assert _cells(browser, "feeds", "last-success")[broken] == "never"
            assert _cells(browser, "feeds", "next-poll")[url].startswith("in ") or "ago" in _cells(browser, "feeds", "next-poll")[url]
            alerts = _cells(browser, "rules", "alerts")
            assert alerts["summit"] == "1" and alerts["sanctions"] == "1" and alerts["arms-control"] == "1"
            links = browser.find_elements(By.CSS_SELECTOR, "table#alerts td.title a")
            assert len(links) == 3 and {link.get_attribute("href") for link in links} == {REFERENCE_LINK}
            assert browser.find_element(By.ID, "alerts-raised").text == "3"

        await asyncio.to_thread(_on_one_rendering, page)

        # A new story whose title, once parsed, is markup: the page refreshes itself and shows
        # it as text. Escaped twice in the XML, since the parser itself strips one layer.
        double_escaped = HOSTILE_TITLE.replace("&", "&amp;amp;").replace("<", "&amp;lt;").replace(">", "&amp;gt;").replace('"', "&quot;")
        feed_server.serve("/world.rss", ONE_ITEM.format(items=ITEM.format(title=double_escaped, slug="eu-9", text=SANCTIONS)))

        def refreshed() -> None:
            assert _cells(browser, "rules", "alerts")["sanctions"] == "2"
            assert _cells(browser, "feeds", "items-seen")[url] == "5"
            newest = browser.find_elements(By.CSS_SELECTOR, "table#alerts td.title")[0].text
            assert newest == HOSTILE_TITLE  # shown as text, not markup
            assert browser.title != "pwned"
            assert not browser.find_elements(By.CSS_SELECTOR, "table#alerts td.title img")

        def raised_four() -> None:
            WebDriverWait(browser, 20, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)).until(
                lambda d: d.find_element(By.ID, "alerts-raised").text == "4"
            )

        await asyncio.to_thread(raised_four)
        await asyncio.to_thread(_on_one_rendering, refreshed)


async def test_feed_filter_and_page_links_work_in_a_browser(browser):
    """The filter form submits (the page's CSP allows forms to its own address), the count
    links filter by health, and the next-page link pages; no scripts involved."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from monitor.adapters.web import WebServer
    from tests.adapters.test_web import _many_feeds

    def rows() -> list[tuple[str, str]]:
        found = browser.find_elements(By.CSS_SELECTOR, "table#feeds tbody tr[data-url]")
        return [(row.get_attribute("data-url"), row.get_attribute("data-health")) for row in found]

    def navigate(action, expected_in_url: str) -> None:
        action()
        WebDriverWait(browser, 10, poll_frequency=0.1).until(lambda d: expected_in_url in d.current_url)

    def walk(base: str) -> None:
        browser.get(base + "/")
        first = rows()
        assert len(first) == 200 and first[0][1] == "disabled"
        navigate(lambda: browser.find_element(By.ID, "next-page").click(), "offset=200")
        assert len(rows()) == 200 and not set(rows()) & set(first)

        query = browser.find_element(By.NAME, "q")
        query.clear()
        query.send_keys("OK3.example")
        Select(browser.find_element(By.NAME, "health")).select_by_value("ok")
        navigate(lambda: browser.find_element(By.CSS_SELECTOR, "#feed-filter button").click(), "q=OK3.example")
        found = rows()
        assert len(found) == 63 and all("ok3.example" in url and health == "ok" for url, health in found)
        assert "offset" not in browser.current_url, "a new filter starts at the first page"

        navigate(lambda: browser.find_element(By.ID, "count-failing").click(), "health=failing")
        assert [health for _, health in rows()] == ["failing", "failing"]

    async with WebServer(_many_feeds(444), "127.0.0.1:0", refresh=0) as server:
        await asyncio.to_thread(walk, server.url)


def _charted_observer(now: float, plain: int):
    """An observer with rules and story signals: ``summit`` one article an hour from one
    outlet for 40 hours, then three outlets within minutes (a burst); ``plain`` rules with
    a match each; ``quiet`` with none."""
    from types import SimpleNamespace

    from monitor.model import Burst, Rule, SignalArticle
    from monitor.signals import Sighting, Signals
    from tests.adapters.test_web import _many_feeds

    summit = Rule(id="summit", query="summit", topic="alerts.summit", burst=Burst(min_outlets=3, window=1800.0, cooldown=6 * 3600.0))
    others = [Rule(id=f"plain-{i:02d}", query="x", topic="alerts.plain") for i in range(plain)]
    quiet = Rule(id="quiet", query="never", topic="alerts.quiet")
    rules = [summit, *others, quiet]
    signals = Signals()
    signals.watch(rules, now - 48 * 3600)

    def seen(rule: Rule, n: int, outlet: str, at: float) -> None:
        article = SignalArticle(f"{rule.id}-{n}", f"https://{outlet}/{n}", f"item {n}", outlet, at)
        signals.observe([Sighting(rule, article, at)], at)

    for hour in range(40, 0, -1):
        seen(summit, hour, "steady.example", now - hour * 3600)
    for n, outlet in enumerate(["a.example", "b.example", "c.example"]):
        seen(summit, 100 + n, outlet, now - 300 + n * 60)
    for i, rule in enumerate(others):
        seen(rule, i, "other.example", now - (i + 1) * 3600)
    observer = _many_feeds(3)
    observer.wiring.rules = SimpleNamespace(
        current=SimpleNamespace(version="v1", rules=rules), reloads=0, reload_failures=0, last_error=None
    )
    observer.wiring.signals = signals
    return observer


async def test_rule_charts_are_drawn_in_a_browser(browser):
    """Per rule with matches in 48 hours an SVG of its matches per hour, with the baseline
    and its signals, drawn by the browser at its size; paged; no scripts involved."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from monitor.adapters.web import WebServer

    now = 1_800_000_000.0  # _many_feeds' clock
    observer = _charted_observer(now, plain=24)

    def figures() -> list[str]:
        return [f.get_attribute("data-rule") for f in browser.find_elements(By.CSS_SELECTOR, "figure.rule-chart")]

    def walk(base: str) -> None:
        browser.get(base + "/")
        assert _cells(browser, "rules", "signals") == {"summit": "1", **{f"plain-{i:02d}": "0" for i in range(24)}, "quiet": "0"}
        shown = figures()
        assert len(shown) == 20 and shown[0] == "summit" and "quiet" not in shown
        chart = browser.find_element(By.CSS_SELECTOR, "figure[data-rule=summit] svg")
        assert chart.is_displayed() and chart.size["width"] >= 500 and chart.size["height"] >= 100
        bars = chart.find_elements(By.CSS_SELECTOR, "rect.bar")
        assert len(bars) == 40 and all(bar.size["height"] > 0 for bar in bars)
        # The last hour's bar (four articles) is the tallest, drawn at the right end.
        last = max(bars, key=lambda bar: bar.location["x"])
        assert last.size["height"] == max(bar.size["height"] for bar in bars) > bars[0].size["height"]
        baseline = chart.find_element(By.CSS_SELECTOR, "line.baseline")
        assert baseline.is_displayed()
        marks = chart.find_elements(By.CSS_SELECTOR, "g.signal[data-kind=burst]")
        assert len(marks) == 1 and marks[0].location["x"] >= last.location["x"] - 1
        assert chart.get_attribute("aria-label") == "summit: 43 matching articles in the last 48 hours, 1 signals"
        browser.find_element(By.ID, "charts-next").click()
        WebDriverWait(browser, 10, poll_frequency=0.1).until(lambda d: "charts=20" in d.current_url)
        assert len(figures()) == 5 and "summit" not in figures()
        assert browser.find_elements(By.ID, "charts-prev")

    async with WebServer(observer, "127.0.0.1:0", refresh=0) as server:
        await asyncio.to_thread(walk, server.url)
