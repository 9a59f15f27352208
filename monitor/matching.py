"""The articles of one feed's poll, from "parsed" to "recorded and queued for Kafka":

dedupe (seen before?) -> language (detected for what is new or changed) -> enrich (full
text) -> stories (near-duplicate wire copy) ->
match (the rule engine) -> admit (record the articles and queue their alerts, atomically).

An article whose own matching raises (a bug met on it: the rule engine, its story, its
alert or records; anything but ``SYSTEM_FAULTS`` of :mod:`monitor.errors`) is left out of
its batch, in ``Admission.failed``, with nothing of it recorded or queued; the rest of the
batch is admitted. The caller says what becomes of it (docs/scaling.md, "An article that fails").

This is the half of a poll that needs the seen-article store and the rules, and none of
the feed's own state: the part a matcher process runs on articles it consumes, while a
poller process fetches and parses (see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from monitor.dedupe import Admission, ArticleFailure, Candidate, MakeSighting, SeenArticle, Verdict, admit, needs_matching
from monitor.dedupe.stories import Assignment, StoryIndex, story_text
from monitor.delivery.records import alert_record, article_record, build_alert, sighting_record, signal_record
from monitor.enrich.fulltext import FulltextEnricher
from monitor.errors import SYSTEM_FAULTS, FeedError
from monitor.language import detect_samples, sample, with_language
from monitor.log import get_logger
from monitor.model import Alert, Article, Feed, Match, Record, Signal
from monitor.signals import Signals
from monitor.signals.feed import matches_of, signal_article

__all__ = [
    "DETECT_ON_LOOP", "THREAD_MATCH_CHARS", "ArticleStore", "CpuLane", "CpuPool", "Matcher", "Matching", "Sink", "unique_articles",
    "with_languages",
]  # fmt: skip

log = get_logger("pipeline")

T = TypeVar("T")


class Matcher(Protocol):
    """The rule set as matching sees it (see :class:`monitor.engine.RuleSet`)."""

    @property
    def version(self) -> str: ...

    def match(self, article: Article) -> list[Match]: ...


class CpuPool(Protocol):
    """CPU work off the event loop (see :class:`monitor.adapters.parser_pool.ParserPool`)."""

    async def run(self, function: Callable[..., Any], *args: Any, label: str, what: str = "processing") -> Any: ...


class ArticleStore(Protocol):
    """The part of the state store matching needs (``monitor.adapters.store.AsyncStore``)."""

    async def find_articles(self, keys: Iterable[tuple[str, str | None]]) -> list[SeenArticle | None]: ...

    async def enqueue(self, records: Iterable[Record]) -> None: ...

    async def atomically(self, function: Callable[..., T], *args: Any) -> T:
        """``function(store, *args)`` with the synchronous store, nothing else in between."""

    async def save_story_members(self, members: Iterable[tuple[str, str, float, bytes]]) -> None: ...

    async def save_signals(self, records: Iterable[Record], changes: Iterable[tuple[str, bytes | None]]) -> None: ...


class Sink(Protocol):
    """Where queued records go (see :class:`monitor.delivery.Delivery`)."""

    async def submit(self, records: list[Record]) -> None: ...


class CpuLane:
    """Time-slices the CPU work polls do on the event loop (rule matching, story lookup).

    Yielding between articles is not enough: when 64 polls each hold new articles, every
    loop iteration would run one article of each before any socket is served.
    One poll at a time holds the lane, for at most ``slice_seconds`` before it lets the
    loop (and the other polls) run.
    """

    def __init__(self, slice_seconds: float = 0.005) -> None:
        self.slice_seconds = slice_seconds
        self._lock = asyncio.Lock()
        self._since = 0.0

    async def __aenter__(self) -> CpuLane:
        await self._lock.acquire()
        self._since = time.perf_counter()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._lock.release()

    async def pause(self) -> None:
        """Let the loop run when this turn's slice is used up; returns holding the lane again."""
        if time.perf_counter() - self._since < self.slice_seconds:
            return
        self._lock.release()
        try:
            await asyncio.sleep(0)
        finally:
            await self._lock.acquire()
        self._since = time.perf_counter()


#: Articles with more text than this (title, summary and body, in characters) are matched
#: in a thread, so the event loop goes on serving /healthz, signals and other feeds while
#: one huge item is matched. News articles are far smaller, and matched in place: a
#: thread hand-off would cost more than their matching does.
THREAD_MATCH_CHARS = 32_768


async def _match(ruleset: Matcher, article: Article) -> list[Match]:
    """``ruleset.match(article)``, in a thread for an article of over THREAD_MATCH_CHARS."""
    if len(article.title) + len(article.summary) + len(article.body) > THREAD_MATCH_CHARS:
        # The match's own exception comes back as a value: one the thread hand-off raises is no article's.
        matches = await asyncio.to_thread(_attempt, ruleset.match, article)
        if isinstance(matches, _Raised):
            raise matches.error
        return matches
    return ruleset.match(article)


@dataclass(frozen=True, slots=True)
class _Raised:
    error: Exception


def _attempt(function: Callable[[Article], T], article: Article) -> T | _Raised:
    try:
        return function(article)
    except Exception as exc:  # noqa: BLE001 - raised again on the loop, where it is classified
        return _Raised(exc)


@dataclass(frozen=True, slots=True)
class _Todo:
    """The articles of a batch that need the rule engine (new, or changed), by index."""

    indexes: list[int]
    #: Article index -> the feed's own content hash, where full text replaced the body.
    feed_hashes: dict[int, str]


class Matching:
    """Matches a feed's new and changed articles, then records them and queues their
    alerts and records (see the module docstring)."""

    def __init__(
        self,
        *,
        store: ArticleStore,
        rules: Callable[[], Matcher],
        sink: Sink,
        cpu: CpuPool,
        clock: Callable[[], float] = time.time,
        articles_topic: str = "",
        fulltext: FulltextEnricher | None = None,
        stories: StoryIndex | None = None,
        signals: Signals | None = None,
        sightings_topic: str = "",
        detect_languages: bool = False,
    ) -> None:
        """``detect_languages``: the articles come from a parse that left their language to
        detect (the pipeline's); the articles a matcher reads carry the one their poller gave."""
        self._store = store
        self._rules = rules
        self._sink = sink
        self._cpu = cpu
        self._clock = clock
        #: ``[kafka] articles_topic``: also publish every new or changed article there ("" = off).
        self._articles_topic = articles_topic
        self._fulltext = fulltext
        self._stories = stories
        #: Story signals (bursts, spikes, escalations) of each admitted batch; None: off.
        self.signals = signals
        #: A matcher's ``[signals] sightings_topic``: a sighting record per new article that
        #: counted for a rule, queued with its alerts ("" = none).
        self._sightings_topic = sightings_topic
        self._lane = CpuLane()
        self._detect_languages = detect_languages
        #: Story members assigned but not yet saved: article id -> (story id, seen at, signature).
        self._pending_members: dict[str, tuple[str, float, bytes]] = {}

    async def admit(
        self, articles: list[Article], feed: Feed | None = None, signatures: dict[int, bytes | None] | None = None
    ) -> Admission:
        """Match what is new or changed, then record it and queue its alerts atomically.

        ``signatures`` maps ``id(article)`` to its story signature, when the parse made them.
        """
        unique = unique_articles(articles)
        seen = await self._store.find_articles([(a.id, a.url) for a in unique])
        ruleset = self._rules()
        failed: dict[int, ArticleFailure] = {}
        every = await self._candidates(unique, seen, feed, ruleset, signatures or {}, failed)

        def make_alert(match: Match, article: Article) -> Alert:
            return build_alert(match, article, ruleset_version=ruleset.version)

        articles_out = self._article_records(unique, seen, failed)
        if articles_out:
            # Into the outbox before the articles are recorded as seen, so a crash in
            # between re-sends them rather than losing them.
            await self._store.enqueue(articles_out)
        candidates = [candidate for i, candidate in enumerate(every) if i not in failed]
        admission = await self._store.atomically(admit, candidates, make_alert, alert_record, None, self._sighting_maker())
        if admission.failed:
            left_out = {id(failure.article) for failure in admission.failed}
            candidates = [candidate for candidate in candidates if id(candidate.article) not in left_out]
            for failure in admission.failed:
                # Its story membership stays in memory only: nothing of the article is saved.
                self._pending_members.pop(failure.article.id, None)
        admission.failed[:0] = [failed[i] for i in sorted(failed)]
        await self._remember_story_members(candidates)
        admission.records.extend(articles_out)
        await self._signal(candidates, admission)
        # Entries repeated inside one feed count as duplicates too.
        admission.verdicts.extend([Verdict.DUPLICATE] * (len(articles) - len(unique)))
        if admission.records:
            await self._sink.submit(admission.records)
        return admission

    async def _candidates(
        self,
        unique: list[Article],
        seen: list[SeenArticle | None],
        feed: Feed | None,
        ruleset: Matcher,
        signed: dict[int, bytes | None],
        failed: dict[int, ArticleFailure],
    ) -> list[Candidate]:
        """Each article with its matches; full text fetched and story assigned for what
        needs matching. One whose matching raised goes in ``failed`` (by index) instead."""
        todo = await self._enrich(unique, seen, feed, signed)
        signatures = await self._signatures(unique, seen, todo.indexes, feed, signed)
        candidates = [Candidate(article, []) for article in unique]
        now = self._clock()
        async with self._lane as lane:
            for i in todo.indexes:
                await lane.pause()
                article = unique[i]
                try:
                    # Matched before its story is assigned: an article that fails joins no story.
                    matches = await _match(ruleset, article)
                    story = self._stories.assign(article, now, signatures[i]) if self._stories is not None and i in signatures else None
                except SYSTEM_FAULTS:
                    raise
                except Exception as exc:  # noqa: BLE001 - a bug met on this article costs this article only
                    failed[i] = ArticleFailure(article, exc, "matching")
                    continue
                candidates[i] = _candidate(article, matches, story, todo.feed_hashes.get(i))
                if story is not None:
                    self._pending_members[article.id] = (story.story_id, now, story.signature)
        return candidates

    async def _enrich(
        self, unique: list[Article], seen: list[SeenArticle | None], feed: Feed | None, signed: dict[int, bytes | None]
    ) -> _Todo:
        """Which articles need matching: they get their language (detected from the feed's
        text, before full text) and, those of a ``fulltext`` feed, their page's text."""
        todo = [i for i, (article, known) in enumerate(zip(unique, seen)) if needs_matching(known, article)]
        if self._detect_languages and todo:
            label = feed.url if feed is not None else unique[todo[0]].feed_url
            for i, article in zip(todo, await with_languages([unique[i] for i in todo], self._cpu, label)):
                if article is not unique[i] and id(unique[i]) in signed:
                    # The same text: the parse's story signature still holds.
                    signed[id(article)] = signed[id(unique[i])]
                unique[i] = article
        feed_hashes: dict[int, str] = {}
        if self._fulltext is not None and feed is not None and feed.fulltext and todo:
            originals = [unique[i] for i in todo]
            enriched = await self._fulltext.enrich_all(originals)
            for i, original, article in zip(todo, originals, enriched):
                if article is not original:
                    # Remember the feed's own text hash, so an unchanged entry is not refetched.
                    feed_hashes[i] = original.content_hash
                    unique[i] = article
        return _Todo(todo, feed_hashes)

    async def _signatures(
        self, unique: list[Article], seen: list[SeenArticle | None], todo: list[int], feed: Feed | None, signed: dict[int, bytes | None]
    ) -> dict[int, bytes | None]:
        """The story signature of each new article to match: the parse's, else made now."""
        if self._stories is None:
            return {}
        fresh = [i for i in todo if seen[i] is None]
        signatures = {i: signed[id(unique[i])] for i in fresh if id(unique[i]) in signed}
        # Full text replaced these since the parse signed them (or nothing signed them).
        fresh = [i for i in fresh if i not in signatures]
        if fresh:
            label = feed.url if feed is not None else unique[fresh[0]].feed_url
            try:
                # Shingling and MinHash in the worker processes.
                computed = await self._cpu.run(self._stories.signer, [story_text(unique[i]) for i in fresh], label=label, what="signing")
            except FeedError as exc:
                # Only the story grouping is lost: the articles still match and alert.
                log.warning("stories.sign.failed", feed_url=label, error=str(exc), articles=len(fresh))
            else:
                signatures.update(zip(fresh, computed))
        return signatures

    async def _signal(self, candidates: list[Candidate], admission: Admission) -> None:
        """The batch's signals, queued with the detectors' new state (one transaction)."""
        if self.signals is None:
            return
        now = self._clock()
        signals = self.signals
        raised: list[Signal] = []
        for article, rules in matches_of(candidates, admission.verdicts, admission.alerts):
            raised += signals.observe_article(article, rules, now, now)
        raised += signals.expire(now)
        records = [signal_record(signal) for signal in raised]
        # Detectors that raised a signal are saved with it; the journal every flush interval.
        changes = signals.changes(now)
        if records or changes:
            await self._store.save_signals(records, changes)
        for signal in raised:
            log.info("signal.raised", kind=signal.kind, rule_id=signal.rule_id, topic=signal.topic, signal_id=signal.signal_id)
        admission.signals.extend(raised)
        admission.records.extend(records)

    def _sighting_maker(self) -> MakeSighting | None:
        """What :func:`admit` makes a candidate's sighting record with (detected now), or None."""
        topic = self._sightings_topic
        if not topic:
            return None
        detected = self._clock()

        def make_sighting(candidate: Candidate, counted: Sequence[Match], stored_id: str) -> Record:
            article = candidate.article
            # As the daemon's detectors see it (matches_of): the article as fed, its story.
            seen = signal_article(article, candidate.story_id)
            return sighting_record(seen, [m.rule for m in counted], detected, topic, feed_url=article.feed_url, record_article=stored_id)

        return make_sighting

    async def _remember_story_members(self, candidates: list[Candidate]) -> None:
        members = [
            (c.article.id, *self._pending_members.pop(c.article.id))
            for c in candidates
            if c.article.id in self._pending_members
        ]
        if members:
            await self._store.save_story_members(members)

    def _article_records(self, articles: list[Article], seen: list[SeenArticle | None], failed: dict[int, ArticleFailure]) -> list[Record]:
        """Records for the raw article stream: new or changed articles, under the id they
        are known by. One whose record cannot be made goes in ``failed`` (by index)."""
        if not self._articles_topic:
            return []
        records = []
        for i, (article, known) in enumerate(zip(articles, seen)):
            if i in failed or not needs_matching(known, article):
                continue
            if known is not None and known.id != article.id:
                article = replace(article, id=known.id)
            try:
                records.append(article_record(article, self._articles_topic))
            except SYSTEM_FAULTS:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug met on this article costs this article only
                failed[i] = ArticleFailure(articles[i], exc, "alert")
        return records


def _candidate(article: Article, matches: list[Match], story: Assignment | None, feed_hash: str | None) -> Candidate:
    return Candidate(
        article,
        matches,
        story_id=story.story_id if story else None,
        story_copy=story.copy if story else False,
        content_hash=feed_hash,
    )


#: Up to this many articles of a poll get their language detected on the event loop (one
#: costs ~0.13 ms); more go to the CPU pool in one task (a burst: a feed's first poll).
DETECT_ON_LOOP = 4


async def with_languages(articles: list[Article], cpu: CpuPool | None, label: str) -> list[Article]:
    """``articles``, those without a language given theirs (see :func:`monitor.language.with_language`):
    on the event loop for up to :data:`DETECT_ON_LOOP`, else in ``cpu`` (on the loop after
    all when the pool fails: the language matters more than the stall)."""
    pending = [i for i, article in enumerate(articles) if article.lang is None]
    done = list(articles)
    if cpu is not None and len(pending) > DETECT_ON_LOOP:
        samples = [sample(done[i].title, done[i].summary, done[i].body) for i in pending]
        try:
            codes = await cpu.run(detect_samples, samples, label=label, what="detecting languages")
        except FeedError as exc:
            log.warning("language.detect.pool_failed", feed_url=label, error=str(exc), articles=len(pending))
        else:
            for i, code in zip(pending, codes):
                if code is not None:
                    done[i] = replace(done[i], lang=code)
            return done
    for i in pending:
        done[i] = with_language(done[i])
    return done


def unique_articles(articles: list[Article]) -> list[Article]:
    """First occurrence of each id and each canonical url within one feed."""
    seen_ids: set[str] = set()
    seen_urls: set[str] = set()
    unique: list[Article] = []
    for article in articles:
        if article.id in seen_ids or (article.url and article.url in seen_urls):
            continue
        seen_ids.add(article.id)
        if article.url:
            seen_urls.add(article.url)
        unique.append(article)
    return unique
