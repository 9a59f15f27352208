"""monitor.parse.identity: canonical URLs and the article id fallback chain."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from monitor.parse.identity import article_id, article_link, canonical_url, feed_host


class TestCanonicalUrl:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("HTTP://Example.COM/Path/To?b=2&a=1#frag", "http://example.com/Path/To?a=1&b=2"),
            ("https://example.com:443/a", "https://example.com/a"),
            ("http://example.com:80/a", "http://example.com/a"),
            ("http://example.com:8080/a", "http://example.com:8080/a"),
            ("https://example.com", "https://example.com/"),
            ("https://example.com/a?", "https://example.com/a"),
            ("  https://example.com/a  ", "https://example.com/a"),
        ],
    )
    def test_normalises_scheme_host_port_fragment_and_order(self, url: str, expected: str) -> None:
        assert canonical_url(url) == expected

    @pytest.mark.parametrize(
        "param",
        ["utm_source=rss", "UTM_Medium=x", "fbclid=1", "gclid=2", "mc_cid=3", "mc_eid=4", "ref=hn", "cmpid=5", "_ga=6"],
    )
    def test_tracking_params_dropped(self, param: str) -> None:
        assert canonical_url(f"https://example.com/a?id=7&{param}") == "https://example.com/a?id=7"

    def test_only_tracking_params_leaves_no_query(self) -> None:
        assert canonical_url("https://example.com/a?utm_source=x&utm_medium=y") == "https://example.com/a"

    def test_path_case_and_encoding_kept(self) -> None:
        assert canonical_url("https://example.com/A%2Fb/C?q=a%20b&p=x+y") == "https://example.com/A%2Fb/C?p=x+y&q=a%20b"

    def test_repeated_params_keep_their_order(self) -> None:
        assert canonical_url("https://example.com/?b=1&a=2&a=1") == "https://example.com/?a=2&a=1&b=1"

    def test_userinfo_and_ipv6_kept(self) -> None:
        assert canonical_url("http://u:p@[::1]:80/x") == "http://u:p@[::1]/x"

    @pytest.mark.parametrize("value", ["tag:example.com,2026:1", "/relative/path", "urn:uuid:1", "http://[bad"])
    def test_non_http_urls_returned_unchanged(self, value: str) -> None:
        assert canonical_url(value) == value


class TestArticleId:
    published = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)

    def test_global_guid_used_as_is(self) -> None:
        guid = "tag:example.com,2026:1"
        assert article_id(guid, "https://example.com/x", "t", None, feed_url="https://a.example/f") == guid

    def test_url_guid_used_as_is(self) -> None:
        guid = "https://example.com/x?utm_source=y"
        assert article_id(guid, None, "t", None, feed_url="https://a.example/f") == guid

    def test_local_guid_prefixed_with_feed_host(self) -> None:
        one = article_id("1", None, "t", None, feed_url="https://a.example/feed")
        other = article_id("1", None, "t", None, feed_url="https://B.example/feed")
        assert one == "a.example:1"
        assert other == "b.example:1"

    def test_same_site_feeds_share_local_guids(self) -> None:
        # A post in both /news.rss and /sports.rss of one site is the same post.
        assert article_id("7", None, "", None, feed_url="https://a.example/news.rss") == article_id(
            "7", None, "", None, feed_url="https://a.example/sports.rss"
        )

    def test_blank_guid_falls_back_to_canonical_link(self) -> None:
        assert article_id("  ", "HTTPS://Example.com/a?utm_source=x#c", "t", None) == "https://example.com/a"

    def test_no_guid_no_link_hashes_title_and_date(self) -> None:
        first = article_id(None, None, "Title", self.published)
        assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
        assert first == article_id(None, "", "Title", self.published)
        assert first != article_id(None, None, "Title", None)
        assert first != article_id(None, None, "Other", self.published)


def test_feed_host() -> None:
    assert feed_host("https://News.Example.com:8443/feed") == "news.example.com"
    assert feed_host("not a url") == "not a url"


class TestArticleLink:
    @pytest.mark.parametrize(
        ("link", "base", "expected"),
        [
            ("https://Example.com/a?utm_source=x", "", ("https://example.com/a", None)),
            ("post/1", "https://blog.example.org/news/", ("https://blog.example.org/news/post/1", None)),
            ("/post/1", "https://blog.example.org/news/", ("https://blog.example.org/post/1", None)),
            ("//cdn.example.org/p", "https://blog.example.org/", ("https://cdn.example.org/p", None)),
            ("post/1", "", (None, "relative")),
            ("post/1", "/srv/feeds/feed.xml", (None, "relative")),
            ("post/1", "file:///srv/feeds/feed.xml", (None, "relative")),
            ("javascript:alert(document.cookie)", "https://blog.example.org/", (None, "not_http")),
            ("JavaScript:alert(1)", "", (None, "not_http")),
            ("java\tscript:alert(1)", "", (None, "not_http")),
            ("data:text/html;base64,PHNjcmlwdD4=", "", (None, "not_http")),
            ("file:///etc/passwd", "", (None, "not_http")),
            ("mailto:desk@example.org", "", (None, "not_http")),
            ("https:///no-host", "", (None, "not_http")),
            ("  ", "https://blog.example.org/", (None, None)),
            (None, "", (None, None)),
        ],
    )
    def test_only_absolute_http_links_are_kept(self, link, base, expected) -> None:
        assert article_link(link, base) == expected


def test_a_relative_link_as_id_is_prefixed_like_a_local_guid() -> None:
    assert article_id(None, "post/1", "t", None, feed_url="https://a.example/feed") == "a.example:post/1"
    assert article_id(None, "javascript:x()", "t", None, feed_url="https://a.example/feed") == "javascript:x()"
