"""The parser pool in process mode: a runaway parse is abandoned and its workers killed,
while other feeds' parses still succeed (retried on a fresh pool when the kill took them
down too), and the time limit counts a task's own running time, not its wait for a
free worker.

The runaway parse is real: a well-formed Atom feed of 8,000 entries, which takes the
feedparser path seconds to read, against a 1 s limit. Tasks that must be running at a
precise moment are module-level functions handed to :meth:`ParserPool.run`, the same
entry point full-text extraction uses.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from monitor.adapters.parser_pool import ParserPool
from monitor.errors import FeedError
from monitor.parse import ParsedFeed

BIG_URL = "http://big.example/feed.atom"
SMALL_URL = "http://small.example/feed.rss"

SMALL = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>small</title>
<item><title>One</title><link>https://small.example/1</link><description>First.</description></item>
<item><title>Two</title><link>https://small.example/2</link><description>Second.</description></item>
</channel></rss>"""


def huge_atom(entries: int = 8000) -> bytes:
    """A legitimate, well-formed Atom feed that is simply very long (~2 MB)."""
    body = "".join(
        f"<entry><id>urn:big:{i}</id><title>Entry {i}</title><updated>2025-08-14T16:30:00Z</updated>"
        f"<link href='https://big.example/{i}'/><content type='html'>&lt;p&gt;Paragraph {i} of a very long feed.&lt;/p&gt;</content></entry>"
        for i in range(entries)
    )
    return (
        "<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/Atom'>"
        f"<title>big</title><id>urn:big</id><updated>2025-08-14T16:30:00Z</updated>{body}</feed>"
    ).encode()


def wait_for_file(path: str) -> str:
    """Runs in a worker until ``path`` exists (the test decides when it may finish)."""
    while not Path(path).exists():
        time.sleep(0.01)
    return "finished"


def busy_for(seconds: float) -> float:
    """Runs in a worker for ``seconds`` of wall time."""
    time.sleep(seconds)
    return seconds


@pytest.fixture
def pool():
    # Workers are niced: on a machine busy with other work a parse of a few milliseconds
    # can wait seconds for a core, which is not what these tests are about.
    running = ParserPool(workers=2, timeout=10.0)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def strict_pool():
    """A 2 s limit, for the tests of what happens past it."""
    running = ParserPool(workers=2, timeout=2.0)
    try:
        yield running
    finally:
        running.close()


async def test_runaway_parse_is_abandoned_naming_the_feed_while_another_succeeds(strict_pool):
    pool = strict_pool
    # The clock starts once the workers run (their start-up, the language detector's
    # model included, is not the runaway's time).
    await pool.parse(SMALL, SMALL_URL)
    started = time.monotonic()
    big, small = await asyncio.gather(
        pool.parse(huge_atom(40_000), BIG_URL, "application/atom+xml"),
        pool.parse(SMALL, SMALL_URL, "application/rss+xml"),
        return_exceptions=True,
    )
    elapsed = time.monotonic() - started

    assert isinstance(big, FeedError), big
    assert BIG_URL in str(big) and "longer than 2s" in str(big)
    assert isinstance(small, ParsedFeed) and [a.title for a in small.articles] == ["One", "Two"]
    assert elapsed < 10.0, f"the runaway parse was waited for ({elapsed:.1f}s)"
    assert pool.recycled == 1
    # The pool serves the next feed on fresh workers.
    again = await pool.parse(SMALL, SMALL_URL)
    assert len(again.articles) == 2


async def test_a_task_running_when_the_pool_is_killed_is_retried_on_a_fresh_pool(strict_pool, tmp_path):
    pool = strict_pool
    gate = tmp_path / "gate"
    runaway = asyncio.ensure_future(pool.parse(huge_atom(40_000), BIG_URL))
    # Half-way through the runaway's time, the innocent task starts on the other worker:
    # when the runaway is killed the innocent has used only half of its own time.
    await asyncio.sleep(1.0)
    innocent = asyncio.ensure_future(pool.run(wait_for_file, str(gate), label="innocent", what="waiting in"))
    with pytest.raises(FeedError, match=r"big\.example"):
        await runaway
    assert not innocent.done()
    gate.touch()

    assert await asyncio.wait_for(innocent, timeout=5) == "finished"
    assert pool.recycled == 1 and pool.retried == 1


async def test_the_limit_counts_running_time_not_the_wait_for_a_worker():
    # Five tasks of 0.5 s on one worker take 2.5 s in all, over the 2 s limit; none of
    # them runs for more than 0.5 s, so none may be abandoned (the margin is for a busy machine).
    pool = ParserPool(workers=1, timeout=2.0)
    try:
        results = await asyncio.gather(*(pool.run(busy_for, 0.5, label=f"task {n}") for n in range(5)))
    finally:
        pool.close()
    assert results == [0.5] * 5
    assert pool.recycled == 0


async def test_parse_and_sign_returns_each_articles_story_signature_in_one_task(pool):
    from monitor.dedupe.stories import StoryIndex, story_text

    index = StoryIndex(min_shingles=1, shingle_size=1)
    signed = await pool.parse_and_sign(SMALL, SMALL_URL, "application/rss+xml", index.signer)

    assert [a.title for a in signed.parsed.articles] == ["One", "Two"]
    assert len(signed.signatures) == 2
    # The same signatures the index would compute itself, so stories match across both paths.
    assert signed.signatures == index.signer([story_text(a) for a in signed.parsed.articles])
    assert pool.completed == 1


async def test_parse_and_sign_fails_naming_the_feed_like_parse(pool):
    from monitor.dedupe.stories import StoryIndex

    with pytest.raises(FeedError, match=r"small\.example"):
        await pool.parse_and_sign(b"<html><body>not a feed</body></html>", SMALL_URL, "text/html", StoryIndex().signer)


async def test_workers_run_at_a_lower_cpu_priority_than_the_daemon(pool):
    """A busy pool must not take cores from the event loop (or from the thread holding the
    GIL the loop waits for): the workers are niced, the daemon is not."""
    import os

    from monitor.adapters.parser_pool import WORKER_NICENESS

    daemon = os.nice(0)
    worker = await pool.run(os.nice, 0, label="niceness")
    assert worker == min(19, daemon + WORKER_NICENESS)
    assert os.nice(0) == daemon
