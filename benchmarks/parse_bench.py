"""Parse throughput: feedparser (default settings) vs monitor.parse.parse_feed.

Generates a typical news feed (50 items, ~100 KB, HTML descriptions with paragraphs,
links, images and entities, plus content:encoded) and prints, for one process:
ms/feed and feeds/s for feedparser with its defaults and for parse_feed; then
parse_feed's feeds/s in a 2-process pool (bodies pickled to the workers and results
pickled back, as the daemon does), its workers started the daemon's way
(``monitor.adapters.parser_pool.worker_context``: the fork server) unless ``--start-method`` says
otherwise.

    .venv/bin/python benchmarks/parse_bench.py [--seconds 3] [--format rss|atom] [--start-method fork]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import feedparser

from monitor.adapters.parser_pool import worker_context
from monitor.parse import parse_feed

FEED_URL = "https://news.example.com/rss/world.xml"
WORDS = ["government", "minister", "said", "talks", "would", "resume", "after", "the", "summit", "officials", "confirmed", "that", "markets", "reacted", "sharply", "on", "Thursday", "as", "investors", "weighed", "the", "central", "bank’s", "decision", "analysts", "expect", "further", "pressure", "on", "prices", "while", "the", "opposition", "demanded", "an", "inquiry", "into", "the", "contract", "—", "a", "move", "critics", "called", "“unprecedented”", "in", "recent", "years"]


def sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def description(rng: random.Random, index: int) -> str:
    return (
        f"<p>{escape(sentence(rng, 28))} <a href=\"https://news.example.com/tag/{index}\">Read more</a></p>"
        f"<p><img src=\"https://cdn.example.com/img/{index}.jpg\" alt=\"photo\" width=\"640\"/>"
        f"{escape(sentence(rng, 22))}&nbsp;&#8212; {escape(sentence(rng, 12))}</p>"
    )


def content(rng: random.Random, index: int) -> str:
    paragraphs = "".join(f"<p>{escape(sentence(rng, 30))}</p>" for _ in range(4))
    return (
        f"<figure><img src=\"https://cdn.example.com/img/{index}-big.jpg\"/><figcaption>"
        f"{escape(sentence(rng, 8))}</figcaption></figure>{paragraphs}"
        f"<ul><li>{escape(sentence(rng, 6))}</li><li>{escape(sentence(rng, 6))}</li></ul>"
        f"<script>trackView({index});</script>"
    )


def rss_feed(items: int = 50, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    start = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:media="http://search.yahoo.com/mrss/">\n'
        "<channel><title>Example News: World</title><link>https://news.example.com/world</link>"
        "<description>Latest world news</description><language>en-gb</language><ttl>5</ttl>\n"
    ]
    for index in range(items):
        slug = f"story-{index}-{rng.randrange(10**6)}"
        parts.append(
            "<item>"
            f"<title>{escape(sentence(rng, 10))}</title>"
            f"<link>https://news.example.com/world/2026/nov/25/{slug}?utm_source=rss&amp;utm_medium=feed</link>"
            f'<guid isPermaLink="false">{rng.randrange(10**8)}</guid>'
            f"<pubDate>{format_datetime(start - timedelta(minutes=17 * index))}</pubDate>"
            f"<dc:creator>Reporter {index % 7}</dc:creator><category>World</category><category>Politics</category>"
            f"<description>{escape(description(rng, index))}</description>"
            f"<content:encoded><![CDATA[{content(rng, index)}]]></content:encoded>"
            f'<media:content url="https://cdn.example.com/img/{index}.jpg" medium="image" width="640"/>'
            "</item>\n"
        )
    parts.append("</channel></rss>\n")
    return "".join(parts).encode()


def atom_feed(items: int = 50, seed: int = 7) -> bytes:
    """The same stories as Atom."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        "<title>Example News: World</title><id>tag:news.example.com,2026:world</id>"
        "<updated>2026-11-25T12:00:00Z</updated>\n"
    ]
    for index in range(items):
        stamp = (start - timedelta(minutes=17 * index)).isoformat()
        parts.append(
            f"<entry><title>{escape(sentence(rng, 10))}</title>"
            f"<id>tag:news.example.com,2026:{rng.randrange(10**8)}</id>"
            f'<link rel="alternate" href="https://news.example.com/world/{index}"/>'
            f"<updated>{stamp}</updated><published>{stamp}</published>"
            f"<author><name>Reporter {index % 7}</name></author>"
            f'<summary type="html">{escape(description(rng, index))}</summary>'
            f'<content type="html">{escape(content(rng, index))}</content></entry>\n'
        )
    parts.append("</feed>\n")
    return "".join(parts).encode()


def per_call(function: Callable[[], object], seconds: float) -> float:
    """Median seconds per call over batches run for about ``seconds``."""
    function()  # warm caches and imports
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def pool_throughput(body: bytes, workers: int, seconds: float, start_method: str = "daemon") -> float:
    """Feeds per second through a process pool, results pickled back to the parent."""
    context = worker_context() if start_method == "daemon" else multiprocessing.get_context(start_method)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        list(pool.map(parse_feed, [body] * workers * 4, [FEED_URL] * workers * 4))  # warm up
        batch = 20 * workers
        done = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            list(pool.map(parse_feed, [body] * batch, [FEED_URL] * batch, chunksize=2))
            done += batch
        return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--format", choices=("rss", "atom"), default="rss")
    parser.add_argument(
        "--start-method", choices=("daemon", "fork", "forkserver", "spawn"), default="daemon",
        help="how the pool's workers start (default: as the daemon starts them)",
    )
    args = parser.parse_args()

    body = rss_feed() if args.format == "rss" else atom_feed()
    parsed = parse_feed(body, FEED_URL)
    reference = feedparser.parse(io.BytesIO(body))
    assert len(parsed.articles) == len(reference.entries) == 50, "benchmark feed did not parse"

    print(f"feed: {args.format}, {len(parsed.articles)} items, {len(body) / 1024:.0f} KiB; parse_feed format={parsed.format}")
    print(f"CPUs available: {len(os.sched_getaffinity(0))}")
    baseline = per_call(lambda: feedparser.parse(io.BytesIO(body)), args.seconds)
    print(f"feedparser.parse (default settings), 1 process: {baseline * 1e3:7.2f} ms/feed  {1 / baseline:7.1f} feeds/s")
    no_sanitize = per_call(
        lambda: feedparser.parse(io.BytesIO(body), sanitize_html=False, resolve_relative_uris=False), args.seconds
    )
    print(f"feedparser.parse (no sanitize/resolve), 1 proc: {no_sanitize * 1e3:7.2f} ms/feed  {1 / no_sanitize:7.1f} feeds/s")
    ours = per_call(lambda: parse_feed(body, FEED_URL), args.seconds)
    print(f"parse_feed, 1 process:                          {ours * 1e3:7.2f} ms/feed  {1 / ours:7.1f} feeds/s"
          f"  ({baseline / ours:.2f}x feedparser default)")
    pooled = pool_throughput(body, 2, args.seconds, args.start_method)
    print(f"parse_feed, 2-process pool ({args.start_method + ' start):':<19}                   {pooled:7.1f} feeds/s"
          f"  ({pooled * baseline:.2f}x feedparser default in 1 process)")


if __name__ == "__main__":
    main()
