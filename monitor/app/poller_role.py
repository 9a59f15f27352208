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
its state in memory. A stop does not wait for a rebalance under way: it abandons a
restore, writes every state, then leaves the group (docs/scaling.md, "A poller's stop").

Feed states are written to the feed-state topic after each poll that changed what a new
owner needs (a background flush woken by each poll, and every ``[state] flush_interval``
while writes fail; :meth:`~monitor.adapters.feedstate.KafkaFeedStateStore.save_feed_rows`
says what counts), and as they are on a hand-over and at the stop, with this instance as
the owner. A malformed record on the feeds topic goes to
the dead-letter topic with its reason, and the partition moves on. A feed's record (or
state) in another partition than its host's is passed over (``poller.feed.misplaced``):
a feed is polled only from the partition ``feeds sync`` writes it to, so one poller polls
it and its state is written where the next owner of that partition reads it.

With ``[websub] enabled``, the poller subscribes to its feeds' hubs and takes their pushes
(:mod:`monitor.app.poller_websub`): a feed's subscription moves with the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from monitor.adapters.feedstate import KafkaFeedStateStore
from monitor.adapters.group import GroupMember
from monitor.adapters.kafka import kafka_error_text
from monitor.adapters.parser_pool import ParserPool
from monitor.app import daemon
from monitor.app.poller_websub import PollerWebSub
from monitor.cluster import FeedRecordError, feed_from_record, is_marker, misplaced
from monitor.cluster.admission import PollerAdmission
from monitor.delivery.dead_letters import dead_letter
from monitor.errors import BrokerError, MonitorError, RecordRejected, error_text
from monitor.feeds.schedule import MAX_RETRY_AFTER
from monitor.feeds.state import FeedState, FeedStates
from monitor.language import preload as preload_language_model
from monitor.lifecycle import finish
from monitor.log import get_logger
from monitor.model import Feed, Record
from monitor.observe.wiring import RoleMetric
from monitor.pipeline import Pipeline
from monitor.poller import Poller

if TYPE_CHECKING:
    from monitor.app.roles import RoleContext

__all__ = ["PollerRole", "StateWriter"]

log = get_logger("poller")

#: Feeds-topic records read per fetch.
_BATCH = 5000


class PollerRole:
    """One poller of the cluster (see the module docstring), a
    :class:`~monitor.app.roles.Role` of the host of ``run --role``.

    Its methods (about fifteen, some 250 lines) are the Role interface, the feeds topic's
    records and the group's two callbacks: they share the feeds per partition, the owned
    partitions and the state cache (the group's lock keeps a batch and a rebalance apart).
    Writing the states is :class:`StateWriter`'s job.
    """

    name = "poller"

    def __init__(self, context: RoleContext) -> None:
        self._context = context
        settings = self.settings = context.settings
        self.publisher = context.publisher
        self.shutdown = context.shutdown
        self.observer = context.observer
        self.owner = context.instance_id
        cluster = settings.cluster
        self.store = KafkaFeedStateStore(
            context.publisher, settings.kafka, context.bootstrap_servers, cluster.feed_state_topic, owner=self.owner
        )
        self.feed_states = FeedStates(self.store)
        self.poller = Poller([], settings.feeds, context.observer, context.shutdown)
        #: Partition -> its feeds (url -> Feed), for the partitions this poller owns.
        self.feeds: dict[int, dict[str, Feed]] = {}
        #: Partitions owned now; and the feeds (url -> partition) of those lost at the last
        #: revoke, kept in memory (not written) until the next assignment says whether they came back.
        self.owned: set[int] = set()
        self._parked: dict[str, int] = {}
        #: Set once the group gave this poller its partitions (and their state was restored).
        self.assigned = asyncio.Event()
        #: Feed records dead-lettered, feed states restored, rebalances seen.
        self.counts: Counter[str] = Counter()
        self.admission: PollerAdmission | None = None
        self.writer = StateWriter(self.feed_states, self.store, settings.state.flush_interval)
        self._partitions = 0
        #: WebSub, when ``[websub] enabled`` (ConfigError here when its callback URL is not per instance).
        self.websub = (
            PollerWebSub(settings, context.publisher, context.bootstrap_servers, owner=self.owner, partitions=self.store.partitions)
            if settings.websub.enabled
            else None
        )
        self._group: GroupMember | None = None
        self._stack = AsyncExitStack()

    # -- the run -----------------------------------------------------------------------

    async def start(self) -> None:
        """Check the topics, build the fetching stages and join the group."""
        try:
            self.poller.pipeline = await self._start(self._stack)
            if self.websub is not None:
                await self.websub.start(self._stack, pipeline=self.poller.pipeline, poller=self.poller, observer=self.observer)
        except BaseException:
            await self._stack.aclose()
            raise

    async def run(self) -> None:
        """Poll the feeds the group gives this poller until a stop; raises the failure
        that stopped it (a restore), if any."""
        assert self.poller.pipeline is not None, "start() first"
        group = self._group
        assert group is not None
        polling = asyncio.create_task(self.poller.run_forever(self.poller.pipeline), name="poller-schedule")
        flushing = asyncio.create_task(self.writer.run(), name="poller-state-flush")
        helpers = [
            asyncio.create_task(coroutine, name=name)
            for name, coroutine in (self.websub.tasks(self.shutdown.stopping) if self.websub is not None else {}).items()
        ]
        try:
            while not self.shutdown.asked and not group.failed.is_set():
                async with group.batch(until=self.shutdown.stopping) as records:
                    if records:
                        await self._apply_records(records)
            if group.failed.is_set():
                raise group.failure or RuntimeError("taking over partitions failed")
        finally:
            # Polls in flight finish, bounded by the shutdown deadline.
            self.shutdown.stop()
            self.poller.wake()
            await asyncio.gather(polling, return_exceptions=True)
            await finish(flushing)
            for helper in helpers:
                await finish(helper)

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
            **{key: self.counts[key] for key in ("restored", "rebalances", "feed_records_dead_lettered", "feed_records_misplaced")},
        }

    def problems(self) -> list[str]:
        """Why the poller is not ready: a restore that failed, articles that cannot be published."""
        problems = []
        if self._group is not None and self._group.failed.is_set():
            problems.append(f"taking over partitions failed: {self._group.failure}")
        if self.admission is not None and self.admission.last_error is not None:
            problems.append(f"articles cannot be published: {self.admission.last_error}")
        return problems

    def metrics(self) -> list[RoleMetric]:
        """The poller's numbers on ``/metrics``."""
        published = self.admission.published if self.admission is not None else 0
        return [
            RoleMetric("poller_articles_published", "Articles acknowledged on the articles topic.", published),
            RoleMetric("poller_feed_states_restored", "Feed states taken over from news.feed-state on assignment.",
                       self.counts["restored"]),
            RoleMetric("poller_feed_records_dead_lettered", "Feeds-topic records sent to the dead-letter topic (not feeds).",
                       self.counts["feed_records_dead_lettered"]),
            RoleMetric("poller_feed_records_misplaced", "Feeds-topic records passed over: not in their host's partition.",
                       self.counts["feed_records_misplaced"]),
            RoleMetric("poller_partitions", "Partitions of the feeds topic this poller owns.", len(self.owned), counter=False),
            RoleMetric("poller_feeds", "Feeds this poller polls.", len(self.poller.feeds), counter=False),
            RoleMetric("poller_feed_states_unwritten", "Feed states changed and not yet on news.feed-state.",
                       self.feed_states.dirty, counter=False),
            RoleMetric("poller_feed_states_skipped", "Feed states not written: nothing a new owner needs had changed.",
                       self.store.skipped),
        ]  # fmt: skip

    async def _start(self, stack: AsyncExitStack) -> Pipeline:
        """Topics (checked co-partitioned), the fetching stages, the pipeline and the consumer."""
        settings, cluster = self.settings, self.settings.cluster
        state_topics = [cluster.feed_state_topic, *([cluster.websub_topic] if self.websub is not None else [])]
        await self.publisher.ensure_topics(
            [cluster.articles_topic, settings.kafka.dead_letter_topic], compacted=[cluster.feeds_topic, *state_topics]
        )
        self._partitions = self.store.feed_partitions = await self.publisher.partition_count(cluster.feeds_topic)
        for topic in state_topics:
            state_partitions = await self.publisher.partition_count(topic)
            if state_partitions != self._partitions:
                raise MonitorError(
                    f"{topic} has {state_partitions} partitions and {cluster.feeds_topic} {self._partitions}",
                    hint="feed states and subscriptions must be co-partitioned with the feeds: give the topics as many partitions",
                )
        transport = daemon.feed_transport(settings.feeds)
        stack.push_async_callback(transport.close)
        parser = ParserPool(settings.feeds.parse_workers, settings.feeds.parse_timeout)
        stack.callback(lambda: parser.close(min(5.0, self.shutdown.remaining())))
        # The published articles' languages are detected here: the model (~0.5 s) now, not in a poll.
        await asyncio.to_thread(preload_language_model)
        admission = self.admission = PollerAdmission(
            publisher=self.publisher,
            seen=self.store.seen,
            articles_topic=cluster.articles_topic,
            dead_letter_topic=settings.kafka.dead_letter_topic,
            fulltext=daemon.fulltext_enricher(settings, parser, stack),
            cpu=parser,
        )
        self.observer.poll_listeners.append(self.writer.poll_finished)
        stack.callback(self.observer.poll_listeners.remove, self.writer.poll_finished)
        self._group = GroupMember(
            settings.kafka, self._context.bootstrap_servers, topic=cluster.feeds_topic, group=cluster.poller_group,
            session_timeout=cluster.session_timeout, on_assigned=self.partitions_assigned, on_revoked=self.partitions_revoked,
            max_records=_BATCH, from_beginning=True, client_id=f"{settings.kafka.client_id}-poller-{self.owner}",
        )  # fmt: skip
        await self._group.start()
        log.info("poller.started", owner=self.owner, group=cluster.poller_group, feeds_topic=cluster.feeds_topic)
        return Pipeline(transport=transport, parser=parser, feed_states=self.feed_states, admission=admission)

    async def _leave_group(self) -> None:
        """Write the last states, then leave the group (its partitions move to the others at
        once, even during a rebalance), each within the shutdown deadline: the next owners
        restore what was written before the leave."""
        group, shutdown = self._group, self.shutdown
        try:
            # A second stop ends each wait at once (the leave then gets its last second).
            writing = asyncio.wait_for(self._write_exactly(list(self.store.partitions), self.owned), max(0.5, shutdown.remaining()))
            with contextlib.suppress(TimeoutError):
                await shutdown.unless_stopping_now(writing)
            if group is not None and not await shutdown.bounded(group.leave, shutdown.remaining()):
                hint = "the group gives this poller's partitions to the others after [cluster] session_timeout"
                log.warning("poller.leave.slow", hint=hint)
        finally:
            self.observer.feeds_changed([])

    # -- the feeds topic ---------------------------------------------------------------

    async def _apply_records(self, records: list[Any]) -> None:
        """Take a batch of feed records (of owned partitions) into the feed list, then poll from it."""
        stray: list[tuple[Any, str]] = []
        removed: list[str] = []
        for record in records:
            if is_marker(record.key):
                continue
            # Another partition's owner polls the feed from its host's partition: taken here
            # too, it would be polled twice, and its state written where no next owner reads it.
            stray_reason = misplaced(record.key, record.partition, self._partitions)
            feeds = self.feeds.setdefault(record.partition, {})
            if record.value is None and record.key:
                if stray_reason is not None:
                    stray.append((record, stray_reason))
                    continue
                url = record.key.decode("utf-8", "replace")
                feeds.pop(url, None)
                removed += self._forget_gone(url, record)
                continue
            try:
                feed = feed_from_record(record.key, record.value or b"")
            except FeedRecordError as exc:
                await self._dead_letter(record, str(exc))
                continue
            if stray_reason is not None:
                stray.append((record, stray_reason))
                continue
            if not feed.enabled:
                feeds.pop(feed.url, None)
                removed += self._forget_gone(feed.url, record)
                continue
            feeds[feed.url] = feed
            self.store.partitions[feed.url] = record.partition
        if stray:
            self._misplaced(stray)
        if removed:
            log.info("feeds.gone.forgotten", feeds=len(removed), first=removed[:5], reason="removed from the feeds topic")
            self.writer.poll_finished(None)
        await self._follow(self._apply())

    def _forget_gone(self, url: str, record: Any) -> list[str]:
        """A feed removed from the list (a tombstone, ``"enabled": false``) loses the mark of
        a 410 that came before the removal, as in one process: put back, it is polled again.
        The state is written without it, so the next owner knows too; ``[url]`` when cleared."""
        state = self.feed_states.peek(url)
        if state is None or not state.disabled:
            return []
        # Replayed at each assignment (a topic not compacted): a 410 after the feed came back stays.
        removed_at = record.timestamp / 1000 if record.timestamp and record.timestamp > 0 else None
        if removed_at is not None and state.last_error_at is not None and state.last_error_at > removed_at:
            return []
        self.feed_states.put(state.evolve(disabled=None))
        self.store.partitions[url] = record.partition
        return [url]

    def _misplaced(self, stray: list[tuple[Any, str]]) -> None:
        """Log a batch's misplaced records in one line (after partitions are added, about half
        of the feeds are, until the next ``feeds sync`` moves them)."""
        self.counts["feed_records_misplaced"] += len(stray)
        record, reason = stray[0]
        log.error(
            "poller.feed.misplaced", records=len(stray), feed_url=record.key.decode("utf-8", "replace"),
            record=f"{record.topic} partition {record.partition} offset {record.offset}", reason=reason,
            hint="not polled from there: run 'news-monitor feeds sync', which moves each feed to its host's partition",
        )  # fmt: skip

    async def _follow(self, wanted: list[Feed]) -> None:
        if self.websub is not None:
            await self.websub.follow(wanted)

    def _apply(self) -> list[Feed]:
        """Poll the feeds of the owned partitions from now on; a feed with a restored next
        poll waits for it (a moved feed is not polled before it is due)."""
        wanted = [feed for partition in sorted(self.owned) for feed in self.feeds.get(partition, {}).values()]
        added, _removed, _changed = self.poller.apply_feeds(wanted)
        states = self.poller.stored_states(added)
        self._honour_next_polls(states)
        self.observer.feeds_changed(wanted, states)
        self._claim(states)
        return wanted

    def _claim(self, states: list[FeedState]) -> None:
        """Write the taken-over states again with this poller as the owner (``status
        --cluster`` names it before the feed's next poll, which may be an interval away)."""
        claimed = [state for state in states if state.url in self.store.taken_over]
        for state in claimed:
            self.store.taken_over.discard(state.url)
            self.feed_states.put(state)
        if claimed:
            self.writer.poll_finished(None)

    def _honour_next_polls(self, states: Iterable[FeedState]) -> None:
        now, monotonic = time.time(), time.monotonic()
        schedule, feeds = self.poller.schedule, self.poller.feeds
        for state in states:
            if state.next_poll is None or state.next_poll <= now or state.url not in schedule:
                continue
            if (wait := state.next_poll - now) > (longest := self._longest_wait(feeds.get(state.url))):
                # A damaged or hostile record, or a writer's clock far ahead: waiting for it
                # could silence the feed for good, so it is polled as an overdue one.
                log.warning(
                    "poller.state.next_poll_ignored", feed_url=state.url, next_poll=state.next_poll, wait=round(wait),
                    longest=round(longest), hint="polled now: no poller schedules a poll that far ahead; check the pollers' clocks",
                )  # fmt: skip
                continue
            schedule.set(state.url, monotonic + wait)
        self.poller.wake()

    def _longest_wait(self, feed: Feed | None) -> float:
        """The longest wait before a poll that any poller schedules for ``feed``: its interval,
        ``[feeds] max_interval``, a Retry-After, the push fallback, each with the most jitter."""
        settings = self.settings
        longest = max(MAX_RETRY_AFTER, settings.feeds.max_interval, settings.websub.fallback_interval)
        return max(longest, feed.interval if feed is not None else 0.0) * (1.0 + settings.feeds.jitter)

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
        lost = partitions & self.owned
        self.owned -= lost
        urls = [url for partition in lost for url in self.feeds.pop(partition, {})]
        if self.websub is not None:
            # Before the feed list changes: a feed handed over is not unsubscribed.
            self.websub.release({*urls, *(url for url, partition in self.store.partitions.items() if partition in lost)})
        self._apply()
        still = await self._wait_polls(urls)
        if still:
            hint = "their results are not written: the new owner polls them again"
            log.warning("poller.handover.polls_in_flight", polls=still, hint=hint)
        await self._write_exactly([url for url, partition in self.store.partitions.items() if partition in lost], lost)
        # Written no more: a poll that outlived the wait must not overwrite the new owner's state.
        for url, partition in list(self.store.partitions.items()):
            if partition in lost:
                self._parked[url] = self.store.partitions.pop(url)
        log.info("poller.partitions.revoked", partitions=sorted(lost), feeds=len(urls))

    async def partitions_assigned(self, partitions: set[int]) -> None:
        """Restore the state of partitions new to this poller (the group then reads every
        given partition of the feeds topic from its beginning). A restore that fails raises:
        the group marks itself failed and :meth:`run` stops the process."""
        # Partitions may have been added to the feeds topic (the group then rebalances).
        if self._group is not None and (count := self._group.partition_count()):
            self._partitions = self.store.feed_partitions = count
        kept = set(self._parked.values()) & partitions
        self._forget({url for url, partition in self._parked.items() if partition not in partitions})
        # Kept across the rebalance: no one else polled them meanwhile, so memory is up to date.
        fresh = partitions - kept - self.owned
        self._parked = {}
        started = time.monotonic()
        try:
            restored = await self.shutdown.unless_stopping(self._restore(partitions, fresh))
            if restored is None:
                # Stopping: this poller leaves the group, so the partitions go to the others.
                log.info("poller.partitions.not_taken", partitions=sorted(partitions), reason="stopping")
                return
            urls = restored
        except Exception as exc:
            reason = kafka_error_text(exc)
            hint = "the poller stops rather than poll without the feeds' state; check the broker and restart it"
            log.error("poller.restore.failed", partitions=sorted(fresh), error=reason, hint=hint)
            topic = self.settings.cluster.feed_state_topic
            raise BrokerError(f"cannot restore {topic} partitions {sorted(fresh)}: {reason}", hint=hint) from exc
        self.counts["restored"] += len(urls)
        self.counts["rebalances"] += 1
        self.feed_states.forget(urls)
        await self.feed_states.load(urls)
        self.store.take_restored()
        self.owned = set(partitions)
        log.info(
            "poller.partitions.assigned", partitions=sorted(partitions), restored=len(urls),
            restore_seconds=round(time.monotonic() - started, 3),
        )
        self.assigned.set()

    async def _write_exactly(self, urls: Iterable[str], partitions: set[int]) -> bool:
        """Write the states of ``urls`` as they are now, changed or not (a hand-over, a stop:
        the next owner goes on from the latest counters and schedule)."""
        for url in urls:
            if (state := self.feed_states.peek(url)) is not None:
                self.feed_states.put(state)
        return await self.writer.flush(partitions, exact=True)

    async def _wait_polls(self, urls: list[str]) -> int:
        """Wait for the polls in flight of ``urls`` (feeds handed over): at most ``[feeds]
        timeout + parse_timeout``, and no longer than the deadline of a stop that comes
        meanwhile; how many are still in flight."""
        options = self.settings.feeds
        until = time.monotonic() + options.timeout + options.parse_timeout
        waiting = self.poller.wait_polls(urls, min(until - time.monotonic(), self.shutdown.remaining()))
        if (still := await self.shutdown.unless_stopping(waiting)) is None:
            # A stop came: its deadline bounds the wait, and a second stop ends it.
            wait = self.poller.wait_polls
            left = min(until - time.monotonic(), self.shutdown.remaining())
            still = await self.shutdown.bounded(lambda timeout: wait(urls, timeout), left)
        return still

    async def _restore(self, partitions: set[int], fresh: set[int]) -> list[str]:
        urls = await self.store.restore(fresh)
        if self.websub is not None:
            self.counts["subscriptions_restored"] += await self.websub.assigned(partitions, fresh)
        return urls

    def _forget(self, urls: set[str]) -> None:
        if urls:
            self.feed_states.forget(urls)
            self.store.forget(urls)


class StateWriter:
    """Writes the feed states that changed to the feed-state topic: soon after each poll
    (:meth:`poll_finished` wakes it), every ``interval`` s while writes fail, and at once
    when asked (:meth:`flush`: a hand-over, the end of the run)."""

    def __init__(self, feed_states: FeedStates, store: KafkaFeedStateStore, interval: float) -> None:
        self._feed_states = feed_states
        self._store = store
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
                log.exception("feed.state.flush_crashed", error=error_text(exc), hint="a bug: please report it")

    async def flush(self, partitions: Iterable[int] = (), *, exact: bool = False) -> bool:
        """Write every changed state now (``exact``: each as it is, even when nothing a new
        owner needs changed); False (logged) when Kafka did not take them all."""
        async with self._lock:
            # Set under the lock: an exact write waiting for it must not see another's reset.
            self._store.exact = exact
            try:
                await self._feed_states.flush()
            except BrokerError as exc:
                log.warning(
                    "feed.state.unsaved", feeds=self._feed_states.dirty, partitions=sorted(partitions) or None, error=str(exc),
                    hint="retried; a feed handed over now is polled by its new owner from its last written state",
                )
                return False
            finally:
                self._store.exact = False
        return True
