"""The matcher role (``news-monitor run --role matcher``, docs/scaling.md "Matcher").

A member of the consumer group ``[cluster] matcher_group`` on ``[cluster]
articles_topic``. Its own state directory (``<state dir>/matcher``) holds a SQLite store
like the single process's (seen articles, stories, the alert outbox), so the articles it
consumes go through the same :class:`~monitor.matching.Matching` and
:class:`~monitor.delivery.Delivery` as a poll's: the same alerts, topics, values, headers
and ``alert_id``.

On assignment of partitions: the records of ``news.matcher-state`` in those partitions
(co-partitioned with the articles topic) are read to their end into the store and the
story index, so an article the previous owner admitted is known here too.

Per batch, under a lock a rebalance waits for:

1. decode each record (:func:`~monitor.delivery.records.article_from_dict`); one that is
   not an article goes to the dead-letter topic, through the outbox, with the reason in
   ``dlq_reason`` (the partition moves on);
2. ``Matching.admit`` the articles (in rounds with no id twice, so an edit that follows
   its original in one batch is matched as in the single process); an article whose own
   matching raised (a bug met on it, not a fault of the store or broker: see
   ``SYSTEM_FAULTS``) is left out with nothing of it written, logged with its traceback
   (``matcher.article.failed``) and dead-lettered like a record that is not an article,
   and the batch goes on (docs/scaling.md, "An article that fails");
3. wait until every alert of the batch, and its sightings (``[signals] sightings_topic``:
   a record per new article that counted for a rule, queued in the article's own
   transaction, see :func:`~monitor.dedupe.admit`), is acknowledged by Kafka (through an
   outage: for as long as it lasts, or until a stop);
4. write each article's state to ``news.matcher-state`` (same partition);
5. commit the offsets.

At-least-once: a crash or a lost partition between 2 and 5 makes the batch read again,
and an alert published again has the same ``alert_id`` (a sighting its ``sighting_id``).

A stop does not wait for a rebalance under way: the fetch returns at once, a restore of
newly assigned partitions is abandoned (they go to the others), the batch in hand
finishes within the stop's deadline or stays uncommitted, then the matcher leaves the
group (docs/scaling.md, "A matcher's stop").
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson

from monitor.adapters.changelog import read_to_end
from monitor.adapters.group import GroupMember
from monitor.adapters.parser_pool import ParserPool
from monitor.adapters.store import AsyncStore
from monitor.app import daemon
from monitor.app.signals import check_sightings_topic
from monitor.cluster import MatcherStateError, RememberedArticle, state_from_record, state_to_record
from monitor.dedupe import Admission, ArticleFailure, Verdict
from monitor.dedupe.stories import StoryIndex
from monitor.delivery import Delivery
from monitor.delivery.records import DLQ_REASON_HEADER, ArticleDocumentError, article_from_dict
from monitor.errors import ConfigError, PublishError, RecordRejected, error_text
from monitor.lifecycle import finish
from monitor.log import get_logger
from monitor.matching import Matching
from monitor.model import Article, Record
from monitor.observe.wiring import RoleMetric
from monitor.signals import Signals
from monitor.upkeep import every, forget_old, state_upkeep_failed

if TYPE_CHECKING:
    from monitor.app.roles import RoleContext

__all__ = ["MatcherRole", "rounds"]

log = get_logger("matcher")

#: The counts ``status()`` shows.
_STATUS_COUNTS = ("records", "new", "updated", "duplicate", "alerts", "sightings", "dead_lettered", "failed", "restored")
#: Seconds between two attempts to write the matcher state while the broker is away.
_STATE_RETRY = 1.0


class MatcherRole:
    """The matcher of one process (see the module docstring). Its methods (about
    seventeen) are the :class:`~monitor.app.roles.Role` interface, the partition
    callbacks and the steps of a batch, kept in one class because they share the store,
    delivery, the group and the counts."""

    name = "matcher"

    def __init__(self, context: RoleContext) -> None:
        assert context.rules is not None, "the host loads the rules for a matcher"
        self._context = context
        self._rules = context.rules
        self._cluster = context.settings.cluster
        self._store: AsyncStore | None = None
        self._stories: StoryIndex | None = None
        self._delivery: Delivery | None = None
        self._cpu: ParserPool | None = None
        self._matching: Matching | None = None
        self._signals: Signals | None = None
        self._group: GroupMember | None = None
        self._retention: asyncio.Task[None] | None = None
        #: The partitions whose matcher state is in the store (those owned since the last assignment).
        self._restored: set[int] = set()
        self.counts: Counter[str] = Counter()
        #: Partition -> the next offset to read, as last committed by this matcher.
        self.committed: dict[int, int] = {}

    # -- the Role interface --------------------------------------------------------------

    async def start(self) -> None:
        """Check the co-partitioning, open the store, start delivery (what a previous run
        left in the outbox is sent first) and join the group."""
        context, settings = self._context, self._context.settings
        check_sightings_topic(settings.signals.sightings_topic, self._rules.current.rules)
        await self._check_partitions()
        store = self._store = AsyncStore.open(context.role_dir(self.name))
        self._cpu = ParserPool(settings.feeds.parse_workers, settings.feeds.parse_timeout)
        self._stories = await daemon.story_index(settings.stories, store)
        self._delivery = Delivery(
            context.publisher, store, queue_size=settings.delivery.queue_size,
            dead_letter_topic=settings.kafka.dead_letter_topic,
            topics=self._rules.current.topics | ({settings.signals.sightings_topic} - {""}),
            backoff_initial=settings.delivery.retry_backoff_initial, backoff_max=settings.delivery.retry_backoff_max,
            max_attempts=settings.delivery.max_attempts,
            on_published=context.observer.alert_published, on_error=context.observer.publish_failed,
        )  # fmt: skip
        await self._delivery.start()
        context.observer.attach(store=store, delivery=self._delivery)
        if settings.signals.enabled:
            self._signals = await daemon.signal_detectors(settings, store, self._rules)
        self._matching = Matching(
            store=store, rules=self._rules, sink=self._delivery, cpu=self._cpu, stories=self._stories, signals=self._signals,
            sightings_topic=settings.signals.sightings_topic,
        )
        self._group = GroupMember(
            settings.kafka, context.bootstrap_servers, topic=self._cluster.articles_topic, group=self._cluster.matcher_group,
            session_timeout=self._cluster.session_timeout, on_assigned=self._assigned, on_revoked=self._revoked,
            client_id=f"{settings.kafka.client_id}-matcher-{context.instance_id}",
        )  # fmt: skip
        await self._group.start()
        # As the single process: articles and story members past [state] retention_days are forgotten.
        self._retention = asyncio.create_task(
            every(settings.state.retention_check, lambda: forget_old(store, self._stories, settings.state.retention_days),
                  context.shutdown, state_upkeep_failed),
            name="matcher-retention",
        )  # fmt: skip

    async def run(self) -> None:
        """Consume, match and commit batch after batch until a stop."""
        group, shutdown = self._group, self._context.shutdown
        assert group is not None
        while not shutdown.asked:
            if group.failed.is_set():
                raise group.failure or RuntimeError("rebalance failed")
            async with group.batch(until=shutdown.stopping) as records:
                if records and not shutdown.asked:
                    await self._handle(records)

    async def stop(self) -> None:
        """Leave the group (even during a rebalance, within the deadline), drain delivery
        (what is left stays in the outbox), close the store."""
        shutdown = self._context.shutdown
        if self._retention is not None:
            await finish(self._retention)
        if self._group is not None and not await self._group.leave(shutdown.remaining()):
            hint = "the group gives this matcher's partitions to the others after [cluster] session_timeout"
            log.warning("matcher.leave.slow", hint=hint)
        if self._delivery is not None:
            await shutdown.bounded(self._delivery.stop, shutdown.remaining())
        if self._cpu is not None:
            self._cpu.close(min(5.0, shutdown.remaining()))
        if self._store is not None:
            if self._signals is not None:
                await daemon.flush_signals(self._signals, self._store)
            await self._store.close()
        log.info("matcher.stopped", **{k: v for k, v in sorted(self.counts.items())})

    def status(self) -> dict[str, object]:
        """Partitions owned and what the matcher did with its records."""
        group = self._group
        return {
            "group": self._cluster.matcher_group,
            "topic": self._cluster.articles_topic,
            "partitions": sorted(group.owned) if group is not None else [],
            "rebalances": group.rebalances if group is not None else 0,
            "committed": {str(partition): offset for partition, offset in sorted(self.committed.items())},
            **{key: self.counts[key] for key in _STATUS_COUNTS},
        }

    def problems(self) -> list[str]:
        group = self._group
        if group is not None and group.failed.is_set():
            return [f"taking over partitions failed: {group.failure}"]
        return []

    def metrics(self) -> list[RoleMetric]:
        counts = self.counts
        return [
            RoleMetric("matcher_records", "Records consumed from the articles topic.", counts["records"]),
            RoleMetric("matcher_records_dead_lettered", "Articles-topic records sent to the dead-letter topic (not articles).",
                       counts["dead_lettered"]),
            RoleMetric("matcher_articles_failed", "Articles whose matching raised on a bug (dead-lettered; see matcher.article.failed).",
                       counts["failed"]),
            RoleMetric("matcher_batches", "Batches matched and committed.", counts["batches"]),
            RoleMetric("matcher_sightings", "Sighting records queued for news-monitor signals ([signals] sightings_topic).",
                       counts["sightings"]),
            RoleMetric("matcher_articles_restored", "Articles taken over from news.matcher-state on assignment.", counts["restored"]),
            RoleMetric("matcher_partitions", "Partitions of the articles topic this matcher owns.",
                       len(self._group.owned) if self._group is not None else 0, counter=False),
        ]  # fmt: skip

    # -- partitions ----------------------------------------------------------------------

    async def _check_partitions(self) -> None:
        """The matcher state is co-partitioned with the articles: same partition count."""
        publisher = self._context.publisher
        # A PublishError here is a BrokerError: exit 3, as for a broker that cannot be reached.
        articles = await publisher.partition_count(self._cluster.articles_topic)
        state = await publisher.partition_count(self._cluster.matcher_state_topic)
        if articles != state:
            raise ConfigError(
                f"{self._cluster.articles_topic} has {articles} partitions but {self._cluster.matcher_state_topic} has {state}: "
                "a matcher restores the state of its partitions from the same partitions of the state topic",
                hint=f"give {self._cluster.matcher_state_topic} {articles} partitions (recreate it, or name another "
                "[cluster] matcher_state_topic), then start again",
            )

    async def _assigned(self, partitions: set[int]) -> None:
        """Read the matcher state of newly owned partitions into the store and story index;
        not when a stop comes first (this matcher is leaving: the partitions go to the others)."""
        assert self._store is not None
        # A rebalance takes every partition away and hands them out again: those this
        # matcher kept have no state elsewhere to take over.
        fresh = partitions - self._restored
        self._restored = set()
        if not fresh:
            self._restored = set(partitions)
            return
        started = time.monotonic()
        read = await self._context.shutdown.unless_stopping(self._read_state(fresh))
        if read is None:
            log.info("matcher.partitions.not_taken", partitions=sorted(partitions), reason="stopping")
            return
        remembered, skipped, expired = read
        restored = await self._store.restore_articles(remembered)
        self._restore_stories(remembered)
        self._restored = set(partitions)
        self.counts["restored"] += restored
        log.info("matcher.partitions.assigned", partitions=sorted(partitions), restored_from=sorted(fresh), articles=restored,
                 skipped=skipped, expired=expired, seconds=round(time.monotonic() - started, 3))  # fmt: skip

    async def _read_state(self, partitions: set[int]) -> tuple[list[RememberedArticle], int, int]:
        """The articles remembered in ``partitions`` of the matcher-state topic; how many
        records were skipped (not a state) and expired (past retention)."""
        context = self._context
        # The latest record per key (partition and key bytes), as compaction would leave the topic.
        latest: dict[tuple[int, bytes], RememberedArticle] = {}
        skipped = expired = 0
        # What retention has forgotten here is not taken over either.
        oldest = time.time() - context.settings.state.retention_days * 86400.0
        async for record in read_to_end(context.publisher, context.settings.kafka, context.bootstrap_servers,
                                        self._cluster.matcher_state_topic, partitions):  # fmt: skip
            if record.key and record.value is None:
                # A tombstone forgets the article, before compaction as after it.
                latest.pop((record.partition, record.key), None)
                continue
            try:
                article = state_from_record(record.key, record.value)
            except MatcherStateError as exc:
                skipped += 1
                log.warning("matcher.state.skipped", partition=record.partition, offset=record.offset, reason=str(exc))
                continue
            earlier = latest.pop((record.partition, record.key), None)
            if article.seen_at < oldest:
                expired += 1
            else:
                # Rules an earlier record named stay alerted (two writers of one key, a rebalance apart).
                rules = article.rules | earlier.rules if earlier is not None else article.rules
                latest[(record.partition, record.key)] = dataclasses.replace(article, rules=rules)
        return list(latest.values()), skipped, expired

    def _restore_stories(self, remembered: list[RememberedArticle]) -> None:
        if self._stories is None:
            return
        now = time.time()
        for article in remembered:
            if article.story_id is not None and article.signature is not None:
                self._stories.restore(article.id, article.story_id, article.signature, article.seen_at, now)

    async def _revoked(self, partitions: set[int]) -> None:
        # Each batch wrote its state before it committed: nothing is left to flush.
        if partitions:
            log.info("matcher.partitions.revoked", partitions=sorted(partitions))

    # -- a batch -------------------------------------------------------------------------

    async def _handle(self, records: list[Any]) -> None:
        """One batch: decode, match, wait for the alerts' acks, remember, commit."""
        assert self._matching is not None and self._delivery is not None and self._group is not None
        self.counts["records"] += len(records)
        articles: list[tuple[Any, Article]] = []
        letters: list[Record] = []
        for record in records:
            article, reason = _decode(record)
            if article is None:
                log.warning("matcher.record.rejected", partition=record.partition, offset=record.offset, reason=reason)
                letters.append(self._letter(record, reason))
            else:
                articles.append((record, article))
        if letters:
            await self._dead_letter(letters)
            self.counts["dead_lettered"] += len(letters)
        pairs = iter(articles)
        for chunk in rounds([article for _record, article in articles]):
            # rounds() keeps the order: the chunk's records are the next ones (no id twice in a round).
            record_of = {article.id: next(pairs)[0] for article in chunk}
            admission = await self._matching.admit(chunk)
            self._account(admission)
            if admission.failed:
                await self._dead_letter([self._failed(record_of[failure.article.id], failure) for failure in admission.failed])
                self.counts["failed"] += len(admission.failed)
        if not await self._acknowledged():
            return
        offsets: dict[int, int] = {}
        for record in records:
            offsets[record.partition] = max(offsets.get(record.partition, 0), record.offset + 1)
        # A stop's deadline leaves the batch uncommitted: the next owner reads it again.
        if await self._context.shutdown.until_deadline(self._remember_and_commit(articles, offsets)):
            self.counts["batches"] += 1
            self.committed.update(offsets)

    async def _remember_and_commit(self, articles: list[tuple[Any, Article]], offsets: dict[int, int]) -> bool:
        """Steps 4 and 5 of a batch; whether its offsets were committed."""
        assert self._group is not None
        return await self._remember(articles) and await self._group.commit(offsets)

    async def _acknowledged(self) -> bool:
        """Wait until Kafka acknowledged every alert of the batch: as long as an outage
        lasts, until the shutdown deadline after a stop. False when they were not."""
        assert self._delivery is not None
        shutdown = self._context.shutdown
        while not shutdown.asked:
            # The timeout only lets a stop be noticed; an idle delivery returns at once.
            if await self._delivery.wait_idle(0.5):
                return True
        return bool(await shutdown.bounded(self._delivery.wait_idle, shutdown.remaining()))

    def _account(self, admission: Admission) -> None:
        observer = self._context.observer
        for verdict in Verdict:
            count = admission.count(verdict)
            if count:
                self.counts[verdict.value] += count
                observer.metrics.articles.labels(verdict.value).inc(count)
        self.counts["sightings"] += admission.sightings
        for alert in admission.alerts:
            self.counts["alerts"] += 1
            observer.alert_raised(alert)

    def _failed(self, record: Any, failure: ArticleFailure) -> Record:
        """The dead letter of an article whose own matching raised, logged once with the traceback."""
        error, letters = error_text(failure.error), self._context.settings.kafka.dead_letter_topic
        log.error(
            "matcher.article.failed", partition=record.partition, offset=record.offset, article_id=failure.article.id,
            step=failure.step, error=error, hint=f"a bug: please report it; the record is in {letters}", exc_info=failure.error,
        )  # fmt: skip
        return self._letter(record, f"matching the article failed on a bug ({error}): please report it")

    def _letter(self, record: Any, reason: str) -> Record:
        """The dead letter of a record (its key, value and headers kept), with the reason in ``dlq_reason``."""
        origin = f"{record.topic}\x1f{record.partition}\x1f{record.offset}"
        letter_id = hashlib.blake2b(origin.encode(), digest_size=16).hexdigest()
        key = record.key.decode("utf-8", "replace") if record.key else ""
        return Record(
            alert_id=letter_id,
            article_id=key,
            topic=record.topic,
            key=record.key,
            value=record.value or b"",
            headers=(*(tuple(record.headers or ())), (DLQ_REASON_HEADER, reason.encode("utf-8", "replace"))),
        )

    async def _dead_letter(self, letters: list[Record]) -> None:
        assert self._store is not None and self._delivery is not None
        await self._store.enqueue(letters)
        await self._delivery.submit(letters)

    async def _remember(self, articles: list[tuple[Any, Article]]) -> bool:
        """Write the batch's articles to the matcher-state topic, each to its record's
        partition; retried while the broker is away. False when a stop came first."""
        assert self._store is not None
        found = await self._store.remembered_articles([(article.id, article.url) for _record, article in articles])
        pending = [
            (record.partition, Record("", remembered.key, self._cluster.matcher_state_topic, *state_to_record(remembered), ()))
            for (record, _article), remembered in zip(articles, found)
            if remembered is not None
        ]
        publisher, shutdown = self._context.publisher, self._context.shutdown
        while pending:
            results = await asyncio.gather(
                *(publisher.publish(state, partition=partition) for partition, state in pending), return_exceptions=True
            )
            failed = [(item, error) for item, error in zip(pending, results) if isinstance(error, BaseException)]
            for _item, error in failed:
                if not isinstance(error, (PublishError, RecordRejected)):
                    raise error
            if any(isinstance(error, RecordRejected) for _item, error in failed):
                # A state record too large for the topic: the article stays known here, only a new owner would re-match it.
                log.error("matcher.state.rejected", errors=[str(e) for _i, e in failed if isinstance(e, RecordRejected)][:3])
            pending = [item for item, error in failed if not isinstance(error, RecordRejected)]
            if pending:
                log.warning("matcher.state.retrying", records=len(pending), error=str(failed[0][1]))
                if await shutdown.wait(_STATE_RETRY):
                    return False
        return True


def _decode(record: Any) -> tuple[Article | None, str]:
    """The article a record of the articles topic holds, or None and why it is not one."""
    if record.value is None:
        return None, "no value (a tombstone): not an article"
    try:
        article = article_from_dict(orjson.loads(record.value))
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON: {exc}"
    except ArticleDocumentError as exc:
        return None, f"not an article (schemas/article-v1.json): {exc}"
    key = record.key.decode("utf-8", "replace") if record.key else None
    if key != article.id:
        return None, f"the key {key!r} is not the article's id {article.id!r}"
    return article, ""


def rounds(articles: list[Article]) -> list[list[Article]]:
    """``articles`` in order, cut so that no round has one id or canonical url twice:
    :meth:`Matching.admit` keeps one occurrence per round, and a later version of an
    article (an edit) must be matched after the earlier one, as the single process does."""
    result: list[list[Article]] = []
    current: list[Article] = []
    ids: set[str] = set()
    urls: set[str] = set()
    for article in articles:
        if article.id in ids or (article.url and article.url in urls):
            result.append(current)
            current, ids, urls = [], set(), set()
        current.append(article)
        ids.add(article.id)
        if article.url:
            urls.add(article.url)
    if current:
        result.append(current)
    return result

