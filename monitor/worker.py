"""The daemon's lifecycle: start, stop, signals, reload, and the run-once mode.

Start-up: rules are loaded and validated, feeds are read (config and OPML), the broker
is reached (the embedded one is started when configured) within a bounded wait, topics
are ensured, alerts left in the outbox by a previous run are queued again, and every
feed is polled once right away (:mod:`monitor.app.daemon` starts the components, in order).
Then each feed is polled on its schedule, with a global and a per-host concurrency
limit (:mod:`monitor.poller`), and the periodic tasks run (:mod:`monitor.upkeep`).

Shutdown (SIGINT/SIGTERM): polling stops; polls in flight finish; pending alerts are
drained within ``[delivery] shutdown_timeout``; whatever is left stays in the durable
outbox for the next start. Exit code 0. A second SIGINT/SIGTERM during that stops at
once: polls in flight are cancelled and every pending alert stays in the outbox
(:mod:`monitor.lifecycle`).

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
from contextlib import AsyncExitStack

from monitor import redact
from monitor.adapters.filewatch import watch_rules
from monitor.adapters.statelock import StateLock
from monitor.app import daemon
from monitor.app.status import health_policy
from monitor.delivery import Delivery
from monitor.engine.reload import RulesHolder
from monitor.feeds.sources import load_feeds
from monitor.lifecycle import Shutdown, finish, install_signal_handlers
from monitor.log import get_logger
from monitor.model import Feed
from monitor.observe.observer import Observer
from monitor.observe.summary import RunSummary
from monitor.pipeline import Pipeline
from monitor.poller import Poller
from monitor.settings import Settings
from monitor.upkeep import every, forget_old, health_check_failed, state_upkeep_failed, watch_broker

__all__ = ["Monitor"]

log = get_logger("worker")


class Monitor:
    """The long-running daemon (or one pass of it with ``once``).

    Its methods are the process's own (about fifteen): what the command line and tests
    read (summary, delivery, address), stop and stop at once, run and run-once, the helper
    tasks, reload, signals. The components are built by :mod:`monitor.app.daemon`.
    """

    def __init__(self, settings: Settings, *, feeds: list[Feed] | None = None) -> None:
        self.settings = settings
        # Which query parameters of feed urls are masked wherever a url leaves the process.
        redact.configure(settings.feeds.redact_params)
        rule_paths = tuple(str(p) for p in settings.rule_paths)
        self.rules = RulesHolder.load(rule_paths, allow_empty=settings.rules.allow_empty, freeze=True)
        #: Given by the caller rather than read from the config: SIGHUP cannot reload them.
        self._feeds_given = feeds is not None
        self.feeds = feeds if feeds is not None else load_feeds(settings)
        self.shutdown = Shutdown(settings.delivery.shutdown_timeout)
        #: Metrics, feed health and status; the HTTP endpoint serves what it collects.
        self.observer = Observer(
            self.feeds,
            rules=self.rules,
            policy=health_policy(settings),
            health_topic=settings.health.topic,
            latest_alerts=settings.http.latest_alerts,
        )
        self.poller = Poller(self.feeds, settings.feeds, self.observer, self.shutdown)
        self.parts = daemon.Parts(bootstrap_servers=settings.kafka.bootstrap_servers)
        #: Set by SIGHUP; the reloader task clears it and reloads.
        self._reload_asked = asyncio.Event()

    @property
    def summary(self) -> RunSummary:
        """What the run did so far."""
        return self.observer.summary

    @property
    def delivery(self) -> Delivery | None:
        return self.parts.delivery

    @property
    def http_address(self) -> tuple[str, int] | None:
        """The (host, port) the HTTP endpoint listens on, once started (None when off)."""
        return self.parts.web.address if self.parts.web is not None else None

    def stop(self) -> None:
        """Ask the daemon to stop (what SIGINT/SIGTERM do) within ``[delivery] shutdown_timeout``."""
        self.shutdown.stop()
        self.poller.wake()

    def stop_now(self) -> None:
        """Stop at once (a second SIGINT/SIGTERM): polls in flight are cancelled, nothing
        more is drained, and pending alerts stay in the outbox for the next start."""
        self.shutdown.stop_now()
        self.poller.wake()

    async def run(self, *, once: bool = False, handle_signals: bool = True) -> RunSummary:
        """Run until :meth:`stop` (or one pass over every feed with ``once``)."""
        async with AsyncExitStack() as stack:
            # First: a second daemon on this state directory must stop here, before it binds
            # a port or starts a broker, and be told which process holds the directory.
            stack.callback(StateLock(self.settings.state_dir).acquire().release)
            if handle_signals:
                stack.callback(
                    install_signal_handlers(
                        self.shutdown,
                        stop=self.stop,
                        stop_now=self.stop_now,
                        # A one-shot run has nothing to reload: SIGHUP (a closed terminal) stops it as SIGTERM does.
                        hangup=None if once else self._reload_asked.set,
                        second_hint="second signal: polls in flight are cancelled and pending alerts stay in the outbox, "
                        "sent on the next start",
                    )
                )
            pipeline = await daemon.start(
                self.parts, stack, settings=self.settings, rules=self.rules, observer=self.observer,
                shutdown=self.shutdown, feeds=self.feeds, once=once,
            )
            if self.parts.websub is not None:
                # Subscribed feeds are polled at the fallback interval, and as usual again once not.
                registry = self.parts.websub.subscriber.registry
                self.poller.push_interval = registry.push_interval
                registry.listeners.append(self.poller.push_changed)
            log.info(
                "monitor.started",
                feeds=len(self.feeds),
                rules=len(self.rules.current.rules),
                ruleset_version=self.rules.current.version,
                bootstrap_servers=self.parts.bootstrap_servers,
                once=once,
            )
            if once:
                await self._run_once(pipeline)
            else:
                self._start_tasks(stack)
                await self.poller.run_forever(pipeline)
        return self.summary

    async def _run_once(self, pipeline: Pipeline) -> None:
        """One poll of every feed, then wait for every alert's ack unless a signal asks to stop first."""
        await self.poller.run_once(pipeline)
        await self.observer.events.flush()
        assert self.parts.delivery is not None
        idle = asyncio.ensure_future(self.parts.delivery.wait_idle())
        stopped = asyncio.ensure_future(self.shutdown.stopping.wait())
        await asyncio.wait({idle, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (idle, stopped):
            task.cancel()
        await asyncio.gather(idle, stopped, return_exceptions=True)

    def _start_tasks(self, stack: AsyncExitStack) -> None:
        """The daemon's helper tasks, each cancelled when the run ends."""
        settings, parts, shutdown = self.settings, self.parts, self.shutdown
        assert parts.store is not None and parts.pipeline is not None
        store, feed_states, stories = parts.store, parts.pipeline.feed_states, parts.stories
        probe = daemon.broker_probe(settings, parts.bootstrap_servers)
        observer = self.observer
        tasks = {
            "health-checks": every(
                settings.health.check_interval,
                lambda: watch_broker(probe, observer.readiness.broker_checked, observer.sweep),
                shutdown,
                health_check_failed,
            ),
            "state-flush": every(settings.state.flush_interval, feed_states.flush, shutdown, state_upkeep_failed),
            "retention": every(
                settings.state.retention_check,
                lambda: forget_old(store, stories, settings.state.retention_days),
                shutdown,
                state_upkeep_failed,
            ),
            "reload": self._reload_when_asked(),
        }
        if parts.websub is not None:
            tasks.update(parts.websub.tasks(shutdown.stopping))
        if settings.rules.watch:
            tasks["rules-watch"] = watch_rules(self.rules, shutdown.stopping)
        for name, coroutine in tasks.items():
            stack.push_async_callback(finish, asyncio.create_task(coroutine, name=name))

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
        if self._feeds_given or self.settings.source is None:
            log.info("feeds.reload.skipped", reason="the feed list was not read from a config file")
            return False
        feeds = await daemon.read_feed_list(self.settings)
        if feeds is None:
            return False
        self.apply_feeds(feeds)
        return True

    def apply_feeds(self, feeds: list[Feed]) -> None:
        """Poll ``feeds`` from now on (see :meth:`Poller.apply_feeds`); the health tracker follows."""
        if self.poller.pipeline is not None:
            # Before the added feeds are scheduled: one a 410 disabled comes back enabled.
            daemon.enable_removed(self.poller.pipeline.feed_states, feeds)
        added, removed, changed = self.poller.apply_feeds(feeds)
        self.feeds = list(feeds)
        if self.parts.websub is not None:
            self.parts.websub.subscriber.set_feeds(self.feeds)
        self.observer.feeds_changed(self.feeds, self.poller.stored_states(added))
        log.info(
            "feeds.reloaded",
            feeds=len(self.feeds),
            added=len(added),
            removed=len(removed),
            changed=len(changed),
            first_added=[feed.url for feed in added[:5]],
            first_removed=removed[:5],
        )
