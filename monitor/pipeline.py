"""One poll of one feed, through every stage:

fetch -> parse -> (the articles, through :mod:`monitor.matching`: dedupe -> enrich ->
stories -> match -> record and queue) -> the feed's state and what to tell the scheduler.

:meth:`Pipeline.poll` never raises for a feed's own problems (unreachable, slow, not a
feed, malformed): it logs them with the feed url and the reason, counts them in the
feed's state, and returns a :class:`PollReport` whose ``outcome`` tells the scheduler
when to try again. Only the caller's cancellation escapes. :meth:`Pipeline.receive` is the seam for a body
that arrives without a poll (a WebSub push): the same parse and matching, the same
limits and dedupe, so an item pushed and then polled alerts once. Each step is a short method
that returns a small value: the fetch result, a :class:`_Parsed` body, the
:class:`~monitor.dedupe.Admission`, the new state and the outcome.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from monitor.dedupe import Admission, Verdict
from monitor.dedupe.stories import SignedFeed, StoryIndex
from monitor.enrich.fulltext import FulltextEnricher
from monitor.errors import FeedError, error_text
from monitor.feeds.health import learn_cadence
from monitor.feeds.schedule import PollOutcome, publish_gap
from monitor.feeds.state import FeedState, FeedStates
from monitor.fetch import FeedHttpError, FetchResult, Transport, Validators, error_kind
from monitor.log import get_logger
from monitor.matching import ArticleStore, Matcher, Matching, Sink
from monitor.model import Alert, Article, Feed, Signal
from monitor.parse import ParsedFeed
from monitor.signals import Signals
from monitor.websub.discovery import PushLinks, discover

__all__ = ["Admitter", "HubLinks", "Parser", "Pipeline", "PollReport"]

log = get_logger("pipeline")


class Parser(Protocol):
    """The CPU pool (see :class:`monitor.adapters.parser_pool.ParserPool`)."""

    async def parse(
        self, body: bytes, feed_url: str, content_type: str | None = None, language: str | None = None, detect_languages: bool = True
    ) -> ParsedFeed: ...

    async def parse_and_sign(
        self,
        body: bytes,
        feed_url: str,
        content_type: str | None,
        signer: Any,
        language: str | None = None,
        detect_languages: bool = True,
    ) -> SignedFeed: ...

    async def run(self, function: Callable[..., Any], *args: Any, label: str, what: str = "processing") -> Any: ...


class Admitter(Protocol):
    """The articles' half of a poll: :class:`~monitor.matching.Matching` in one process,
    :class:`monitor.cluster.admission.PollerAdmission` in a poller.

    The articles come from a parse that detected no language: an admitter gives each
    article it matches or publishes its language (:func:`monitor.matching.with_languages`)."""

    async def admit(
        self, articles: list[Article], feed: Feed | None = None, signatures: dict[int, bytes | None] | None = None
    ) -> Admission: ...


class HubLinks(Protocol):
    """Who wants feeds' WebSub hub links (see :class:`monitor.websub.Subscriber`)."""

    def wants_links(self, url: str) -> bool:
        """Whether the next poll of ``url`` should fetch the whole body (no validators) to read them."""

    def links_found(self, feed: Feed, links: PushLinks | None) -> None: ...


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
    #: Story signals the poll's articles raised (docs/signals.md).
    signals: list[Signal] = field(default_factory=list)
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



@dataclass(frozen=True, slots=True)
class _Parsed:
    """A changed body, parsed: its articles and, when stories are on, their signatures."""

    feed: ParsedFeed
    #: ``id(article)`` -> story signature (keyed by object: dedupe and full text pick
    #: articles out of the list).
    signatures: dict[int, bytes | None]


class Pipeline:
    """Polls feeds: wires the stages together around the feed's state."""

    def __init__(
        self,
        *,
        transport: Transport,
        parser: Parser,
        store: ArticleStore | None = None,
        rules: Callable[[], Matcher] | None = None,
        sink: Sink | None = None,
        feed_states: FeedStates,
        clock: Callable[[], float] = time.time,
        articles_topic: str = "",
        fulltext: FulltextEnricher | None = None,
        stories: StoryIndex | None = None,
        signals: Signals | None = None,
        admission: Admitter | None = None,
        hub_links: HubLinks | None = None,
    ) -> None:
        """``store``, ``rules`` and ``sink`` build the :class:`Matching` stage; a poller
        passes its own ``admission`` instead."""
        self._transport = transport
        #: Told the hub links of every changed body (None: WebSub is off).
        self.hub_links = hub_links
        self._parser = parser
        #: Feed state lives in memory and is written back in batches (see monitor.feeds.state).
        self.feed_states = feed_states
        self._stories = stories
        self._clock = clock
        if admission is None:
            if store is None or rules is None or sink is None:
                raise TypeError("Pipeline needs store, rules and sink, or an admission stage")
            admission = Matching(
                store=store, rules=rules, sink=sink, cpu=parser, clock=clock,
                articles_topic=articles_topic, fulltext=fulltext, stories=stories, signals=signals, detect_languages=True,
            )
        self.matching: Admitter = admission

    async def poll(self, feed: Feed) -> PollReport:
        """Poll one feed once; see the module docstring for the error contract."""
        started = time.monotonic()
        # The state before this poll: a poll that finds nothing new updates it in place,
        # the others record their outcome on a copy (see _changed and _failed).
        state: FeedState = self.feed_states.peek(feed.url) or await self.feed_states.get(feed.url)
        now = self._clock()
        validators = Validators(state.etag, state.last_modified)
        if self.hub_links is not None and self.hub_links.wants_links(feed.url):
            validators = Validators()
        try:
            result = await self._transport.fetch(state.current_url or feed.url, validators, feed.headers)
        except FeedError as exc:
            report = self._failed(feed, state, exc, now)
            report.error_stage = "fetch"
            report.http_status = exc.status if isinstance(exc, FeedHttpError) else None
            report.fetch_elapsed = time.monotonic() - started
        else:
            fetch_elapsed = time.monotonic() - started
            try:
                report = await self._process(feed, state, result, now)
            except FeedError as exc:
                report = self._failed(feed, state, exc, now)
                report.error_stage = "parse"
            report.http_status = result.status
            report.fetch_elapsed = fetch_elapsed
        report.elapsed = time.monotonic() - started
        return report

    async def _process(self, feed: Feed, state: FeedState, result: FetchResult, now: float) -> PollReport:
        current_url = _current_url(feed, state, result)
        if result.not_modified:
            return self._quiet(feed, state, result, current_url, now, "not_modified")
        body = result.body or b""
        body_hash = hashlib.blake2b(body, digest_size=16).hexdigest()
        if self.hub_links is not None and (body_hash != state.body_hash or self.hub_links.wants_links(feed.url)):
            self.hub_links.links_found(feed, discover(result.links, body, result.url))
        if body_hash == state.body_hash:
            # The server ignores conditional GET, but the bytes are the same: skip parsing.
            return self._quiet(feed, state, result, current_url, now, "unchanged")
        # A copy: should parsing fail, the failure is recorded on the state as it was.
        state = state.evolve()
        _record_success(state, result, current_url, now)
        parsed = await self._parse(feed, body, result.content_type)
        admission = await self.matching.admit(parsed.feed.articles, feed, parsed.signatures)
        state = _changed(state, parsed.feed, admission.count(Verdict.NEW), body_hash, now)
        self.feed_states.put(state)
        report = _report(feed, state, result.max_age, parsed.feed, admission, now)
        _log_poll(feed, report, admission)
        return report

    async def receive(self, feed: Feed, body: bytes, content_type: str | None = None) -> PollReport:
        """A body that reached ``feed`` without a poll (a WebSub push), through the same parse,
        limits, dedupe, matching and admission as a polled body.

        The feed's validators, body hash and poll counters stay as its last poll left them;
        its new items and cadence count. A body that does not parse is logged and reported
        (status ``push_error``) and counts against nothing: the feed's own polls say
        whether it is healthy.
        """
        started = time.monotonic()
        now = self._clock()
        try:
            parsed = await self._parse(feed, body, content_type)
            admission = await self.matching.admit(parsed.feed.articles, feed, parsed.signatures)
        except FeedError as exc:
            log.warning("feed.push.error", feed_url=feed.url, error=str(exc))
            elapsed = time.monotonic() - started
            return PollReport(feed, "push_error", PollOutcome(ok=False), error=str(exc), error_stage="parse", elapsed=elapsed)
        # The state as it is now, not as it was before the parse: a poll may have finished meanwhile.
        current = self.feed_states.peek(feed.url) or await self.feed_states.get(feed.url)
        state = _changed(current.evolve(), parsed.feed, admission.count(Verdict.NEW), current.body_hash, now)
        self.feed_states.put(state)
        report = _report(feed, state, None, parsed.feed, admission, now)
        report.status = "push"
        report.elapsed = time.monotonic() - started
        _log_poll(feed, report, admission, pushed=True)
        return report

    def _quiet(self, feed: Feed, state: FeedState, result: FetchResult, current_url: str | None, now: float, status: str) -> PollReport:
        """Nothing new, the usual poll: recorded in place (see FeedState), as nothing after this can fail."""
        _record_success(state, result, current_url, now)
        self.feed_states.put(state)
        if status == "not_modified":
            log.debug("feed.poll.not_modified", feed_url=feed.url)
        else:
            log.debug("feed.poll.unchanged", feed_url=feed.url)
        return PollReport(feed, status, _quiet_outcome(state, result, now), state=state)

    async def _parse(self, feed: Feed, body: bytes, content_type: str | None) -> _Parsed:
        """Parse a changed body in the CPU pool (signing its articles' stories there too).

        Without detecting languages: the admission detects them for the articles it finds
        new or changed (most entries of a changed body were seen before)."""
        signatures: dict[int, bytes | None] = {}
        if self._stories is not None:
            signer = self._stories.signer
            signed = await self._parser.parse_and_sign(body, feed.url, content_type, signer, feed.language, detect_languages=False)
            parsed = signed.parsed
            signatures = {id(article): sig for article, sig in zip(parsed.articles, signed.signatures)}
        else:
            parsed = await self._parser.parse(body, feed.url, content_type, feed.language, detect_languages=False)
        if parsed.warning:
            log.warning("feed.parse.malformed", feed_url=feed.url, reason=parsed.warning, entries=len(parsed.articles))
        if parsed.links_dropped:
            # The articles still match and alert, published without a link.
            log.info(
                "feed.links.dropped",
                feed_url=feed.url,
                reasons=parsed.links_dropped,
                example=parsed.dropped_link,
                hint="only http(s) links are published; relative ones need an http(s) feed url or site link",
            )
        return _Parsed(parsed, signatures)

    def _failed(self, feed: Feed, state: FeedState, exc: FeedError, now: float) -> PollReport:
        errors = state.consecutive_errors + 1
        retry_after = exc.retry_after if isinstance(exc, FeedHttpError) else None
        gone = isinstance(exc, FeedHttpError) and exc.gone
        disabled = state.disabled
        if gone:
            disabled = f"HTTP 410 Gone at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))}"
            log.error("feed.disabled", feed_url=feed.url, reason=str(exc))
        else:
            log.warning("feed.poll.error", feed_url=feed.url, error=str(exc), consecutive_errors=errors)
        state = replace(
            state,
            last_poll=now,
            polls=state.polls + 1,
            last_error=str(exc),
            last_error_at=now,
            error_count=state.error_count + 1,
            consecutive_errors=errors,
            disabled=disabled,
        )
        _count_error(state, exc)
        self.feed_states.put(state)
        return PollReport(
            feed,
            "gone" if gone else "error",
            PollOutcome(ok=False, consecutive_errors=errors, retry_after=retry_after),
            error=str(exc),
            state=state,
        )


def _current_url(feed: Feed, state: FeedState, result: FetchResult) -> str | None:
    """Where the feed is fetched from now on: its new address after a permanent redirect."""
    if result.moved_to and result.moved_to != state.current_url:
        log.info("feed.moved", feed_url=feed.url, new_url=result.moved_to, hint="update the feed list; the new address is used from now on")
        return result.moved_to
    return state.current_url


def _changed(state: FeedState, parsed: ParsedFeed, new: int, body_hash: str | None, now: float) -> FeedState:
    """The state after a changed body: its hash, the new items, the cadence learned."""
    return replace(
        state,
        body_hash=body_hash,
        items_seen=state.items_seen + new,
        last_new_item=now if new else state.last_new_item,
        cadence=learn_cadence(state.cadence, [a.published for a in parsed.articles], state.last_new_item, now, new),
    )


def _report(feed: Feed, state: FeedState, max_age: float | None, parsed: ParsedFeed, admission: Admission, now: float) -> PollReport:
    """What a poll of a changed body did, and what it tells the scheduler."""
    new = admission.count(Verdict.NEW)
    outcome = PollOutcome(
        ok=True,
        # The first poll finds everything "new": that says nothing about the feed's pace.
        new_items=new if state.polls > 1 else 0,
        max_age=max_age,
        ttl=parsed.ttl,
        publish_gap=publish_gap((a.published.timestamp() if a.published else None for a in parsed.articles), now),
        since_new=None if new or state.last_new_item is None else max(0.0, now - state.last_new_item),
        previous=state.interval,
    )
    return PollReport(
        feed,
        "ok",
        outcome,
        articles=len(parsed.articles),
        new=new,
        updated=admission.count(Verdict.UPDATED),
        duplicates=admission.count(Verdict.DUPLICATE),
        alerts=admission.alerts,
        signals=admission.signals,
        warning=parsed.warning,
        state=state,
        links_dropped=parsed.links_dropped,
    )


def _log_poll(feed: Feed, report: PollReport, admission: Admission, *, pushed: bool = False) -> None:
    fields = {
        "feed_url": feed.url,
        "entries": report.articles,
        "new": report.new,
        "updated": report.updated,
        "duplicates": report.duplicates,
        "alerts": len(report.alerts),
        "story_copies": admission.story_copies,
    }
    if pushed:
        log.info("feed.push.ok", **fields)
    else:
        log.info("feed.poll.ok", **fields)
    for failure in admission.failed:
        # Not recorded as seen: its next changed body matches it again (docs/operations.md).
        log.error(
            "feed.article.failed", feed_url=feed.url, article_id=failure.article.id, step=failure.step, error=error_text(failure.error),
            hint="a bug: please report it; the feed's other articles were matched", exc_info=failure.error,
        )  # fmt: skip
    for alert in admission.alerts:
        log.info(
            "alert.created",
            feed_url=feed.url,
            rule_id=alert.rule_id,
            topic=alert.topic,
            article_id=alert.article_id,
            alert_id=alert.alert_id,
        )


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


def _count_error(state: FeedState, exc: FeedError) -> None:
    """Count a failed poll by kind on ``state`` (a copy made for this poll)."""
    kind = error_kind(exc)
    if kind == "http_4xx":
        state.http_4xx += 1
    elif kind == "http_5xx":
        state.http_5xx += 1
    elif kind == "timeout":
        state.timeouts += 1