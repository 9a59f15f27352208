"""Feed health: which feeds are failing, which have gone quiet, and the events that say so.

A feed is

``failing``
    when its last ``failing_after`` polls failed in a row (unreachable, HTTP errors,
    unparseable);
``stale``
    when it still answers but has had no new item for much longer than usual: longer
    than its operator-set ``expected_update_period``, or else than ``stale_factor`` times
    its learned cadence (never sooner than ``stale_min_age``, nor than two poll intervals,
    since new items are only noticed when the feed is polled);
``disabled``
    when the server said it is gone for good (HTTP 410);
``ok``
    otherwise.

The cadence is learned from the feed itself: the median gap between the publication
dates of its newest entries, or, for feeds without dates, a moving average of the gaps
between polls that found something new. It is stored with the feed's state so a
restart does not forget it.

Every change of health is a :class:`Transition`; its :func:`health_record` is the
Kafka record published on the feed-health topic, so another service can page someone.

The status page and ``news-monitor status`` show a :class:`FeedPage` at a time (a
:class:`FeedQuery`: a filter, an order, a slice). The tracker keeps its feeds indexed by
health and by most recent new item, updated as polls are observed, so the counts by
health cost nothing and an unfiltered page costs O(log feeds + page), not a sort of
every feed; a text filter scans the feeds once.

Pure: no I/O; the clock is passed in.
"""

from __future__ import annotations

import itertools
import math
import statistics
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from sortedcontainers import SortedList

from monitor.feeds.state import FeedState
from monitor.model import Feed, Record
from monitor.redact import public_feed_url, scrub
from monitor.timefmt import format_duration, utc_iso

__all__ = [
    "DISABLED",
    "FAILING",
    "FEED_ORDERS",
    "HEALTH_EVENT_TYPE",
    "HEALTH_STATES",
    "MAX_PAGE_ROWS",
    "OK",
    "PAGE_ROWS",
    "STALE",
    "FeedHealth",
    "FeedHealthTracker",
    "FeedPage",
    "FeedQuery",
    "FeedRow",
    "HealthPolicy",
    "Transition",
    "assess",
    "health_record",
    "learn_cadence",
]

OK = "ok"
STALE = "stale"
FAILING = "failing"
DISABLED = "disabled"
#: Every health a feed can have, best first.
HEALTH_STATES: tuple[str, ...] = (OK, STALE, FAILING, DISABLED)
#: The order pages list them in: worst first.
_WORST_FIRST: tuple[str, ...] = tuple(reversed(HEALTH_STATES))

#: Feeds on one page (the status page, ``/status.json``, ``news-monitor status``) unless
#: the query says otherwise, and the most one page of the status page or ``/status.json`` holds.
PAGE_ROWS = 200
MAX_PAGE_ROWS = 1000
#: ``health``: worst health first, then the most recent new item first (never last), then
#: url. ``url``: by url alone, a place that polls do not change (for walking every feed).
FEED_ORDERS: tuple[str, ...] = ("health", "url")

HEALTH_EVENT_TYPE = "news.feed-health.v1"
HEALTH_SCHEMA_VERSION = 1

#: Newest entries whose publication dates the cadence is learned from.
_CADENCE_ENTRIES = 20
#: A cadence below this is noise (entries stamped seconds apart by a batch import).
_MIN_CADENCE = 60.0
#: Weight of the newest observed gap in the moving average (feeds without dates).
_EWMA_WEIGHT = 0.3
#: Publication dates further ahead than this are clock errors and are ignored.
_FUTURE_SLACK = 86400.0


def learn_cadence(
    previous: float | None,
    published: Iterable[datetime | None],
    last_new_item: float | None,
    now: float,
    new: int,
) -> float | None:
    """The typical seconds between two new items of a feed, or None while unknown.

    ``published`` are the publication dates of the entries in the current feed
    document; ``last_new_item`` is when a poll last found a new item and ``new`` how many
    this poll found (at ``now``).
    """
    stamps = sorted(
        {stamp for stamp in (_aware(m).timestamp() for m in published if m is not None) if stamp <= now + _FUTURE_SLACK},
        reverse=True,
    )[:_CADENCE_ENTRIES]
    gaps = [newer - older for newer, older in itertools.pairwise(stamps) if newer > older]
    if len(gaps) >= 2:
        return max(_MIN_CADENCE, float(statistics.median(gaps)))
    if new and last_new_item is not None and now > last_new_item:
        observed = max(_MIN_CADENCE, now - last_new_item)
        if previous is None:
            return observed
        return (1 - _EWMA_WEIGHT) * previous + _EWMA_WEIGHT * observed
    return previous


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """The thresholds of :func:`assess` (``[health]`` in the config)."""

    failing_after: int = 3
    stale_factor: float = 4.0
    stale_min_age: float = 3600.0

    def stale_after(self, feed: Feed, cadence: float | None) -> float | None:
        """Seconds without a new item after which ``feed`` is stale; None when unknown."""
        if feed.expected_update_period is not None and feed.expected_update_period > 0:
            # The operator said how quiet the feed may be: take them at their word.
            return float(feed.expected_update_period)
        if cadence is None or cadence <= 0:
            return None
        return max(self.stale_factor * cadence, self.stale_min_age, 2 * feed.interval)


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """A feed's health and the reason for it, in words an operator can act on."""

    health: str
    reason: str = ""


#: The verdict for every healthy feed (one object: assessed after every poll).
_HEALTHY = FeedHealth(OK)


def assess(
    feed: Feed,
    *,
    now: float,
    policy: HealthPolicy,
    consecutive_errors: int = 0,
    last_error: str | None = None,
    disabled: str | None = None,
    last_new_item: float | None = None,
    cadence: float | None = None,
    quiet_since: float | None = None,
) -> FeedHealth:
    """The health of one feed now.

    ``quiet_since`` is when silence started counting for a feed that never had a new
    item (when monitoring of it began).
    """
    if disabled:
        return FeedHealth(DISABLED, f"disabled: {disabled}")
    if consecutive_errors >= policy.failing_after:
        # The error itself travels separately (last_error): the reason stays short.
        return FeedHealth(FAILING, f"{consecutive_errors} failed poll{'s' if consecutive_errors != 1 else ''} in a row")
    limit = policy.stale_after(feed, cadence)
    since = last_new_item if last_new_item is not None else quiet_since
    if limit is not None and since is not None and now - since > limit:
        basis = (
            f"expected_update_period {format_duration(limit)}"
            if feed.expected_update_period
            else f"usually one every {format_duration(cadence or 0)}"
        )
        return FeedHealth(STALE, f"no new item for {format_duration(now - since)} ({basis})")
    return _HEALTHY


@dataclass(frozen=True, slots=True)
class Transition:
    """A feed's health changed."""

    feed: Feed
    previous: str
    current: FeedHealth
    at: float
    last_success: float | None = None
    last_new_item: float | None = None
    consecutive_errors: int = 0
    last_error: str | None = None


def _iso(moment: float | None) -> str | None:
    return None if moment is None else utc_iso(moment)


def health_record(transition: Transition, topic: str) -> Record:
    """The Kafka record of a health change: JSON value keyed by feed url (one partition per feed,
    so a consumer sees a feed's changes in order), with CloudEvents headers."""
    event_id = uuid.uuid4().hex
    feed = transition.feed
    # The feed's public form, like an alert's: credentials masked, a path as a file:// URI.
    public = public_feed_url(feed.url)
    value = orjson.dumps(
        {
            "schema_version": HEALTH_SCHEMA_VERSION,
            "event_id": event_id,
            "feed_url": public,
            "feed_name": feed.name,
            "previous": transition.previous,
            "health": transition.current.health,
            "reason": scrub(transition.current.reason) if transition.current.reason else transition.current.reason,
            "at": _iso(transition.at),
            "last_success": _iso(transition.last_success),
            "last_new_item": _iso(transition.last_new_item),
            "consecutive_errors": transition.consecutive_errors,
            "last_error": scrub(transition.last_error) if transition.last_error else transition.last_error,
        }
    )
    url = public.encode("utf-8", "surrogatepass")
    return Record(
        alert_id=event_id,
        article_id=f"feed-health:{feed.url}",
        topic=topic,
        key=url,
        value=value,
        headers=(
            ("ce_specversion", b"1.0"),
            ("ce_id", event_id.encode()),
            ("ce_source", url),
            ("ce_type", HEALTH_EVENT_TYPE.encode()),
            ("ce_time", (_iso(transition.at) or "").encode()),
            ("content-type", b"application/json"),
        ),
    )


@dataclass(slots=True)
class _Entry:
    """One feed as the tracker knows it: the feed, its health and its latest state."""

    feed: Feed
    health: FeedHealth
    quiet_since: float
    #: The feed's latest state: the poller's own object, only ever read here.
    state: FeedState
    #: When the feed is polled next (Unix time), as the scheduler last said.
    next_poll: float | None = None
    #: The health last written to the state store.
    stored_health: str = OK
    #: Where the tracker's index holds the entry: the health and the key it is filed under.
    indexed: str = OK
    key: tuple[float, str] = (math.inf, "")
    placed_new_item: float | None = None


def _order_key(entry: _Entry) -> tuple[float, str]:
    """Most recent new item first, feeds that never had one last, then by url."""
    last = entry.state.last_new_item
    return (-last if last is not None else math.inf, entry.feed.url)


@dataclass(frozen=True, slots=True)
class FeedRow:
    """One feed as the status page and ``news-monitor status`` show it."""

    url: str
    name: str | None
    health: str
    reason: str
    polls: int
    items_seen: int
    last_poll: float | None
    last_success: float | None
    last_new_item: float | None
    last_error: str | None
    last_error_at: float | None
    next_poll: float | None
    cadence: float | None
    stale_after: float | None


@dataclass(frozen=True, slots=True)
class FeedQuery:
    """Which feeds a page shows, in which order (:data:`FEED_ORDERS`), and which slice."""

    #: Only feeds in these healths; empty: every health.
    health: tuple[str, ...] = ()
    #: Only feeds whose url (as shown: credentials masked) or name contains this, ignoring case.
    text: str = ""
    order: str = "health"
    offset: int = 0
    #: Feeds on the page; None: every feed from ``offset`` on (the CLI's ``--all``).
    limit: int | None = PAGE_ROWS


@dataclass(frozen=True, slots=True)
class FeedPage:
    """One page of feeds, and where it sits among them."""

    rows: list[FeedRow]
    #: Every feed the tracker knows.
    total: int
    #: Feeds that match the query's filter (``total`` without one).
    matched: int
    #: The offset of the next page; None on the last.
    next_offset: int | None


@dataclass
class FeedHealthTracker:
    """Every feed's latest state and health, updated from polls and periodic sweeps.

    About twenty methods, one index: every change of a feed's health or latest new item
    moves it in the index that pages and counts read, so the updates and the reads of
    that index are kept in one class.
    """

    feeds: Sequence[Feed]
    policy: HealthPolicy = field(default_factory=HealthPolicy)
    started: float = 0.0
    #: A feed's url as people see it (credentials masked): what text filters search, so a
    #: filter cannot probe a secret the page hides.
    shown_url: Callable[[str], str] = str
    _entries: dict[str, _Entry] = field(default_factory=dict, init=False)
    #: Per health, every feed's :func:`_order_key`, sorted: pages and counts read it.
    #: Empty until first read, and after :meth:`load_all`: then built in one go.
    _index: dict[str, SortedList] = field(default_factory=dict, init=False)
    #: Every url, sorted; made by the first page in url order.
    _urls: list[str] | None = field(default=None, init=False)
    #: Per url, what a text filter searches: the url as shown and the name, case-folded
    #: (not run together: a match may not straddle the two).
    _haystacks: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for feed in self.feeds:
            self._entries[feed.url] = _Entry(feed, _HEALTHY, self.started, FeedState(feed.url))
        for url, entry in self._entries.items():
            self._haystacks[url] = f"{self.shown_url(url)}\x00{entry.feed.name or ''}".casefold()

    def load(self, state: FeedState) -> None:
        """Take a stored FeedState (from a previous run) as the starting point, health included,
        so a restart does not announce changes that were announced before."""
        entry = self._entries.get(state.url)
        if entry is not None:
            self._load(entry, state)
            self._place(entry)

    def load_all(self, states: Iterable[FeedState]) -> None:
        """:meth:`load` every state; the feeds are indexed once, when next read (a quarter
        of the time of filing 50,000 feeds one by one)."""
        for state in states:
            entry = self._entries.get(state.url)
            if entry is not None:
                self._load(entry, state)
        self._index = {}

    def _load(self, entry: _Entry, state: FeedState) -> None:
        self._update(entry, state)
        stored = state.health if state.health in HEALTH_STATES else OK
        entry.stored_health = stored
        entry.health = FeedHealth(stored, "as of the previous run" if stored != OK else "")

    def set_feeds(self, feeds: Sequence[Feed], now: float) -> None:
        """Track exactly ``feeds`` from now on (a reload): new ones start healthy, removed
        ones are forgotten, the others keep their state under their new settings."""
        wanted = {feed.url: feed for feed in feeds}
        for url in [url for url in self._entries if url not in wanted]:
            del self._entries[url]
            del self._haystacks[url]
        for url, feed in wanted.items():
            entry = self._entries.get(url)
            if entry is None:
                self._entries[url] = _Entry(feed, _HEALTHY, now, FeedState(url))
            else:
                entry.feed = feed
            self._haystacks[url] = f"{self.shown_url(url)}\x00{feed.name or ''}".casefold()
        self.feeds = list(feeds)
        # Filed afresh when next read: the index and the url order held the old feeds only.
        self._index = {}
        self._urls = None

    def observe(self, state: FeedState, now: float) -> Transition | None:
        """Record a feed's state after a poll; the transition when its health changed."""
        entry = self._entries.get(state.url)
        if entry is None:
            return None
        self._update(entry, state)
        transition = self._reassess(entry, now)
        # Checked here, not in _place: after every poll, and most change nothing.
        if transition is not None or entry.state.last_new_item != entry.placed_new_item:
            self._place(entry)
        return transition

    def sweep(self, now: float) -> list[Transition]:
        """Re-assess every feed (silence grows between polls)."""
        transitions = [t for t in (self._reassess(entry, now) for entry in self._entries.values()) if t is not None]
        for transition in transitions:
            self._place(self._entries[transition.feed.url])
        return transitions

    def scheduled(self, url: str, next_poll: float) -> None:
        entry = self._entries.get(url)
        if entry is not None:
            entry.next_poll = next_poll

    def needs_store(self, url: str) -> str | None:
        """The health to write to the store for ``url``, when the stored one is out of date."""
        entry = self._entries.get(url)
        if entry is None or entry.stored_health == entry.health.health:
            return None
        return entry.health.health

    def stored(self, url: str, health: str) -> None:
        entry = self._entries.get(url)
        if entry is not None:
            entry.stored_health = health

    def health_of(self, url: str) -> FeedHealth | None:
        entry = self._entries.get(url)
        return entry.health if entry is not None else None

    def counts(self) -> dict[str, int]:
        """Number of feeds in each health state (every state present, zero or not): the
        sizes of the index, kept as feeds change."""
        index = self._indexed()
        return {health: len(index[health]) for health in HEALTH_STATES}

    def rows(self) -> list[FeedRow]:
        """Every feed, worst health first, then by url."""
        order = {name: index for index, name in enumerate(HEALTH_STATES)}
        rows = [self._row(e) for e in self._entries.values()]
        rows.sort(key=lambda row: (-order.get(row.health, 0), row.url))
        return rows

    def page(self, query: FeedQuery = FeedQuery()) -> FeedPage:
        """The feeds ``query`` asks for: filtered, ordered, and the slice from its offset.

        Without a text filter, in health order, this reads the index: O(log feeds + page).
        A text filter, or a health filter in url order, scans the feeds once.
        """
        index = self._indexed()
        wanted = [health for health in _WORST_FIRST if not query.health or health in query.health]
        start = max(0, query.offset)
        stop = None if query.limit is None else start + max(0, query.limit)
        needle = query.text.casefold()
        entries = self._entries
        if query.order == "url" or needle:
            if query.order == "url":
                urls = self._sorted_urls()
                if needle or len(wanted) < len(HEALTH_STATES):
                    keep = set(wanted)
                    urls = [url for url in urls if entries[url].indexed in keep and needle in self._haystacks[url]]
            else:
                haystacks = self._haystacks
                urls = [key[1] for health in wanted for key in index[health] if needle in haystacks[key[1]]]
            matched = len(urls)
            chosen = [entries[url] for url in urls[start:stop]]
        else:
            matched = sum(len(index[health]) for health in wanted)
            chosen = list(self._slice(wanted, start, stop))
        following = start + len(chosen)
        return FeedPage(
            rows=[self._row(entry) for entry in chosen],
            total=len(self._entries),
            matched=matched,
            next_offset=following if stop is not None and following < matched else None,
        )

    def _slice(self, healths: list[str], start: int, stop: int | None) -> Iterator[_Entry]:
        """Entries ``start:stop`` of the index's lists for ``healths``, in that order."""
        for health in healths:
            keys = self._index[health]  # built by page()
            size = len(keys)
            if stop is not None and stop <= 0:
                return
            if start < size:
                end = size if stop is None else min(stop, size)
                yield from (self._entries[key[1]] for key in keys.islice(start, end))
            start = max(0, start - size)
            stop = None if stop is None else stop - size

    def _sorted_urls(self) -> list[str]:
        if self._urls is None:
            self._urls = sorted(self._entries)
        return self._urls

    def _row(self, e: _Entry) -> FeedRow:
        state = e.state
        return FeedRow(
            url=e.feed.url,
            name=e.feed.name,
            health=e.health.health,
            reason=e.health.reason,
            polls=state.polls,
            items_seen=state.items_seen,
            last_poll=state.last_poll,
            last_success=state.last_success,
            last_new_item=state.last_new_item,
            last_error=state.last_error,
            last_error_at=state.last_error_at,
            next_poll=e.next_poll,
            cadence=state.cadence,
            stale_after=self.policy.stale_after(e.feed, state.cadence),
        )

    def _indexed(self) -> dict[str, SortedList]:
        """The index, filing every feed afresh when it is not built."""
        if not self._index:
            filed: dict[str, list[tuple[float, str]]] = {health: [] for health in HEALTH_STATES}
            for entry in self._entries.values():
                entry.key, entry.indexed, entry.placed_new_item = _order_key(entry), entry.health.health, entry.state.last_new_item
                filed[entry.indexed].append(entry.key)
            self._index = {health: SortedList(keys) for health, keys in filed.items()}
        return self._index

    def _place(self, entry: _Entry) -> None:
        """File ``entry`` in the index under its current health and key (after any change)."""
        if not self._index:
            return  # filed with every other feed when the index is built
        health = entry.health.health
        key = _order_key(entry)
        if health == entry.indexed and key == entry.key:
            return
        self._index[entry.indexed].remove(entry.key)
        self._index[health].add(key)
        entry.indexed, entry.key, entry.placed_new_item = health, key, entry.state.last_new_item

    def _update(self, entry: _Entry, state: FeedState) -> None:
        entry.state = state
        if state.next_poll is not None and entry.next_poll is None:
            entry.next_poll = state.next_poll

    def _reassess(self, entry: _Entry, now: float) -> Transition | None:
        state = entry.state
        verdict = assess(
            entry.feed,
            now=now,
            policy=self.policy,
            consecutive_errors=state.consecutive_errors,
            last_error=state.last_error,
            disabled=state.disabled,
            last_new_item=state.last_new_item,
            cadence=state.cadence,
            quiet_since=entry.quiet_since,
        )
        previous = entry.health
        entry.health = verdict
        if verdict.health == previous.health:
            return None
        return Transition(
            feed=entry.feed,
            previous=previous.health,
            current=verdict,
            at=now,
            last_success=state.last_success,
            last_new_item=state.last_new_item,
            consecutive_errors=state.consecutive_errors,
            last_error=state.last_error,
        )
