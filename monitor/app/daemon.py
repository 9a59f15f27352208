"""The single-process daemon's components, built from the settings.

:func:`start` starts every component in
this order, each registering its own stop on the exit stack as it starts, so they stop
in the reverse order:

1. the embedded broker (when configured), then the state store;
2. the HTTP endpoint, up before the broker is reached so probes answer (not ready);
3. feed fetching (aiohttp, files), the CPU pool, full text, the story index, the
   story signals' detectors (their saved state restored), the feed-state cache (written back when the run ends, before the store closes);
4. the Kafka publisher and delivery (drained when the run ends, after polling stopped);
5. the observers' health events (handed to delivery before it drains);
6. the pipeline, which needs nothing stopped;
7. WebSub, when ``[websub]`` is on (not with ``--once``): the stored subscriptions and
   the callback listener (:mod:`monitor.app.websub`).

Also here: the feed list read again for a reload.
"""

from __future__ import annotations

import asyncio
import gc
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass

from monitor.adapters.broker import EmbeddedBroker
from monitor.adapters.http import FileTransport, HttpTransport, RoutingTransport
from monitor.adapters.kafka import KafkaPublisher, probe_broker
from monitor.adapters.pages import AddressPolicy, PageFetcher
from monitor.adapters.parser_pool import ParserPool
from monitor.adapters.store import AsyncStore
from monitor.adapters.web import WebServer
from monitor.app.websub import WebSub, start_websub
from monitor.dedupe.stories import StoryIndex
from monitor.delivery import Delivery
from monitor.engine.reload import RulesHolder
from monitor.enrich.fulltext import FulltextEnricher
from monitor.errors import MonitorError, StoreError, error_text
from monitor.feeds.sources import load_feeds
from monitor.feeds.state import FeedStates
from monitor.language import preload as preload_language_model
from monitor.lifecycle import Shutdown
from monitor.log import get_logger
from monitor.model import Feed
from monitor.observe.observer import Observer
from monitor.pipeline import Pipeline
from monitor.settings import FeedsSettings, Settings, StoriesSettings, load_settings, restart_only_changes
from monitor.signals import Signals
from monitor.upkeep import Probe, flush_feed_states

__all__ = [
    "Parts",
    "broker_probe",
    "enable_removed",
    "feed_transport",
    "flush_signals",
    "fulltext_enricher",
    "read_feed_list",
    "signal_detectors",
    "start",
    "story_index",
]

log = get_logger("worker")


@dataclass
class Parts:
    """The running components (None until started, or when not configured)."""

    bootstrap_servers: str
    broker: EmbeddedBroker | None = None
    store: AsyncStore | None = None
    web: WebServer | None = None
    stories: StoryIndex | None = None
    signals: Signals | None = None
    delivery: Delivery | None = None
    pipeline: Pipeline | None = None
    websub: WebSub | None = None


def enable_removed(feed_states: FeedStates, feeds: list[Feed]) -> None:
    """Feeds a 410 disabled that are no longer in the feed list are polled if they come back."""
    enabled = feed_states.enable_removed(feed.url for feed in feeds)
    if enabled:
        log.info("feeds.gone.forgotten", feeds=len(enabled), first=enabled[:5], reason="no longer in the feed list")


async def start(
    parts: Parts,
    stack: AsyncExitStack,
    *,
    settings: Settings,
    rules: RulesHolder,
    observer: Observer,
    shutdown: Shutdown,
    feeds: list[Feed],
    once: bool,
) -> Pipeline:
    """Start every component of the single-process daemon (see the module docstring)."""
    if settings.kafka.embedded:
        await _start_broker(parts, stack, settings.kafka.embedded_port)
    store = parts.store = AsyncStore.open(settings.state_dir)
    stack.push_async_callback(store.close)
    if settings.http.enabled and not once:
        parts.web = WebServer(observer, settings.http.listen, refresh=settings.http.refresh)
        await stack.enter_async_context(parts.web)
    transport = feed_transport(settings.feeds)
    stack.push_async_callback(transport.close)
    parser = ParserPool(settings.feeds.parse_workers, settings.feeds.parse_timeout)
    # Polls are over by then: a task still running is a cancelled poll's, not worth waiting long for.
    stack.callback(lambda: parser.close(min(5.0, shutdown.remaining())))
    fulltext = fulltext_enricher(settings, parser, stack) if not once or any(feed.fulltext for feed in feeds) else None
    parts.stories = await story_index(settings.stories, store)
    parts.signals = await _signals(settings, store, rules, observer, stack) if settings.signals.enabled else None
    feed_states = FeedStates(store)
    await feed_states.load()
    enable_removed(feed_states, feeds)
    # The new articles' languages are detected here, after dedupe: the model (~0.5 s) now, not in a poll.
    await asyncio.to_thread(preload_language_model)
    # Everything built so far lives as long as the daemon: the cyclic GC need not re-scan it.
    gc.freeze()
    stack.push_async_callback(flush_feed_states, feed_states)
    delivery = parts.delivery = await _start_delivery(settings, parts.bootstrap_servers, rules, observer, store, stack, shutdown)
    observer.attach(store=store, delivery=delivery)
    await observer.start()
    stack.push_async_callback(shutdown.bounded, observer.stop, 5.0)
    parts.pipeline = Pipeline(
        transport=transport,
        parser=parser,
        store=store,
        rules=rules,
        sink=delivery,
        articles_topic=settings.kafka.articles_topic,
        feed_states=feed_states,
        fulltext=fulltext,
        stories=parts.stories,
        signals=parts.signals,
    )
    if settings.websub.enabled and not once:
        parts.websub = await start_websub(settings, stack, store=store, pipeline=parts.pipeline, observer=observer, feeds=feeds)
    return parts.pipeline


async def _start_broker(parts: Parts, stack: AsyncExitStack, port: int) -> None:
    parts.broker = EmbeddedBroker(port=port)
    await stack.enter_async_context(parts.broker)
    parts.bootstrap_servers = parts.broker.bootstrap_servers
    log.info("broker.embedded.started", bootstrap_servers=parts.bootstrap_servers)


async def _signals(settings: Settings, store: AsyncStore, rules: RulesHolder, observer: Observer, stack: AsyncExitStack) -> Signals:
    """The story-signal detectors, restored from the store and flushed when the run ends."""
    signals = await signal_detectors(settings, store, rules)
    stack.push_async_callback(flush_signals, signals, store)
    observer.wiring.signals = signals
    return signals


def feed_transport(options: FeedsSettings) -> RoutingTransport:
    """Feed fetching: aiohttp for http(s) locations, the disk for files."""
    return RoutingTransport(
        HttpTransport(
            timeout=options.timeout,
            connect_timeout=options.connect_timeout,
            max_bytes=options.max_bytes,
            max_redirects=options.max_redirects,
            user_agent=options.user_agent,
            connection_limit=options.concurrency,
            read_timeout=options.read_timeout,
        ),
        FileTransport(max_bytes=options.max_bytes),
    )


def fulltext_enricher(settings: Settings, parser: ParserPool, stack: AsyncExitStack) -> FulltextEnricher:
    """The full-text enricher (the daemon always has one: a feed added by a reload may ask
    for it; its HTTP session opens on first use)."""
    options, feeds = settings.fulltext, settings.feeds
    pages = PageFetcher(
        policy=AddressPolicy(options.allow),
        timeout=options.timeout,
        connect_timeout=feeds.connect_timeout,
        read_timeout=feeds.read_timeout,
        max_bytes=options.max_bytes,
        max_redirects=feeds.max_redirects,
        user_agent=feeds.user_agent,
        connection_limit=options.concurrency,
    )
    stack.push_async_callback(pages.close)
    return FulltextEnricher(pages, parser.run, concurrency=options.concurrency, min_chars=options.min_chars)


async def story_index(options: StoriesSettings, store: AsyncStore) -> StoryIndex | None:
    """The story index, reloaded with the members of the last window (None when off)."""
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


async def signal_detectors(settings: Settings, store: AsyncStore, rules: RulesHolder) -> Signals:
    """The story signals' detectors, with the state an earlier run saved, following the
    rule set through reloads."""
    signals = Signals(
        levels=settings.signals.escalation,
        story_ttl=2 * settings.stories.window_hours * 3600.0,
        flush_interval=settings.state.flush_interval,
    )
    restored = signals.restore(await store.signal_state())
    signals.watch(rules.current.rules, time.time())
    rules.listeners.append(lambda ruleset: signals.watch(ruleset.rules, time.time()))
    if restored:
        log.info("signals.restored", entries=restored)
    return signals


async def flush_signals(signals: Signals, store: AsyncStore) -> None:
    """The detectors' last write-back, at shutdown (polls are over): a failure is logged
    (the windows' latest sightings are lost; no signal repeats, those are saved with them)."""
    try:
        await store.save_signals([], signals.changes())
    except StoreError as exc:
        log.error("signals.state.unsaved", error=str(exc))


async def _start_delivery(
    settings: Settings,
    bootstrap_servers: str,
    rules: RulesHolder,
    observer: Observer,
    store: AsyncStore,
    stack: AsyncExitStack,
    shutdown: Shutdown,
) -> Delivery:
    """Reach the broker (bounded wait), ensure the topics, and start draining the outbox."""
    kafka = settings.kafka
    publisher = KafkaPublisher(kafka, bootstrap_servers)
    await publisher.start()
    # A little grace even at the deadline: a drained producer stops in milliseconds.
    stack.push_async_callback(lambda: publisher.stop(max(0.5, shutdown.remaining())))
    extra_topics = {kafka.articles_topic, settings.health.topic} - {""}
    await publisher.ensure_topics(sorted(rules.current.topics | extra_topics | {kafka.dead_letter_topic}))
    delivery = Delivery(
        publisher,
        store,
        queue_size=settings.delivery.queue_size,
        dead_letter_topic=kafka.dead_letter_topic,
        topics=rules.current.topics | extra_topics,
        backoff_initial=settings.delivery.retry_backoff_initial,
        backoff_max=settings.delivery.retry_backoff_max,
        max_attempts=settings.delivery.max_attempts,
        on_published=observer.alert_published,
        on_error=observer.publish_failed,
    )
    await delivery.start()
    # Runs after everything pushed later: polls stop before the drain.
    stack.push_async_callback(_drain, delivery, observer, shutdown)
    return delivery


async def _drain(delivery: Delivery, observer: Observer, shutdown: Shutdown) -> None:
    await shutdown.bounded(delivery.stop, shutdown.remaining())
    # The outbox, not what this run still held: a failing store can leave records there
    # that were never handed to delivery.
    summary = observer.summary
    summary.undelivered = await delivery.undelivered()
    log.info(
        "monitor.stopped",
        published=delivery.stats.published,
        undelivered=summary.undelivered,
        dead_lettered=summary.dead_lettered,
    )


def broker_probe(settings: Settings, bootstrap_servers: str) -> Probe:
    """The periodic broker check behind readiness (``[health] check_interval``)."""
    interval = settings.health.check_interval
    # A TLS listener cannot be asked in plain Kafka protocol; a TCP connect must do.
    kafka_protocol = settings.kafka.security_protocol in {"PLAINTEXT", "SASL_PLAINTEXT"}

    async def probe() -> tuple[bool, str | None]:
        return await probe_broker(bootstrap_servers, timeout=min(5.0, max(0.5, interval)), kafka_protocol=kafka_protocol)

    return probe


async def read_feed_list(running: Settings) -> list[Feed] | None:
    """The feed list read again from the config file (and its OPML), off the loop; None,
    logged, when it does not load (the running list stays)."""
    source = running.source
    assert source is not None
    try:
        settings = await asyncio.to_thread(load_settings, source, required=True)
        feeds = await asyncio.to_thread(load_feeds, settings)
    except MonitorError as exc:
        log.error("feeds.reload.failed", error=str(exc), hint="the running feed list stays; fix the file and send SIGHUP again")
        return None
    except Exception as exc:  # a reload must never take the daemon down
        log.exception(
            "feeds.reload.crashed",
            error=error_text(exc),
            hint="the running feed list stays; a bug: please report it",
        )
        return None
    ignored = restart_only_changes(running, settings)
    if ignored:
        log.warning("config.reload.ignored", keys=ignored, hint="these settings take effect at the next restart")
    return feeds
