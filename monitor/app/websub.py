"""WebSub in the single-process daemon: the subscriber, the push inbox and the callback
listener, built from ``[websub]`` and wired to the pipeline, the poller and the observers
(docs/websub.md). The poller role (``run --role poller``) builds the same parts with its
subscriptions on Kafka and a callback URL of its own (docs/websub.md, "In the scale-out roles")."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from monitor.adapters.websub import CallbackServer, HttpHubClient
from monitor.model import Feed
from monitor.observe.observer import Observer
from monitor.pipeline import Pipeline
from monitor.settings import Settings
from monitor.websub import PushInbox, Subscriber, SubscriptionStore

__all__ = ["WebSub", "start_websub"]


@dataclass
class WebSub:
    """The running WebSub parts; :meth:`tasks` are the daemon's to run and cancel."""

    subscriber: Subscriber
    inbox: PushInbox
    server: CallbackServer

    def tasks(self, stopping: asyncio.Event) -> dict[str, Coroutine[Any, Any, None]]:
        """The helper coroutines: the subscription loop and the push workers."""
        return {"websub-subscriptions": self.subscriber.run(stopping), "websub-pushes": self.inbox.run()}


async def start_websub(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    store: SubscriptionStore,
    pipeline: Pipeline,
    observer: Observer,
    feeds: list[Feed],
    callback_base: str | None = None,
) -> WebSub:
    """Load the stored subscriptions and open the callback listener (stopped with ``stack``).
    ``callback_base``: the public base URL of this process's callbacks (default ``[websub] callback_url``)."""
    options, feed_options = settings.websub, settings.feeds
    hub = HttpHubClient(
        allow=options.hub_allow,
        timeout=feed_options.timeout,
        connect_timeout=feed_options.connect_timeout,
        user_agent=feed_options.user_agent,
    )
    stack.push_async_callback(hub.close)
    subscriber = Subscriber(
        store=store,
        hub=hub,
        callback_base=options.callback_url.strip() if callback_base is None else callback_base,
        lease_seconds=options.lease_seconds,
        fallback_interval=options.fallback_interval,
        retry_initial=options.retry_initial,
        retry_max=options.retry_max,
    )
    await subscriber.load(feeds)
    stack.push_async_callback(subscriber.stop)

    async def deliver(feed: Feed, body: bytes, content_type: str | None, received: float) -> None:
        report = await pipeline.receive(feed, body, content_type)
        await observer.push_finished(report, received)

    inbox = PushInbox(subscriber, deliver, queue_size=options.queue_size)
    observer.wiring.websub = inbox
    pipeline.hub_links = subscriber
    server = CallbackServer(
        inbox,
        options.listen,
        max_bytes=feed_options.max_bytes,
        read_timeout=feed_options.timeout,
        rate_limit=options.rate_limit,
        feed_rate_limit=options.feed_rate_limit,
    )
    await stack.enter_async_context(server)
    return WebSub(subscriber, inbox, server)
