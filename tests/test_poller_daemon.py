"""The polling daemon against a real local HTTP server and the real broker.

Redirects (301 moves a feed, 302/307 do not), 410 disabling a feed, per-feed error
counters by kind, conditional GET and the body-hash skip (no parse either way),
the per-host limit, first polls at start-up, a 1 s interval on a busy feed, feed
health of a brand-new feed, and the retention sweep. The server records every request
(path, headers, time) and how many were in flight at once; the daemon's own
metrics and its state store are read to see what it did.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from aiohttp import web

from monitor.adapters.store import Store
from monitor.worker import Monitor
from tests.support import Running, make_settings, read_alerts, rss, stored, until

pytestmark = pytest.mark.integration

SANCTIONS = "The European Union agreed new sanctions against Russia on Friday, targeting oil exports and banks."


def polls(monitor: Monitor, result: str) -> float:
    """The daemon's own ``feed_polls`` counter for one result, over every status class."""
    total = 0.0
    for metric in monitor.observer.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "news_monitor_feed_polls_total" and sample.labels.get("result") == result:
                total += sample.value
    return total


def _settings(tmp_path, broker, feeds, **feeds_overrides):
    overrides = {"feeds": {"interval": 1.0, "max_interval": 2.0, "jitter": 0.0, **feeds_overrides}}
    return make_settings(tmp_path, broker.bootstrap_servers, feeds, overrides=overrides)


# -- redirects -------------------------------------------------------------------------------


async def test_permanent_redirect_moves_the_feed_for_good(broker, server, tmp_path):
    old = server.status("/old.rss", 301, Location="/new.rss")
    new = server.feed("/new.rss", rss([("m1", "Moved", "A feed that moved.")]))
    settings = _settings(tmp_path, broker, [old])

    async with Running(settings):
        await until(lambda: len(server.of("/new.rss")) >= 3, what="three polls of the new address")

    assert len(server.of("/old.rss")) == 1, "after the 301 polls go straight to the new address"
    assert stored(settings, old).current_url == new
    # A restart keeps using the new address.
    await Monitor(settings).run(once=True, handle_signals=False)
    assert len(server.of("/old.rss")) == 1 and len(server.of("/new.rss")) >= 4


@pytest.mark.parametrize("status", [302, 307])
async def test_temporary_redirect_keeps_the_configured_address(broker, server, tmp_path, status):
    start = server.status("/temp.rss", status, Location="/today.rss")
    server.feed("/today.rss", rss([("t1", "Temporary", "Served from elsewhere today.")]))
    settings = _settings(tmp_path, broker, [start])

    async with Running(settings):
        await until(lambda: len(server.of("/today.rss")) >= 3, what="three polls")

    assert len(server.of("/temp.rss")) == len(server.of("/today.rss"))
    assert stored(settings, start).current_url is None


# -- 410 Gone ----------------------------------------------------------------------------------


async def test_gone_disables_the_feed_while_others_go_on(broker, server, tmp_path):
    gone = server.status("/gone.rss", 410)
    counter = {"n": 0}

    async def busy(request: web.Request) -> web.StreamResponse:
        counter["n"] += 1
        items = [(f"b{n}", f"Item {n}", f"Busy item number {n}.") for n in range(counter["n"])]
        return web.Response(body=rss(items[-10:]), content_type="application/rss+xml")

    server.handlers["/busy.rss"] = busy
    settings = _settings(tmp_path, broker, [gone, server.url("/busy.rss")])

    async with Running(settings) as monitor:
        await until(lambda: len(server.of("/busy.rss")) >= 4, what="four polls of the healthy feed")
        assert polls(monitor, "gone") == 1

    assert len(server.of("/gone.rss")) == 1
    state = stored(settings, gone)
    assert state.disabled and "410" in state.disabled and state.http_4xx == 1
    # Neither a restarted daemon nor a single pass asks for it again.
    async with Running(settings):
        await until(lambda: len(server.of("/busy.rss")) >= 6, what="polls after the restart")
    await Monitor(settings).run(once=True, handle_signals=False)
    assert len(server.of("/gone.rss")) == 1


# -- error counters ----------------------------------------------------------------------------


async def test_errors_are_counted_per_feed_by_kind(broker, server, tmp_path):
    missing = server.status("/missing.rss", 404)
    broken = server.status("/broken.rss", 500)

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(body=b"")

    server.handlers["/slow.rss"] = slow
    settings = _settings(tmp_path, broker, [missing, broken, server.url("/slow.rss")], timeout=0.5, read_timeout=0.5)

    for _ in range(2):
        summary = await Monitor(settings).run(once=True, handle_signals=False)
        assert len(summary.failed) == 3

    counters = {url: stored(settings, url) for url in (missing, broken, server.url("/slow.rss"))}
    expected = {missing: (2, 0, 0), broken: (0, 2, 0), server.url("/slow.rss"): (0, 0, 2)}
    for url, (http_4xx, http_5xx, timeouts) in expected.items():
        state = counters[url]
        assert (state.http_4xx, state.http_5xx, state.timeouts) == (http_4xx, http_5xx, timeouts), url
        assert state.error_count == 2 and state.consecutive_errors == 2
        assert state.last_error and url in state.last_error


async def test_a_retry_after_is_never_cut_short_by_the_jitter(broker, server, tmp_path):
    # docs/polling.md: Retry-After on 429/503 is honoured. The jitter (up to ±50 %) was
    # applied to that wait too, so half the feeds came back before the server allowed.
    urls = [server.status(f"/busy/{n}.rss", 429, **{"Retry-After": "1000"}) for n in range(20)]
    settings = _settings(tmp_path, broker, urls, interval=100.0, max_interval=200.0, jitter=0.5)

    def wait(monitor: Monitor, n: int) -> float:
        hits = server.of(f"/busy/{n}.rss")
        return (monitor.poller.schedule.due_at(urls[n]) or 0.0) - hits[0].at if hits else 0.0

    async with Running(settings) as monitor:
        await until(lambda: all(wait(monitor, n) > 1 for n in range(20)), what="every feed rescheduled")
        waits = [wait(monitor, n) for n in range(20)]
    assert min(waits) >= 1000 - 1, f"polled again after {min(waits):.0f} s, before the server's Retry-After of 1000 s"
    assert max(waits) <= 1000 * 1.5 + 1


async def test_a_new_failing_feed_has_its_health_stored(broker, server, tmp_path):
    broken = server.status("/down.rss", 503)
    settings = make_settings(
        tmp_path,
        broker.bootstrap_servers,
        [broken],
        overrides={"feeds": {"interval": 1.0, "max_interval": 1.0}, "health": {"failing_after": 1}, "state": {"flush_interval": 0.1}},
    )
    async with Running(settings) as monitor:
        await until(lambda: len(server.of("/down.rss")) >= 1 and monitor.observer.summary.polls >= 1, what="the first poll")
        # The health write and the batched state write-back both reach the row, whichever is first.
        await until(lambda: stored(settings, broken).health == "failing", what="health stored while running")
    state = stored(settings, broken)
    assert state.health == "failing" and state.http_5xx >= 1 and state.polls >= 1


# -- conditional GET and the body hash ---------------------------------------------------------


async def test_conditional_get_sends_validators_and_a_304_is_not_parsed(broker, server, tmp_path):
    etag, modified = '"v7"', formatdate(usegmt=True)

    async def conditional(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == etag or request.headers.get("If-Modified-Since") == modified:
            return web.Response(status=304, headers={"ETag": etag})
        body = rss([("c1", "Conditional", "A feed that supports conditional GET.")])
        return web.Response(body=body, headers={"ETag": etag, "Last-Modified": modified, "Content-Type": "application/rss+xml"})

    server.handlers["/conditional.rss"] = conditional
    settings = _settings(tmp_path, broker, [server.url("/conditional.rss")])

    async with Running(settings) as monitor:
        await until(lambda: monitor.observer.summary.polls >= 3, what="three polls")
        assert polls(monitor, "ok") == 1, "only the first answer was parsed"
        assert polls(monitor, "not_modified") == monitor.observer.summary.polls - 1

    first, *later = server.of("/conditional.rss")
    assert "If-None-Match" not in first.headers and first.status == 200
    for hit in later:
        assert hit.headers["If-None-Match"] == etag and hit.headers["If-Modified-Since"] == modified
        assert hit.status == 304
    state = stored(settings, server.url("/conditional.rss"))
    assert state.etag == etag and state.last_modified == modified
    # The 304 polls update the cached state in place; what they counted reached the store.
    assert state.polls == len(server.of("/conditional.rss")) and state.last_success is not None


async def test_a_changed_body_that_cannot_be_parsed_keeps_the_last_good_validators(broker, server, tmp_path):
    """The failure is recorded on the state as it was before the poll: the ETag of the last
    answer that could be read stays, so the next poll fetches the feed in full again."""
    answers = 0

    async def flipping(request: web.Request) -> web.StreamResponse:
        nonlocal answers
        answers += 1
        if answers == 1:
            body = rss([("p1", "Readable", "The last answer that could be read.")])
            return web.Response(body=body, headers={"ETag": '"good"', "Content-Type": "application/rss+xml"})
        return web.Response(body=b"<html><body><p>Not a feed at all</p></body></html>", headers={"ETag": '"bad"', "Content-Type": "text/html"})

    server.handlers["/flip.rss"] = flipping
    url = server.url("/flip.rss")
    settings = _settings(tmp_path, broker, [url])
    first = await Monitor(settings).run(once=True, handle_signals=False)
    assert not first.failed
    good = stored(settings, url)
    second = await Monitor(settings).run(once=True, handle_signals=False)
    assert len(second.failed) == 1
    state = stored(settings, url)
    assert state.etag == '"good"' and state.body_hash == good.body_hash
    assert state.last_success == good.last_success and state.consecutive_errors == 1 and state.polls == 2


async def test_identical_bytes_are_not_parsed_again_when_the_server_ignores_validators(broker, server, tmp_path):
    url = server.feed("/static.rss", rss([("s1", "Static", "A server without validators.")]))
    settings = _settings(tmp_path, broker, [url])

    async with Running(settings) as monitor:
        await until(lambda: monitor.observer.summary.polls >= 3, what="three polls")
        assert polls(monitor, "ok") == 1
        assert polls(monitor, "unchanged") == monitor.observer.summary.polls - 1

    assert all(hit.status == 200 for hit in server.of("/static.rss"))
    # A restart remembers the hash too.
    summary = await Monitor(settings).run(once=True, handle_signals=False)
    assert summary.new_articles == 0 and summary.duplicates == 0 and not summary.failed


# -- limits and timing -------------------------------------------------------------------------


@pytest.mark.parametrize("per_host", [1, 3])
async def test_per_host_limit_caps_requests_in_flight_to_one_host(broker, server, tmp_path, per_host):
    server.delay = 0.1
    urls = [server.feed(f"/many/{n}.rss", rss([(f"h{n}", f"Item {n}", "Same host, many feeds.")])) for n in range(8)]
    settings = make_settings(
        tmp_path, broker.bootstrap_servers, urls, overrides={"feeds": {"interval": 60.0, "per_host": per_host, "concurrency": 64}}
    )

    async with Running(settings):
        await until(lambda: len({h.path for h in server.hits}) == 8, what="every feed's first poll")

    assert server.max_in_flight == per_host


async def test_first_polls_at_start_up_and_a_busy_feed_keeps_its_1s_interval(broker, server, tmp_path):
    quiet = [server.feed(f"/quiet/{n}.rss", rss([(f"q{n}", f"Quiet {n}", "Nothing new here.")])) for n in range(20)]
    counter = {"n": 0}

    async def busy(request: web.Request) -> web.StreamResponse:
        counter["n"] += 1
        items = [(f"busy{n}", f"Item {n}", f"Busy item number {n}.") for n in range(counter["n"])]
        return web.Response(body=rss(items[-10:]), content_type="application/rss+xml")

    server.handlers["/busy.rss"] = busy
    feeds = [*quiet, {"url": server.url("/busy.rss"), "interval": 1}]
    # The default interval is long: only the busy feed's own 1 s interval brings it back.
    settings = make_settings(tmp_path, broker.bootstrap_servers, feeds, overrides={"feeds": {"interval": 300.0, "max_interval": 600.0}})

    started = time.monotonic()
    async with Running(settings):
        await until(lambda: len(server.of("/busy.rss")) >= 6, timeout=20, what="six polls of the busy feed")

    for path in (f"/quiet/{n}.rss" for n in range(20)):
        hits = server.of(path)
        assert len(hits) == 1, f"{path} polled {len(hits)} times"
        assert hits[0].at - started < 10.0, f"{path} first polled {hits[0].at - started:.1f}s after start"
    times = [h.at for h in server.of("/busy.rss")]
    assert times[0] - started < 10.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 1.5 and min(gaps) > 0.8, f"busy feed gaps: {[round(g, 2) for g in gaps]}"


# -- retention -------------------------------------------------------------------------------


async def test_retention_forgets_articles_gone_from_their_feed_but_not_a_quiet_feeds(broker, server, tmp_path):
    retention = 0.8  # seconds
    version = {"etag": '"v1"', "items": [("a", "Old item", "An item that will leave the feed."), ("b", "EU sanctions", SANCTIONS)]}

    async def feed(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == version["etag"]:
            return web.Response(status=304, headers={"ETag": version["etag"]})
        return web.Response(body=rss(version["items"]), headers={"ETag": version["etag"], "Content-Type": "application/rss+xml"})

    server.handlers["/quiet.rss"] = feed
    url = server.url("/quiet.rss")
    settings = make_settings(
        tmp_path,
        broker.bootstrap_servers,
        [url],
        overrides={
            "feeds": {"interval": 1.0, "max_interval": 1.0},
            "state": {"retention_days": retention / 86400, "retention_check": 0.1, "flush_interval": 0.1},
        },
    )

    def known(*guids: str) -> list[bool]:
        store = Store(Path(settings.state_dir))
        try:
            return [store.find_article(f"urn:t:{g}", None) is not None for g in guids]
        finally:
            store.close()

    async with Running(settings) as monitor:
        await until(lambda: monitor.observer.summary.polls >= 1, what="the first poll")
        # The feed answers 304 for longer than the retention: its items are still in it.
        await asyncio.sleep(retention * 2.5)
        assert known("a", "b") == [True, True], "a quiet feed's current items were forgotten"
        # New version: "a" leaves the feed, "c" arrives, "b" (the alerted one) stays.
        version.update(etag='"v2"', items=[("b", "EU sanctions", SANCTIONS), ("c", "New item", "Something else entirely.")])
        await until(lambda: known("c") == [True], what="the new version parsed")
        await until(lambda: known("a") == [False], timeout=10, what="the dropped item forgotten")
        await asyncio.sleep(retention * 2.5)
        assert known("b", "c") == [True, True]

    alerts = await read_alerts(broker.bootstrap_servers, [url], ["alerts.sanctions"])
    assert len(alerts) == 1, "an item still in its feed must never alert twice"


def test_pending_articles_are_never_forgotten(tmp_path):
    from monitor.model import Record

    store = Store(tmp_path)
    feed = "https://a.example/rss"
    record = Record("alert-1", "pending-1", "alerts.x", None, b"{}", ())
    store.record_article(article_id="pending-1", url=None, feed_url=feed, content_hash="h", rules=["x"], outbox=[record], now=100.0)
    store.record_article(article_id="old-1", url=None, feed_url=feed, content_hash="h", rules=[], now=100.0)
    store.record_article(article_id="current-1", url=None, feed_url=feed, content_hash="h", rules=[], now=5000.0)

    assert store.forget_articles_before(4000.0) == 1
    assert store.find_article("old-1", None) is None
    assert store.find_article("pending-1", None) is not None and store.find_article("current-1", None) is not None
    # Acknowledged, it becomes forgettable.
    store.ack("alert-1", "alerts.x", "pending-1")
    assert store.forget_articles_before(4000.0) == 1
    assert store.find_article("pending-1", None) is None
    # The newest version of a feed is kept however old it is (a feed silent for months).
    assert store.forget_articles_before(10_000.0) == 0
    assert store.find_article("current-1", None) is not None


async def test_a_gone_feed_taken_off_the_list_is_polled_again_when_it_comes_back(broker, server, tmp_path):
    # docs/polling.md: skipped "until it is removed from the feed list". The disabled mark
    # stayed in the store, so a feed put back (by a reload or across a restart) was skipped
    # for good, and nothing short of editing the database polled it again.
    gone = server.status("/back.rss", 410)
    other = server.feed("/other.rss", rss([("o1", "Other", "Other news.")]))
    settings = _settings(tmp_path, broker, [gone, other])
    await Monitor(settings).run(once=True, handle_signals=False)
    assert stored(settings, gone).disabled

    # A restart without it, then with it again.
    without = _settings(tmp_path, broker, [other])
    await Monitor(without).run(once=True, handle_signals=False)
    assert stored(settings, gone).disabled is None
    server.feed("/back.rss", rss([("g1", "Back", "The feed is back.")]))
    await Monitor(settings).run(once=True, handle_signals=False)
    assert len(server.of("/back.rss")) == 2

    # A 410 again, then a reload without it and one with it.
    server.status("/back.rss", 410)
    await Monitor(settings).run(once=True, handle_signals=False)
    assert stored(settings, gone).disabled
    polled = len(server.of("/other.rss"))
    async with Running(settings) as monitor:
        await until(lambda: len(server.of("/other.rss")) > polled, what="the daemon's first poll")
        feeds = monitor.feeds
        monitor.apply_feeds([feed for feed in feeds if feed.url != gone])
        server.feed("/back.rss", rss([("g2", "Back again", "The feed is back again.")]))
        monitor.apply_feeds(feeds)
        await until(lambda: len(server.of("/back.rss")) >= 4, what="the feed polled again after the reload")
