"""The poller's feed state on Kafka: a :class:`~monitor.feeds.state.FeedStateStore` over
the compacted feed-state topic (``[cluster] feed_state_topic``, records in
:mod:`monitor.cluster.feed_state`), so :class:`~monitor.feeds.state.FeedStates` caches
and writes it back exactly as it does with SQLite in one process.

:meth:`KafkaFeedStateStore.restore` reads partitions to their end (the poller that was
given them); :meth:`KafkaFeedStateStore.save_feed_rows` writes each state that tells a
new owner something the last record written from here did not (every state when
:attr:`KafkaFeedStateStore.exact`), with its feed's seen map and this instance as the
owner, to the partition its feed was read from, and returns once Kafka acknowledged
every one (a state whose feed is not this poller's any more is not written).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from monitor.adapters.changelog import read_latest
from monitor.adapters.kafka import KafkaPublisher
from monitor.cluster.feed_state import feed_state_from_record, feed_state_to_value
from monitor.cluster.sharding import misplaced
from monitor.feeds.state import FeedState
from monitor.log import get_logger
from monitor.model import Record
from monitor.settings import KafkaSettings

__all__ = ["KafkaFeedStateStore"]

log = get_logger("poller")

#: How far a feed's next poll may move from the one its last written record gives before
#: the state is written for that alone (docs/scaling.md, "Feed state: what moves with a feed").
SCHEDULE_SLACK = 3600.0


def _needed(state: FeedState) -> tuple[Any, ...]:
    """What a new owner needs of a state besides its seen map and schedule: validators,
    the items found, the health and error state, the learned cadence."""
    return (
        state.current_url, state.etag, state.last_modified, state.body_hash, state.last_new_item, state.items_seen,
        state.last_error, state.last_error_at, state.error_count, state.consecutive_errors, state.disabled, state.health,
        state.http_4xx, state.http_5xx, state.timeouts, state.cadence,
    )  # fmt: skip


class KafkaFeedStateStore:
    """Feed states on the feed-state topic (see the module docstring)."""

    def __init__(
        self,
        publisher: KafkaPublisher,
        settings: KafkaSettings,
        bootstrap_servers: str,
        topic: str,
        *,
        owner: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._publisher = publisher
        self._settings = settings
        self._bootstrap = bootstrap_servers
        self.topic = topic
        self.owner = owner
        self._clock = clock
        #: Feed url -> its seen map (article id -> content digest); the poller's admission updates it.
        self.seen: dict[str, dict[str, str]] = {}
        #: Feed url -> the partition its state is written to; a feed not here is not written.
        self.partitions: dict[str, int] = {}
        #: The feeds topic's partition count (0: unknown): a state record found in another
        #: partition than its feed's host's is passed over at a restore.
        self.feed_partitions = 0
        #: States read by the last restore, until :meth:`FeedStates.load` took them.
        self._restored: dict[str, FeedState] = {}
        #: Feeds whose restored state another instance wrote: written again, as ours, once polled from here.
        self.taken_over: set[str] = set()
        #: Feed url -> what its last record written from here held (:func:`_needed`, seen map, next poll).
        self._written: dict[str, tuple[tuple[Any, ...], dict[str, str], float | None]] = {}
        #: Write every state given, changed or not (a hand-over, a stop); else only those
        #: whose record would tell a new owner something new (see :meth:`save_feed_rows`).
        #: Set only for one write, by its writer under the lock that keeps writes apart
        #: (:meth:`monitor.app.poller_role.StateWriter.flush`).
        self.exact = False
        #: States not written since start: nothing a new owner needs had changed.
        self.skipped = 0

    async def restore(self, partitions: Iterable[int], timeout: float = 60.0) -> list[str]:
        """Read ``partitions`` to their end; the urls whose state was found (their seen maps
        are set here, their states wait for :meth:`all_feed_states`). A malformed record, or
        one in another partition than its feed's (:func:`~monitor.cluster.sharding.misplaced`),
        is logged and passed over (its feed goes on from the record before it, or afresh).
        BrokerError when the end cannot be reached."""

        def malformed(record: Any, exc: ValueError) -> None:
            log.warning(
                "poller.state.malformed",
                topic=self.topic, partition=record.partition, offset=record.offset, reason=str(exc),
                feed_url=record.key.decode("utf-8", "replace") if record.key else "",
                hint="passed over: the feed goes on from its state before this record, or afresh",
            )

        def elsewhere(record: Any) -> str | None:
            return misplaced(record.key, record.partition, self.feed_partitions) if self.feed_partitions else None

        found = await read_latest(
            self._publisher, self._settings, self._bootstrap, self.topic, partitions, feed_state_from_record, malformed,
            timeout=timeout, refuse=elsewhere,
        )  # fmt: skip
        for url, restored in found.items():
            self._written.pop(url, None)
            self._restored[url] = restored.state
            self.seen[url] = restored.seen
            if restored.owner != self.owner:
                self.taken_over.add(url)
        return list(found)

    def forget(self, urls: Iterable[str]) -> None:
        """Drop what this store holds of ``urls`` (feeds handed over)."""
        for url in urls:
            self.seen.pop(url, None)
            self.partitions.pop(url, None)
            self._restored.pop(url, None)
            self._written.pop(url, None)
            self.taken_over.discard(url)

    def take_restored(self) -> None:
        """Free the restored states once the cache has them."""
        self._restored.clear()

    # -- FeedStateStore ----------------------------------------------------------------

    async def all_feed_states(self) -> list[FeedState]:
        return list(self._restored.values())

    async def feed_state(self, url: str) -> FeedState:
        return self._restored.get(url) or FeedState(url=url)

    async def save_feed_rows(self, rows: Sequence[Sequence[Any]]) -> int:
        """Write the states (rows in :data:`~monitor.feeds.state.FEED_COLUMNS` order) of this
        poller's feeds; the first failure (PublishError) raised once every send ended.

        Unless :attr:`exact`, a state is written only when a new owner would learn something
        from it: its validators, seen map, items found, health or error state or cadence
        changed since the record last written from here, or its next poll moved by more
        than :data:`SCHEDULE_SLACK` (a poll that got a ``304`` changes none of these but the
        counters and the schedule: the next poll and the interval, which a quiet feed's
        polls lengthen one after the other)."""
        now = self._clock()
        records: list[tuple[Record, int]] = []
        written: list[tuple[str, tuple[tuple[Any, ...], dict[str, str], float | None]]] = []
        for row in rows:
            state = FeedState(*row)
            partition = self.partitions.get(state.url)
            if partition is None:
                continue  # handed over meanwhile: its new owner writes it
            seen = self.seen.get(state.url, {})
            record = (_needed(state), seen, state.next_poll)
            if not self.exact and not self._news(state.url, record):
                self.skipped += 1
                continue
            written.append((state.url, record))
            value = feed_state_to_value(state, seen, owner=self.owner, written_at=now)
            records.append((Record("", state.url, self.topic, state.url.encode("utf-8"), value, ()), partition))
        results = await asyncio.gather(
            *(self._publisher.publish(record, partition=partition) for record, partition in records), return_exceptions=True
        )
        for (url, what), result in zip(written, results):
            if not isinstance(result, BaseException) and url in self.partitions:
                self._written[url] = what
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(records)

    def _news(self, url: str, record: tuple[tuple[Any, ...], dict[str, str], float | None]) -> bool:
        """Whether ``record`` tells a new owner of ``url`` more than the last one written from here."""
        last = self._written.get(url)
        if last is None or last[0] != record[0] or (last[1] is not record[1] and last[1] != record[1]):
            return True
        before, after = last[2], record[2]
        if before is None or after is None:
            return before != after
        return abs(after - before) > SCHEDULE_SLACK
