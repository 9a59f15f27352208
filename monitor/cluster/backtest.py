"""``news-monitor backtest``: what a candidate rule set would have alerted on the articles
of a span (docs/scaling.md, "Backtest"). Pure: records in, a :class:`BacktestResult` out.

Each article in the span goes through ``RuleSet.match`` once (the engine's normal path:
one scan for every rule's terms, then only the candidate rules), so 10,000 rules cost what
they cost the live matcher. An article id seen again (an updated text) is matched again;
like the live alerts, whose ``alert_id`` is rule + article id, a rule counts an article id
once, with the first version in the span that fired it. Story clustering is not applied:
a wire story copied by several outlets (several ids) counts once per copy.

Signals: the rules' ``burst:`` and ``spike:`` blocks run over those matches with the same
detectors as the daemon (:class:`monitor.signals.Signals`), in the order of the records'
timestamps, each match detected at its record's timestamp (its "now"); no escalations
(no stories).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson

from monitor.delivery.records import ArticleDocumentError, article_from_dict, signal_to_dict
from monitor.model import Article, Match, Rule, Signal, SignalArticle
from monitor.notify.schedule import parse_duration
from monitor.signals import Signals
from monitor.signals.feed import signal_article
from monitor.timefmt import utc_iso

__all__ = ["Backtest", "BacktestMatch", "BacktestResult", "RuleMatcher", "parse_moment"]

_DURATION = re.compile(r"\d+\s*[smhd]", re.IGNORECASE)


class RuleMatcher(Protocol):
    """The rule set as the backtest uses it (:class:`monitor.engine.RuleSet`)."""

    @property
    def rules(self) -> Sequence[Rule]: ...

    def match(self, article: Article) -> list[Match]: ...


def parse_moment(text: str, now: float, option: str) -> float:
    """``--since``/``--until``: an ISO 8601 time (no zone: UTC) or a duration back from
    ``now`` (``30m``, ``12h``, ``7d``, ``90s``) -> Unix seconds, never before 1970 (an
    earlier time means from the beginning); ValueError naming ``option``."""
    text = text.strip()
    if _DURATION.fullmatch(text):
        try:
            return max(0.0, now - parse_duration(text))
        except ValueError as exc:
            raise ValueError(f"{option} {exc}") from exc
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{option} {text!r} is neither an ISO 8601 time (2026-11-25T08:00:00Z) nor a duration (30m, 12h, 7d)") from None
    # Kafka's offsets_for_times refuses a negative time.
    return max(0.0, (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


@dataclass(frozen=True, slots=True)
class BacktestMatch:
    """A rule that fired on an article: what the live monitor would have alerted."""

    rule_id: str
    article_id: str
    title: str
    #: The record's timestamp (when the article was published to the topic), Unix seconds.
    time: float
    feed_url: str
    url: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "article_id": self.article_id,
            "title": self.title,
            "time": utc_iso(self.time),
            "feed_url": self.feed_url,
            "url": self.url,
        }


@dataclass
class BacktestResult:
    """Counts and matches; ``rules`` holds every enabled rule, those that never fired at 0."""

    rules: dict[str, int]
    matches: list[BacktestMatch]
    #: Records read (the span's and, where the start was found by scanning, older ones).
    read: int = 0
    #: Records in the span that are articles; ``distinct`` of them have different ids.
    articles: int = 0
    distinct: int = 0
    #: Records in the span that are not articles (reported on stderr as they come).
    bad: int = 0
    outside: int = 0
    #: The bursts and spikes the rules' blocks would have raised, oldest first.
    signals: list[Signal] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_read": self.read,
            "outside_span": self.outside,
            "bad_records": self.bad,
            "articles": self.articles,
            "distinct_articles": self.distinct,
            "rules": self.rules,
            "matches": [match.to_dict() for match in self.matches],
            "signals": [signal_to_dict(signal) for signal in self.signals],
        }


@dataclass
class Backtest:
    """Feed it records with :meth:`add`; :meth:`result` gives the counts and matches."""

    ruleset: RuleMatcher
    since: float | None = None
    until: float | None = None
    _first: dict[tuple[str, str], BacktestMatch] = field(default_factory=dict, init=False)
    _ids: set[str] = field(default_factory=set, init=False)
    _result: BacktestResult = field(default_factory=lambda: BacktestResult({}, []), init=False)
    #: (timestamp, article, rules that newly fired on it): the signals' input, sorted at the end.
    _fired: list[tuple[float, SignalArticle, list[Rule]]] = field(default_factory=list, init=False)

    def in_span(self, timestamp: float) -> bool:
        """Whether a record written at ``timestamp`` (Unix seconds) is in ``[since, until]``."""
        return (self.since is None or timestamp >= self.since) and (self.until is None or timestamp <= self.until)

    def add(self, value: bytes | None, timestamp: float, record_key: bytes | Literal[False] | None = False) -> str | None:
        """Match one record of the articles topic (written at ``timestamp``); why it is not
        an article (the record is counted as bad), or None. ``record_key``, the record's key, must
        be the article's id, as the live matcher dead-letters a record whose key is not
        (False: not checked)."""
        counts = self._result
        counts.read += 1
        if not self.in_span(timestamp):
            counts.outside += 1
            return None
        if value is None:
            counts.bad += 1
            return "no value (a tombstone): not an article"
        try:
            article = article_from_dict(orjson.loads(value))
        except (orjson.JSONDecodeError, ArticleDocumentError) as exc:
            counts.bad += 1
            return str(exc) if isinstance(exc, ArticleDocumentError) else f"not JSON ({exc})"
        if record_key is not False and (name := record_key.decode("utf-8", "replace") if record_key else None) != article.id:
            counts.bad += 1
            return f"the key {name!r} is not the article's id {article.id!r}"
        counts.articles += 1
        self._ids.add(article.id)
        fired = []
        for match in self.ruleset.match(article):
            key = (match.rule.id, article.id)
            if key not in self._first:
                self._first[key] = BacktestMatch(match.rule.id, article.id, article.title, timestamp, article.feed_url, article.url)
                if match.rule.burst is not None or match.rule.spike is not None:
                    fired.append(match.rule)
        if fired:
            self._fired.append((timestamp, signal_article(article, None), fired))
        return None

    def _signals(self) -> list[Signal]:
        """The signals of the matches, fed to the detectors in timestamp order (partitions
        are read one after another, not in time order)."""
        if not self._fired:
            return []
        self._fired.sort(key=lambda item: item[0])
        signals = Signals(levels=())
        signals.watch(self.ruleset.rules, self._fired[0][0])
        raised: list[Signal] = []
        for timestamp, article, rules in self._fired:
            raised += signals.observe_article(article, rules, timestamp, timestamp, journal=False)
        return raised

    def result(self) -> BacktestResult:
        """The counts per rule (article ids it fired on) and the matches, oldest first."""
        result = self._result
        result.distinct = len(self._ids)
        result.rules = {rule.id: 0 for rule in self.ruleset.rules if rule.enabled}
        for rule_id, _article_id in self._first:
            result.rules[rule_id] = result.rules.get(rule_id, 0) + 1
        result.matches = sorted(self._first.values(), key=lambda m: (m.time, m.rule_id, m.article_id))
        result.signals = self._signals()
        return result
