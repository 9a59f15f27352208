"""WebSub in the poller role (``run --role poller`` with ``[websub] enabled``; docs/websub.md,
"In the scale-out roles").

The poller that owns a feed owns its subscription. The subscriptions live on the compacted
topic ``[cluster] websub_topic``, co-partitioned with the feeds topic
(:class:`~monitor.adapters.websubstate.KafkaSubscriptionStore`); each poller has a callback
URL of its own, ``[websub] callback_url`` with ``{instance}`` replaced by its instance id,
which the reverse proxy routes to that poller. A push therefore reaches the poller that
subscribed, and goes through its pipeline (its admission publishes the articles, as a poll's).

A hand-over: the losing poller forgets the feed's subscription without unsubscribing
(:meth:`PollerWebSub.release`: its pushes are 404 there from then on); the new owner restores
it with the feed's partition and asks the hub again at once with its own callback (same
token and secret), or keeps it untouched when the callback is already its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import quote

from monitor.adapters.kafka import KafkaPublisher
from monitor.adapters.websubstate import KafkaSubscriptionStore
from monitor.app.websub import WebSub, start_websub
from monitor.errors import ConfigError
from monitor.model import Feed
from monitor.observe.observer import Observer
from monitor.pipeline import Pipeline
from monitor.poller import Poller
from monitor.settings import Settings

__all__ = ["INSTANCE", "PollerWebSub", "callback_base"]

#: What ``[websub] callback_url`` must hold in the poller role: replaced by the instance id.
INSTANCE = "{instance}"


def callback_base(settings: Settings, instance_id: str) -> str:
    """This poller's public callback base URL; ConfigError when ``[websub] callback_url`` has no ``{instance}``."""
    url = settings.websub.callback_url.strip()
    if INSTANCE not in url:
        raise ConfigError(
            f"[websub] callback_url = {url!r} has no {INSTANCE} (needed with --role poller)",
            hint="each poller needs a callback URL of its own that the proxy routes to it, "
            'e.g. "https://monitor.example.org/websub/{instance}/" (docs/websub.md, "In the scale-out roles")',
        )
    return url.replace(INSTANCE, quote(instance_id, safe=""))


class PollerWebSub:
    """The poller's subscriber, push inbox and callback listener (see the module docstring)."""

    def __init__(
        self, settings: Settings, publisher: KafkaPublisher, bootstrap_servers: str, *, owner: str, partitions: dict[str, int]
    ) -> None:
        self.settings = settings
        self.base = callback_base(settings, owner)
        #: The feed-state store's feed url -> partition map: a feed not in it is not this poller's.
        self._partitions = partitions
        self.store = KafkaSubscriptionStore(
            publisher, settings.kafka, bootstrap_servers, settings.cluster.websub_topic, owner=owner, partition_of=partitions.get
        )
        self.parts: WebSub | None = None

    async def start(self, stack: AsyncExitStack, *, pipeline: Pipeline, poller: Poller, observer: Observer) -> None:
        """Open the callback listener; subscribed feeds are polled at ``[websub] fallback_interval``."""
        self.parts = await start_websub(
            self.settings, stack, store=self.store, pipeline=pipeline, observer=observer, feeds=[], callback_base=self.base
        )
        registry = self.parts.subscriber.registry
        poller.push_interval = registry.push_interval
        registry.listeners.append(poller.push_changed)

    def tasks(self, stopping: asyncio.Event) -> dict[str, Coroutine[Any, Any, None]]:
        """The subscription loop and the push workers."""
        assert self.parts is not None, "start() first"
        return self.parts.tasks(stopping)

    async def follow(self, feeds: list[Feed]) -> None:
        """The poller's feed list changed: take the restored subscriptions of its feeds, and
        unsubscribe from feeds removed from the list (or set to ``websub = "off"``)."""
        if self.parts is not None:
            await self.parts.subscriber.load(feeds)

    def release(self, urls: Iterable[str]) -> None:
        """The feeds ``urls`` are handed over: forget their subscriptions (kept in memory
        until the next assignment says whether they came back), never unsubscribing."""
        if self.parts is not None:
            self.store.park(self.parts.subscriber.release(urls), self._partitions)

    async def assigned(self, partitions: set[int], fresh: set[int]) -> int:
        """Drop what waits for partitions not given; restore the ``fresh`` ones (BrokerError
        when they cannot be read). The number of subscriptions restored."""
        self.store.keep_only(partitions)
        return await self.store.restore(fresh) if fresh and self.parts is not None else 0
