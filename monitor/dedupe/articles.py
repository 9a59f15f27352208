"""The dedupe stage: which articles are new, and which of their alerts are new.

An article is known when the store remembers its stable id *or* its canonical url, so
one story carried by two feeds (same link, different guids) and one guid whose link
changed are both recognised. A known article whose text changed is re-matched, and
alerts only for rules that did not alert on it before.

:func:`admit` runs inside the store's thread (see :class:`~monitor.adapters.store.AsyncStore`),
so checking and recording a batch is atomic with respect to every other feed's batch:
two feeds carrying the same story at the same moment still alert once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

from monitor.errors import SYSTEM_FAULTS
from monitor.model import Alert, Article, Match, Record, Signal

__all__ = ["Admission", "ArticleFailure", "Candidate", "MakeSighting", "SeenArticle", "SeenStore", "Verdict", "admit", "needs_matching"]


@dataclass(frozen=True, slots=True)
class SeenArticle:
    """What the store remembers of an article."""

    id: str
    url: str | None
    content_hash: str
    #: Every rule that has alerted on the article.
    rules: frozenset[str]
    #: ``pending`` while some alert waits for Kafka, then ``published``.
    state: str
    story_id: str | None = None


class SeenStore(Protocol):
    """The part of the state store the dedupe stage needs."""

    def find_article(self, article_id: str, url: str | None) -> SeenArticle | None: ...

    def touch_articles(self, article_ids: Iterable[str], now: float | None = None) -> None: ...

    def story_rules(self, story_id: str) -> frozenset[str] | None:
        """Rules that alerted on some copy of the story (only asked when stories are on)."""
        ...

    def record_article(
        self,
        *,
        article_id: str,
        url: str | None,
        feed_url: str,
        content_hash: str,
        rules: Iterable[str],
        outbox: Iterable[Record] = (),
        story_id: str | None = None,
        story_alerted: Iterable[str] | None = None,
        story_copy: bool = False,
        now: float | None = None,
    ) -> None: ...


class Verdict(str, Enum):  # noqa: UP042 - str() of a member stays 'Verdict.NEW', as logged until now
    NEW = "new"
    #: Known, same text: nothing to do.
    DUPLICATE = "duplicate"
    #: Known, text changed: re-matched; alerts only for newly matching rules.
    UPDATED = "updated"


@dataclass(frozen=True, slots=True)
class Candidate:
    """An article with the rules that matched it."""

    article: Article
    matches: Sequence[Match]
    #: The near-duplicate story the article belongs to (see :mod:`monitor.dedupe.stories`).
    story_id: str | None = None
    #: Whether the story existed before this article (a later copy of wire text).
    story_copy: bool = False
    #: The hash to remember for the article when it differs from its text's (full text
    #: replaced the feed's body: the feed's own version decides "changed" next time).
    content_hash: str | None = None

    @property
    def stored_hash(self) -> str:
        return self.content_hash or self.article.content_hash


@dataclass(frozen=True, slots=True)
class ArticleFailure:
    """One article whose own matching raised (a bug met on it): left out of its batch,
    nothing of it recorded or queued (see ``SYSTEM_FAULTS`` in :mod:`monitor.errors`)."""

    article: Article
    error: Exception
    #: What failed: ``matching`` (the rule engine, the story), ``alert`` (the alert, sighting or article record).
    step: str


@dataclass(slots=True)
class Admission:
    """What :func:`admit` decided for a batch."""

    verdicts: list[Verdict] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    #: Later copies of an already known story (counted, alerted only for rules new to the story).
    story_copies: int = 0
    #: Story signals the batch raised (their records are in ``records``).
    signals: list[Signal] = field(default_factory=list)
    #: Sighting records queued (a matcher's, for ``news-monitor signals``; they are in ``records``).
    sightings: int = 0
    #: Articles left out on a bug of their own (no verdict: not recorded, nothing queued).
    failed: list[ArticleFailure] = field(default_factory=list)

    def count(self, verdict: Verdict) -> int:
        return sum(1 for v in self.verdicts if v is verdict)


#: A sighting record for a candidate, the matches it counts for, and the id its row is stored under.
MakeSighting = Callable[[Candidate, Sequence[Match], str], Record]


def needs_matching(seen: SeenArticle | None, article: Article) -> bool:
    """Whether an article must go through the rule engine (new, or its text changed)."""
    return seen is None or seen.content_hash != article.content_hash


def admit(
    store: SeenStore,
    candidates: Sequence[Candidate],
    make_alert: Callable[[Match, Article], Alert],
    make_record: Callable[[Alert], Record],
    now: float | None = None,
    make_sighting: MakeSighting | None = None,
) -> Admission:
    """Record a batch of matched articles and return the alerts to publish.

    Must run on the store's thread. Each article's row and its alerts' outbox rows are
    written in one transaction, before anything is published. With ``make_sighting``
    (a matcher publishing sightings) a new article's record for the rules it counts for
    (every rule that matched it; an updated one's: the rules it newly alerts on) goes
    into that transaction's outbox rows too.

    An article whose alerts or records cannot be built (``make_alert``, ``make_record``
    or ``make_sighting`` raise anything but a ``SYSTEM_FAULTS`` error) is left out, in
    ``failed``: nothing of it is written, and the articles after it are admitted.
    """
    now = time.time() if now is None else now
    result = Admission()
    for candidate in candidates:
        _admit_one(store, candidate, make_alert, make_record, now, result, make_sighting)
    return result


def _admit_one(
    store: SeenStore,
    candidate: Candidate,
    make_alert: Callable[[Match, Article], Alert],
    make_record: Callable[[Alert], Record],
    now: float,
    result: Admission,
    make_sighting: MakeSighting | None = None,
) -> None:
    """Decide one article: a duplicate (touched), or new or updated (recorded, its new alerts queued)."""
    article = candidate.article
    seen = store.find_article(article.id, article.url)
    if seen is not None and seen.content_hash == candidate.stored_hash:
        result.verdicts.append(Verdict.DUPLICATE)
        store.touch_articles([seen.id], now)
        return
    previous_rules = seen.rules if seen is not None else frozenset()
    # Keep the first id the story was known by: alert ids derive from it, so a story
    # met again under another guid or link never gets a second alert id.
    if seen is not None and seen.id != article.id:
        article = replace(article, id=seen.id)
    fresh = [m for m in candidate.matches if m.rule.id not in previous_rules]
    story_id = candidate.story_id or (seen.story_id if seen is not None else None)
    if story_id is not None:
        # One alert per rule per story: a copy of wire text already alerted on under
        # another url is counted, not alerted again.
        story_rules = store.story_rules(story_id) or frozenset()
        fresh = [m for m in fresh if m.rule.id not in story_rules]
    # What the daemon's detectors count (monitor.signals.feed.matches_of): a new article's every match, an edit's new alerts.
    counted = candidate.matches if seen is None else fresh
    try:
        alerts = [make_alert(m, article) for m in fresh]
        if story_id is not None:
            alerts = [replace(alert, story_id=story_id) for alert in alerts]
        records = [make_record(a) for a in alerts]
        if make_sighting is not None and counted:
            records.append(make_sighting(candidate, counted, article.id))
    except SYSTEM_FAULTS:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug met on this article costs this article only (docs/scaling.md)
        result.failed.append(ArticleFailure(candidate.article, exc, "alert"))
        return
    if candidate.story_copy and seen is None and story_id is not None:
        result.story_copies += 1
    if make_sighting is not None and counted:
        result.sightings += 1
    store.record_article(
        article_id=article.id,
        url=article.url if seen is None else (seen.url or article.url),
        feed_url=article.feed_url,
        content_hash=candidate.stored_hash,
        rules=previous_rules | {m.rule.id for m in candidate.matches},
        outbox=records,
        story_id=story_id,
        # The story's rule record goes in the article's own transaction: recorded
        # without the alerts (a crash in between), later copies would never alert.
        story_alerted=[m.rule.id for m in fresh] if story_id is not None else None,
        story_copy=candidate.story_copy and seen is None,
        now=now,
    )
    result.verdicts.append(Verdict.NEW if seen is None else Verdict.UPDATED)
    result.alerts.extend(alerts)
    result.records.extend(records)
