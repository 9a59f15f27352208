"""When each feed is due: a heap of next-poll times.

Each feed is polled first at start-up (spread over a short window so thousands of
feeds never fire in one burst) and then on its interval, adjusted by what the last
poll said: errors back off exponentially up to ``max_interval``; a server's
``Retry-After``, ``Cache-Control: max-age``/``Expires`` and the feed's RSS ``<ttl>``
are honoured; a jitter of a few percent keeps feeds from synchronising.
Pure: the clock is passed in.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

__all__ = ["PollOutcome", "Schedule", "next_interval"]


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What one poll said about when to come back."""

    ok: bool
    #: New articles found by this poll.
    new_items: int = 0
    consecutive_errors: int = 0
    retry_after: float | None = None
    max_age: float | None = None
    ttl: float | None = None


def next_interval(
    configured: float,
    outcome: PollOutcome,
    *,
    min_interval: float,
    max_interval: float,
) -> float:
    """Seconds until the next poll of a feed, before jitter.

    A healthy feed is polled on its configured interval (never below ``min_interval``,
    except that an operator's own per-feed interval is honoured down to 1 s). The server
    may ask for longer; errors back off; nothing waits beyond ``max_interval`` except an
    explicit ``Retry-After``.
    """
    base = max(1.0, configured)
    if not outcome.ok:
        backoff = base * (2 ** min(outcome.consecutive_errors, 16))
        interval = min(backoff, max(max_interval, base))
        if outcome.retry_after is not None:
            interval = max(interval, outcome.retry_after)
        return interval
    interval = base
    hints = [h for h in (outcome.max_age, outcome.ttl) if h is not None]
    if hints:
        interval = max(interval, min(max(hints), max(max_interval, base)))
    if outcome.retry_after is not None:
        interval = max(interval, outcome.retry_after)
    return interval


class Schedule:
    """A heap of (due time, feed url). Removing a feed is lazy: stale entries are skipped."""

    def __init__(self, *, jitter: float = 0.05, startup_spread: float = 1.0, rng: random.Random | None = None) -> None:
        self._heap: list[tuple[float, int, str]] = []
        #: url -> (due time, sequence of its live heap entry)
        self._due: dict[str, tuple[float, int]] = {}
        self._counter = 0
        self._jitter = jitter
        self._startup_spread = startup_spread
        self._rng = rng or random.Random()

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, url: str) -> bool:
        return url in self._due

    def add(self, url: str, now: float) -> None:
        """Schedule a new feed's first poll at start-up (within the start-up spread)."""
        self.set(url, now + self._rng.uniform(0.0, self._startup_spread))

    def set(self, url: str, when: float) -> None:
        self._counter += 1
        self._due[url] = (when, self._counter)
        heapq.heappush(self._heap, (when, self._counter, url))

    def reschedule(self, url: str, now: float, interval: float) -> float:
        """Schedule the next poll ``interval`` seconds (± jitter) from ``now``; returns the time."""
        jitter = interval * self._jitter
        when = now + interval + self._rng.uniform(-jitter, jitter)
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

    def pop_due(self, now: float) -> list[str]:
        """Every feed due at ``now``, earliest first; they leave the schedule until rescheduled."""
        due: list[str] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return due
            _when, _seq, url = heapq.heappop(self._heap)
            del self._due[url]
            due.append(url)

    def _drop_stale(self) -> None:
        while self._heap:
            when, seq, url = self._heap[0]
            if self._due.get(url) == (when, seq):
                return
            heapq.heappop(self._heap)
