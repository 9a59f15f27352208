"""What hubs push (WebSub section 7): :class:`PushInbox` checks the token and
``X-Hub-Signature`` of each push, queues a good body for the pipeline (answered at once)
and counts the rest; a few workers hand the queued bodies to the pipeline."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from monitor.errors import error_text
from monitor.log import get_logger
from monitor.model import Feed
from monitor.websub.signature import check_signature
from monitor.websub.subscriber import Subscriber

__all__ = ["Deliver", "PushInbox", "PushStats", "PushVerdict"]

log = get_logger("websub")

@dataclass(frozen=True, slots=True)
class PushVerdict:
    """What the listener answers a push: the HTTP status and why."""

    status: int
    reason: str


@dataclass
class PushStats:
    """Callback requests by outcome (read by ``/metrics``)."""

    outcomes: Counter[str] = field(default_factory=Counter)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1


#: Deliver one accepted push: (feed, body, content type, received at) -> done.
Deliver = Callable[[Feed, bytes, "str | None", float], Awaitable[None]]


class PushInbox:
    """Pushes checked (token, signature) and queued for the pipeline; see the module docstring."""

    def __init__(self, subscriber: Subscriber, deliver: Deliver, *, queue_size: int, workers: int = 4) -> None:
        self.subscriber = subscriber
        self.registry = subscriber.registry
        self.stats = PushStats()
        self._deliver = deliver
        self._queue: asyncio.Queue[tuple[Feed, bytes, str | None, float]] = asyncio.Queue(maxsize=queue_size)
        self._workers = workers

    def known(self, token: str) -> bool:
        return self.registry.for_token(token) is not None

    def push(self, token: str, body: bytes, signature: str | None, content_type: str | None) -> PushVerdict:
        """Check one pushed body; queue it when good. Unsigned and badly signed bodies are
        answered 202 and ignored, as the spec asks (so a forger learns nothing)."""
        subscription = self.registry.for_token(token)
        if subscription is None:
            self.stats.count("unknown_token")
            return PushVerdict(404, "unknown_token")
        verdict = check_signature(signature, body, subscription.secret)
        if verdict != "ok":
            outcome = "unsigned" if verdict == "unsigned" else "bad_signature"
            self.stats.count(outcome)
            log.warning("websub.push.ignored", feed_url=subscription.feed_url, reason=outcome)
            return PushVerdict(202, outcome)
        feed = self.registry.feeds.get(subscription.feed_url)
        if feed is None:
            self.stats.count("unknown_token")
            return PushVerdict(404, "unknown_token")
        now = self.registry.clock()
        try:
            self._queue.put_nowait((feed, body, content_type, now))
        except asyncio.QueueFull:
            self.stats.count("busy")
            return PushVerdict(503, "busy")
        self.registry.pushed(subscription, now)
        self.stats.count("accepted")
        return PushVerdict(202, "accepted")

    async def run(self) -> None:
        """Hand queued pushes to the pipeline, ``workers`` at a time, until cancelled."""
        await asyncio.gather(*(self._work() for _ in range(self._workers)))

    async def _work(self) -> None:
        while True:
            feed, body, content_type, received = await self._queue.get()
            try:
                await self._deliver(feed, body, content_type, received)
            except Exception as exc:  # one push's bug must not stop the others
                error = error_text(exc)
                log.exception("websub.push.crashed", feed_url=feed.url, error=error, hint="a bug: please report it")
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued push went through the pipeline."""
        await self._queue.join()
