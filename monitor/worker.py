"""The daemon: lifecycle, concurrency limits, signals, and the run-once mode.

Start-up: rules are loaded and validated, feeds are read (config and OPML), the broker
is reached (the embedded one is started when configured) within a bounded wait, topics
are ensured, alerts left in the outbox by a previous run are queued again, and every
feed is polled once right away. Then each feed is polled on its schedule, with a global
and a per-host concurrency limit.

Shutdown (SIGINT/SIGTERM): polling stops; polls in flight finish; pending alerts are
drained within ``[delivery] shutdown_timeout``; whatever is left stays in the durable
outbox for the next start. Exit code 0. A second SIGINT/SIGTERM during that stops at
once: polls in flight are cancelled and every pending alert stays in the outbox.

Reload (SIGHUP, daemon only): the rule files are loaded again (as the rule watcher does,
see :mod:`monitor.engine.reload`), and so is the feed list (the config file's
``[[feeds.feed]]`` tables and its OPML file): added feeds are polled at once, removed
ones no longer, changed ones poll with their new settings. An invalid config keeps the
running feed list (logged with its file and line); other settings need a restart.
``run --once`` takes SIGHUP as it takes SIGTERM.

One daemon per state directory: it holds ``<state dir>/monitor.lock`` while it runs
(:mod:`monitor.adapters.statelock`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import signal
import time
from collections import Counter, deque
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from monitor.adapters.broker import EmbeddedBroker
from monitor.adapters.http import AddressPolicy, FileTransport, HttpTransport, PageFetcher, RoutingTransport
from monitor.adapters.kafka import KafkaPublisher
from monitor.adapters.statelock import StateLock
from monitor.adapters.store import AsyncStore
from monitor.adapters.web import WebServer, probe_broker
from monitor.delivery import Delivery
from monitor.engine import load_rules
from monitor.errors import ConfigError, MonitorError, StoreError
from monitor.adapters.filewatch import watch_rules
from monitor.engine.reload import RulesHolder
from monitor.log import get_logger
from monitor.observe.metrics import Observer
from monitor.model import Feed, SourceLocation
from monitor.feeds.opml import feeds_from_opml
from monitor.adapters.parser_pool import ParserPool
from monitor.pipeline import Pipeline, PollReport
from monitor import redact
from monitor.feeds.state import FeedStates
from monitor.enrich.fulltext import FulltextEnricher
from monitor.feeds.schedule import Schedule, next_interval
from monitor.dedupe.stories import StoryIndex
from monitor.settings import Settings, load_settings

__all__ = ["Monitor", "RunSummary", "load_feeds"]

log = get_logger("worker")


def load_feeds(settings: Settings) -> list[Feed]:
    """Every enabled feed from the config file and the OPML file it names, deduplicated by url."""
    feeds = settings.configured_feeds()
    if settings.feeds.opml:
        feeds.extend(feeds_from_opml(settings.resolve(settings.feeds.opml), settings.feeds.interval))
    unique: dict[str, Feed] = {}
    for feed in feeds:
        unique.setdefault(feed.url, feed)
    enabled = [f for f in unique.values() if f.enabled]
    if not enabled:
        raise ConfigError(
            "no feeds to poll",
            location=SourceLocation(str(settings.source or "<defaults>")),
            hint="list feeds as [[feeds.feed]] tables or name an OPML file in [feeds] opml",
        )
    return enabled


#: Failures a run summary lists (``run --once`` prints them); older ones are only counted.
FAILURES_KEPT = 1000


@dataclass
class RunSummary:
    """What a run did; ``run --once`` prints it."""

    feeds: int = 0
    polls: int = 0
    #: Polls that found the feed unchanged: 304 Not Modified, or the same bytes as last time.
    unchanged: int = 0
    #: Failed polls, all of them counted...
    failures: int = 0
    #: ...and the latest ones kept, (feed url, error): the daemon runs for months, and an
    #: unbounded list of every failure would grow for as long.
    failed: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=FAILURES_KEPT))
    new_articles: int = 0
    duplicates: int = 0
    alerts_by_topic: Counter[str] = field(default_factory=Counter)
    published: int = 0
    #: Records left in the outbox when the run ended (sent at the next start).
    undelivered: int = 0
    #: Records sent to the dead-letter topic, and records given up on (left in the outbox).
    dead_lettered: int = 0
    abandoned: int = 0

    def add(self, report: PollReport) -> None:
        self.polls += 1
        if report.status in ("not_modified", "unchanged"):
            self.unchanged += 1
        self.new_articles += report.new
        self.duplicates += report.duplicates
        if report.error:
            self.failures += 1
            self.failed.append((report.feed.url, report.error))
        for alert in report.alerts:
            self.alerts_by_topic[alert.topic] += 1

    def store_failed(self, url: str, error: StoreError) -> None:
        """A poll the state store failed (its feed is polled again later)."""
        self.polls += 1
        self.failures += 1
        self.failed.append((url, f"{url}: {error}"))


class Monitor:
    """The long-running daemon (or one pass of it with ``once``)."""

    def __init__(self, settings: Settings, *, feeds: list[Feed] | None = None) -> None:
        self.settings = settings
        # Which query parameters of feed urls are masked wherever a url leaves the process.
        redact.configure(settings.feeds.redact_params)
        rule_paths = tuple(str(p) for p in settings.rule_paths)
        self.rules = RulesHolder(load_rules(rule_paths), paths=rule_paths, allow_empty=settings.rules.allow_empty, freeze=True)
        #: Given by the caller rather than read from the config: SIGHUP cannot reload them.
        self._feeds_given = feeds is not None
        self.feeds = feeds if feeds is not None else load_feeds(settings)
        #: Feed url -> feed, as polled now; changed in place by a reload (pollers hold it).
        self._by_url: dict[str, Feed] = {feed.url: feed for feed in self.feeds}
        self.summary = RunSummary(feeds=len(self.feeds))
        self.delivery: Delivery | None = None
        self.broker: EmbeddedBroker | None = None
        self._stop = asyncio.Event()
        #: Set when the poll loop must look at the schedule again before its wait is over
        #: (a feed was rescheduled earlier than the loop's wake-up time, or a stop).
        self._wake = asyncio.Event()
        self._sleeping_until = float("inf")
        self._schedule = Schedule(jitter=settings.feeds.jitter)
        #: Feeds due and waiting for a poller, in the order they fell due (made per run).
        self._ready: asyncio.Queue[str] | None = None
        #: Polls in flight per host, and the due feeds of hosts at their ``per_host`` limit.
        self._host_busy: Counter[str] = Counter()
        self._host_waiting: dict[str, deque[str]] = {}
        #: Feed url -> host, so a poll does not parse its url again.
        self._hosts: dict[str, str] = {}
        #: Pollers inside a poll right now (the rest wait for a due feed).
        self._busy_pollers: set[asyncio.Task[None]] = set()
        self.bootstrap_servers = settings.kafka.bootstrap_servers
        #: When the shutdown that :meth:`stop` started must be over (monotonic clock).
        self._stop_deadline: float | None = None
        #: Set by a second SIGINT/SIGTERM: the shutdown stops waiting (:meth:`stop_now`).
        self._stopping_now = asyncio.Event()
        #: Set by SIGHUP; the reloader task clears it and reloads.
        self._reload_asked = asyncio.Event()
        #: What a reload needs of the running daemon (set by :meth:`run`).
        self._pipeline: Pipeline | None = None
        #: Metrics, feed health and status; the HTTP endpoint serves what it collects.
        self.observer = Observer(self.feeds, health=settings.health, latest_alerts=settings.http.latest_alerts)
        self.observer.rules_loaded(self.rules.current)
        self.rules.listeners.append(self.observer.rules_reloaded)
        self.rules.failure_listeners.append(self.observer.rules_reload_failed)
        self.web: WebServer | None = None

    @property
    def http_address(self) -> tuple[str, int] | None:
        """The (host, port) the HTTP endpoint listens on, once started (None when off)."""
        return self.web.address if self.web is not None else None

    def stop(self) -> None:
        """Ask the daemon to stop (what SIGINT/SIGTERM do) within ``[delivery] shutdown_timeout``."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.settings.delivery.shutdown_timeout
        self._stop.set()
        self._wake.set()

    def stop_now(self) -> None:
        """Stop at once (a second SIGINT/SIGTERM): polls in flight are cancelled, nothing
        more is drained, and pending alerts stay in the outbox for the next start."""
        self._stop_deadline = time.monotonic()
        self._stopping_now.set()
        self.stop()

    def _shutdown_remaining(self) -> float:
        """Seconds left of the shutdown deadline (the whole budget when no stop was asked)."""
        if self._stop_deadline is None:
            return self.settings.delivery.shutdown_timeout
        return max(0.0, self._stop_deadline - time.monotonic())

    async def run(self, *, once: bool = False, handle_signals: bool = True) -> RunSummary:
        """Run until :meth:`stop` (or one pass over every feed with ``once``)."""
        settings = self.settings
        async with AsyncExitStack() as stack:
            # First: a second daemon on this state directory must stop here, before it binds
            # a port or starts a broker, and be told which process holds the directory.
            stack.callback(StateLock(settings.state_dir).acquire().release)
            if handle_signals:
                self._install_signal_handlers(once=once)
                stack.callback(self._remove_signal_handlers)
            if settings.kafka.embedded:
                self.broker = EmbeddedBroker(port=settings.kafka.embedded_port)
                await stack.enter_async_context(self.broker)
                self.bootstrap_servers = self.broker.bootstrap_servers
                log.info("broker.embedded.started", bootstrap_servers=self.bootstrap_servers)
            store = AsyncStore.open(settings.state_dir)
            stack.push_async_callback(store.close)
            if settings.http.enabled and not once:
                # Up before the broker is reached, so probes answer (not ready) during start-up.
                self.web = WebServer(self.observer, settings.http.listen, refresh=settings.http.refresh)
                await stack.enter_async_context(self.web)
            transport = self._transport()
            stack.push_async_callback(transport.close)
            parser = ParserPool(settings.feeds.parse_workers, settings.feeds.parse_timeout)
            # Polls are over by then: a task still running is a cancelled poll's, not worth waiting long for.
            stack.callback(lambda: parser.close(min(5.0, self._shutdown_remaining())))
            fulltext = await self._fulltext(parser, stack, once=once)
            stories = await self._stories(store)
            feed_states = FeedStates(store)
            await feed_states.load()
            # Everything built so far lives as long as the daemon: keep the cyclic GC from
            # re-scanning it on every collection (measured: ~15 % more 304 polls/s at 10k feeds).
            gc.freeze()
            # Registered after the store: runs before it closes (exit callbacks run last-in first-out).
            stack.push_async_callback(self._flush_feed_states, feed_states)

            delivery = await self._start_delivery(store, stack)
            self.observer.attach(store=store, delivery=delivery)
            await self.observer.start()
            # Runs before the drain (exit callbacks run last-in first-out): health events
            # still queued reach delivery, or the outbox, before delivery stops.
            stack.push_async_callback(self._bounded, self.observer.stop, 5.0)

            pipeline = Pipeline(
                transport=transport,
                parser=parser,
                store=store,
                rules=self.rules,
                sink=delivery,
                articles_topic=settings.kafka.articles_topic,
                feed_states=feed_states,
                fulltext=fulltext,
                stories=stories,
            )
            self._pipeline = pipeline
            log.info(
                "monitor.started",
                feeds=len(self.feeds),
                rules=len(self.rules.current.rules),
                ruleset_version=self.rules.current.version,
                bootstrap_servers=self.bootstrap_servers,
                once=once,
            )
            if settings.rules.watch and not once:
                watcher = asyncio.create_task(watch_rules(self.rules, self._stop), name="rules-watch")
                stack.push_async_callback(_finish, watcher)
            if once:
                await self._poll_all_once(pipeline)
                await self.observer.flush()
                await self._wait_idle_or_stop(delivery)
            else:
                checks = asyncio.create_task(self._watch_health(), name="health-checks")
                stack.push_async_callback(_finish, checks)
                upkeep = asyncio.create_task(self._upkeep(store, feed_states, stories), name="state-upkeep")
                stack.push_async_callback(_finish, upkeep)
                reloader = asyncio.create_task(self._reload_when_asked(), name="reload")
                stack.push_async_callback(_finish, reloader)
                await self._poll_forever(pipeline)
        return self.summary

    def _transport(self) -> RoutingTransport:
        """Feed fetching: aiohttp for http(s) locations, the disk for files."""
        feeds = self.settings.feeds
        return RoutingTransport(
            HttpTransport(
                timeout=feeds.timeout,
                connect_timeout=feeds.connect_timeout,
                max_bytes=feeds.max_bytes,
                max_redirects=feeds.max_redirects,
                user_agent=feeds.user_agent,
                connection_limit=feeds.concurrency,
                read_timeout=feeds.read_timeout,
            ),
            FileTransport(max_bytes=feeds.max_bytes),
        )

    async def _start_delivery(self, store: AsyncStore, stack: AsyncExitStack) -> Delivery:
        """Reach the broker (bounded wait), ensure the topics, and start draining the outbox."""
        kafka = self.settings.kafka
        publisher = KafkaPublisher(kafka, self.bootstrap_servers)
        await publisher.start()
        stack.push_async_callback(self._stop_publisher, publisher)
        extra_topics = {kafka.articles_topic, self.settings.health.topic} - {""}
        await publisher.ensure_topics(sorted(self.rules.current.topics | extra_topics | {kafka.dead_letter_topic}))
        delivery = Delivery(
            publisher,
            store,
            queue_size=self.settings.delivery.queue_size,
            dead_letter_topic=kafka.dead_letter_topic,
            topics=self.rules.current.topics | extra_topics,
            backoff_initial=self.settings.delivery.retry_backoff_initial,
            backoff_max=self.settings.delivery.retry_backoff_max,
            max_attempts=self.settings.delivery.max_attempts,
            on_published=self.observer.alert_published,
            on_error=self.observer.publish_failed,
        )
        self.delivery = delivery
        await delivery.start()
        # Runs after everything pushed later (last-in first-out): polls stop before the drain.
        stack.push_async_callback(self._drain, delivery)
        return delivery

    async def _drain(self, delivery: Delivery) -> None:
        drained = await self._bounded(delivery.stop, self._shutdown_remaining())
        # Feed-health events go through the same delivery but are not alerts.
        self.summary.published = delivery.stats.published - self.observer.health_events_published
        # The outbox, not what this run still held: a failing store can leave records there
        # that were never handed to delivery.
        self.summary.undelivered = await delivery.undelivered()
        self.summary.dead_lettered = delivery.stats.dead_lettered
        self.summary.abandoned = delivery.stats.abandoned
        log.info(
            "monitor.stopped",
            published=delivery.stats.published,
            undelivered=self.summary.undelivered,
            dead_lettered=self.summary.dead_lettered,
        )

    async def _stop_publisher(self, publisher: KafkaPublisher) -> None:
        # A little grace even at the deadline: a drained producer stops in milliseconds.
        await publisher.stop(max(0.5, self._shutdown_remaining()))

    async def _wait_idle_or_stop(self, delivery: Delivery) -> None:
        """``run --once``: wait for every alert's ack, unless a signal asks to stop first."""
        idle = asyncio.ensure_future(delivery.wait_idle())
        stopped = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({idle, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (idle, stopped):
            task.cancel()
        await asyncio.gather(idle, stopped, return_exceptions=True)

    async def _watch_health(self) -> None:
        """Every ``[health] check_interval``: check the broker answers (readiness) and re-assess
        feed health (a silent feed grows stale between polls)."""
        interval = self.settings.health.check_interval
        # A TLS listener cannot be asked in plain Kafka protocol; a TCP connect must do.
        kafka_protocol = self.settings.kafka.security_protocol in {"PLAINTEXT", "SASL_PLAINTEXT"}
        while not self._stop.is_set():
            try:
                reachable, error = await probe_broker(
                    self.bootstrap_servers, timeout=min(5.0, max(0.5, interval)), kafka_protocol=kafka_protocol
                )
                self.observer.broker_checked(reachable, error)
                await self.observer.sweep()
            except Exception as exc:  # noqa: BLE001 - one failed round must not end the checks
                log.error("monitor.health_check.failed", error=f"{type(exc).__name__}: {exc}")
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass

    # -- polling support: full text, stories, feed state, retention ------------------

    async def _fulltext(self, parser: ParserPool, stack: AsyncExitStack, *, once: bool) -> FulltextEnricher | None:
        """The full-text enricher, when some feed asks for it (the daemon always has one: a
        feed added by a reload may ask; its HTTP session opens on first use)."""
        if once and not any(feed.fulltext for feed in self.feeds):
            return None
        options = self.settings.fulltext
        pages = PageFetcher(
            policy=AddressPolicy(options.allow),
            timeout=options.timeout,
            connect_timeout=self.settings.feeds.connect_timeout,
            read_timeout=self.settings.feeds.read_timeout,
            max_bytes=options.max_bytes,
            max_redirects=self.settings.feeds.max_redirects,
            user_agent=self.settings.feeds.user_agent,
            connection_limit=options.concurrency,
        )
        stack.push_async_callback(pages.close)
        return FulltextEnricher(pages, parser.run, concurrency=options.concurrency, min_chars=options.min_chars)

    async def _stories(self, store: AsyncStore) -> StoryIndex | None:
        """The story index, reloaded with the members of the last window."""
        options = self.settings.stories
        if not options.enabled:
            return None
        index = StoryIndex(
            threshold=options.threshold,
            window=options.window_hours * 3600.0,
            num_perm=options.num_perm,
            shingle_size=options.shingle_size,
            min_shingles=options.min_shingles,
        )
        now = time.time()
        members = await store.story_members_since(now - index.window)
        restored = sum(index.restore(article_id, story_id, signature, seen_at, now) for article_id, story_id, seen_at, signature in members)
        if members:
            log.info("stories.restored", members=restored, skipped=len(members) - restored)
        return index

    async def _flush_feed_states(self, feed_states: FeedStates) -> None:
        try:
            written = await feed_states.flush()
        except StoreError as exc:
            # Only validators and counters are lost: the next start re-fetches those feeds.
            log.error("feed.state.unsaved", feeds=feed_states.dirty, error=str(exc))
            return
        log.debug("feed.state.flushed", feeds=written)

    async def _upkeep(self, store: AsyncStore, feed_states: FeedStates, stories: StoryIndex | None) -> None:
        """Write feed state back every ``[state] flush_interval`` s; forget old article ids and
        story members every ``[state] retention_check`` s."""
        options = self.settings.state
        next_retention = time.monotonic()
        while not self._stop.is_set():
            try:
                await feed_states.flush()
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + options.retention_check
                    await self._forget_old(store, stories)
            except Exception as exc:  # noqa: BLE001 - a failed round (disk full, locked) is retried next round
                log.error("state.upkeep.failed", error=f"{type(exc).__name__}: {exc}", hint="check the state dir's disk")
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=options.flush_interval)
            except asyncio.TimeoutError:
                pass

    async def _forget_old(self, store: AsyncStore, stories: StoryIndex | None) -> None:
        now = time.time()
        cutoff = now - self.settings.state.retention_days * 86400.0
        articles = await store.forget_articles_before(cutoff)
        members = 0
        if stories is not None:
            stories.expire(now)
            members = await store.forget_stories_before(now - stories.window)
        log.info("state.retention.pruned", articles=articles, story_members=members, retention_days=self.settings.state.retention_days)

    # -- polling -----------------------------------------------------------------------

    async def _poll_all_once(self, pipeline: Pipeline) -> None:
        self._ready = asyncio.Queue()
        for feed in self._active_feeds(pipeline, self.feeds):
            self._ready.put_nowait(feed.url)
        pollers = [
            asyncio.create_task(self._poller(pipeline, self._by_url, reschedule=False, exit_when_idle=True), name=f"poller {n}")
            for n in range(self.settings.feeds.concurrency)
        ]
        every_poll = asyncio.gather(*pollers)
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({every_poll, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not every_poll.done():
            # A signal: polls in flight get what is left of the shutdown deadline, as in the daemon.
            await self._stop_pollers(pollers)
        await asyncio.gather(every_poll, return_exceptions=True)

    def _active_feeds(self, pipeline: Pipeline, feeds: list[Feed]) -> list[Feed]:
        """The feeds to poll: all but those a 410 Gone disabled (logged as skipped)."""
        active = []
        for feed in feeds:
            state = pipeline.feed_states.peek(feed.url)
            if state is not None and state.disabled:
                log.warning("feed.skipped", feed_url=feed.url, reason=state.disabled, hint="the feed is disabled; remove it from the feed list")
                continue
            active.append(feed)
        return active

    def _schedule_first_polls(self, feeds: list[Feed]) -> None:
        """Schedule the first poll of each feed, spread so thousands never fire at once."""
        shortest = min((feed.interval for feed in feeds), default=self.settings.feeds.interval)
        self._schedule.start([feed.url for feed in feeds], time.monotonic(), window=max(1.0, shortest))

    async def _poll_forever(self, pipeline: Pipeline) -> None:
        # Every feed's first poll happens at start-up.
        self._schedule_first_polls(self._active_feeds(pipeline, self.feeds))
        ready = self._ready = asyncio.Queue()
        # A fixed set of pollers (``[feeds] concurrency``) drains the due feeds: the global
        # limit without a task, a semaphore wait and a wake-up per poll for every due feed.
        pollers = [
            asyncio.create_task(self._poller(pipeline, self._by_url, reschedule=True), name=f"poller {n}")
            for n in range(self.settings.feeds.concurrency)
        ]
        try:
            while not self._stop.is_set():
                self._wake.clear()
                next_time = self._schedule.next_time()
                delay = 1.0 if next_time is None else max(0.0, next_time - time.monotonic())
                self._sleeping_until = time.monotonic() + delay
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
                self._sleeping_until = float("inf")
                if self._stop.is_set():
                    break
                for url in self._schedule.pop_due(time.monotonic()):
                    ready.put_nowait(url)
        finally:
            await self._stop_pollers(pollers)

    async def _stop_pollers(self, pollers: list[asyncio.Task[None]]) -> None:
        """Let polls in flight finish (their alerts reach the outbox and the queue); idle pollers just end."""
        for task in pollers:
            if task not in self._busy_pollers:
                task.cancel()
        busy = [task for task in pollers if not task.done()]
        if busy:
            # Within the shutdown deadline: a poll blocked by back-pressure (broker down) may
            # be cancelled; its alerts are in the outbox already.
            await self._unless_stopping_now(asyncio.wait(
                busy,
                timeout=min(self.settings.feeds.timeout + self.settings.feeds.parse_timeout, self._shutdown_remaining()),
            ))
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)

    async def _poller(self, pipeline: Pipeline, by_url: dict[str, Feed], *, reschedule: bool, exit_when_idle: bool = False) -> None:
        """Poll due feeds one at a time, keeping each host under ``[feeds] per_host``.

        A feed whose host is at its limit waits in that host's line, and a poller that
        finishes a poll of a host takes the next feed in that host's line itself, so a busy
        host never holds pollers that other hosts' feeds could use.
        """
        per_host = self.settings.feeds.per_host
        ready = self._ready
        me = asyncio.current_task()
        assert ready is not None and me is not None
        while not self._stop.is_set():
            if exit_when_idle:
                if ready.empty():
                    return
                url = ready.get_nowait()
            else:
                url = await ready.get()
            if url not in by_url:
                continue  # removed by a reload while it waited
            host = self._hosts.get(url)
            if host is None:
                host = self._hosts[url] = urlsplit(url).hostname or "<local>"
            if self._host_busy[host] >= per_host:
                self._host_waiting.setdefault(host, deque()).append(url)
                continue
            self._host_busy[host] += 1
            self._busy_pollers.add(me)
            try:
                while True:
                    feed = by_url.get(url)
                    if feed is not None:  # None: removed by a reload while it waited
                        await self._poll_guarded(pipeline, feed, reschedule)
                    waiting = self._host_waiting.get(host)
                    if not waiting or self._stop.is_set():
                        break
                    url = waiting.popleft()
            finally:
                self._busy_pollers.discard(me)
                self._host_busy[host] -= 1

    async def _poll_guarded(self, pipeline: Pipeline, feed: Feed, reschedule: bool) -> None:
        """One poll; a bug in it is logged and the feed tried again later, and the poller lives on."""
        try:
            if reschedule:
                await self._poll_and_reschedule(pipeline, feed)
            else:
                await self._poll_one(pipeline, feed)
        except StoreError as exc:
            # Not a bug: the store said why (state.store.failing) and readiness reports it.
            # Nothing this poll failed to commit was recorded as seen: the next poll retries it.
            log.warning("feed.poll.store_failed", feed_url=feed.url, kind=exc.kind, error=exc.message)
            self.summary.store_failed(feed.url, exc)
            if reschedule and not self._stop.is_set():
                self._schedule.reschedule(feed.url, time.monotonic(), feed.interval)
        except Exception as exc:  # noqa: BLE001 - one poll's bug must not end a poller (and a share of polling)
            log.exception("feed.poll.crashed", feed_url=feed.url, error=f"{type(exc).__name__}: {exc}", hint="a bug: please report it")
            if reschedule and not self._stop.is_set() and feed.url in self._by_url:
                self._schedule.reschedule(feed.url, time.monotonic(), feed.interval)

    async def _poll_and_reschedule(self, pipeline: Pipeline, feed: Feed) -> None:
        report = await self._poll_one(pipeline, feed)
        if report.status == "gone" or self._stop.is_set():
            return
        # A reload during the poll may have removed the feed, or changed its settings.
        current = self._by_url.get(feed.url)
        if current is None:
            return
        feed = current
        feeds = self.settings.feeds
        interval = next_interval(
            feed.interval,
            report.outcome,
            min_interval=min(feeds.effective_min_interval, feed.interval),
            max_interval=feeds.max_interval,
        )
        now = time.monotonic()
        when = self._schedule.reschedule(feed.url, now, interval)
        if when < self._sleeping_until:
            # The loop sleeps until a later feed is due: without this a 1 s feed among
            # 300 s feeds would wait for the next of those.
            self._wake.set()
        next_poll = time.time() + (when - now)
        # In memory only: written to the store with the next batched feed-state flush (a
        # store round trip per poll cost more than a whole 304 poll).
        pipeline.feed_states.note_schedule(feed.url, next_poll, interval)
        self.observer.feed_scheduled(feed.url, next_poll, interval)

    async def _poll_one(self, pipeline: Pipeline, feed: Feed) -> PollReport:
        report = await pipeline.poll(feed)
        self.summary.add(report)
        await self.observer.poll_finished(report)
        return report

    # -- reload ------------------------------------------------------------------------

    async def _reload_when_asked(self) -> None:
        """Reload each time SIGHUP asks (signals that come during a reload make one more)."""
        while True:
            await self._reload_asked.wait()
            self._reload_asked.clear()
            await self.reload()

    async def reload(self) -> None:
        """What SIGHUP does: reload the rules, then the feed list; each keeps what runs when
        its files are invalid."""
        await self.rules.reload()
        await self._reload_feeds()

    async def _reload_feeds(self) -> bool:
        """Read the config file (and its OPML) again and poll the feeds it lists from now on."""
        source = self.settings.source
        if self._feeds_given or source is None:
            log.info("feeds.reload.skipped", reason="the feed list was not read from a config file")
            return False
        try:
            # Off the loop: an OPML file of thousands of feeds takes a moment to read.
            settings = await asyncio.to_thread(load_settings, source, required=True)
            feeds = await asyncio.to_thread(load_feeds, settings)
        except MonitorError as exc:
            log.error("feeds.reload.failed", error=str(exc), hint="the running feed list stays; fix the file and send SIGHUP again")
            return False
        except Exception as exc:  # noqa: BLE001 - a reload must never take the daemon down
            log.exception(
                "feeds.reload.crashed",
                error=f"{type(exc).__name__}: {exc}",
                hint="the running feed list stays; a bug: please report it",
            )
            return False
        ignored = _restart_only_changes(self.settings, settings)
        if ignored:
            log.warning("config.reload.ignored", keys=ignored, hint="these settings take effect at the next restart")
        self._apply_feeds(feeds)
        return True

    def _apply_feeds(self, feeds: list[Feed]) -> None:
        """Poll ``feeds`` from now on: new ones at once, removed ones no more, changed ones
        with their new settings from their next poll (sooner when their interval shrank)."""
        previous = dict(self._by_url)
        wanted = {feed.url: feed for feed in feeds}
        added = [feed for url, feed in wanted.items() if url not in previous]
        removed = [url for url in previous if url not in wanted]
        changed = [feed for url, feed in wanted.items() if url in previous and previous[url] != feed]
        self.feeds = list(feeds)
        self._by_url.clear()
        self._by_url.update(wanted)
        self.summary.feeds = len(self.feeds)
        for url in removed:
            self._schedule.remove(url)
        now = time.monotonic()
        for feed in changed:
            due = self._schedule.due_at(feed.url)
            if due is not None and due > now + feed.interval:
                self._schedule.set(feed.url, now + feed.interval)
        states = []
        if self._pipeline is not None:
            feed_states = self._pipeline.feed_states
            states = [state for state in map(feed_states.peek, (feed.url for feed in added)) if state is not None]
            self._schedule_first_polls(self._active_feeds(self._pipeline, added))
        self.observer.feeds_changed(self.feeds, states)
        self._wake.set()
        log.info(
            "feeds.reloaded",
            feeds=len(self.feeds),
            added=len(added),
            removed=len(removed),
            changed=len(changed),
            first_added=[feed.url for feed in added[:5]],
            first_removed=removed[:5],
        )

    # -- signals -----------------------------------------------------------------------

    def _install_signal_handlers(self, *, once: bool = False) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        # A one-shot run has nothing to reload: SIGHUP (a closed terminal) stops it as SIGTERM does.
        loop.add_signal_handler(signal.SIGHUP, self._on_signal if once else self._on_hangup, signal.SIGHUP)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop_deadline is None:
            log.info("monitor.stopping", signal=sig.name)
            self.stop()
        elif not self._stopping_now.is_set():
            log.warning(
                "monitor.stopping.now",
                signal=sig.name,
                hint="second signal: polls in flight are cancelled and pending alerts stay in the outbox, sent on the next start",
            )
            self.stop_now()

    def _on_hangup(self, sig: signal.Signals) -> None:
        log.info("monitor.reload.requested", signal=sig.name)
        self._reload_asked.set()

    # -- stopping now ------------------------------------------------------------------

    async def _unless_stopping_now(self, awaitable: Awaitable[Any]) -> tuple[bool, Any]:
        """(True, its result) once ``awaitable`` is done; (False, None) when :meth:`stop_now`
        comes first (then it is cancelled)."""
        task = asyncio.ensure_future(awaitable)
        now = asyncio.ensure_future(self._stopping_now.wait())
        try:
            await asyncio.wait({task, now}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            now.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            return False, None
        return True, task.result()

    async def _bounded(self, step: Callable[[float], Awaitable[Any]], timeout: float) -> Any:
        """``step(timeout)``; if :meth:`stop_now` interrupts it, ``step(0)`` instead (a shutdown
        step that hands over what it could not finish, e.g. the drain)."""
        done, result = await self._unless_stopping_now(step(timeout))
        return result if done else await step(0.0)


#: Settings a SIGHUP reload applies; any other change waits for a restart (and is logged).
_RELOADED = frozenset({("feeds", "feed"), ("feeds", "opml"), ("feeds", "interval")})


def _restart_only_changes(running: Settings, loaded: Settings) -> list[str]:
    """``[section] key`` of each setting that differs but is not reloaded."""
    changed = []
    for section in dataclasses.fields(Settings):
        if section.name == "source":
            continue
        old, new = getattr(running, section.name), getattr(loaded, section.name)
        for key in dataclasses.fields(old):
            if (section.name, key.name) not in _RELOADED and getattr(old, key.name) != getattr(new, key.name):
                changed.append(f"[{section.name}] {key.name}")
    return changed


async def _finish(task: asyncio.Task[None]) -> None:
    """Cancel a helper task and wait for it, letting only its cancellation pass."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
