"""One poll of one feed, through every stage:

fetch -> parse -> normalise -> dedupe -> match -> publish -> mark seen.

:meth:`Pipeline.poll` never raises for a feed's own problems (unreachable, slow, not a
feed, malformed): it logs them with the feed url and the reason, counts them in the
feed's state, and returns a :class:`PollReport` whose ``outcome`` tells the scheduler
when to try again. Only the caller's cancellation escapes.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Protocol, TypeVar

from monitor.feeds.state import FeedState
from monitor.dedupe import Admission, Candidate, SeenArticle, Verdict, admit, needs_matching
from monitor.errors import FeedError
from monitor.feeds.state import FeedStates
from monitor.fetch import FeedHttpError, FetchResult, Transport, Validators, error_kind
from monitor.enrich.fulltext import FulltextEnricher
from monitor.feeds.health import learn_cadence
from monitor.log import get_logger
from monitor.model import Alert, Article, Feed, Match, Record
from monitor.parse import ParsedFeed
from monitor.dedupe.stories import SignedFeed
from monitor.delivery.records import alert_record, article_record, build_alert
from monitor.feeds.schedule import PollOutcome, publish_gap
from monitor.dedupe.stories import StoryIndex, story_text

__all__ = ["Matcher", "Pipeline", "PollReport"]

log = get_logger("pipeline")

T = TypeVar("T")


class Matcher(Protocol):
    """The rule set as the pipeline sees it (see :class:`monitor.engine.RuleSet`)."""

    version: str

    def match(self, article: Article) -> list[Match]: ...


class Parser(Protocol):
    """The CPU pool (see :class:`monitor.adapters.parser_pool.ParserPool`)."""

    async def parse(self, body: bytes, feed_url: str, content_type: str | None = None) -> ParsedFeed: ...

    async def parse_and_sign(self, body: bytes, feed_url: str, content_type: str | None, signer: Any) -> SignedFeed: ...

    async def run(self, function: Callable[..., Any], *args: Any, label: str, what: str = "processing") -> Any: ...


class CpuLane:
    """Time-slices the CPU work polls do on the event loop (rule matching, story lookup).

    Yielding between articles is not enough: when 64 polls each hold new articles, every
    loop iteration would run one article of each, ~100 ms before any socket is served.
    One poll at a time holds the lane, for at most ``slice_seconds`` before it lets the
    loop (and the other polls) run.
    """

    def __init__(self, slice_seconds: float = 0.005) -> None:
        self.slice_seconds = slice_seconds
        self._lock = asyncio.Lock()
        self._since = 0.0

    async def __aenter__(self) -> "CpuLane":
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
        return await asyncio.to_thread(ruleset.match, article)
    return ruleset.match(article)


class ArticleStore(Protocol):
    """The part of the state store a poll needs (``monitor.adapters.store.AsyncStore``)."""

    async def find_articles(self, keys: Iterable[tuple[str, str | None]]) -> list[SeenArticle | None]: ...

    async def enqueue(self, records: Iterable[Record]) -> None: ...

    async def atomically(self, function: Callable[..., T], *args: Any) -> T:
        """``function(store, *args)`` with the synchronous store, nothing else in between."""

    async def save_story_members(self, members: Iterable[tuple[str, str, float, bytes]]) -> None: ...


class Sink(Protocol):
    async def submit(self, records: list[Record]) -> None: ...


@dataclass
class PollReport:
    """What one poll of one feed did."""

    feed: Feed
    status: str
    outcome: PollOutcome
    articles: int = 0
    new: int = 0
    updated: int = 0
    duplicates: int = 0
    alerts: list[Alert] = field(default_factory=list)
    error: str | None = None
    warning: str | None = None
    elapsed: float = 0.0
    #: Seconds the fetch alone took (the rest of ``elapsed`` is parse, dedupe and store).
    fetch_elapsed: float = 0.0
    #: The HTTP status the server answered with, when it answered.
    http_status: int | None = None
    #: Which stage failed: "fetch" or "parse" (None when the poll succeeded).
    error_stage: str | None = None
    #: The feed's state as saved after this poll.
    state: FeedState | None = None
    #: Entries whose link was dropped (not http(s), or relative with no base), by reason.
    links_dropped: dict[str, int] = field(default_factory=dict)


class Pipeline:
    """Polls feeds: wires the stages together around the state store."""

    def __init__(
        self,
        *,
        transport: Transport,
        parser: Parser,
        store: ArticleStore,
        rules: Callable[[], Matcher],
        sink: Sink,
        clock: Callable[[], float] = time.time,
        articles_topic: str = "",
        feed_states: FeedStates | None = None,
        fulltext: FulltextEnricher | None = None,
        stories: StoryIndex | None = None,
    ) -> None:
        self._transport = transport
        #: Feed state lives in memory and is written back in batches (see monitor.feeds.state).
        self.feed_states = feed_states if feed_states is not None else FeedStates(store)
        self._fulltext = fulltext
        self._stories = stories
        #: Story members assigned but not yet saved: article id -> (story id, seen at, signature).
        self._pending_members: dict[str, tuple[str, float, bytes]] = {}
        self._parser = parser
        self._store = store
        self._rules = rules
        self._sink = sink
        self._clock = clock
        #: ``[kafka] articles_topic``: also publish every new or changed article there ("" = off).
        self._articles_topic = articles_topic
        self._lane = CpuLane()

    async def poll(self, feed: Feed) -> PollReport:
        """Poll one feed once; see the module docstring for the error contract."""
        started = time.monotonic()
        # The state before this poll: a poll that finds nothing new updates it in place,
        # the others record their outcome on a copy (see _process and _failed).
        state: FeedState = self.feed_states.peek(feed.url) or await self.feed_states.get(feed.url)
        now = self._clock()
        location = state.current_url or feed.url
        try:
            result = await self._transport.fetch(location, Validators(state.etag, state.last_modified), feed.headers)
        except FeedError as exc:
            report = await self._failed(feed, state, exc, now, log.bind(feed_url=feed.url))
            report.error_stage = "fetch"
            report.http_status = exc.status if isinstance(exc, FeedHttpError) else None
            report.fetch_elapsed = time.monotonic() - started
        else:
            fetch_elapsed = time.monotonic() - started
            try:
                report = await self._process(feed, state, result, now)
            except FeedError as exc:
                report = await self._failed(feed, state, exc, now, log.bind(feed_url=feed.url))
                report.error_stage = "parse"
            report.http_status = result.status
            report.fetch_elapsed = fetch_elapsed
        report.elapsed = time.monotonic() - started
        return report

    async def _process(self, feed: Feed, state: FeedState, result: FetchResult, now: float) -> PollReport:
        current_url = state.current_url
        if result.moved_to and result.moved_to != current_url:
            log.info("feed.moved", feed_url=feed.url, new_url=result.moved_to, hint="update the feed list; the new address is used from now on")
            current_url = result.moved_to
        if result.not_modified:
            # Nothing new, the usual poll: recorded in place (see FeedState), as nothing
            # after this can fail.
            _record_success(state, result, current_url, now)
            self.feed_states.put(state)
            log.debug("feed.poll.not_modified", feed_url=feed.url)
            return PollReport(feed, "not_modified", _quiet_outcome(state, result, now), state=state)
        body = result.body or b""
        body_hash = hashlib.blake2b(body, digest_size=16).hexdigest()
        if body_hash == state.body_hash:
            # The server ignores conditional GET, but the bytes are the same: skip parsing.
            _record_success(state, result, current_url, now)
            self.feed_states.put(state)
            log.debug("feed.poll.unchanged", feed_url=feed.url)
            return PollReport(feed, "unchanged", _quiet_outcome(state, result, now), state=state)
        # A copy: should parsing fail, the failure is recorded on the state as it was.
        state = state.evolve()
        _record_success(state, result, current_url, now)
        bound = log.bind(feed_url=feed.url)
        signatures: dict[int, bytes | None] = {}
        if self._stories is not None:
            signed = await self._parser.parse_and_sign(body, feed.url, result.content_type, self._stories.signer)
            parsed = signed.parsed
            # Keyed by object: dedupe within the feed and full text pick articles out of the list.
            signatures = {id(article): sig for article, sig in zip(parsed.articles, signed.signatures)}
        else:
            parsed = await self._parser.parse(body, feed.url, result.content_type)
        if parsed.warning:
            bound.warning("feed.parse.malformed", reason=parsed.warning, entries=len(parsed.articles))
        if parsed.links_dropped:
            # The articles still match and alert, published without a link.
            bound.info(
                "feed.links.dropped",
                reasons=parsed.links_dropped,
                example=parsed.dropped_link,
                hint="only http(s) links are published; relative ones need an http(s) feed url or site link",
            )
        admission = await self._admit(parsed.articles, feed, signatures)
        if admission.records:
            await self._sink.submit(admission.records)
        new = admission.count(Verdict.NEW)
        state = replace(
            state,
            body_hash=body_hash,
            items_seen=state.items_seen + new,
            last_new_item=now if new else state.last_new_item,
            cadence=learn_cadence(state.cadence, [a.published for a in parsed.articles], state.last_new_item, now, new),
        )
        self.feed_states.put(state)
        outcome = PollOutcome(
            ok=True,
            # The first poll finds everything "new": that says nothing about the feed's pace.
            new_items=new if state.polls > 1 else 0,
            max_age=result.max_age,
            ttl=parsed.ttl,
            publish_gap=publish_gap((a.published.timestamp() if a.published else None for a in parsed.articles), now),
            since_new=None if new or state.last_new_item is None else max(0.0, now - state.last_new_item),
            previous=state.interval,
        )
        report = PollReport(
            feed,
            "ok",
            outcome,
            articles=len(parsed.articles),
            new=new,
            updated=admission.count(Verdict.UPDATED),
            duplicates=admission.count(Verdict.DUPLICATE),
            alerts=admission.alerts,
            warning=parsed.warning,
            state=state,
            links_dropped=parsed.links_dropped,
        )
        bound.info(
            "feed.poll.ok",
            entries=report.articles,
            new=report.new,
            updated=report.updated,
            duplicates=report.duplicates,
            alerts=len(report.alerts),
            story_copies=admission.story_copies,
        )
        for alert in admission.alerts:
            bound.info("alert.created", rule_id=alert.rule_id, topic=alert.topic, article_id=alert.article_id, alert_id=alert.alert_id)
        return report

    async def _admit(self, articles: list[Article], feed: Feed | None = None, signatures: dict[int, bytes | None] | None = None) -> Admission:
        """Match what is new or changed, then record and queue its alerts atomically.

        ``signatures`` maps ``id(article)`` to its story signature, when the parse made them.
        """
        unique = _unique(articles)
        seen = await self._store.find_articles([(a.id, a.url) for a in unique])
        ruleset = self._rules()
        candidates = await self._candidates(unique, seen, feed, ruleset, signatures or {})

        def make_alert(match: Match, article: Article) -> Alert:
            return build_alert(match, article, ruleset_version=ruleset.version)

        articles_out = self._article_records(unique, seen)
        if articles_out:
            # Into the outbox before the articles are recorded as seen, so a crash in
            # between re-sends them rather than losing them.
            await self._store.enqueue(articles_out)
        admission = await self._store.atomically(admit, candidates, make_alert, alert_record)
        await self._remember_story_members(candidates)
        admission.records.extend(articles_out)
        # Entries repeated inside one feed count as duplicates too.
        admission.verdicts.extend([Verdict.DUPLICATE] * (len(articles) - len(unique)))
        return admission

    async def _candidates(
        self, unique: list[Article], seen: list, feed: Feed | None, ruleset: Matcher, signed: dict[int, bytes | None]
    ) -> list[Candidate]:
        """Each article with its matches; full text fetched and story assigned for what needs matching."""
        todo = [i for i, (article, known) in enumerate(zip(unique, seen)) if needs_matching(known, article)]
        feed_hashes: dict[int, str] = {}
        if self._fulltext is not None and feed is not None and feed.fulltext and todo:
            originals = [unique[i] for i in todo]
            enriched = await self._fulltext.enrich_all(originals)
            for i, original, article in zip(todo, originals, enriched):
                if article is not original:
                    # Remember the feed's own text hash, so an unchanged entry is not refetched.
                    feed_hashes[i] = original.content_hash
                    unique[i] = article
        candidates = [Candidate(article, []) for article in unique]
        stories = self._stories
        signatures: dict[int, bytes | None] = {}
        if stories is not None:
            fresh = [i for i in todo if seen[i] is None]
            signatures = {i: signed[id(unique[i])] for i in fresh if id(unique[i]) in signed}
            # Full text replaced these since the parse signed them (or nothing signed them).
            fresh = [i for i in fresh if i not in signatures]
            if fresh:
                # Shingling and MinHash (~0.3 ms an article) in the worker processes.
                label = feed.url if feed is not None else unique[fresh[0]].feed_url
                try:
                    computed = await self._parser.run(stories.signer, [story_text(unique[i]) for i in fresh], label=label, what="signing")
                except FeedError as exc:
                    # Only the story grouping is lost: the articles still match and alert.
                    log.warning("stories.sign.failed", feed_url=label, error=str(exc), articles=len(fresh))
                else:
                    signatures.update(zip(fresh, computed))
        now = self._clock()
        async with self._lane as lane:
            for i in todo:
                await lane.pause()
                article = unique[i]
                story = stories.assign(article, now, signatures[i]) if i in signatures else None
                candidates[i] = Candidate(
                    article,
                    await _match(ruleset, article),
                    story_id=story.story_id if story else None,
                    story_copy=story.copy if story else False,
                    content_hash=feed_hashes.get(i),
                )
                if story is not None:
                    self._pending_members[article.id] = (story.story_id, now, story.signature)
        return candidates

    async def _remember_story_members(self, candidates: list[Candidate]) -> None:
        members = [
            (c.article.id, *self._pending_members.pop(c.article.id))
            for c in candidates
            if c.article.id in self._pending_members
        ]
        if members:
            await self._store.save_story_members(members)

    async def _failed(self, feed: Feed, state: FeedState, exc: FeedError, now: float, bound) -> PollReport:
        errors = state.consecutive_errors + 1
        retry_after = exc.retry_after if isinstance(exc, FeedHttpError) else None
        gone = isinstance(exc, FeedHttpError) and exc.gone
        disabled = state.disabled
        if gone:
            disabled = f"HTTP 410 Gone at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))}"
            bound.error("feed.disabled", reason=str(exc))
        else:
            bound.warning("feed.poll.error", error=str(exc), consecutive_errors=errors)
        state = replace(
            state,
            last_poll=now,
            polls=state.polls + 1,
            last_error=str(exc),
            last_error_at=now,
            error_count=state.error_count + 1,
            consecutive_errors=errors,
            disabled=disabled,
            **_count_error(state, exc),
        )
        self.feed_states.put(state)
        return PollReport(
            feed,
            "gone" if gone else "error",
            PollOutcome(ok=False, consecutive_errors=errors, retry_after=retry_after),
            error=str(exc),
            state=state,
        )


    def _article_records(self, articles: list[Article], seen: list) -> list[Record]:
        """Records for the raw article stream: new or changed articles, under the id they are known by."""
        if not self._articles_topic:
            return []
        records = []
        for article, known in zip(articles, seen):
            if not needs_matching(known, article):
                continue
            if known is not None and known.id != article.id:
                article = replace(article, id=known.id)
            records.append(article_record(article, self._articles_topic))
        return records


def _record_success(state: FeedState, result: FetchResult, current_url: str | None, now: float) -> None:
    """Record a successful fetch in ``state``, in place."""
    state.last_poll = now
    state.polls += 1
    state.current_url = current_url
    state.etag = result.etag
    state.last_modified = result.last_modified
    state.last_success = now
    state.consecutive_errors = 0


def _quiet_outcome(state: FeedState, result: FetchResult, now: float) -> PollOutcome:
    """What a poll that found nothing new (304, or the same bytes) tells the scheduler."""
    since_new = None if state.last_new_item is None else max(0.0, now - state.last_new_item)
    return PollOutcome(ok=True, max_age=result.max_age, since_new=since_new, previous=state.interval)


def _count_error(state: FeedState, exc: FeedError) -> dict[str, int]:
    kind = error_kind(exc)
    if kind == "http_4xx":
        return {"http_4xx": state.http_4xx + 1}
    if kind == "http_5xx":
        return {"http_5xx": state.http_5xx + 1}
    if kind == "timeout":
        return {"timeouts": state.timeouts + 1}
    return {}


def _unique(articles: list[Article]) -> list[Article]:
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
