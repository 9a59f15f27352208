"""The poller against everything broken at once, with healthy feeds alongside.

A real aiohttp server on loopback serves a never-ending slow body, a 200 MB body (with
and without Content-Length), a gzip bomb, an XML entity bomb, a redirect loop, 429 with
Retry-After, 503, an HTML page, invalid UTF-8 and an empty 200, while two healthy feeds
are polled every second. The daemon (real broker, real store) must keep polling the
healthy feeds on time, publish their alerts, record every hostile feed's error, and stay
within a memory bound.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from pathlib import Path

import pytest

from monitor.adapters.store import Store
from monitor.worker import Monitor
from tests.hostile_app import HostileServer
from tests.support import REFERENCE_TOPICS, SEEDS, make_settings, read_alerts

pytestmark = pytest.mark.integration

HOSTILE = [
    "/slow",
    "/huge",
    "/huge-chunked",
    "/gzip-bomb",
    "/entity-bomb",
    "/loop",
    "/rate-limited",
    "/unavailable",
    "/html",
    "/bad-utf8",
    "/empty",
]
#: Peak resident memory the whole test may add, in bytes.
MEMORY_BOUND = 64 * 1024 * 1024


def _status(field: str) -> int | None:
    """A ``Vm*`` value of this process in bytes, from /proc (None off Linux)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak measured is this test's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@pytest.fixture
async def hostile():
    server = await HostileServer().start()
    try:
        yield server
    finally:
        await server.stop()


async def test_poller_survives_every_hostile_feed_at_once(broker, hostile, tmp_path):
    if _status("VmRSS") is None:
        pytest.skip("needs /proc/self/status to measure memory")
    hostile.feeds["/healthy.rss"] = (SEEDS / "world-news.rss.xml").read_bytes()
    hostile.ticking.add("/busy.rss")
    healthy = [hostile.url("/healthy.rss"), hostile.url("/busy.rss")]
    bad = [hostile.url(path) for path in HOSTILE]
    settings = make_settings(
        tmp_path,
        broker.bootstrap_servers,
        [*healthy, *bad],
        overrides={
            "feeds": {
                "interval": 1.0,
                "max_interval": 3.0,
                "timeout": 3.0,
                "read_timeout": 1.0,
                "max_bytes": 5 * 1024 * 1024,
                "max_redirects": 5,
                "per_host": 32,
                "parse_timeout": 10.0,
            }
        },
    )
    # The bomb is built before measuring: it is the server's cost, not the poller's.
    hostile_bomb = __import__("tests.hostile_app", fromlist=["gzip_bomb"]).gzip_bomb()
    assert len(hostile_bomb) < 1024 * 1024

    monitor = Monitor(settings)
    baseline = _status("VmRSS")
    exact_peak = _reset_peak()
    sampled_peak = baseline
    started = time.monotonic()
    run = asyncio.create_task(monitor.run(handle_signals=False))
    try:
        deadline = started + 9.0
        while time.monotonic() < deadline:
            assert not run.done(), f"the daemon stopped: {run.exception() if run.done() else ''}"
            sampled_peak = max(sampled_peak, _status("VmRSS") or 0)
            await asyncio.sleep(0.05)
        alerts = await read_alerts(broker.bootstrap_servers, healthy[:1], expect=3)
        assert not run.done()
    finally:
        monitor.stop()
        await asyncio.wait_for(run, timeout=30)

    peak = _status("VmHWM") if exact_peak else sampled_peak
    growth = max(peak, sampled_peak) - baseline
    assert growth < MEMORY_BOUND, f"peak RSS grew by {growth / 2**20:.0f} MiB"

    # The busy feed publishes on every poll, so it is polled on its 1 s interval the whole
    # time, whatever the hostile feeds do; the static one, quiet, at most max_interval apart.
    times = hostile.times["/busy.rss"]
    assert len(times) >= 7, f"busy feed polled {len(times)} times in 9 s"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 1.6, f"busy feed waited {max(gaps):.1f}s between polls"
    quiet = hostile.times["/healthy.rss"]
    assert len(quiet) >= 3 and max(b - a for a, b in itertools.pairwise(quiet)) < 3.5
    assert sorted(a["rule_id"] for a in alerts) == ["arms-control", "sanctions", "summit"]
    assert {a["topic"] for a in alerts} == set(REFERENCE_TOPICS)

    failed = {url: error for url, error in monitor.summary.failed}
    for path in ("/slow", "/huge", "/huge-chunked", "/gzip-bomb", "/loop", "/rate-limited", "/unavailable", "/html", "/empty"):
        assert hostile.url(path) in failed, f"{path} did not fail"
        assert hostile.url(path) in failed[hostile.url(path)], "each error names its feed"
    assert "timed out" in failed[hostile.url("/slow")]
    assert "limit" in failed[hostile.url("/huge")] and "limit" in failed[hostile.url("/gzip-bomb")]
    assert "redirects" in failed[hostile.url("/loop")]
    assert "HTML" in failed[hostile.url("/html")]
    assert "empty" in failed[hostile.url("/empty")]
    # Retry-After: 120 is honoured: polled once at start-up, not again within the test.
    assert hostile.hits["/rate-limited"] == 1
    # The entity bomb never expands: its title is not a 64 MB string in any alert or error.
    assert all(len(error) < 2000 for error in failed.values())

    state = Store(Path(settings.state_dir))
    try:
        slow = state.feed_state(hostile.url("/slow"))
        assert slow.timeouts >= 1 and slow.consecutive_errors >= 1
        limited = state.feed_state(hostile.url("/rate-limited"))
        assert limited.http_4xx == 1 and "429" in (limited.last_error or "")
        assert state.feed_state(hostile.url("/unavailable")).http_5xx >= 1
        assert state.feed_state(hostile.url("/healthy.rss")).consecutive_errors == 0
    finally:
        state.close()


async def test_bytes_that_trip_the_parsers_cost_one_feed_at_most_never_a_crash(broker, tmp_path):
    """A character reference to a surrogate, a form feed in escaped HTML and an element left
    open in a guid: each crashed the poll (feed.poll.crashed, a traceback, every item of the
    feed lost, and nothing in the feed's state or the run's summary). Now the first two
    alert and the third is a feed error the status page shows."""
    from tests.support import PollServer, stored

    summit = "Leaders gather at the summit in Geneva"
    text = "Heads of state met to discuss the agreement signed last week in the capital."
    other = "Ministers will sign a trade pact on Friday after months of difficult negotiations."
    server = await PollServer().start()
    try:
        surrogate = server.feed("/surrogate.rss", _rss(f"<title>{summit} &#xD800;</title><guid>s1</guid><description>{text}</description>", "s"))
        form_feed = server.feed("/form-feed.rss", _rss(f"<title>{summit}</title><guid>f1</guid><description>&lt;p&gt;{other}&amp;#12;&lt;/p&gt;</description>", "f"))
        open_guid = server.feed("/open-guid.rss", _rss(f"<title>{summit}</title><guid>rss-0<textInput>1</guid>", "o"))
        settings = make_settings(tmp_path, broker.bootstrap_servers, [surrogate, form_feed, open_guid])
        summary = await Monitor(settings).run(once=True, handle_signals=False)
    finally:
        await server.stop()
    assert summary.polls == 3
    assert [url for url, _ in summary.failed] == [open_guid]
    alerts = await read_alerts(broker.bootstrap_servers, [surrogate, form_feed], expect=2)
    assert sorted((a["article"]["feed_url"], a["rule_id"]) for a in alerts) == [(form_feed, "summit"), (surrogate, "summit")]
    state = stored(settings, open_guid)
    assert state.consecutive_errors == 1 and "feedparser failed" in (state.last_error or "")


def _rss(item: str, slug: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"<item>{item}<link>https://example.net/{slug}</link></item></channel></rss>"
    ).encode()
