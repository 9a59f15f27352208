"""The poll loop's bounded dispatch: a fixed set of pollers drains the due feeds.

Against a real local server through the whole daemon (real broker): the global limit is
the number of pollers, every due feed is still polled, and the schedule the pollers
choose reaches the store through the batched feed-state flush (no store write per poll).
"""

from __future__ import annotations

import asyncio
import gzip
import time
import uuid
from pathlib import Path

import orjson
import pytest

from tests.support import Running, make_settings, read_topic, rss, stored, until

pytestmark = pytest.mark.integration


async def test_concurrency_pollers_cap_requests_in_flight_and_every_feed_is_polled(broker, server, tmp_path):
    server.delay = 0.1
    urls = [server.feed(f"/bounded/{n}.rss", rss([(f"b{n}", f"Item {n}", "Many feeds, few pollers.")])) for n in range(12)]
    settings = make_settings(
        tmp_path, broker.bootstrap_servers, urls, overrides={"feeds": {"interval": 60.0, "per_host": 12, "concurrency": 3}}
    )

    async with Running(settings) as monitor:
        await until(lambda: monitor.observer.summary.polls >= 12, what="every feed's first poll")
        # Pollers, not a task per due feed: a handful of tasks however many feeds are due.
        pollers = [t for t in asyncio.all_tasks() if t.get_name().startswith("poller")]
        assert len(pollers) == 3

    assert server.max_in_flight == 3
    assert {h.path for h in server.hits} == {f"/bounded/{n}.rss" for n in range(12)}
    # The next poll chosen after each poll was written by the flush at shutdown.
    for url in urls:
        state = stored(settings, url)
        assert state.interval == 60.0
        assert state.next_poll is not None and state.next_poll > time.time() + 30


def test_the_run_summary_keeps_the_latest_failures_and_counts_them_all():
    """The daemon runs for months: its summary must not keep every failure it ever saw."""
    from types import SimpleNamespace

    from monitor.observe.summary import FAILURES_KEPT, RunSummary

    summary = RunSummary(feeds=1)
    for n in range(FAILURES_KEPT + 5):
        summary.add(SimpleNamespace(status="error", new=0, duplicates=0, error=f"http://f/{n}: HTTP 500", feed=SimpleNamespace(url=f"http://f/{n}"), alerts=[], signals=[]))

    assert summary.failures == FAILURES_KEPT + 5
    assert len(summary.failed) == FAILURES_KEPT
    assert summary.failed[-1] == (f"http://f/{FAILURES_KEPT + 4}", f"http://f/{FAILURES_KEPT + 4}: HTTP 500")


async def test_the_single_process_detects_the_language_of_new_and_changed_articles_only(broker, server, tmp_path, monkeypatch):
    """As a poller does (tests/app/test_poller_role.py): the articles already stored are not
    detected again; the new one is, before it is matched and published."""
    from tests.app.test_poller_role import FRENCH, GERMAN, count_detections

    detected = count_detections(monkeypatch)
    url = server.feed("/languages.rss", rss(GERMAN))
    topic = f"articles-{uuid.uuid4().hex[:10]}"
    settings = make_settings(tmp_path, broker.bootstrap_servers, [url], overrides={"kafka": {"articles_topic": topic}})
    async with Running(settings) as monitor:
        await until(lambda: monitor.observer.summary.polls >= 1, what="the first poll")
        assert len(detected) == 3
        server.feed("/languages.rss", rss([FRENCH, *GERMAN]))
        records = await read_topic(broker.bootstrap_servers, topic, until=lambda rs: len(rs) >= 4, timeout=15)
        # Polls of the same body since then parsed nothing: one detection more, for the new entry.
        assert len(detected) == 4
    languages = {orjson.loads(r.value)["id"]: orjson.loads(r.value)["lang"] for r in records}
    assert languages == {"urn:t:de0": "de", "urn:t:de1": "de", "urn:t:de2": "de", "urn:t:fr1": "fr"}



async def test_a_poll_that_a_bug_ends_is_a_failed_poll_in_the_run_summary(broker, server, tmp_path, monkeypatch):
    """A bug in one poll is logged with its traceback, and counted: run --once's summary and
    the status page said 0 polls and 0 failures for a feed whose every poll crashed."""
    from monitor.pipeline import Pipeline

    bad = server.feed("/crash.rss", rss([("c1", "EU adopts sanctions", "Sanctions against Russia.")]))
    good = server.feed("/fine.rss", rss([("f1", "EU adopts sanctions", "Sanctions against Russia.")]))
    process = Pipeline._process

    async def crash_on_one_feed(self, feed, *args, **kwargs):
        if feed.url == bad:
            raise RuntimeError("injected bug")
        return await process(self, feed, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "_process", crash_on_one_feed)
    settings = make_settings(tmp_path, broker.bootstrap_servers, [bad, good])
    async with Running(settings) as monitor:
        summary = monitor.observer.summary
        await until(lambda: summary.polls >= 2, what="both feeds' first polls")
        assert summary.failures == 1
        assert summary.failed[0][0] == bad
        assert "the poll failed on a bug (RuntimeError: injected bug" in summary.failed[0][1]


async def test_an_article_whose_matching_raises_costs_that_article_only(broker, server, tmp_path, monkeypatch):
    """A bug met on one article (here the rule engine raising on it) is logged and leaves
    that article out; the feed's other articles alert. It ended the whole poll, every poll."""
    from monitor.adapters.store import Store
    from monitor.engine import RuleSet

    real_match = RuleSet.match

    def match(self: RuleSet, article):
        if article.id == "urn:t:poison":
            raise ValueError("injected bug")
        return real_match(self, article)

    monkeypatch.setattr(RuleSet, "match", match)
    items = [(slug, "EU adopts sanctions", "Sanctions against Russia.") for slug in ("before", "poison", "after")]
    url = server.feed("/poison.rss", rss(items))
    settings = make_settings(tmp_path, broker.bootstrap_servers, [url])
    async with Running(settings) as monitor:
        summary = monitor.observer.summary
        await until(lambda: summary.polls >= 1, what="the first poll")
        assert summary.failures == 0 and summary.new_articles == 2
        assert summary.alerts[("sanctions", "alerts.sanctions")] == 2
    store = Store(Path(settings.state_dir))
    try:
        # Not recorded as seen: nothing of it was written (its next changed body matches it again).
        assert store.find_article("urn:t:poison", None) is None
        assert store.find_article("urn:t:after", None) is not None
    finally:
        store.close()


async def test_a_feed_whose_gzip_body_is_cut_off_is_a_failed_poll_that_advances_nothing(broker, server, tmp_path):
    """aiohttp handed back the first half of a cut-off gzip stream as the body: the lenient
    parser read the items in it, the ETag was stored, and the rest of the feed was lost
    until it changed. Now the poll fails, naming the encoding, and the next one reads all."""
    items = [(f"gz{n}", f"Gzip item {n}", "An item of a feed served compressed.") for n in range(40)]
    whole = gzip.compress(rss(items))
    headers = {"Content-Encoding": "gzip", "ETag": '"gz1"'}
    url = server.feed("/cut-gzip.rss", whole[: len(whole) // 2], **headers)
    topic = f"articles-{uuid.uuid4().hex[:10]}"
    settings = make_settings(tmp_path, broker.bootstrap_servers, [url], overrides={"kafka": {"articles_topic": topic}})
    async with Running(settings) as monitor:
        summary = monitor.observer.summary
        await until(lambda: summary.polls >= 1, what="the first poll")
        assert summary.failures == 1
        assert summary.failed[0] == (url, summary.failed[0][1])
        assert "the compressed body is corrupt (Content-Encoding: gzip)" in summary.failed[0][1]
        state = monitor.poller.pipeline.feed_states.peek(url)
        assert state.etag is None and state.consecutive_errors == 1 and state.last_success is None
        server.feed("/cut-gzip.rss", whole, **headers)
        records = await read_topic(broker.bootstrap_servers, topic, until=lambda rs: len(rs) >= 40, timeout=20)
    assert len({orjson.loads(r.value)["id"] for r in records}) == 40
    assert stored(settings, url).etag == '"gz1"'
