"""monitor.parse.parse_feed: formats, text, identity, encodings and errors."""

from __future__ import annotations

import gzip
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.errors import FeedError
from monitor.model import Article
from monitor.parse import ParsedFeed, parse_feed
from tests.support import DATA

FEEDS = DATA / "feeds"
FEED_URL = "https://news.example.com/feed.xml"


def parse_fixture(name: str, content_type: str | None = None) -> ParsedFeed:
    return parse_feed((FEEDS / name).read_bytes(), FEED_URL, content_type)


class TestRss20:
    @pytest.fixture(scope="class")
    @classmethod
    def parsed(cls) -> ParsedFeed:
        return parse_fixture("rss20.xml")

    def test_feed_fields(self, parsed: ParsedFeed) -> None:
        assert parsed.format == "rss20"
        assert parsed.title == "Example News & Views"
        assert parsed.ttl == 15 * 60
        assert parsed.warning is None

    def test_entries_in_feed_order(self, parsed: ParsedFeed) -> None:
        assert [a.title for a in parsed.articles] == [
            "AT&T <3 Apple: merger talks",
            "Second story",
            "No guid, no link",
        ]
        assert all(isinstance(a, Article) and a.feed_url == FEED_URL for a in parsed.articles)

    def test_summary_is_plain_text_with_block_breaks(self, parsed: ParsedFeed) -> None:
        assert parsed.articles[0].summary == "First paragraph.\nSecond\nline & more"

    def test_body_from_content_encoded(self, parsed: ParsedFeed) -> None:
        assert parsed.articles[0].body == "Heading\nFull body text.\none\ntwo"
        assert parsed.articles[1].body == ""

    def test_url_is_canonical(self, parsed: ParsedFeed) -> None:
        assert parsed.articles[0].url == "https://news.example.com/2026/11/merger?a=1&id=7"

    def test_published_is_aware_utc(self, parsed: ParsedFeed) -> None:
        assert parsed.articles[0].published == datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
        assert parsed.articles[1].published is None  # "not a date"

    def test_id_fallback_chain(self, parsed: ParsedFeed) -> None:
        local_guid, link_only, neither = parsed.articles
        assert local_guid.guid == "12345"
        assert local_guid.id == "news.example.com:12345"
        assert link_only.guid is None and link_only.id == "https://news.example.com/2026/11/second"
        assert neither.id.startswith("sha256:") and neither.url is None


class TestAtom10:
    @pytest.fixture(scope="class")
    @classmethod
    def parsed(cls) -> ParsedFeed:
        return parse_fixture("atom10.xml")

    def test_feed_fields(self, parsed: ParsedFeed) -> None:
        assert (parsed.format, parsed.title, parsed.ttl, parsed.warning) == ("atom10", "Example Atom", None, None)

    def test_text_title_keeps_angle_brackets(self, parsed: ParsedFeed) -> None:
        assert parsed.articles[0].title == "x <b> y: literal angle brackets"

    def test_html_title_is_decoded(self, parsed: ParsedFeed) -> None:
        assert parsed.articles[1].title == "Tom & Jerry"

    def test_summary_and_xhtml_content(self, parsed: ParsedFeed) -> None:
        assert parsed.articles[0].summary == "Summary html"
        assert parsed.articles[0].body == "Hello\nWorld"

    def test_body_equal_to_summary_is_dropped(self, parsed: ParsedFeed) -> None:
        assert parsed.articles[1].summary == "Same text" and parsed.articles[1].body == ""

    def test_relative_link_resolved_against_feed_url(self, parsed: ParsedFeed) -> None:
        assert parsed.articles[1].url == "https://news.example.com/relative/tom"

    def test_published_offset_converted_to_utc(self, parsed: ParsedFeed) -> None:
        assert parsed.articles[1].published == datetime(2026, 11, 23, 17, 0, tzinfo=UTC)

    def test_same_story_in_rss_and_atom_has_same_url(self, parsed: ParsedFeed) -> None:
        rss_article = parse_fixture("rss20.xml").articles[0]
        atom_article = parsed.articles[0]
        assert rss_article.id != atom_article.id
        assert rss_article.url == atom_article.url


class TestJsonFeed:
    @pytest.fixture(scope="class")
    @classmethod
    def parsed(cls) -> ParsedFeed:
        return parse_fixture("jsonfeed11.json", "application/feed+json")

    def test_feed_fields(self, parsed: ParsedFeed) -> None:
        assert (parsed.format, parsed.title, parsed.warning) == ("json11", "Example JSON", None)

    def test_items(self, parsed: ParsedFeed) -> None:
        first, second = parsed.articles
        assert first.title == "AT&T <3 Apple"  # plain text by spec, never HTML-parsed
        assert first.summary == "A summary"
        assert first.body == "Body one\ntwo"
        assert first.url == "https://news.example.com/2026/11/merger"
        assert first.published == datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
        assert second.id == "news.example.com:42"  # numeric id: local, prefixed
        assert second.body == "Only text\nwith gaps"

    def test_detected_by_body_without_content_type(self) -> None:
        assert parse_fixture("jsonfeed11.json").format == "json11"

    def test_json_that_is_not_a_feed(self) -> None:
        with pytest.raises(FeedError, match=r"https://news.example.com/feed.xml: not a feed: .*items"):
            parse_feed(b'{"hello": "world"}', FEED_URL, "application/json")

    def test_invalid_json(self) -> None:
        with pytest.raises(FeedError, match="invalid JSON"):
            parse_feed(b'{"items": [', FEED_URL)

    def test_unknown_version_warns(self) -> None:
        parsed = parse_feed(b'{"items": [{"id": "x:1", "title": "t"}]}', FEED_URL)
        assert len(parsed.articles) == 1 and "version" in (parsed.warning or "")


class TestEncodings:
    def test_declared_latin1(self) -> None:
        parsed = parse_fixture("latin1.xml")
        assert parsed.title == "Café Nachrichten"
        assert parsed.articles[0].title == "Grüße aus München"
        assert parsed.articles[0].summary == "Straße & Café"
        assert parsed.warning is None

    def test_declared_windows_1251(self) -> None:
        parsed = parse_fixture("cp1251.xml")
        assert (parsed.title, parsed.articles[0].title) == ("Новости", "Привет")

    def test_http_charset_is_honoured(self) -> None:
        body = '<rss version="2.0"><channel><item><title>Grüße</title></item></channel></rss>'.encode("latin-1")
        parsed = parse_feed(body, FEED_URL, "application/rss+xml; charset=ISO-8859-1")
        assert parsed.articles[0].title == "Grüße"

    def test_utf16_with_bom(self) -> None:
        text = '<?xml version="1.0" encoding="utf-16"?><rss version="2.0"><channel><item><title>Ünïcode</title></item></channel></rss>'
        parsed = parse_feed(text.encode("utf-16"), FEED_URL)
        assert parsed.articles[0].title == "Ünïcode"

    def test_text_is_nfc(self) -> None:
        body = '<rss version="2.0"><channel><item><title>Cafe\u0301</title></item></channel></rss>'.encode()
        assert parse_feed(body, FEED_URL).articles[0].title == "Caf\u00e9"


class TestMalformed:
    def test_bozo_feed_returns_entries_and_warning(self) -> None:
        parsed = parse_fixture("bozo.xml")
        assert [a.url for a in parsed.articles] == ["https://broken.example.com/1", "https://broken.example.com/2"]
        # Before: "SAXParseException: <unknown>:3:110: mismatched tag".
        assert parsed.warning == "not well-formed XML at line 3, column 110: mismatched tag"

    def test_mislabelled_content_type_is_not_a_warning(self) -> None:
        assert parse_fixture("rss20.xml", "text/html; charset=utf-8").warning is None

    def test_html_page_names_the_url(self) -> None:
        with pytest.raises(FeedError) as caught:
            parse_fixture("page.html", "text/html")
        assert str(caught.value).startswith(f"{FEED_URL}: not a feed: got an HTML page")

    def test_html_page_after_a_comment(self) -> None:
        with pytest.raises(FeedError, match="got an HTML page"):
            parse_feed(b"<!-- cached --><html><body><p>hi</p></body></html>", FEED_URL)

    @pytest.mark.parametrize("body", [b"", b"   \n\t ", b"\xef\xbb\xbf  "])
    def test_empty_body(self, body: bytes) -> None:
        with pytest.raises(FeedError, match=f"^{FEED_URL}: empty body$"):
            parse_feed(body, FEED_URL)

    def test_xml_that_is_not_a_feed(self) -> None:
        with pytest.raises(FeedError, match="not a feed"):
            parse_feed(b'<?xml version="1.0"?><config><a>1</a></config>', FEED_URL)

    def test_garbage(self) -> None:
        with pytest.raises(FeedError, match=f"^{FEED_URL}: not a feed"):
            parse_feed(b"\x00\x01\x02 binary junk \xff\xfe", FEED_URL)

    def test_empty_but_valid_feed_is_not_an_error(self) -> None:
        parsed = parse_feed(b'<rss version="2.0"><channel><title>Quiet</title></channel></rss>', FEED_URL)
        assert parsed.articles == [] and parsed.title == "Quiet" and parsed.warning is None

    def test_body_that_looks_like_a_path_is_not_opened(self, tmp_path: Path) -> None:
        secret = tmp_path / "feed.xml"
        secret.write_text('<rss version="2.0"><channel><item><title>SECRET</title></item></channel></rss>')
        with pytest.raises(FeedError):
            parse_feed(str(secret).encode(), FEED_URL)


class TestGzip:
    def test_stray_gzip_layer_is_undone(self) -> None:
        parsed = parse_feed(gzip.compress((FEEDS / "rss20.xml").read_bytes()), FEED_URL)
        assert len(parsed.articles) == 3

    def test_corrupt_gzip(self) -> None:
        with pytest.raises(FeedError, match="gzip"):
            parse_feed(b"\x1f\x8b\x08\x00garbage", FEED_URL)


class TestTtl:
    @pytest.mark.parametrize(("ttl", "seconds"), [("60", 3600.0), (" 5 ", 300.0), ("0", None), ("-5", None), ("soon", None), ("\u00b25", None), ("9" * 5000, 6e10)])
    def test_ttl(self, ttl: str, seconds: float | None) -> None:
        body = f'<rss version="2.0"><channel><ttl>{ttl}</ttl><item><title>t</title></item></channel></rss>'.encode()
        assert parse_feed(body, FEED_URL).ttl == seconds


def test_result_is_picklable() -> None:
    for name in ("rss20.xml", "atom10.xml", "jsonfeed11.json", "bozo.xml"):
        parsed = parse_fixture(name)
        assert pickle.loads(pickle.dumps(parsed)) == parsed


def test_feed_error_is_picklable() -> None:
    with pytest.raises(FeedError) as caught:
        parse_feed(b"", FEED_URL)
    # A process pool sends exceptions back pickled.
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)


# -- links: only http(s) published, relative ones never resolved against a file ---------------

_LINKS_RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Ed blog</title><link>https://blog.example.org/</link>
<item><title>relative</title><link>edblog/post-1</link><description>x</description></item>
<item><title>permalink guid</title><guid>edblog/post-2</guid><description>x</description></item>
<item><title>script</title><link>javascript:alert(document.cookie)</link><guid isPermaLink="false">urn:x:3</guid><description>x</description></item>
<item><title>data</title><link>data:text/html;base64,PHNjcmlwdD4=</link><description>x</description></item>
</channel></rss>"""


@pytest.mark.parametrize("fast", [True, False], ids=["lxml fast path", "feedparser"])
@pytest.mark.parametrize("location", ["/srv/feeds/edblog.rss", "file:///srv/feeds/edblog.rss"])
def test_relative_links_of_a_file_feed_resolve_against_its_site_link(fast: bool, location: str) -> None:
    from monitor.parse import _parse_xml

    parsed = _parse_xml(_LINKS_RSS, location, None, fast=fast)
    assert [a.url for a in parsed.articles] == [
        "https://blog.example.org/edblog/post-1",
        "https://blog.example.org/edblog/post-2",
        None,
        None,
    ]
    assert parsed.links_dropped == {"not_http": 2}
    assert parsed.dropped_link == "javascript:alert(document.cookie)"
    assert [a.title for a in parsed.articles] == ["relative", "permalink guid", "script", "data"], "every entry stays"


@pytest.mark.parametrize("fast", [True, False], ids=["lxml fast path", "feedparser"])
def test_relative_links_with_nothing_http_to_resolve_against_are_dropped(fast: bool) -> None:
    from monitor.parse import _parse_xml

    no_site = _LINKS_RSS.replace(b"<link>https://blog.example.org/</link>", b"<link>/</link>")
    parsed = _parse_xml(no_site, "/srv/feeds/edblog.rss", None, fast=fast)
    assert [a.url for a in parsed.articles] == [None, None, None, None]
    assert parsed.links_dropped == {"relative": 2, "not_http": 2}
    assert len({a.id for a in parsed.articles}) == 4, "a dropped link still tells entries apart"


@pytest.mark.parametrize("fast", [True, False], ids=["lxml fast path", "feedparser"])
def test_relative_links_of_a_credentialed_feed_do_not_inherit_its_credentials(fast: bool) -> None:
    from monitor.parse import _parse_xml

    parsed = _parse_xml(_LINKS_RSS, "https://bob:pw@feeds.example.com/x/feed.rss?token=t1&edition=eu", None, fast=fast)
    assert parsed.articles[0].url == "https://feeds.example.com/x/edblog/post-1"
    assert parsed.articles[1].url == "https://feeds.example.com/x/edblog/post-2"


def test_atom_xml_base_wins_over_the_file_location() -> None:
    atom = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://atom.example.org/blog/">
<title>t</title><link href="https://site.example.org/"/>
<entry><title>a</title><id>tag:x,1</id><link href="edblog/post-1"/><summary>x</summary></entry></feed>"""
    [article] = parse_feed(atom, "file:///srv/feeds/edblog.atom").articles
    assert article.url == "https://atom.example.org/blog/edblog/post-1"
    [article] = parse_feed(atom.replace(b' xml:base="https://atom.example.org/blog/"', b""), "/srv/feeds/edblog.atom").articles
    assert article.url == "https://site.example.org/edblog/post-1"


def test_json_feed_links_resolve_against_home_page_and_drop_other_schemes() -> None:
    feed = b"""{"version": "https://jsonfeed.org/version/1.1", "title": "t", "home_page_url": "https://j.example.org/",
    "items": [{"id": "1", "url": "posts/1", "content_text": "a"}, {"id": "2", "url": "javascript:x()", "content_text": "b"}]}"""
    parsed = parse_feed(feed, "/srv/feeds/feed.json")
    assert [a.url for a in parsed.articles] == ["https://j.example.org/posts/1", None]
    assert parsed.links_dropped == {"not_http": 1}


@pytest.mark.parametrize("ref", ["&#xD800;", "&#55296;", "&#xDFFF;", "&#x110000;", "&#99999999999999999999;", "&#x0000D800;"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_a_reference_to_no_character_costs_only_that_character(ref: str, encoding: str) -> None:
    # feedparser's lenient parser raised on these (UnicodeEncodeError, ValueError,
    # OverflowError), and the poll crashed with every other item of the feed.
    feed = (
        f'<?xml version="1.0" encoding="{encoding}"?><rss version="2.0"><channel><title>t</title>'
        f"<item><title>Summit {ref} talks</title><guid>g{ref}1</guid><link>https://news.example.com/1</link>"
        f"<description>a{ref}b</description></item>"
        "<item><title>Sanctions &#8217;eased&#x2019;</title><link>https://news.example.com/2</link></item></channel></rss>"
    ).encode(encoding)
    parsed = parse_feed(feed, FEED_URL)
    assert [(a.title, a.summary) for a in parsed.articles] == [("Summit \ufffd talks", "a\ufffdb"), ("Sanctions \u2019eased\u2019", "")]
    assert parsed.articles[0].id == "https://news.example.com/g\ufffd1"


def test_a_form_feed_in_escaped_html_is_a_line_break() -> None:
    # Well-formed XML whose escaped HTML holds &#12;: the fast path read it, html_to_text raised.
    body = b"""<rss version="2.0"><channel><title>t</title><item><title>Summit</title><link>https://news.example.com/1</link>
<description>&lt;p&gt;Leaders met&amp;#12;in Geneva&lt;/p&gt;</description></item></channel></rss>"""
    [article] = parse_feed(body, FEED_URL).articles
    assert article.summary == "Leaders met\nin Geneva"


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0" encoding="utf-8\x00"?><rss version="2.0"><channel><item><title>a</title></item></channel></rss>',
        b'<rss version="2.0"><channel><item><title>a</title><guid>rss-0<textInput>1</guid></item></channel></rss>',
    ],
)
def test_a_document_that_trips_feedparser_is_a_feed_error(body: bytes) -> None:
    # feedparser raised ValueError (a NUL in the declaration) and KeyError 'textinput' (an
    # element left open in a guid): the poll crashed with a traceback instead of failing.
    with pytest.raises(FeedError) as raised:
        parse_feed(body, FEED_URL)
    assert str(raised.value).startswith(f"{FEED_URL}: not parsed: feedparser failed on this document (")
    assert raised.value.hint


def test_a_feed_of_more_entries_than_the_limit_keeps_its_newest_in_feed_order() -> None:
    # 250,000 tiny items (18 MB, under max_bytes) held the daemon's loop ~0.5 s and its RSS ~500 MB.
    from monitor.parse import MAX_ENTRIES

    extra = 5
    items = "".join(
        f"<item><title>t{n}</title><link>https://news.example.com/{n}</link>"
        f"<pubDate>{datetime.fromtimestamp(1.7e9 + n * 60, UTC):%a, %d %b %Y %H:%M:%S} +0000</pubDate></item>"
        for n in range(MAX_ENTRIES + extra)  # oldest first: the cap must not keep the first ones
    )
    undated = "<item><title>undated</title><link>https://news.example.com/u</link></item>"
    parsed = parse_feed(f'<rss version="2.0"><channel><title>t</title>{undated}{items}</channel></rss>'.encode(), FEED_URL)
    # The undated entry and the five oldest are left out.
    assert [a.title for a in parsed.articles] == [f"t{n}" for n in range(extra, MAX_ENTRIES + extra)]
    assert parsed.warning == f"{MAX_ENTRIES + extra + 1:,} entries: only the {MAX_ENTRIES:,} newest were read"


def test_an_unpaired_surrogate_escape_in_a_json_feed_costs_only_that_character() -> None:
    # orjson refuses "\ud800" without its pair, and the whole feed was "invalid JSON".
    feed = rb"""{"version": "https://jsonfeed.org/version/1.1", "items": [
    {"id": "1", "url": "https://j.example.org/1", "title": "a\ud800b"},
    {"id": "2", "url": "https://j.example.org/2", "title": "pair \ud83d\ude00, low \udc00, high at the end\ud83d"}]}"""
    parsed = parse_feed(feed, FEED_URL)
    assert [a.title for a in parsed.articles] == ["a\ufffdb", "pair \U0001f600, low \ufffd, high at the end\ufffd"]
    with pytest.raises(FeedError, match="invalid JSON"):
        parse_feed(feed.replace(b'"items"', b'"items" "'), FEED_URL)


def test_a_json_feed_date_that_utc_cannot_hold_is_no_date() -> None:
    # 0001-01-01T00:00:00+14:00 is in year 0 in UTC: OverflowError, and the whole feed was lost.
    items = ", ".join(
        f'{{"id": "{n}", "url": "https://j.example.org/{n}", "title": "t{n}", "date_published": "{date}"}}'
        for n, date in enumerate(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-12-05T03:00:00+01:00"])
    )
    parsed = parse_feed(f'{{"version": "https://jsonfeed.org/version/1.1", "items": [{items}]}}'.encode(), FEED_URL)
    assert [(a.title, a.published) for a in parsed.articles] == [
        ("t0", None), ("t1", None), ("t2", datetime(2026, 12, 5, 2, 0, tzinfo=UTC))
    ]
