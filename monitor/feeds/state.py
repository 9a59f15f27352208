"""Per-feed state: :class:`FeedState` (validators, body hash, counters, schedule, health),
kept in memory while polling by :class:`FeedStates` and written back to the store in batches.

A poll reads and updates its feed's state (validators, body hash, counters). Going to
SQLite twice per poll, through the store's thread, would cost more than a 304 poll
itself, so the poller keeps every feed's state in a dict and :meth:`FeedStates.flush` writes the changed ones in one transaction (the
worker flushes every few seconds and at shutdown).

What a crash can lose is the last few seconds of validators and counters: the next
start re-fetches those feeds in full, and the seen-article store (written durably
before any alert is queued) keeps that from alerting twice.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["FEED_COLUMNS", "FeedState", "FeedStateStore", "FeedStates", "feed_row"]


@dataclass(slots=True)
class FeedState:
    """Per-feed state kept across restarts.

    Mutable, for the poller's sake: a poll that finds nothing new (most polls) updates
    its feed's state in place: a copy per poll would be a noticeable share of its cost.
    Only the poll in flight for a feed writes its state, on the event loop; whoever
    hands a state to another thread (the store's) passes :func:`feed_row` instead.
    """

    url: str
    current_url: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    last_poll: float | None = None
    last_success: float | None = None
    last_new_item: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    error_count: int = 0
    consecutive_errors: int = 0
    polls: int = 0
    items_seen: int = 0
    next_poll: float | None = None
    interval: float | None = None
    disabled: str | None = None
    health: str = "ok"
    #: Learned seconds between two new items (for stale detection); None until known.
    cadence: float | None = None
    #: Failed polls by kind, since the feed was first polled.
    http_4xx: int = 0
    http_5xx: int = 0
    timeouts: int = 0

    def evolve(self, **changes: Any) -> FeedState:
        """A copy with ``changes`` applied, without :func:`dataclasses.replace`'s keyword
        handling (a poll that parses a changed body makes one)."""
        values = list(_feed_values(self))
        for name, value in changes.items():
            index = _FEED_INDEX.get(name)
            if index is None:
                raise TypeError(f"FeedState has no field {name!r}")
            values[index] = value
        return FeedState(*values)


FEED_COLUMNS = tuple(FeedState.__dataclass_fields__)
_FEED_INDEX = {name: index for index, name in enumerate(FEED_COLUMNS)}
_feed_values = operator.attrgetter(*FEED_COLUMNS)

#: A snapshot of a FeedState as a row of the ``feeds`` table (column order), taken in one
#: C call: safe to hand to the store's thread while the poller goes on updating the state.
feed_row: Callable[[FeedState], tuple[Any, ...]] = _feed_values


class FeedStateStore(Protocol):
    """The part of the state store that keeps per-feed state (``monitor.adapters.store``)."""

    async def all_feed_states(self) -> list[FeedState]: ...

    async def feed_state(self, url: str) -> FeedState: ...

    async def save_feed_rows(self, rows: Sequence[Sequence[Any]]) -> int: ...


class FeedStates:
    """An in-memory view of the ``feeds`` table with batched write-back."""

    def __init__(self, store: FeedStateStore) -> None:
        self._store = store
        self._states: dict[str, FeedState] = {}
        self._dirty: set[str] = set()

    async def load(self, urls: Iterable[str] | None = None) -> int:
        """Read the stored state of every feed (or only of ``urls``) in one go; returns the count."""
        states: list[FeedState] = await self._store.all_feed_states()
        wanted = set(urls) if urls is not None else None
        for state in states:
            if (wanted is None or state.url in wanted) and state.url not in self._states:
                self._states[state.url] = state
        return len(self._states)

    async def get(self, url: str) -> FeedState:
        """The feed's current state; read from the store the first time it is asked for."""
        state = self._states.get(url)
        if state is None:
            state = await self._store.feed_state(url)
            # Another poll of the same feed may have filled it while we waited.
            state = self._states.setdefault(url, state)
        return state

    def peek(self, url: str) -> FeedState | None:
        """The cached state, without going to the store."""
        return self._states.get(url)

    def put(self, state: FeedState) -> None:
        """Replace a feed's state; it reaches the store at the next :meth:`flush`."""
        self._states[state.url] = state
        self._dirty.add(state.url)

    def note_schedule(self, url: str, next_poll: float, interval: float) -> None:
        """Remember when the feed is polled next (Unix time) and the interval the scheduler
        chose (the next poll's ``previous``); written with the next :meth:`flush`."""
        state = self._states.get(url)
        if state is None:
            # Only a polled feed is scheduled, and polling caches its state; never write a
            # blank row over a stored one.
            return
        # In place (see FeedState): this runs once per poll.
        state.next_poll = next_poll
        state.interval = interval
        self._dirty.add(url)

    def enable_removed(self, listed: Iterable[str]) -> list[str]:
        """Forget the 410 Gone of every feed not in ``listed`` (the feed list): a feed it
        disabled is skipped until it leaves the list, and polled again if it comes back.
        Returns their urls (written at the next :meth:`flush`)."""
        keep = set(listed)
        enabled = [url for url, state in self._states.items() if state.disabled and url not in keep]
        for url in enabled:
            self.put(self._states[url].evolve(disabled=None))
        return enabled

    def forget(self, urls: Iterable[str]) -> None:
        """Drop the cached states of ``urls`` (feeds this process no longer polls), changed
        or not: flush first to keep their changes."""
        for url in urls:
            self._states.pop(url, None)
            self._dirty.discard(url)

    @property
    def dirty(self) -> int:
        """States changed since the last flush."""
        return len(self._dirty)

    async def flush(self) -> int:
        """Write every changed state in one transaction; returns how many were written."""
        if not self._dirty:
            return 0
        urls, self._dirty = self._dirty, set()
        # Snapshots taken here, on the event loop: polls go on updating the states in
        # place while the store's thread writes.
        rows = [feed_row(self._states[url]) for url in urls]
        try:
            # ``health`` has its own writer (the Observer, when it changes); everything
            # else in the row is this cache's.
            return await self._store.save_feed_rows(rows)
        except BaseException:
            # Not written: keep them dirty so the next flush tries again.
            self._dirty |= urls
            raise
