"""Hub discovery: Link headers first, then the document's head (Atom, RSS with atom:link,
FeedBurner's atom10 prefix); the self link is the topic."""

from __future__ import annotations

import time

from monitor.websub import discover, parse_link_header
from monitor.websub.discovery import HEAD_BYTES

FEED = "https://example.org/feed.xml"

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Example</title>
  <link rel="hub" href="https://hub.example/" />
  <link href="https://example.org/atom" rel="self" type="application/atom+xml"/>
  <entry><title>x</title><link rel="hub" href="https://entry-level.example/"/></entry>
</feed>"""

RSS = b"""<?xml version="1.0"?>
<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom" xmlns:atom10="http://www.w3.org/2005/Atom">
<channel><title>Example</title><link>https://example.org/</link>
<atom10:link xmlns:atom10="http://www.w3.org/2005/Atom" rel="hub" href="http://pubsubhubbub.appspot.com/" />
<atom:link rel='self' href='https://example.org/rss?a=1&amp;b=2' type='application/rss+xml'/>
<item><title>x</title></item></channel></rss>"""


def test_link_headers_win_over_the_document():
    header = '<https://hub.one/>; rel="hub", </feed.xml>; rel="self", <https://hub.two/>; rel="hub"'
    links = discover(header, ATOM, FEED)
    assert links is not None
    assert links.hubs == ("https://hub.one/", "https://hub.two/") and links.hub == "https://hub.one/"
    assert links.topic == "https://example.org/feed.xml", "relative self resolved against the feed url"


def test_link_header_parameters_quoted_unquoted_and_several_rels():
    parsed = parse_link_header('<https://h.example/>; title="a; b, c"; rel="hub alternate", <https://x/>;rel=self', FEED)
    assert parsed == [("https://h.example/", frozenset({"hub", "alternate"})), ("https://x/", frozenset({"self"}))]


def test_atom_document():
    links = discover(None, ATOM, FEED)
    assert links is not None and links.hubs == ("https://hub.example/",) and links.topic == "https://example.org/atom"


def test_rss_document_with_atom_links_under_any_prefix():
    links = discover("", RSS, FEED)
    assert links is not None and links.hub == "http://pubsubhubbub.appspot.com/"
    assert links.topic == "https://example.org/rss?a=1&b=2", "XML entities in href decoded"


def test_no_hub_no_links_and_only_the_head_is_read():
    assert discover(None, b"<rss><channel><title>t</title></channel></rss>", FEED) is None
    assert discover('<https://x/>; rel="self"', None, FEED) is None, "a self link alone makes no subscription"
    assert discover('<javascript:alert(1)>; rel="hub"', None, FEED) is None, "only http(s) hubs"
    late = b"<feed>" + b" " * HEAD_BYTES + b'<link rel="hub" href="https://late.example/"/></feed>'
    assert discover(None, late, FEED) is None, "hub links past the head are not looked for"


def test_a_feed_without_self_link_is_its_own_topic():
    links = discover('<https://hub.example/>; rel="hub"', None, FEED)
    assert links is not None and links.topic == FEED


def _seconds(call) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def test_unclosed_brackets_cost_no_more_than_ordinary_text_of_the_same_size():
    # Discovery runs on the event loop at every changed poll: a feed must not stall it.
    plain_head, plain_header = b"x" * HEAD_BYTES, "x" * 30_000
    hostile_head, hostile_header = (b"<link" * (HEAD_BYTES // 5 + 1))[:HEAD_BYTES], "<" * 30_000
    baseline = _seconds(lambda: discover(plain_header, plain_head, FEED))
    assert _seconds(lambda: discover(None, hostile_head, FEED)) < 50 * baseline + 0.05
    assert _seconds(lambda: discover(hostile_header, None, FEED)) < 50 * baseline + 0.05
    assert discover('<https://hub.example/>; rel="hub", <<<', None, FEED) is not None
