"""Records of news.matcher-state: what a matcher remembers of an article, and garbage refused."""

from __future__ import annotations

import orjson
import pytest

from monitor.cluster import MatcherStateError, RememberedArticle, state_from_record, state_to_record


def test_a_remembered_article_round_trips_with_its_story_signature():
    article = RememberedArticle(
        key="urn:b", id="urn:a", url="https://example.org/a", feed_url="https://example.org/feed.xml",
        content_hash="0" * 32, rules=frozenset({"summit", "sanctions"}), story_id="s1", seen_at=1_733_300_000.5,
        signature=bytes(range(256)),
    )
    key, value = state_to_record(article)
    assert key == b"urn:b"
    assert orjson.loads(value)["rules"] == ["sanctions", "summit"]
    assert state_from_record(key, value) == article
    plain = RememberedArticle("urn:c", "urn:c", None, "/srv/feed.xml", "1" * 32, frozenset(), None, 1.0)
    assert state_from_record(*state_to_record(plain)) == plain


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, b"{}", "no key"),
        (b"k", None, "tombstone"),
        (b"k", b"{not json", "not UTF-8 JSON"),
        (b"k", b"[1]", "not an object"),
        (b"k", b"null", "the value is JSON null, not an object"),
        (b"k", b'{"v": 2}', "unknown version 2"),
        (b"k", b'{"v": true, "id": "a", "feed_url": "f", "content_hash": "h", "rules": [], "seen_at": 1}', "unknown version True"),
        (b"k", b'{"v": 1, "id": "", "feed_url": "f", "content_hash": "h"}', "id must be a non-empty string"),
        (b"k", b'{"v": 1, "id": "a", "feed_url": "f", "content_hash": "h", "rules": "summit"}', "rules must be an array"),
        (b"k", b'{"v": 1, "id": "a", "feed_url": "f", "content_hash": "h", "rules": [], "seen_at": true}', "seen_at"),
        (b"k", b'{"v": 1, "id": "a", "feed_url": "f", "content_hash": "h", "rules": [], "seen_at": 1, "signature": "%%"}', "base64"),
    ],
)
def test_what_is_not_a_remembered_article_is_refused_with_the_reason(key, value, reason):
    with pytest.raises(MatcherStateError, match=reason):
        state_from_record(key, value)
