"""The process of ``news-monitor run --role poller|matcher|poller,matcher`` (docs/scaling.md).

:class:`RoleHost` does for the roles what :class:`monitor.worker.Monitor` does for the
single process, and starts them in this order, each stop registered as it starts so
they stop in the reverse order:

1. the state lock on ``[state] dir`` (each role keeps its files in ``<state dir>/<role>``);
2. the signals: SIGINT/SIGTERM stop within ``[delivery] shutdown_timeout``, a second one
   stops at once, SIGHUP reloads the rules;
3. the HTTP endpoint (``/metrics``, ``/healthz``, ``/readyz``, the status page), up before
   the broker is reached so probes answer (not ready);
4. one :class:`~monitor.adapters.kafka.KafkaPublisher` for every role, and the topics:
   the cluster's (``news.feeds``, ``news.feed-state`` and ``news.matcher-state``
   compacted), the articles topic, the dead-letter and feed-health topics, the rules';
5. each role (:meth:`Role.start`), in :data:`monitor.cluster.ROLES` order;
6. the helper tasks: the broker check behind readiness, the rule-file watch, SIGHUP.

Then every role's :meth:`Role.run` runs until a stop; when one ends with an error the
others are stopped and the error is the process's (exit code 2, 3 for the broker).

A role is a class with the :class:`Role` methods, built by a factory in :data:`ROLES`
from a :class:`RoleContext` (docs/architecture.md, "Roles"). Roles refuse the embedded
broker: a cluster's processes must share one broker.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from monitor import redact
from monitor.adapters.filewatch import watch_rules
from monitor.adapters.kafka import KafkaPublisher
from monitor.adapters.statelock import StateLock
from monitor.adapters.web import WebServer
from monitor.app import daemon
from monitor.app.matcher_role import MatcherRole
from monitor.app.poller_role import PollerRole
from monitor.app.status import health_policy
from monitor.engine.reload import RulesHolder
from monitor.errors import ConfigError
from monitor.lifecycle import Shutdown, finish, install_signal_handlers
from monitor.log import get_logger
from monitor.model import SourceLocation
from monitor.observe.observer import Observer
from monitor.observe.wiring import RoleMetric
from monitor.settings import Settings
from monitor.upkeep import every, health_check_failed, watch_broker

__all__ = ["ROLES", "Role", "RoleContext", "RoleHost", "available_roles", "instance_id"]

log = get_logger("worker")


@dataclass
class RoleContext:
    """What the host gives each role: shared by all the roles of one process."""

    settings: Settings
    bootstrap_servers: str
    #: The process's one producer (started; stopped by the host after every role stopped).
    publisher: KafkaPublisher
    #: The rules in force (None when no role of this process matches articles).
    rules: RulesHolder | None
    #: Metrics, health, readiness and the status page of the process.
    observer: Observer
    shutdown: Shutdown
    #: This instance's name in the group and in ``status --cluster``.
    instance_id: str

    def role_dir(self, role: str) -> Path:
        """The role's own state directory, ``<state dir>/<role>`` (created on first use)."""
        return self.settings.state_dir / role


class Role(Protocol):
    """One role of the process (:class:`~monitor.app.poller_role.PollerRole`,
    :class:`~monitor.app.matcher_role.MatcherRole`).

    The host calls :meth:`start` (in role order), then :meth:`run` of every role at once,
    then :meth:`stop` (in reverse order) however the run ended. The observers read
    :meth:`status`, :meth:`problems` and :meth:`metrics` at any time after start.
    """

    @property
    def name(self) -> str: ...

    async def start(self) -> None:
        """Open the role's state, join its group; raise a MonitorError to refuse to start."""

    async def run(self) -> None:
        """Work until ``context.shutdown.stopping`` is set; return then, or raise to stop the process."""

    async def stop(self) -> None:
        """Finish within ``context.shutdown.remaining()``; what is unfinished stays durable."""

    def status(self) -> dict[str, object]:
        """The role's part of the status page and ``/status.json`` (JSON-able values)."""

    def problems(self) -> list[str]:
        """Why the role is not ready now (empty when it is): ``/readyz`` lists them."""

    def metrics(self) -> list[RoleMetric]:
        """The role's numbers on ``/metrics`` (names prefixed with the role's)."""


#: The roles this version can run: name -> factory. A role not listed here is refused
#: by ``run --role`` ("not available in this version").
ROLES: dict[str, Callable[[RoleContext], Role]] = {
    "poller": PollerRole,
    "matcher": MatcherRole,
}


def available_roles() -> tuple[str, ...]:
    """The role names ``run --role`` accepts, in start order."""
    from monitor.cluster import ROLES as ORDER

    return tuple(name for name in ORDER if name in ROLES)


def instance_id(settings: Settings) -> str:
    """``[cluster] instance_id``, else ``<host name>:<process id>``."""
    return settings.cluster.instance_id or f"{socket.gethostname()}:{os.getpid()}"


class RoleHost:
    """The process of ``run --role``: what every role shares (see the module docstring)."""

    def __init__(self, settings: Settings, roles: tuple[str, ...]) -> None:
        if settings.kafka.embedded:
            raise ConfigError(
                "run --role needs a shared broker; the embedded one lives inside one process",
                location=SourceLocation("[kafka] bootstrap_servers"),
                hint="set [kafka] bootstrap_servers (NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS) to the cluster's Kafka, "
                "or run without --role for the single process",
            )
        unknown = [name for name in roles if name not in ROLES]
        if unknown:
            raise ConfigError(
                f"{unknown[0]}: not available in this version",
                hint=f"roles available: {', '.join(available_roles())}",
            )
        self.settings = settings
        self.roles_asked = roles
        redact.configure(settings.feeds.redact_params)
        self.rules: RulesHolder | None = None
        if "matcher" in roles:
            rule_paths = tuple(str(p) for p in settings.rule_paths)
            self.rules = RulesHolder.load(rule_paths, allow_empty=settings.rules.allow_empty, freeze=True)
        self.shutdown = Shutdown(settings.delivery.shutdown_timeout)
        self.observer = Observer(
            [],
            rules=self.rules,
            policy=health_policy(settings),
            health_topic=settings.health.topic,
            latest_alerts=settings.http.latest_alerts,
        )
        self.observer.wiring.needs_rules = self.rules is not None
        self.roles: list[Role] = []
        self.web: WebServer | None = None
        self._reload_asked = asyncio.Event()

    @property
    def http_address(self) -> tuple[str, int] | None:
        """The (host, port) the HTTP endpoint listens on, once started (None when off)."""
        return self.web.address if self.web is not None else None

    def stop(self) -> None:
        """What SIGINT/SIGTERM do: stop within ``[delivery] shutdown_timeout``."""
        self.shutdown.stop()

    def stop_now(self) -> None:
        """A second SIGINT/SIGTERM: stop at once; unacknowledged work stays durable."""
        self.shutdown.stop_now()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run the roles until :meth:`stop` (or until one of them fails: its error is raised)."""
        settings = self.settings
        async with AsyncExitStack() as stack:
            stack.callback(StateLock(settings.state_dir).acquire().release)
            if handle_signals:
                stack.callback(
                    install_signal_handlers(
                        self.shutdown,
                        stop=self.stop,
                        stop_now=self.stop_now,
                        hangup=self._hangup,
                        second_hint="second signal: unacknowledged alerts stay in the outbox and their articles are read again",
                    )
                )
            if settings.http.enabled:
                self.web = WebServer(self.observer, settings.http.listen, refresh=settings.http.refresh)
                await stack.enter_async_context(self.web)
            context = await self._context(stack)
            for name in self.roles_asked:
                role = ROLES[name](context)
                await role.start()
                stack.push_async_callback(role.stop)
                self.roles.append(role)
                self.observer.wiring.roles.append(role)
            await self.observer.start()
            stack.push_async_callback(self.shutdown.bounded, self.observer.stop, 5.0)
            self._start_tasks(stack, context)
            log.info("monitor.roles.started", roles=list(self.roles_asked), instance_id=context.instance_id,
                     bootstrap_servers=context.bootstrap_servers)
            await self._run_roles()

    async def _context(self, stack: AsyncExitStack) -> RoleContext:
        """The shared producer (bounded wait for the broker) and the topics every role uses."""
        settings, kafka, cluster = self.settings, self.settings.kafka, self.settings.cluster
        publisher = KafkaPublisher(kafka, kafka.bootstrap_servers)
        await publisher.start()
        # After every role's stop (pushed later): a role drains through it.
        stack.push_async_callback(lambda: publisher.stop(max(0.5, self.shutdown.remaining())))
        compacted = [cluster.feeds_topic, cluster.feed_state_topic, cluster.matcher_state_topic]
        topics = {cluster.articles_topic, kafka.dead_letter_topic, settings.health.topic, kafka.articles_topic,
                  settings.signals.sightings_topic} - {""}  # fmt: skip
        if self.rules is not None:
            topics |= self.rules.current.topics
        # A PublishError is a BrokerError: exit 3.
        await publisher.ensure_topics(sorted(topics), compacted=compacted)
        return RoleContext(
            settings=settings,
            bootstrap_servers=kafka.bootstrap_servers,
            publisher=publisher,
            rules=self.rules,
            observer=self.observer,
            shutdown=self.shutdown,
            instance_id=instance_id(settings),
        )

    async def _run_roles(self) -> None:
        """Every role's run at once; the first to fail stops the others, and its error is raised."""
        tasks = [asyncio.create_task(role.run(), name=f"role-{role.name}") for role in self.roles]
        try:
            for finished in asyncio.as_completed(tasks):
                try:
                    await finished
                except Exception:
                    self.shutdown.stop()
                    raise
                if not self.shutdown.asked:
                    # A role that returns without a stop has nothing left to do: so has the process.
                    self.shutdown.stop()
        finally:
            for task in tasks:
                if not task.done():
                    await asyncio.gather(task, return_exceptions=True)

    def _start_tasks(self, stack: AsyncExitStack, context: RoleContext) -> None:
        """The helper tasks, each cancelled when the run ends."""
        settings, observer, shutdown = self.settings, self.observer, self.shutdown
        probe = daemon.broker_probe(settings, context.bootstrap_servers)
        tasks = {
            "health-checks": every(
                settings.health.check_interval,
                lambda: watch_broker(probe, observer.readiness.broker_checked, observer.sweep),
                shutdown,
                health_check_failed,
            ),
        }
        if self.rules is not None:
            tasks["reload"] = self._reload_when_asked(self.rules)
            if settings.rules.watch:
                tasks["rules-watch"] = watch_rules(self.rules, shutdown.stopping)
        for name, coroutine in tasks.items():
            stack.push_async_callback(finish, asyncio.create_task(coroutine, name=name))

    async def _reload_when_asked(self, rules: RulesHolder) -> None:
        """Reload the rules each time SIGHUP asks (an invalid set keeps the running one)."""
        while True:
            await self._reload_asked.wait()
            self._reload_asked.clear()
            await rules.reload()

    def _hangup(self) -> None:
        if self.rules is None:
            log.info("rules.reload.skipped", reason="no role of this process uses rules")
            return
        self._reload_asked.set()
