"""The cluster's shared vocabulary: roles, feed sharding, feed records."""

from __future__ import annotations

import pytest

from monitor.cluster import FeedRecordError, feed_from_record, feed_partition, feed_to_record, parse_roles, shard_key
from monitor.model import Feed


def test_roles_parse_in_start_order_and_refuse_unknown_or_empty():
    assert parse_roles("matcher, poller") == ("poller", "matcher")
    assert parse_roles("POLLER") == ("poller",)
    with pytest.raises(ValueError, match="unknown role 'polller'"):
        parse_roles("polller")
    with pytest.raises(ValueError, match="empty entry"):
        parse_roles("poller,")


def test_feeds_of_one_host_share_a_partition_and_hosts_spread():
    assert shard_key("https://WWW.Example.org:8443/a.xml") == "www.example.org"
    assert shard_key("/srv/feeds/a.xml") == "/srv/feeds/a.xml"
    partitions = {feed_partition(f"https://news.example.org/feed/{i}.xml", 12) for i in range(50)}
    assert len(partitions) == 1
    spread = {feed_partition(f"https://host{i}.example.org/feed.xml", 12) for i in range(200)}
    assert len(spread) == 12
    # Stable across processes and versions: the feeds topic's layout depends on it.
    assert feed_partition("https://www.bbc.co.uk/news/rss.xml", 6) == feed_partition("https://www.bbc.co.uk/other", 6)
    with pytest.raises(ValueError):
        feed_partition("https://a.example/", 0)


def test_a_feed_round_trips_through_its_record_with_stable_bytes():
    feed = Feed(
        url="https://example.org/feed.xml", interval=120.0, name="Example", headers={"X-Client": "nm"},
        fulltext=True, expected_update_period=7200.0,
    )
    key, value = feed_to_record(feed)
    assert key == b"https://example.org/feed.xml"
    assert feed_from_record(key, value) == feed
    assert feed_to_record(Feed(url=feed.url, interval=120.0, name="Example", headers={"X-Client": "nm"},
                               fulltext=True, expected_update_period=7200.0))[1] == value
    plain = Feed(url="https://example.org/b.xml")
    assert feed_from_record(*feed_to_record(plain)) == plain


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, b"{}", "no key"),
        (b"https://a.example/f", b"\xff", "not UTF-8 JSON"),
        (b"https://a.example/f", b"[1]", "the value is JSON array, not an object"),
        (b"https://a.example/f", b"null", "the value is JSON null, not an object"),
        (b"https://a.example/f", b'{"v": 2, "url": "https://a.example/f"}', "unknown version 2"),
        (b"https://a.example/f", b'{"v": 1, "url": "https://b.example/f", "interval": 60, "enabled": true, "fulltext": false}', "differs from the key"),
        (b"https://a.example/f", b'{"v": 1, "url": "https://a.example/f", "interval": 0, "enabled": true, "fulltext": false}', "interval must be"),
        (b"https://a.example/f", b'{"v": 1, "url": "https://a.example/f", "interval": 60, "enabled": "yes", "fulltext": false}', "enabled must be"),
        (b"https://a.example/f", b'{"v": 1, "url": "https://a.example/f", "interval": 60, "enabled": true, "fulltext": false, "headers": {"a": 1}}', "headers must be"),
        (b"https://a.example/f", b'{"v": 1, "url": "https://a.example/f", "interval": 60, "enabled": true, "fulltext": false, "headers": {"X-A": "a\\r\\nHost: b"}}', "line break or control character"),
        (b"https://a.example/f", b'{"v": 1, "url": "https://a.example/f", "interval": 60, "enabled": true, "fulltext": false, "headers": {"X A": "a"}}', "not a valid HTTP header name"),
        (b"ftp://a.example/f", b'{"v": 1, "url": "ftp://a.example/f", "interval": 60, "enabled": true, "fulltext": false}', "has the scheme 'ftp'"),
        (b"https:///f", b'{"v": 1, "url": "https:///f", "interval": 60, "enabled": true, "fulltext": false}', "has no host"),
        (b"https://a.example/\x1b[2J", b'{"v": 1, "url": "https://a.example/\\u001b[2J", "interval": 60, "enabled": true, "fulltext": false}', "control character"),
        (b"feeds/a.xml", b'{"v": 1, "url": "feeds/a.xml", "interval": 60, "enabled": true, "fulltext": false}', "relative path"),
        (b"https://a.example/f", b'{"v": true, "url": "https://a.example/f", "interval": 60, "enabled": true, "fulltext": false}', "unknown version True"),
    ],
)
def test_a_bad_feed_record_is_refused_with_its_reason(key, value, reason):
    with pytest.raises(FeedRecordError, match=reason):
        feed_from_record(key, value)


def test_a_feeds_configured_language_travels_in_its_record():
    for language in ("fr", "auto", None):
        feed = Feed(url="https://example.org/fr.xml", language=language)
        assert feed_from_record(*feed_to_record(feed)).language == language
    key, value = feed_to_record(Feed(url="https://example.org/fr.xml"))
    with pytest.raises(FeedRecordError, match="language must be an ISO 639-1 code"):
        feed_from_record(key, value.replace(b'"v":1', b'"language":"french","v":1'))


def test_a_feeds_websub_off_travels_in_its_record():
    # Lost on the topic, the pollers subscribed a feed its operator had set to never be.
    off = Feed(url="https://example.org/a.xml", websub="off")
    assert feed_from_record(*feed_to_record(off)) == off
    # The default is left out: the records of feeds that do not set it keep their bytes.
    assert b"websub" not in feed_to_record(Feed(url="https://example.org/a.xml"))[1]
    key, value = feed_to_record(Feed(url="https://example.org/a.xml"))
    with pytest.raises(FeedRecordError, match="websub must be one of auto, off"):
        feed_from_record(key, value.replace(b'"v":1', b'"v":1,"websub":"never"'))
