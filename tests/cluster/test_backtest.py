"""Backtest matching: a span, one count per rule and article id, bad records counted."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from monitor.cluster.backtest import Backtest, parse_moment
from monitor.delivery.records import article_to_dict
from monitor.engine import parse_rules
from monitor.model import Article

RULES = parse_rules(
    """
rules:
  - id: summit
    query: '"peace summit"'
  - id: grain
    query: 'grain AND exports'
  - id: never
    query: 'zanzibar'
  - id: disabled-grain
    enabled: false
    query: 'grain'
"""
)
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC).timestamp()


def _value(article_id: str, title: str, body: str = "") -> bytes:
    article = Article(id=article_id, feed_url="https://news.example/rss", title=title, body=body)
    return orjson.dumps(article_to_dict(article, datetime.now(UTC)))


def test_parse_moment_reads_iso_times_and_durations():
    assert parse_moment("7d", NOW, "--since") == NOW - 7 * 86400
    assert parse_moment("12h", NOW, "--since") == NOW - 12 * 3600
    assert parse_moment("30m", NOW, "--since") == NOW - 1800
    assert parse_moment("2026-12-04T11:00:00Z", NOW, "--since") == NOW - 3600
    assert parse_moment("2026-12-04T11:00:00", NOW, "--since") == NOW - 3600  # no zone: UTC
    assert parse_moment("2026-12-04T12:00:00+01:00", NOW, "--until") == NOW - 3600
    with pytest.raises(ValueError, match="--until 'yesterday' is neither"):
        parse_moment("yesterday", NOW, "--until")
    with pytest.raises(ValueError, match="--since"):
        parse_moment("0d", NOW, "--since")


def test_parse_moment_before_1970_is_the_beginning():
    # Kafka's offsets_for_times refuses a negative time: a traceback, before.
    assert parse_moment("1960-01-01", NOW, "--since") == 0.0
    assert parse_moment("99999999d", NOW, "--since") == 0.0
    with pytest.raises(ValueError, match=r"--since '9+d' is too long a duration"):
        parse_moment("9" * 400 + "d", NOW, "--since")


def test_counts_per_rule_once_per_article_id_with_the_first_version_that_fired():
    backtest = Backtest(RULES, since=NOW - 3600, until=NOW)
    assert backtest.add(_value("a1", "Peace summit opens"), NOW - 3000) is None
    assert backtest.add(_value("a1", "Peace summit opens", "grain exports resume"), NOW - 2000) is None  # updated
    assert backtest.add(_value("a1", "Peace summit opens"), NOW - 1000) is None  # repeated
    assert backtest.add(_value("a2", "Grain exports fall"), NOW - 500) is None
    assert backtest.add(_value("a3", "Peace summit, day two"), NOW - 7200) is None  # before the span
    assert backtest.add(_value("a4", "Peace summit ends"), NOW + 60) is None  # after it
    assert (backtest.add(b"not json", NOW - 100) or "").startswith("not JSON (")
    assert "schema_version" in (backtest.add(b'{"id": "x"}', NOW - 100) or "")
    assert backtest.add(None, NOW - 100) == "no value (a tombstone): not an article"
    # What the live matcher dead-letters: a key that is not the article's id.
    assert backtest.add(_value("a5", "Peace summit"), NOW - 100, b"a1") == "the key 'a1' is not the article's id 'a5'"
    assert backtest.add(_value("a5", "Peace summit"), NOW - 100, None) == "the key None is not the article's id 'a5'"
    result = backtest.result()
    assert result.rules == {"summit": 1, "grain": 2, "never": 0}
    assert [(m.rule_id, m.article_id, m.time) for m in result.matches] == [
        ("summit", "a1", NOW - 3000), ("grain", "a1", NOW - 2000), ("grain", "a2", NOW - 500),
    ]
    assert (result.read, result.articles, result.distinct, result.bad, result.outside) == (11, 4, 2, 5, 2)
    assert result.to_dict()["matches"][0] == {
        "rule_id": "summit", "article_id": "a1", "title": "Peace summit opens", "time": "2026-12-04T11:10:00Z",
        "feed_url": "https://news.example/rss", "url": None,
    }


class _Counting:
    """A rule set that counts its calls: the backtest asks it once per article."""

    def __init__(self) -> None:
        self.rules = RULES.rules
        self.calls = 0

    def match(self, article: Article) -> list:
        self.calls += 1
        return RULES.match(article)


def test_each_article_is_matched_once_by_the_whole_rule_set():
    ruleset = _Counting()
    backtest = Backtest(ruleset)
    for i in range(10):
        backtest.add(_value(f"b{i}", "Grain exports"), NOW)
    assert ruleset.calls == 10 and backtest.result().rules["grain"] == 10


def test_signals_the_rules_blocks_would_have_raised_in_timestamp_order():
    ruleset = parse_rules(
        """
rules:
  - id: summit
    query: '"peace summit"'
    burst: {min_outlets: 3, window: 30m, cooldown: 6h}
  - id: grain
    query: grain
    burst: {min_outlets: 2, window: 30m}
"""
    )
    backtest = Backtest(ruleset)

    def add(article_id: str, outlet: str, title: str, at: float) -> None:
        article = Article(id=article_id, feed_url="https://feeds.example/rss", title=title, url=f"https://www.{outlet}/{article_id}")
        assert backtest.add(orjson.dumps(article_to_dict(article, datetime.now(UTC))), at) is None

    # Read out of time order (one partition after another): the detectors see time order.
    add("s3", "reuters.com", "Peace summit set", NOW + 600)
    add("s4", "apnews.com", "Peace summit nears", NOW + 900)  # within the cool-down: none
    add("s1", "bbc.co.uk", "Peace summit called", NOW)
    add("s2", "lemonde.fr", "Peace summit confirmed", NOW + 300)
    for i in range(10):  # ten articles from one outlet are not a burst
        add(f"g{i}", "grain.example", "grain prices", NOW + i * 60)
    result = backtest.result()
    assert [(s.kind, s.rule_id) for s in result.signals] == [("burst", "summit")]
    burst = result.signals[0]
    assert burst.outlets == ("bbc.co.uk", "lemonde.fr", "reuters.com")
    assert (burst.window_start, burst.window_end, burst.detected_at) == (NOW, NOW + 600, NOW + 600)
    assert result.to_dict()["signals"][0]["kind"] == "burst"
