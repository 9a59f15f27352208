"""Sightings for the detectors: from a batch the daemon admitted, from a sighting record,
or from an alert record.

In the daemon every rule match on a *new* article is a sighting, whether it raised an
alert or was a later copy of a story the rule already alerted on (copies carry the
outlets a burst and an escalation count); an edited article counts for the rules it
newly alerts on. The matchers publish exactly those as sighting records
(``schemas/sighting-v1.json``), which ``news-monitor signals`` reads
(:func:`sightings_of`); with ``[signals] source = "alerts"`` it reads alert records
instead, each a sighting, and copies are not seen (docs/signals.md, "Where signals run").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any

from monitor.dedupe import Candidate, Verdict
from monitor.model import Alert, Article, Rule, SignalArticle
from monitor.signals.detect import Sighting
from monitor.signals.outlet import outlet_of

__all__ = ["RuleBook", "detected_time", "matches_of", "sighting_from_alert", "sightings_of", "sightings_topic_clash", "signal_article"]


def signal_article(article: Article, story_id: str | None) -> SignalArticle:
    """The article as signals name it (its outlet derived here)."""
    published = article.published.timestamp() if article.published is not None else None
    # Positional: one is made per article (docs/signals.md, "Cost").
    return SignalArticle(article.id, article.url, article.title, outlet_of(article.url, article.feed_url), published, story_id)


_RULE = attrgetter("rule")
_NEW, _UPDATED = Verdict.NEW, Verdict.UPDATED


def matches_of(
    candidates: Sequence[Candidate], verdicts: Sequence[Verdict], alerts: Sequence[Alert]
) -> list[tuple[SignalArticle, list[Rule]]]:
    """Each new article of an admitted batch with the rules it counts for (``verdicts[i]``
    is ``candidates[i]``'s), for :meth:`~monitor.signals.Signals.observe_article`."""
    found: list[tuple[SignalArticle, list[Rule]]] = []
    alerted: set[tuple[str, str]] | None = None
    for candidate, verdict in zip(candidates, verdicts):
        if verdict is _NEW:
            if candidate.matches:
                found.append((signal_article(candidate.article, candidate.story_id), list(map(_RULE, candidate.matches))))
        elif verdict is _UPDATED and candidate.matches:
            article = candidate.article
            if alerted is None:
                alerted = {(alert.rule_id, alert.url or alert.article_id) for alert in alerts}
            rules = [m.rule for m in candidate.matches if (m.rule.id, article.url or article.id) in alerted]
            if rules:
                found.append((signal_article(article, candidate.story_id), rules))
    return found


def _seconds(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def detected_time(document: dict[str, Any]) -> float | None:
    """The ``detected_at`` of a sighting or alert document in Unix seconds (None if unreadable)."""
    return _seconds(document.get("detected_at"))


def sighting_from_alert(document: dict[str, Any], rule: Callable[[str], Rule | None]) -> Sighting | None:
    """The sighting an alert document (``schemas/alert-v1.json``) stands for, with the burst
    and spike blocks of its rule as ``rule(rule_id)`` knows it; None for a shadow alert or
    one without a readable detection time."""
    if document.get("mode") == "shadow":
        return None
    article = document["article"]
    detected = _seconds(document.get("detected_at"))
    if detected is None:
        return None
    outlet = article.get("outlet")
    seen = SignalArticle(
        id=article["id"],
        url=article.get("url"),
        title=article.get("title") or "",
        # Alerts of releases before outlets: derived as the daemon would.
        outlet=outlet if isinstance(outlet, str) else outlet_of(article.get("url"), article.get("feed_url") or ""),
        published=_seconds(article.get("published")),
        story_id=document.get("story_id"),
    )
    # The alert says what its rule was when it matched; the rule files give the signal blocks.
    known = rule(document["rule_id"])
    as_alerted = Rule(
        id=document["rule_id"], query="", topic=document["topic"], severity=document["severity"],
        tags=tuple(tag for tag in document["tags"] if isinstance(tag, str)),
        burst=known.burst if known is not None else None, spike=known.spike if known is not None else None,
    )  # fmt: skip
    return Sighting(as_alerted, seen, detected)


class RuleBook:
    """The rules a reader of sighting records knows (from the rule files), by id, and the
    rules as sighted: one :class:`~monitor.model.Rule` per (id, topic, severity, tags,
    mode) with the burst and spike blocks of the rule files' rule of that id."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        # A rule its files disable raises no burst or spike here, as in the daemon.
        self._known = {rule.id: rule for rule in rules if rule.enabled}
        self._sighted: dict[tuple[Any, ...], Rule] = {}

    def get(self, rule_id: str) -> Rule | None:
        """The rule files' enabled rule with this id, or None."""
        return self._known.get(rule_id)

    def sighted(self, rule_id: str, topic: str, severity: str, tags: tuple[str, ...], mode: str) -> Rule:
        """The rule as a record names it (what it was when it matched), with its blocks."""
        key = (rule_id, topic, severity, tags, mode)
        rule = self._sighted.get(key)
        if rule is None:
            known = self._known.get(rule_id)
            rule = self._sighted[key] = Rule(
                id=rule_id, query="", topic=topic, severity=severity, tags=tags, mode=mode,
                burst=known.burst if known is not None else None, spike=known.spike if known is not None else None,
            )  # fmt: skip
        return rule


def sightings_of(document: dict[str, Any], rules: RuleBook) -> list[Sighting]:
    """The sightings a sighting document stands for (``schemas/sighting-v1.json``, as
    :func:`monitor.delivery.records.sighting_problem` accepts it): one per rule it counted
    for, all with one article object (so :meth:`Signals.observe` counts them as one article)."""
    article = document["article"]
    detected = _seconds(document["detected_at"])
    if detected is None:
        return []
    seen = SignalArticle(
        article["id"], article["url"], article["title"], article["outlet"], _seconds(article["published"]), article["story_id"]
    )
    sighted = [
        rules.sighted(r["id"], r["topic"], r["severity"], tuple(t for t in r["tags"] if isinstance(t, str)), r["mode"])
        for r in document["rules"]
    ]
    return [Sighting(rule, seen, detected) for rule in sighted]


def sightings_topic_clash(topic: str, rules: Iterable[Rule]) -> str | None:
    """The rule whose alerts or signals would share ``topic`` with the sightings (a reader of
    that topic, ``tail`` or ``notify``, would meet records of another kind), or None."""
    for rule in rules:
        if topic in {rule.topic, f"{rule.topic}.shadow", f"{rule.topic}.signals", f"{rule.topic}.shadow.signals"}:
            return rule.id
    return None
