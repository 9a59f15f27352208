"""Outlets: registrable domains by the bundled Public Suffix List, and the documented fallbacks."""

from __future__ import annotations

import pytest

from monitor.signals.outlet import outlet_of


@pytest.mark.parametrize(
    ("url", "feed_url", "outlet"),
    [
        ("https://www.bbc.co.uk/news/world-1", "https://feeds.bbci.co.uk/news/rss.xml", "bbc.co.uk"),
        ("https://uk.reuters.com/article/x", "https://example.org/rss", "reuters.com"),
        ("https://WWW.LeMonde.FR./international/", "https://example.org/rss", "lemonde.fr"),
        # Private suffixes count: two blogs on one platform are two outlets.
        ("https://alice.blogspot.com/2026/12/post.html", "https://example.org/rss", "alice.blogspot.com"),
        # No registrable domain in the link: the feed's.
        ("http://10.0.0.7/story", "https://feeds.example.co.jp/rss", "example.co.jp"),
        (None, "https://rss.nytimes.com/services/xml/rss/nyt/World.xml", "nytimes.com"),
        # Neither has one: the feed's host as it is, else the link's.
        ("http://localhost/story", "http://127.0.0.1:8080/feed.xml", "127.0.0.1"),
        ("http://127.0.0.1/x", "file:///srv/feeds/wire.xml", "127.0.0.1"),
        (None, "file:///srv/feeds/wire.xml", None),
        ("http://[::1/broken", "file:///srv/feeds/wire.xml", None),
    ],
)
def test_outlet(url: str | None, feed_url: str, outlet: str | None) -> None:
    assert outlet_of(url, feed_url) == outlet


def test_the_suffix_list_is_never_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the outlet lookup reached for the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert outlet_of("https://www.theguardian.com/world/x", "https://example.org/rss") == "theguardian.com"
