"""Feed-state records (news.feed-state): the value round-trips, a malformed one says why,
and the seen map keeps the last body's ids first, within its limits."""

from __future__ import annotations

import orjson
import pytest

from monitor.cluster.feed_state import (
    SEEN_MAX,
    SEEN_MIN,
    FeedStateRecordError,
    content_digest,
    feed_state_from_record,
    feed_state_to_value,
    seen_after,
)
from monitor.feeds.state import FeedState
from monitor.model import Article


def article(key: str, text: str = "text") -> Article:
    return Article(id=key, feed_url="https://example.org/feed", title=key, url=f"https://example.org/{key}", summary=text)


def test_a_state_round_trips_with_its_seen_map_and_owner() -> None:
    state = FeedState(
        "https://example.org/feed", etag='"v1"', last_modified="Fri, 04 Dec 2026 10:00:00 GMT", polls=3,
        next_poll=1_790_000_000.5, interval=300.0, health="failing", last_error="HTTP 404", http_4xx=2,
    )
    value = feed_state_to_value(state, {"a": "0123456789abcdef"}, owner="poller-1", written_at=1_790_000_000.0)
    record = feed_state_from_record(state.url.encode(), value)
    assert record.state == state
    assert record.seen == {"a": "0123456789abcdef"}
    assert (record.owner, record.written_at) == ("poller-1", 1_790_000_000.0)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, b"{}", "no key"),
        (b"https://x/f", b"{", "not UTF-8 JSON"),
        (b"https://x/f", b"[]", "not an object"),
        (b"https://x/f", orjson.dumps({"v": 2, "url": "https://x/f"}), "unknown version"),
        (b"https://x/f", orjson.dumps({"v": 1, "url": "https://x/g"}), "differs from the key"),
        (b"https://x/f", orjson.dumps({"v": 1, "url": "https://x/f", "polls": "3"}), "polls has the wrong type"),
        (b"https://x/f", orjson.dumps({"v": 1, "url": "https://x/f", "seen": {"a": 1}}), "seen must be"),
    ],
)
def test_a_malformed_state_says_why(key: bytes | None, value: bytes, reason: str) -> None:
    with pytest.raises(FeedStateRecordError, match=reason):
        feed_state_from_record(key, value)


def test_the_seen_map_keeps_the_last_body_first_and_stays_bounded() -> None:
    earlier = {f"old{i}": "x" for i in range(300)}
    body = [article(f"new{i}") for i in range(10)]
    seen = seen_after(earlier, body)
    assert list(seen)[:10] == [f"new{i}" for i in range(10)]
    assert seen["new0"] == content_digest(body[0])
    assert len(seen) == SEEN_MIN  # at least SEEN_MIN, when the body is small
    big = [article(f"b{i}") for i in range(SEEN_MAX + 50)]
    assert len(seen_after(earlier, big)) == SEEN_MAX
    assert len(seen_after(earlier, [article(f"m{i}") for i in range(200)])) == 400
