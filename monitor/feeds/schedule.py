"""When each feed is due: adaptive intervals and a heap of next-poll times.

Every feed is polled once at start-up; the first polls are spread over a short window
(a few hundred per second at most) so 10,000 feeds never fire in one burst. After that
:func:`next_interval` decides, from what the last poll said, how long to wait:

* Errors back off exponentially (configured interval x 2^errors) up to
  ``max_interval``; a server's ``Retry-After`` (429/503) is honoured even beyond it, up
  to :data:`MAX_RETRY_AFTER`.
* A feed that is publishing (new items on this poll) is polled at least as often as
  its configured interval, and more often, down to ``min_interval``, when the dates of
  its own items show it publishes faster than that.
* A quiet feed is polled less often: roughly once per expected new item, as Miniflux
  does, estimated from the spacing of its items' dates and from how long ago we last
  saw something new, up to ``max_interval``.
* Freshness the server grants (``Cache-Control: max-age``, ``Expires``) and RSS
  ``<ttl>`` lengthen the wait, up to ``max_interval``: the publisher asked for it.

Each wait gets a few percent of random jitter so feeds never synchronise, but never
comes before a server's ``Retry-After``.
Pure: the clock and the random source are passed in.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MAX_RETRY_AFTER", "PollOutcome", "Schedule", "earliest_poll", "next_interval", "publish_gap"]

#: Longest ``Retry-After`` honoured, in seconds; a server asking for a year gets a day.
MAX_RETRY_AFTER = 24 * 3600.0
#: Highest rate of first polls at start-up, per second.
STARTUP_RATE = 250.0


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What one poll said about when to come back."""

    ok: bool
    #: New articles found by this poll (not counting the very first poll of a feed).
    new_items: int = 0
    consecutive_errors: int = 0
    retry_after: float | None = None
    max_age: float | None = None
    ttl: float | None = None
    #: Typical seconds between the feed's items, from their published dates (None: unknown).
    publish_gap: float | None = None
    #: Seconds since a poll last found a new item (None: never).
    since_new: float | None = None
    #: The interval used before this poll, kept when a poll tells nothing new (304).
    previous: float | None = None


def next_interval(
    configured: float,
    outcome: PollOutcome,
    *,
    min_interval: float,
    max_interval: float,
) -> float:
    """Seconds until the next poll of a feed, before jitter.

    ``configured`` is the feed's own interval; ``min_interval`` and ``max_interval``
    are the operator's bounds. A configured interval below ``min_interval`` wins (down
    to 1 s): the operator asked for that feed explicitly.
    """
    base = max(1.0, configured)
    low = max(1.0, min(min_interval, base))
    high = max(max_interval, base)
    if not outcome.ok:
        interval = min(base * 2.0 ** min(outcome.consecutive_errors, 20), high)
        if outcome.retry_after is not None:
            interval = max(interval, min(outcome.retry_after, MAX_RETRY_AFTER))
        return interval

    interval = _activity_interval(base, low, high, outcome)
    hints = [h for h in (outcome.max_age, outcome.ttl) if h is not None and h > 0]
    if hints:
        interval = max(interval, min(max(hints), high))
    if outcome.retry_after is not None:
        interval = max(interval, min(outcome.retry_after, MAX_RETRY_AFTER))
    return interval


def earliest_poll(outcome: PollOutcome) -> float:
    """Seconds before which the feed must not be polled again whatever the jitter: the
    server's ``Retry-After`` (up to :data:`MAX_RETRY_AFTER`), else 0."""
    return 0.0 if outcome.retry_after is None else min(outcome.retry_after, MAX_RETRY_AFTER)


def _activity_interval(base: float, low: float, high: float, outcome: PollOutcome) -> float:
    """The interval the feed's own publishing rate calls for, within the bounds."""
    gaps = [g for g in (outcome.publish_gap,) if g is not None and g > 0]
    if outcome.new_items > 0:
        # Publishing right now: never slower than configured; faster when its items
        # come faster than that (only possible when min_interval is below interval).
        expected = min(gaps) if gaps else base
        return min(base, max(low, expected))
    if outcome.since_new is not None and outcome.since_new > 0:
        gaps.append(outcome.since_new)
    if not gaps:
        return _clamp(outcome.previous if outcome.previous else base, low, high)
    # Quiet: about one poll per expected item (the longer of the two estimates, since
    # both only ever underestimate how quiet a feed is), never faster than configured.
    return _clamp(max(gaps), base, high)


def publish_gap(published: Iterable[float | None], now: float, *, window: float = 7 * 86400.0) -> float | None:
    """Typical seconds between a feed's items, from their published times (epoch seconds).

    Only items from the last ``window`` seconds count (older ones say little about the
    feed today) and dates in the future are ignored (wrong clocks, embargoed items).
    With n recent items spanning s seconds the gap is s / (n - 1); it is never shorter
    than the time since the newest item, so a feed that stopped publishing looks quiet.
    None when no item carries a usable date; ``window`` when none is recent.
    """
    dates = sorted(t for t in published if t is not None and t <= now + 60.0)
    if not dates:
        return None
    recent = [t for t in dates if now - t <= window]
    if not recent:
        return window
    since_newest = max(0.0, now - recent[-1])
    if len(recent) < 2:
        return max(since_newest, window / 2)
    spread = (recent[-1] - recent[0]) / (len(recent) - 1)
    return max(spread, since_newest, 1.0)


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


class Schedule:
    """A heap of (due time, feed url). Removing a feed is lazy: stale entries are skipped."""

    def __init__(
        self,
        *,
        jitter: float = 0.05,
        startup_rate: float = STARTUP_RATE,
        rng: random.Random | None = None,
    ) -> None:
        self._heap: list[tuple[float, int, str]] = []
        #: url -> (due time, sequence of its live heap entry)
        self._due: dict[str, tuple[float, int]] = {}
        self._counter = 0
        self._jitter = jitter
        self._startup_rate = startup_rate
        self._rng = rng or random.Random()

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, url: str) -> bool:
        return url in self._due

    def start(self, urls: list[str], now: float, *, window: float | None = None) -> None:
        """Schedule every feed's first poll at start-up, spread so they never fire at once.

        The spread is ``len(urls) / startup_rate`` seconds (a few ms for a handful of
        feeds, 40 s for 10,000), never longer than ``window`` (the shortest interval,
        so the first round ends before the second begins).
        """
        spread = len(urls) / self._startup_rate
        if window is not None:
            spread = min(spread, window)
        order = list(urls)
        self._rng.shuffle(order)
        step = spread / len(order) if order else 0.0
        for index, url in enumerate(order):
            self.set(url, now + index * step)

    def add(self, url: str, now: float) -> None:
        """Schedule one new feed's first poll now."""
        self.set(url, now)

    def set(self, url: str, when: float) -> None:
        self._counter += 1
        self._due[url] = (when, self._counter)
        heapq.heappush(self._heap, (when, self._counter, url))

    def reschedule(self, url: str, now: float, interval: float, *, not_before: float = 0.0) -> float:
        """Schedule the next poll ``interval`` seconds (± jitter) from ``now``, never sooner
        than ``not_before`` seconds (a server's ``Retry-After``); returns the time."""
        jitter = interval * self._jitter
        when = now + max(0.5, not_before, interval + self._rng.uniform(-jitter, jitter))
        self.set(url, when)
        return when

    def remove(self, url: str) -> None:
        self._due.pop(url, None)

    def due_at(self, url: str) -> float | None:
        entry = self._due.get(url)
        return entry[0] if entry else None

    def next_time(self) -> float | None:
        """When the earliest feed is due, or None when nothing is scheduled."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float, limit: int | None = None) -> list[str]:
        """Feeds due at ``now`` (at most ``limit``), earliest first; they leave the schedule until rescheduled."""
        due: list[str] = []
        while limit is None or len(due) < limit:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                break
            _when, _seq, url = heapq.heappop(self._heap)
            del self._due[url]
            due.append(url)
        return due

    def _drop_stale(self) -> None:
        while self._heap:
            when, seq, url = self._heap[0]
            if self._due.get(url) == (when, seq):
                return
            heapq.heappop(self._heap)
