"""The WebSub parts of one process, started on loopback for a test (see :class:`Parts`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from monitor.adapters.store import AsyncStore
from monitor.adapters.websub import CallbackServer, HttpHubClient
from monitor.model import Feed
from monitor.websub import PushInbox, Subscriber, Subscription

TOPIC = "http://127.0.0.1:9/feed.rss"


class Parts:
    """A subscriber, its inbox and listener, a store, and what was pushed."""

    def __init__(self, tmp_path: Path, **options: float) -> None:
        self.tmp_path = tmp_path
        self.options = {"lease_seconds": 3600.0, "fallback_interval": 60.0, "retry_initial": 0.2, "retry_max": 1.0, **options}
        self.pushed: list[tuple[str, bytes]] = []
        self.changes: list[tuple[str, bool]] = []
        #: Cleared, pushes wait in the pipeline (to fill the queue).
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def start(
        self, feeds: list[Feed], *, rate_limit: float = 1000.0, max_bytes: int = 1 << 20, port: int = 0, queue_size: int = 10
    ) -> Parts:
        self.store = AsyncStore.open(self.tmp_path / "state")
        self.hub_client = HttpHubClient(allow=("127.0.0.1",), timeout=5.0)
        self.subscriber = Subscriber(store=self.store, hub=self.hub_client, callback_base="http://127.0.0.1/", **self.options)
        self.subscriber.registry.listeners.append(lambda url, active: self.changes.append((url, active)))
        self.inbox = PushInbox(self.subscriber, self._deliver, queue_size=queue_size)
        self.server = CallbackServer(self.inbox, f"127.0.0.1:{port}", max_bytes=max_bytes, read_timeout=2.0, rate_limit=rate_limit,
                                     feed_rate_limit=rate_limit)  # fmt: skip
        await self.server.start()
        assert self.server.address is not None
        # The listener's port (any free one) is known now: the callback URL holds it.
        self.base = self.subscriber.callback_base = f"http://127.0.0.1:{self.server.address[1]}/websub/"
        await self.subscriber.load(feeds)
        self.stopping = asyncio.Event()
        self.tasks = [asyncio.create_task(self.subscriber.run(self.stopping)), asyncio.create_task(self.inbox.run())]
        return self

    async def _deliver(self, feed: Feed, body: bytes, _content_type: str | None, _received: float) -> None:
        await self.flowing.wait()
        self.pushed.append((feed.url, body))

    async def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.subscriber.stop()
        await self.server.stop()
        await self.hub_client.close()
        await self.store.close()

    def sub(self, url: str = TOPIC) -> Subscription | None:
        return self.subscriber.subscriptions.get(url)

    def stored(self) -> list[Subscription]:
        return self.store.sync.subscriptions()
