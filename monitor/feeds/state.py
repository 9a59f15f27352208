"""Per-feed state kept in memory while polling, written back to the store in batches.

A poll reads and updates its feed's state (validators, body hash, counters). Going to
SQLite twice per poll, through the store's thread, costs more than the 304 poll
itself at thousands of polls per second, so the poller keeps every feed's state in a
dict and :meth:`FeedStates.flush` writes the changed ones in one transaction (the
worker flushes every few seconds and at shutdown).

What a crash can lose is the last few seconds of validators and counters: the next
start re-fetches those feeds in full, and the seen-article store (written durably
before any alert is queued) keeps that from alerting twice.
"""

from __future__ import annotations

from typing import Iterable

from monitor.adapters.store import AsyncStore, FeedState, feed_row

__all__ = ["FeedStates"]


class FeedStates:
    """An in-memory view of the ``feeds`` table with batched write-back."""

    def __init__(self, store: AsyncStore) -> None:
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
