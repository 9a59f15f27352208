"""The lxml RSS fast path gives exactly the Articles the feedparser path gives.

For every feed the fast path claims (the shared corpus when present, tests/data/feeds,
seeds/, and tricky hand-written variants), every field of every Article (id, title,
summary, body, url, published, guid) and the feed's title, ttl, format and warning are
compared with the feedparser path on the same bytes. Variants the fast path must not
claim (xml:base, DOCTYPE, typed or base64 text, C1 controls, other encodings, repeated
fields, unknown elements) are checked to fall back, still with identical results.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.errors import FeedError
from monitor.parse import _parse_xml
from monitor.parse._fastrss import read_fast_rss
from monitor.parse._xmlguard import defuse_doctype
from tests.support import ROOT

CORPUS = ROOT.parent / "shared" / "corpus"
URL = "https://feeds.example.com/news/rss.xml"


def feed_files() -> list[Path]:
    files = sorted((ROOT / "tests" / "data" / "feeds").glob("*")) + sorted((ROOT / "seeds").glob("*.xml"))
    if CORPUS.is_dir():
        files += sorted(path for path in CORPUS.rglob("*") if path.is_file())
    return [path for path in files if path.is_file()]


def both(body: bytes, content_type: str | None = None) -> tuple[object, object]:
    """(fast-path result, feedparser-path result): a ParsedFeed or the FeedError message."""

    def run(fast: bool) -> object:
        try:
            return _parse_xml(body, URL, content_type, fast=fast)
        except FeedError as error:
            return str(error)

    return run(True), run(False)


def claimed(body: bytes, content_type: str | None = None) -> bool:
    return read_fast_rss(defuse_doctype(body)[0], URL, content_type) is not None


def test_every_claimed_feed_reads_the_same_as_feedparser() -> None:
    claims, mismatches = 0, []
    for path in feed_files():
        body = path.read_bytes()
        try:
            if not claimed(body):
                continue
        except Exception as error:  # noqa: BLE001 - the claim check must never raise; reported below
            mismatches.append(f"{path}: read_fast_rss raised {error!r}")
            continue
        claims += 1
        fast, slow = both(body)
        if fast != slow:
            mismatches.append(f"{path}: {describe(fast, slow)}")
    assert not mismatches, "\n".join(mismatches)
    # The comparison means something only if the fast path takes real feeds.
    minimum = 20 if CORPUS.is_dir() else 2
    assert claims >= minimum, f"the fast path claimed only {claims} feeds"


def describe(fast: object, slow: object) -> str:
    """The first differing field, for a readable failure."""
    if isinstance(fast, str) or isinstance(slow, str):
        return f"fast={fast!r} slow={slow!r}"
    for name in ("title", "ttl", "warning", "format"):
        if getattr(fast, name) != getattr(slow, name):
            return f"{name}: fast={getattr(fast, name)!r} slow={getattr(slow, name)!r}"
    if len(fast.articles) != len(slow.articles):
        return f"{len(fast.articles)} articles vs {len(slow.articles)}"
    for index, (a, b) in enumerate(zip(fast.articles, slow.articles)):
        for name in a.__dataclass_fields__:
            if getattr(a, name) != getattr(b, name):
                return f"article {index} {name}: fast={getattr(a, name)!r} slow={getattr(b, name)!r}"
    return "differs"


def rss(items: str, *, channel: str = "<title>News &amp; views</title><ttl>15</ttl>", prolog: str = '<?xml version="1.0" encoding="utf-8"?>', root: str = '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:media="http://search.yahoo.com/mrss/">') -> bytes:
    return f"{prolog}{root}<channel>{channel}{items}</channel></rss>".encode()


PLAIN_ITEM = (
    "<item><title>Talks &lt;b&gt;resume&lt;/b&gt; in Geneva</title>"
    "<link> https://news.example.com/a?utm_source=rss&amp;id=1 </link>"
    "<guid isPermaLink='false'>  a-1 </guid><pubDate>Tue, 24 Nov 2026 10:00:00 +0100</pubDate>"
    "<description>&lt;p&gt;Ministers met.&lt;/p&gt;&lt;p&gt;Markets reacted&amp;nbsp;sharply.&lt;/p&gt;</description>"
    "<content:encoded><![CDATA[<p>Ministers met on Thursday.</p><script>x()</script><p>Markets reacted sharply.</p>]]></content:encoded>"
    "<dc:creator>Reporter</dc:creator><category>World</category><media:content url='https://cdn.example.com/1.jpg'/>"
    "</item>"
)

CLAIMED = {
    "plain": rss(PLAIN_ITEM),
    "relative link, permalink guid as link": rss(
        "<item><title>AT&amp;T &lt;3 Apple</title><guid>/2026/story-2</guid><description>x &lt; y</description></item>"
        "<item><title>Q&amp;A; &#233;t&#233;</title><link>story-3?a=1&amp;amp;b=2</link><pubDate>2026-11-24T10:00:00Z</pubDate></item>"
    ),
    "content only, copied to summary": rss("<item><title>Only content</title><content:encoded>&lt;p&gt;Body text here&lt;/p&gt;</content:encoded></item>"),
    "empty fields and bad date": rss("<item><title></title><link/><guid></guid><description/><pubDate>not a date</pubDate></item>"),
    "mojibake repaired like feedparser": rss("<item><title>Caf\u00c3\u00a9 \u00e9t\u00e9</title><link>https://x.example/\u00c3\u00a9</link></item>"),
    "no channel title, BOM, comment": b"\xef\xbb\xbf" + rss("<item><!-- c --><title>t</title><link>https://x.example/1</link></item>", channel=""),
    "ascii text/xml": (rss(PLAIN_ITEM), "text/xml"),
    "utf-8 charset": (rss("<item><title>\u00e9t\u00e9 \u2014 \u201cquoted\u201d</title></item>"), "application/rss+xml; charset=UTF-8"),
    "no items": rss(""),
    "dc:date, atom self link, media credit": rss(
        '<item><title>t</title><dc:date>2026-11-24T10:00:00Z</dc:date><link>https://x.example/1</link>'
        '<atom:link xmlns:atom="http://www.w3.org/2005/Atom" rel="self" href="https://x.example/self"/>'
        "<media:content url='u'><media:credit>Photo: A</media:credit></media:content></item>"
        "<item><title>u</title><pubDate>Mon, 23 Nov 2026 08:00:00 GMT</pubDate><dc:date>2026-11-24T10:00:00Z</dc:date></item>"
    ),
}

NOT_CLAIMED = {
    "xml:base": rss('<item xml:base="https://other.example/"><title>t</title><link>rel</link></item>'),
    "doctype": rss(PLAIN_ITEM, prolog='<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY e "ent">]>').replace(b"Geneva", b"&e;"),
    "typed title": rss('<item><title type="html">&lt;b&gt;t&lt;/b&gt;</title></item>'),
    "base64 description": rss('<item><description mode="base64">aGVsbG8=</description></item>'),
    "C1 control": rss("<item><title>smart\u0093quotes\u0094</title></item>"),
    "latin-1": (rss("<item><title>\u00e9t\u00e9</title></item>").decode().replace("utf-8", "iso-8859-1").encode("latin-1")),
    "non-ascii text/xml without charset": (rss("<item><title>\u00e9t\u00e9</title></item>"), "text/xml"),
    "repeated title": rss("<item><title>one</title><title>two</title></item>"),
    "repeated description": rss("<item><description>one</description><description>two</description></item>"),
    "unknown element": rss('<item><title>t</title><fb:origLink xmlns:fb="http://rssnamespace.org/feedburner/ext/1.0">https://x.example/o</fb:origLink></item>'),
    "media title inside media content": rss("<item><title>t</title><media:content url='u'><media:credit>c</media:credit><media:title>other</media:title></media:content></item>"),
    "atom link in item": rss('<item><title>t</title><atom:link xmlns:atom="http://www.w3.org/2005/Atom" href="https://x.example/"/></item>'),
    "markup inside description": rss("<item><description><p>inline <b>xhtml</b></p></description></item>"),
    "media with children": rss("<item><title>t</title><media:content url='u'><media:title>other</media:title></media:content></item>"),
    "rss 0.91": rss(PLAIN_ITEM, root='<rss version="0.91" xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:media="http://search.yahoo.com/mrss/">'),
    "item outside channel": b'<rss version="2.0"><channel><title>c</title></channel><item><title>t</title></item></rss>',
    "not well-formed": rss("<item><title>t</item>"),
    "undefined entity": rss("<item><title>&nbsp;t</title></item>"),
    "html content type": (rss(PLAIN_ITEM), "text/html"),
}


def _split(case: bytes | tuple[bytes, str]) -> tuple[bytes, str | None]:
    return case if isinstance(case, tuple) else (case, None)


@pytest.mark.parametrize("name", sorted(CLAIMED))
def test_plain_rss_is_claimed_and_identical(name: str) -> None:
    body, content_type = _split(CLAIMED[name])
    assert claimed(body, content_type)
    fast, slow = both(body, content_type)
    assert fast == slow, describe(fast, slow)


@pytest.mark.parametrize("name", sorted(NOT_CLAIMED))
def test_unusual_rss_falls_back_to_feedparser(name: str) -> None:
    body, content_type = _split(NOT_CLAIMED[name])
    assert not claimed(body, content_type)
    fast, slow = both(body, content_type)
    assert fast == slow, describe(fast, slow)


def test_the_plain_item_is_read_in_full() -> None:
    """Not only equal to feedparser: the fields hold what the item says."""
    body, _ = _split(CLAIMED["plain"])
    parsed, _ = both(body)
    assert not isinstance(parsed, str)
    (article,) = parsed.articles
    assert parsed.title == "News & views" and parsed.ttl == 900.0 and parsed.format == "rss20"
    assert article.title == "Talks resume in Geneva"
    assert article.summary == "Ministers met.\nMarkets reacted sharply."
    assert article.body == "Ministers met on Thursday.\nMarkets reacted sharply."
    assert article.guid == "a-1"
    assert article.url == "https://news.example.com/a?id=1"
    assert article.published is not None and article.published.isoformat() == "2026-11-24T09:00:00+00:00"
