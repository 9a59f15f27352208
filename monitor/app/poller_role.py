"""The poller role (``news-monitor run --role poller``, docs/scaling.md "Poller").

A member of the consumer group ``[cluster] poller_group`` on the feeds topic. It commits
no offsets: every partition it is given is read from its beginning, so it knows every
feed of that partition (the latest record per feed URL; a tombstone or ``enabled =
false`` removes the feed). It polls those feeds with the single process's
:class:`~monitor.pipeline.Pipeline` and :class:`~monitor.poller.Poller` (schedule,
per-host lines, limits), with :class:`~monitor.cluster.admission.PollerAdmission` in
place of matching: new and changed articles go to the articles topic.

Given partitions ``P``, before the first poll of their feeds it restores the feed-state
partitions ``P`` (validators, schedule, health, seen map), so a moved feed goes on with
conditional GET and is not polled before its restored next poll is due. A restore that
fails stops the process (the run raises :class:`~monitor.errors.BrokerError`) rather
than poll without state. Losing partitions (a rebalance, the end of the run), it stops
their feeds, lets their polls in flight finish (at most ``[feeds] timeout +
parse_timeout``) and writes their states. A partition it keeps across a rebalance keeps
its state in memory.

Feed states are written to the feed-state topic after each poll that changed them (a
background flush woken by each poll, and every ``[state] flush_interval`` while writes
fail), with this instance as the owner. A malformed record on the feeds topic goes to
the dead-letter topic with its reason, and the partition moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from monitor.adapters.feedstate import KafkaFeedStateStore
from monitor.adapters.kafka import KafkaPublisher, connection_options
from monitor.adapters.parser_pool import ParserPool
from monitor.app import daemon
from monitor.cluster import FeedRecordError, feed_from_record, feed_partition, is_marker
from monitor.cluster.admission import PollerAdmission
from monitor.delivery.dead_letters import dead_letter
from monitor.errors import BrokerError, MonitorError, RecordRejected
from monitor.feeds.state import FeedState, FeedStates
from monitor.lifecycle import Shutdown, finish
from monitor.log import get_logger
from monitor.model import Feed, Record
from monitor.observe.observer import Observer
from monitor.pipeline import Pipeline
from monitor.poller import Poller
from monitor.settings import Settings

__all__ = ["PollerRole", "StateWriter", "instance_id"]

log = get_logger("poller")

#: Feeds-topic records read per fetch.
_BATCH = 5000


def instance_id(settings: Settings) -> str:
    """``[cluster] instance_id``, else ``hostname:pid``: the owner named in the feed state."""
    return settings.cluster.instance_id or f"{socket.gethostname()}:{os.getpid()}"


class PollerRole:
    """One poller of the cluster (see the module docstring); :meth:`run` until ``shutdown``.

    The host gives it the settings, the broker, a started publisher, the process's
    shutdown and an observer (its feeds' health, metrics and status page). Its methods
    (about fifteen, some 250 lines) are the run, the feeds topic's records, and the
    group's two callbacks: they share the feeds per partition, the owned partitions and
    the state cache, under one lock. Writing the states is :class:`StateWriter`'s job.
    """

    name = "poller"

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap_servers: str,
        publisher: KafkaPublisher,
        shutdown: Shutdown,
        observer: Observer,
        instance: str | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.publisher = publisher
        self.shutdown = shutdown
        self.observer = observer
        self.owner = instance or instance_id(settings)
        cluster = settings.cluster
        self.store = KafkaFeedStateStore(publisher, settings.kafka, bootstrap_servers, cluster.feed_state_topic, owner=self.owner)
        self.feed_states = FeedStates(self.store)
        self.poller = Poller([], settings.feeds, observer, shutdown)
        #: Partition -> its feeds (url -> Feed), for the partitions this poller owns.
        self.feeds: dict[int, dict[str, Feed]] = {}
        #: Partitions owned now; and the feeds (url -> partition) of those lost at the last
        #: revoke, kept in memory (not written) until the next assignment says whether they came back.
        self.owned: set[int] = set()
        self._parked: dict[str, int] = {}
        #: Set once the group gave this poller its partitions (and their state was restored).
        self.assigned = asyncio.Event()
        #: Why the run stopped on its own (a restore that failed), raised by :meth:`run`.
        self.failure: BaseException | None = None
        #: Feed records dead-lettered, feed states restored, rebalances seen.
        self.counts: Counter[str] = Counter()
        self.admission: PollerAdmission | None = None
        self._lock = asyncio.Lock()
        self.writer = StateWriter(self.feed_states, settings.state.flush_interval)
        self._partitions = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._stack = AsyncExitStack()

    # -- the run -----------------------------------------------------------------------

    async def start(self) -> None:
        """Check the topics, build the fetching stages and join the group."""
        try:
            self.poller.pipeline = await self._start(self._stack)
        except BaseException:
            await self._stack.aclose()
            raise

    async def run(self) -> None:
        """Poll the feeds the group gives this poller until a stop; raises the failure
        that stopped it (a restore), if any."""
        assert self.poller.pipeline is not None, "start() first"
        polling = asyncio.create_task(self.poller.run_forever(self.poller.pipeline), name="poller-schedule")
        flushing = asyncio.create_task(self.writer.run(), name="poller-state-flush")
        try:
            await self._consume()
        finally:
            # Polls in flight finish, bounded by the shutdown deadline.
            self.shutdown.stop()
            self.poller.wake()
            await asyncio.gather(polling, return_exceptions=True)
            await finish(flushing)
        if self.failure is not None:
            raise self.failure

    async def stop(self) -> None:
        """Leave the group, write the last states, close the fetching stages."""
        try:
            await self._leave_group()
        finally:
            await self._stack.aclose()

    def status(self) -> dict[str, object]:
        """The poller's part of the status page: its group, partitions and feeds."""
        return {
            "group": self.settings.cluster.poller_group,
            "topic": self.settings.cluster.feeds_topic,
            "instance_id": self.owner,
            "partitions": sorted(self.owned),
            "feeds": len(self.poller.feeds),
            "states_unwritten": self.feed_states.dirty,
            "articles_published": self.admission.published if self.admission is not None else 0,
            **{key: self.counts[key] for key in ("restored", "rebalances", "feed_records_dead_lettered")},
        }

    def problems(self) -> list[str]:
        """Why the poller is not ready: a restore that failed."""
        return [str(self.failure)] if self.failure is not None else []

    async def _start(self, stack: AsyncExitStack) -> Pipeline:
        """Topics (checked co-partitioned), the fetching stages, the pipeline and the consumer."""
        settings, cluster = self.settings, self.settings.cluster
        await self.publisher.ensure_topics(
            [cluster.articles_topic, settings.kafka.dead_letter_topic],
            compacted=[cluster.feeds_topic, cluster.feed_state_topic],
        )
        self._partitions = await self.publisher.partition_count(cluster.feeds_topic)
        state_partitions = await self.publisher.partition_count(cluster.feed_state_topic)
        if state_partitions != self._partitions:
            raise MonitorError(
                f"{cluster.feed_state_topic} has {state_partitions} partitions and {cluster.feeds_topic} {self._partitions}",
                hint="the feed state must be co-partitioned with the feeds: give both topics the same number of partitions",
            )
        transport = daemon.feed_transport(settings.feeds)
        stack.push_async_callback(transport.close)
        parser = ParserPool(settings.feeds.parse_workers, settings.feeds.parse_timeout)
        stack.callback(lambda: parser.close(min(5.0, self.shutdown.remaining())))
        admission = self.admission = PollerAdmission(
            publisher=self.publisher,
            seen=self.store.seen,
            articles_topic=cluster.articles_topic,
            dead_letter_topic=settings.kafka.dead_letter_topic,
            fulltext=daemon.fulltext_enricher(settings, parser, stack),
        )
        self.observer.poll_listeners.append(self.writer.poll_finished)
        stack.callback(self.observer.poll_listeners.remove, self.writer.poll_finished)
        consumer = self._consumer = AIOKafkaConsumer(
            **connection_options(settings.kafka, self.bootstrap_servers),
            group_id=cluster.poller_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(cluster.session_timeout * 1000),
            heartbeat_interval_ms=max(500, int(cluster.session_timeout * 1000 / 6)),
        )
        consumer.subscribe([cluster.feeds_topic], listener=_Listener(self))
        try:
            await consumer.start()
        except (KafkaError, OSError) as exc:
            self._consumer = None
            await consumer.stop()
            raise BrokerError(f"cannot join {cluster.poller_group} at {self.bootstrap_servers}: {type(exc).__name__}: {exc}") from exc
        log.info("poller.started", owner=self.owner, group=cluster.poller_group, feeds_topic=cluster.feeds_topic)
        return Pipeline(transport=transport, parser=parser, feed_states=self.feed_states, admission=admission)

    async def _consume(self) -> None:
        """Apply the feeds topic's records as they come, until a stop."""
        assert self._consumer is not None
        stopping = asyncio.ensure_future(self.shutdown.stopping.wait())
        try:
            while not self.shutdown.asked:
                fetch = asyncio.ensure_future(self._consumer.getmany(timeout_ms=1000, max_records=_BATCH))
                await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    await asyncio.gather(fetch, return_exceptions=True)
                    break
                batch = fetch.result()
                if batch:
                    async with self._lock:
                        await self._apply_records(batch)
        finally:
            stopping.cancel()

    async def _leave_group(self) -> None:
        """Write the last states (the revoke callback does, as the consumer leaves)."""
        consumer, self._consumer = self._consumer, None
        try:
            if consumer is not None:
                # Leaving the group writes the last states (the revoke callback), within the deadline.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(consumer.stop(), max(1.0, self.shutdown.remaining()))
        finally:
            # The consumer may have been stopped without a revoke (it never joined).
            await self.writer.flush(self.owned)
            self.observer.feeds_changed([])

    # -- the feeds topic ---------------------------------------------------------------

    async def _apply_records(self, batch: dict[Any, list[Any]]) -> None:
        """Take a fetched batch of feed records into the feed list, then poll from it."""
        for tp, records in batch.items():
            if tp.partition not in self.owned:
                continue  # taken away while it was fetched: the new owner reads it
            feeds = self.feeds.setdefault(tp.partition, {})
            for record in records:
                if is_marker(record.key):
                    continue
                if record.value is None and record.key:
                    url = record.key.decode("utf-8", "replace")
                    feeds.pop(url, None)
                    continue
                try:
                    feed = feed_from_record(record.key, record.value or b"")
                except FeedRecordError as exc:
                    await self._dead_letter(record, str(exc))
                    continue
                if not feed.enabled:
                    feeds.pop(feed.url, None)
                    continue
                feeds[feed.url] = feed
                self.store.partitions[feed.url] = tp.partition
                if feed_partition(feed.url, self._partitions) != tp.partition:
                    log.warning(
                        "poller.feed.misplaced", feed_url=feed.url, partition=tp.partition,
                        expected=feed_partition(feed.url, self._partitions),
                        hint="write news.feeds with 'news-monitor feeds sync': a host split over two partitions is polled by two pollers",
                    )
        self._apply()

    def _apply(self) -> None:
        """Poll the feeds of the owned partitions from now on; a feed with a restored next
        poll waits for it (a moved feed is not polled before it is due)."""
        wanted = [feed for partition in sorted(self.owned) for feed in self.feeds.get(partition, {}).values()]
        added, _removed, _changed = self.poller.apply_feeds(wanted)
        states = self.poller.stored_states(added)
        self._honour_next_polls(states)
        self.observer.feeds_changed(wanted, states)

    def _honour_next_polls(self, states: Iterable[FeedState]) -> None:
        now, monotonic = time.time(), time.monotonic()
        schedule = self.poller.schedule
        for state in states:
            if state.next_poll is not None and state.next_poll > now and state.url in schedule:
                schedule.set(state.url, monotonic + (state.next_poll - now))
        self.poller.wake()

    async def _dead_letter(self, record: Any, reason: str) -> None:
        """A feeds-topic record that is not a feed: to the dead-letter topic with the reason."""
        topic = self.settings.kafka.dead_letter_topic
        where = f"{record.topic} partition {record.partition} offset {record.offset}"
        log.error("poller.feed_record.dead_lettered", record=where, reason=reason, hint="fix the record with 'news-monitor feeds sync'")
        self.counts["feed_records_dead_lettered"] += 1
        original = Record("", "", record.topic, record.key, record.value or b"", tuple(record.headers or ()))
        try:
            await self.publisher.publish(dead_letter(original, f"{reason} ({where})", topic))
        except (BrokerError, RecordRejected) as exc:
            log.error("poller.feed_record.dead_letter_failed", record=where, error=str(exc))

    # -- the group's callbacks ---------------------------------------------------------

    async def partitions_revoked(self, partitions: set[int]) -> None:
        """Stop the feeds of ``partitions``, let their polls in flight end, write their states."""
        async with self._lock:
            lost = partitions & self.owned
            self.owned -= lost
            urls = [url for partition in lost for url in self.feeds.pop(partition, {})]
            self._apply()
            options = self.settings.feeds
            still = await self.poller.wait_polls(urls, min(options.timeout + options.parse_timeout, self.shutdown.remaining()))
            if still:
                hint = "their results are not written: the new owner polls them again"
                log.warning("poller.handover.polls_in_flight", polls=still, hint=hint)
            await self.writer.flush(lost)
            # Written no more: a poll that outlived the wait must not overwrite the new owner's state.
            for url, partition in list(self.store.partitions.items()):
                if partition in lost:
                    self._parked[url] = self.store.partitions.pop(url)
            log.info("poller.partitions.revoked", partitions=sorted(lost), feeds=len(urls))

    async def partitions_assigned(self, partitions: set[int]) -> None:
        """Restore the state of partitions new to this poller, then read every given
        partition of the feeds topic from its beginning; a failed restore stops the process."""
        async with self._lock:
            kept = set(self._parked.values()) & partitions
            self._forget({url for url, partition in self._parked.items() if partition not in partitions})
            # Kept across the rebalance: no one else polled them meanwhile, so memory is up to date.
            fresh = partitions - kept - self.owned
            self._parked = {}
            started = time.monotonic()
            try:
                urls = await self.store.restore(fresh)
            except Exception as exc:  # noqa: BLE001 - aiokafka ignores a listener's exception: stop here instead
                self._fail(exc, fresh)
                return
            self.counts["restored"] += len(urls)
            self.counts["rebalances"] += 1
            self.feed_states.forget(urls)
            await self.feed_states.load(urls)
            self.store.take_restored()
            self.owned = set(partitions)
            assert self._consumer is not None
            topic = self.settings.cluster.feeds_topic
            await self._consumer.seek_to_beginning(*(TopicPartition(topic, p) for p in sorted(partitions)))
            log.info(
                "poller.partitions.assigned", partitions=sorted(partitions), restored=len(urls),
                restore_seconds=round(time.monotonic() - started, 3),
            )
            self.assigned.set()

    def _fail(self, exc: BaseException, partitions: set[int]) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        log.error(
            "poller.restore.failed", partitions=sorted(partitions), error=reason,
            hint="the poller stops rather than poll without the feeds' state; check the broker and restart it",
        )
        self.failure = BrokerError(
            f"cannot restore {self.settings.cluster.feed_state_topic} partitions {sorted(partitions)}: {reason}",
            hint="check the broker; the poller stopped rather than poll without the feeds' state",
        )
        self.shutdown.stop()
        self.poller.wake()

    def _forget(self, urls: set[str]) -> None:
        if urls:
            self.feed_states.forget(urls)
            self.store.forget(urls)


class StateWriter:
    """Writes the feed states that changed to the feed-state topic: soon after each poll
    (:meth:`poll_finished` wakes it), every ``interval`` s while writes fail, and at once
    when asked (:meth:`flush`: a hand-over, the end of the run)."""

    def __init__(self, feed_states: FeedStates, interval: float) -> None:
        self._feed_states = feed_states
        self._interval = interval
        self._lock = asyncio.Lock()
        self._asked = asyncio.Event()

    def poll_finished(self, _report: object) -> None:
        """An observer's poll listener: a poll changed a state."""
        self._asked.set()

    async def run(self) -> None:
        """Write changed states until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._asked.wait(), self._interval)
            self._asked.clear()
            try:
                await self.flush()
            except Exception as exc:  # a bug must not end the writer: the states stay dirty, retried
                log.exception("feed.state.flush_crashed", error=f"{type(exc).__name__}: {exc}", hint="a bug: please report it")

    async def flush(self, partitions: Iterable[int] = ()) -> bool:
        """Write every changed state now; False (logged) when Kafka did not take them all."""
        async with self._lock:
            try:
                await self._feed_states.flush()
            except BrokerError as exc:
                log.warning(
                    "feed.state.unsaved", feeds=self._feed_states.dirty, partitions=sorted(partitions) or None, error=str(exc),
                    hint="retried; a feed handed over now is polled by its new owner from its last written state",
                )
                return False
        return True


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, role: PollerRole) -> None:
        self._role = role

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._role.partitions_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._role.partitions_assigned({tp.partition for tp in assigned})
