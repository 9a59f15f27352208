"""Feed health: the rules (pure), and the events a running daemon publishes when it changes."""

from __future__ import annotations

import asyncio
import math
import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from monitor.feeds.health import (
    DISABLED,
    FAILING,
    HEALTH_STATES,
    OK,
    PAGE_ROWS,
    STALE,
    FeedHealthTracker,
    FeedQuery,
    HealthPolicy,
    assess,
    health_record,
    learn_cadence,
)
from monitor.feeds.state import FeedState
from monitor.model import Feed
from monitor.worker import Monitor
from tests.support import make_settings, read_topic

HOUR = 3600.0
NOW = 1_800_000_000.0


class TestLearnCadence:
    def test_median_gap_of_publication_dates(self):
        base = datetime(2026, 11, 25, 12, tzinfo=UTC)
        dates = [base - timedelta(minutes=30 * i) for i in range(10)] + [base - timedelta(days=3)]
        # One old straggler does not move the median.
        assert learn_cadence(None, dates, None, base.timestamp(), 10) == 1800.0

    def test_naive_dates_count_as_utc_and_future_ones_are_ignored(self):
        base = datetime(2026, 11, 25, 12)
        dates = [base, base - timedelta(hours=2), base - timedelta(hours=4), base + timedelta(days=30)]
        assert learn_cadence(None, dates, None, base.replace(tzinfo=UTC).timestamp(), 1) == 2 * HOUR

    def test_without_dates_gaps_between_new_items_are_averaged(self):
        first = learn_cadence(None, [None, None], NOW - 600, NOW, 2)
        assert first == 600
        second = learn_cadence(first, [], NOW, NOW + 1200, 1)
        assert 600 < second < 1200

    def test_nothing_new_keeps_what_was_learned(self):
        assert learn_cadence(900.0, [], NOW - 10, NOW, 0) == 900.0
        assert learn_cadence(None, [], None, NOW, 0) is None


class TestAssess:
    policy = HealthPolicy(failing_after=3, stale_factor=4.0, stale_min_age=HOUR)
    feed = Feed("https://example.org/feed.xml", interval=300)

    def test_quiet_for_much_longer_than_usual_is_stale(self):
        verdict = assess(self.feed, now=NOW, policy=self.policy, last_new_item=NOW - 5 * HOUR, cadence=HOUR)
        assert verdict.health == STALE
        assert "no new item for 5h00m" in verdict.reason

    def test_a_little_quiet_is_ok_and_min_age_protects_busy_feeds(self):
        assert assess(self.feed, now=NOW, policy=self.policy, last_new_item=NOW - 3 * HOUR, cadence=HOUR).health == OK
        # Every minute usually, quiet for 30 minutes: below stale_min_age, still ok.
        assert assess(self.feed, now=NOW, policy=self.policy, last_new_item=NOW - 1800, cadence=60).health == OK

    def test_operator_expected_update_period_wins_over_learned_cadence(self):
        feed = Feed("https://example.org/feed.xml", expected_update_period=600)
        verdict = assess(feed, now=NOW, policy=self.policy, last_new_item=NOW - 700, cadence=10 * HOUR)
        assert verdict.health == STALE and "expected_update_period" in verdict.reason

    def test_unknown_cadence_is_never_stale(self):
        assert assess(self.feed, now=NOW, policy=self.policy, last_new_item=NOW - 100 * HOUR).health == OK

    def test_failing_after_consecutive_errors_and_disabled_first(self):
        assert assess(self.feed, now=NOW, policy=self.policy, consecutive_errors=2).health == OK
        failing = assess(self.feed, now=NOW, policy=self.policy, consecutive_errors=3, last_error="HTTP 500")
        assert failing.health == FAILING and "3 failed polls" in failing.reason
        assert assess(self.feed, now=NOW, policy=self.policy, consecutive_errors=9, disabled="HTTP 410").health == DISABLED


class TestTracker:
    def test_transitions_are_reported_once_each_way(self):
        feed = Feed("https://example.org/a.xml")
        tracker = FeedHealthTracker([feed], HealthPolicy(failing_after=2), started=NOW)
        assert tracker.observe(FeedState(feed.url, consecutive_errors=1, polls=1), NOW) is None
        down = tracker.observe(FeedState(feed.url, consecutive_errors=2, polls=2, last_error="boom"), NOW + 1)
        assert (down.previous, down.current.health) == (OK, FAILING)
        assert tracker.observe(FeedState(feed.url, consecutive_errors=3, polls=3), NOW + 2) is None
        up = tracker.observe(FeedState(feed.url, consecutive_errors=0, polls=4, last_success=NOW + 3), NOW + 3)
        assert (up.previous, up.current.health) == (FAILING, OK)
        assert tracker.counts() == {OK: 1, STALE: 0, FAILING: 0, DISABLED: 0}

    def test_stored_health_is_the_starting_point(self):
        feed = Feed("https://example.org/a.xml")
        tracker = FeedHealthTracker([feed], HealthPolicy(failing_after=1), started=NOW)
        tracker.load(FeedState(feed.url, consecutive_errors=4, health=FAILING))
        # Still failing after a restart: nothing new to announce.
        assert tracker.sweep(NOW) == []
        assert tracker.needs_store(feed.url) is None

    def test_sweep_notices_silence_between_polls(self):
        feed = Feed("https://example.org/a.xml", expected_update_period=60)
        tracker = FeedHealthTracker([feed], started=NOW)
        tracker.observe(FeedState(feed.url, polls=1, last_success=NOW, last_new_item=NOW), NOW)
        assert tracker.sweep(NOW + 30) == []
        [stale] = tracker.sweep(NOW + 61)
        assert stale.current.health == STALE
        assert tracker.needs_store(feed.url) == STALE


def test_health_record_is_a_keyed_cloudevent():
    feed = Feed("https://example.org/a.xml", name="A")
    tracker = FeedHealthTracker([feed], HealthPolicy(failing_after=1), started=NOW)
    transition = tracker.observe(FeedState(feed.url, consecutive_errors=1, last_error="HTTP 503"), NOW)
    record = health_record(transition, "monitor.feed-health")
    event = orjson.loads(record.value)
    assert record.topic == "monitor.feed-health" and record.key == feed.url.encode()
    assert event["health"] == FAILING and event["previous"] == OK and event["last_error"] == "HTTP 503"
    assert event["feed_name"] == "A" and event["at"].endswith("Z")
    assert dict(record.headers)["ce_type"] == b"news.feed-health.v1"


# -- pages of feeds (the status page, /status.json, news-monitor status) ------------------

def _mixed_tracker(ok: int = 40, *, policy: HealthPolicy | None = None) -> FeedHealthTracker:
    """``ok`` healthy feeds with new items i minutes ago, and two feeds of every other health."""
    feeds = [Feed(f"https://ok.example/{i:04d}.xml", name=f"Healthy {i}") for i in range(ok)]
    feeds += [Feed(f"https://bad.example/{kind}-{i}.xml", name=f"{kind.title()} {i}", expected_update_period=HOUR)
              for kind in (FAILING, STALE, DISABLED) for i in range(2)]
    tracker = FeedHealthTracker(feeds, policy or HealthPolicy(failing_after=1), started=NOW - 9 * HOUR)
    for i in range(ok):
        tracker.observe(FeedState(feeds[i].url, polls=1, last_success=NOW, last_new_item=NOW - 60 * i), NOW)
    for i in range(2):
        tracker.observe(FeedState(f"https://bad.example/failing-{i}.xml", polls=3, consecutive_errors=3,
                                  last_new_item=NOW - 2 * HOUR + i, last_error="HTTP 503"), NOW)
        tracker.observe(FeedState(f"https://bad.example/stale-{i}.xml", polls=3, last_success=NOW,
                                  last_new_item=NOW - 5 * HOUR - i), NOW)
        tracker.observe(FeedState(f"https://bad.example/disabled-{i}.xml", polls=3, disabled="HTTP 410 Gone"), NOW)
    return tracker


class TestPages:
    def test_problems_first_then_the_most_recent_new_item(self):
        tracker = _mixed_tracker()
        rows = tracker.page(FeedQuery(limit=10)).rows
        assert [row.health for row in rows[:6]] == [DISABLED, DISABLED, FAILING, FAILING, STALE, STALE]
        # Within a health: the most recent new item first; feeds that never had one last, by url.
        assert [row.url for row in rows[:6]] == [
            "https://bad.example/disabled-0.xml", "https://bad.example/disabled-1.xml",
            "https://bad.example/failing-1.xml", "https://bad.example/failing-0.xml",
            "https://bad.example/stale-0.xml", "https://bad.example/stale-1.xml",
        ]
        assert [row.url for row in rows[6:]] == [f"https://ok.example/{i:04d}.xml" for i in range(4)]

    def test_a_page_is_bounded_and_the_pages_cover_every_feed_once(self):
        tracker = _mixed_tracker(ok=994)
        seen: list[str] = []
        offset: int | None = 0
        pages = 0
        while offset is not None:
            page = tracker.page(FeedQuery(offset=offset, limit=200))
            assert len(page.rows) <= 200 and page.total == page.matched == 1000
            seen += [row.url for row in page.rows]
            offset, pages = page.next_offset, pages + 1
        assert pages == 5 and len(seen) == len(set(seen)) == 1000
        assert tracker.page(FeedQuery(offset=1000)).rows == [] and tracker.page(FeedQuery(offset=1000)).next_offset is None
        assert len(tracker.page().rows) == PAGE_ROWS
        assert len(tracker.page(FeedQuery(limit=None)).rows) == 1000

    def test_filter_by_health_and_by_text_in_the_url_or_name(self):
        tracker = _mixed_tracker()
        failing = tracker.page(FeedQuery(health=(FAILING,)))
        assert failing.matched == 2 and {row.health for row in failing.rows} == {FAILING} and failing.total == 46
        not_ok = tracker.page(FeedQuery(health=(STALE, FAILING, DISABLED), limit=3))
        assert not_ok.matched == 6 and [row.health for row in not_ok.rows] == [DISABLED, DISABLED, FAILING]
        assert not_ok.next_offset == 3
        by_name = tracker.page(FeedQuery(text="HEALTHY 1"))  # case-insensitive, in the name
        assert {row.name for row in by_name.rows} == {"Healthy 1", *(f"Healthy {i}" for i in range(10, 20))}
        by_url = tracker.page(FeedQuery(text="bad.example/stale"))
        assert [row.url for row in by_url.rows] == ["https://bad.example/stale-0.xml", "https://bad.example/stale-1.xml"]
        assert tracker.page(FeedQuery(text="xmlhealthy")).matched == 0, "a match may not straddle url and name"
        both = tracker.page(FeedQuery(health=(OK,), text="0003"))
        assert [row.url for row in both.rows] == ["https://ok.example/0003.xml"]

    def test_a_text_filter_searches_the_url_as_shown(self):
        feed = Feed("https://bob:hunter2@feeds.example/rss?token=hunter2")
        tracker = FeedHealthTracker([feed], shown_url=lambda url: url.replace("hunter2", "***"))
        assert tracker.page(FeedQuery(text="hunter2")).matched == 0
        assert tracker.page(FeedQuery(text="feeds.example")).matched == 1

    def test_url_order_is_stable_while_feeds_poll(self):
        tracker = _mixed_tracker()
        first = tracker.page(FeedQuery(order="url", limit=20))
        # A feed on the second page gets a new item: it moves in health order, not in url order.
        tracker.observe(FeedState("https://ok.example/0035.xml", polls=2, last_success=NOW + 5, last_new_item=NOW + 5), NOW + 5)
        second = tracker.page(FeedQuery(order="url", offset=first.next_offset, limit=40))
        urls = [row.url for row in first.rows + second.rows]
        assert urls == sorted(urls) and len(set(urls)) == 46
        assert tracker.page(FeedQuery(limit=7)).rows[6].url == "https://ok.example/0035.xml"
        failing = tracker.page(FeedQuery(order="url", health=(FAILING,)))
        assert [row.url for row in failing.rows] == ["https://bad.example/failing-0.xml", "https://bad.example/failing-1.xml"]

    def test_the_index_follows_polls_sweeps_and_restarts(self):
        """A random history of polls and sweeps: pages and counts always equal a full sort."""
        rng = random.Random(13)
        feeds = [Feed(f"https://f{i:03d}.example/rss", expected_update_period=rng.choice([None, 600.0])) for i in range(120)]
        tracker = FeedHealthTracker(feeds, HealthPolicy(failing_after=2, stale_min_age=600), started=NOW)
        states = {feed.url: FeedState(feed.url) for feed in feeds}
        now = NOW
        for step in range(1500):
            now += rng.uniform(0, 30)
            if step % 97 == 0:
                tracker.sweep(now)
                continue
            url = rng.choice(feeds).url
            old = states[url]
            roll = rng.random()
            if roll < 0.01:
                new = old.evolve(polls=old.polls + 1, disabled="HTTP 410 Gone")
            elif roll < 0.3:
                new = old.evolve(polls=old.polls + 1, consecutive_errors=old.consecutive_errors + 1, last_error="boom")
            else:
                new = old.evolve(polls=old.polls + 1, consecutive_errors=0, last_success=now,
                                 last_new_item=now if rng.random() < 0.5 else old.last_new_item)
            states[url] = new
            tracker.observe(new, now)
            if step % 250 == 0:
                _assert_index_matches_a_full_sort(tracker)
        _assert_index_matches_a_full_sort(tracker)
        assert all(tracker.counts().values()), "the history visits every health"
        restarted = FeedHealthTracker(feeds, HealthPolicy(failing_after=2, stale_min_age=600), started=now)
        restarted.load_all(state.evolve(health=tracker.health_of(url).health) for url, state in states.items())
        assert restarted.counts() == tracker.counts()
        assert [r.url for r in restarted.page(FeedQuery(limit=None)).rows] == [r.url for r in tracker.page(FeedQuery(limit=None)).rows]

    def test_pages_follow_a_changed_feed_list(self):
        """A reload (or a poller given other partitions) changes the feed list after pages
        were read: added feeds with a stored state, and removed ones, are filed afresh."""
        tracker = _mixed_tracker()
        assert tracker.page().total == 46
        added = Feed("https://new.example/rss", name="Newcomer")
        kept = [feed for feed in tracker.feeds if "bad.example" not in feed.url]
        tracker.set_feeds([*kept, added], NOW)
        tracker.load(FeedState(added.url, polls=4, consecutive_errors=4, last_error="HTTP 500", health=FAILING))
        _assert_index_matches_a_full_sort(tracker)
        assert tracker.counts()[FAILING] == 1 and tracker.page().total == len(kept) + 1
        assert [row.url for row in tracker.page(FeedQuery(text="newcomer")).rows] == [added.url]
        assert tracker.page(FeedQuery(text="bad.example")).matched == 0


def _assert_index_matches_a_full_sort(tracker: FeedHealthTracker) -> None:
    rows = tracker.rows()
    worst = {health: rank for rank, health in enumerate(reversed(HEALTH_STATES))}
    expected = sorted(rows, key=lambda r: (worst[r.health], -r.last_new_item if r.last_new_item else math.inf, r.url))
    assert [r.url for r in tracker.page(FeedQuery(limit=None)).rows] == [r.url for r in expected]
    assert tracker.counts() == {health: sum(r.health == health for r in rows) for health in HEALTH_STATES}
    middle = tracker.page(FeedQuery(offset=50, limit=30)).rows
    assert [r.url for r in middle] == [r.url for r in expected[50:80]]


# -- a running daemon -------------------------------------------------------------------

RSS = """<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>https://example.net/</link>
{items}</channel></rss>"""
ITEM = "<item><title>Item {n}</title><link>https://example.net/{n}</link><guid>urn:ex:{n}</guid></item>"


async def _events(bootstrap: str, feed_url: str, count: int) -> list[dict]:
    def mine(records):
        return [e for e in (orjson.loads(r.value) for r in records) if e["feed_url"] == feed_url]

    records = await read_topic(bootstrap, "monitor.feed-health", until=lambda rs: len(mine(rs)) >= count, timeout=20)
    return mine(records)


@pytest.mark.integration
async def test_daemon_publishes_failing_and_recovery(broker, feed_server, tmp_path):
    url = feed_server.serve("/flaky.rss", "down for maintenance", status=503)
    settings = make_settings(
        tmp_path, broker.bootstrap_servers, [url],
        overrides={"health": {"failing_after": 2, "check_interval": 0.2}, "feeds": {"interval": 1.0, "max_interval": 1.0}},
    )
    monitor = Monitor(settings)
    run = asyncio.create_task(monitor.run(handle_signals=False))
    try:
        [failing] = await _events(broker.bootstrap_servers, url, 1)
        assert (failing["previous"], failing["health"]) == ("ok", "failing")
        assert "503" in failing["last_error"] and failing["consecutive_errors"] == 2
        feed_server.serve("/flaky.rss", RSS.format(items=ITEM.format(n=1)))
        events = await _events(broker.bootstrap_servers, url, 2)
        assert [(e["previous"], e["health"]) for e in events] == [("ok", "failing"), ("failing", "ok")]
    finally:
        monitor.stop()
        await asyncio.wait_for(run, timeout=30)
    from monitor.adapters.store import Store

    assert Store(settings.state_dir).feed_state(url).health == OK


@pytest.mark.integration
async def test_daemon_flags_a_silent_feed_stale_and_clears_it(broker, feed_server, tmp_path):
    url = feed_server.serve("/quiet.rss", RSS.format(items=ITEM.format(n=1)))
    settings = make_settings(
        tmp_path, broker.bootstrap_servers, [{"url": url, "expected_update_period": 1.5}],
        overrides={"health": {"check_interval": 0.2}, "feeds": {"interval": 1.0, "max_interval": 1.0}},
    )
    monitor = Monitor(settings)
    run = asyncio.create_task(monitor.run(handle_signals=False))
    try:
        [stale] = await _events(broker.bootstrap_servers, url, 1)
        assert (stale["previous"], stale["health"]) == ("ok", "stale")
        assert "no new item" in stale["reason"]
        # The feed answers all along (the same document): stale, not failing.
        assert monitor.observer.tracker.health_of(url).health == STALE
        feed_server.serve("/quiet.rss", RSS.format(items=ITEM.format(n=2) + ITEM.format(n=1)))
        events = await _events(broker.bootstrap_servers, url, 2)
        assert (events[1]["previous"], events[1]["health"]) == ("stale", "ok")
    finally:
        monitor.stop()
        await asyncio.wait_for(run, timeout=30)
