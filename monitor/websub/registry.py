"""Every push subscription of one process, by feed and by token, and what the pipeline,
the poller, the listener and the status read of them.

The :class:`~monitor.websub.subscriber.Subscriber` changes subscriptions; the
:class:`Registry` holds them, tells the listeners (the poller) when a feed's
subscription turns active or stops being so, and keeps the push counts to write back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from monitor.model import Feed
from monitor.websub.subscriptions import ACTIVE, NONE, PUSH_STATES, Subscription

__all__ = ["Registry", "describe"]


class Registry:
    """See the module docstring."""

    def __init__(self, *, fallback_interval: float, clock: Callable[[], float]) -> None:
        self.fallback_interval = fallback_interval
        self.clock = clock
        #: The feeds of this process, by url (those the subscriber follows).
        self.feeds: dict[str, Feed] = {}
        #: Feed url -> its subscription.
        self.by_feed: dict[str, Subscription] = {}
        self._by_token: dict[str, Subscription] = {}
        #: Feeds whose push counts changed since the last write-back.
        self._dirty: set[str] = set()
        #: Called with a feed url when its subscription turns active (True) or stops being so (False).
        self.listeners: list[Callable[[str, bool], None]] = []

    def add(self, subscription: Subscription) -> None:
        """Hold ``subscription``, in place of its feed's previous one (whose token is forgotten)."""
        previous = self.by_feed.get(subscription.feed_url)
        if previous is not None:
            self._by_token.pop(previous.token, None)
        self.by_feed[subscription.feed_url] = subscription
        self._by_token[subscription.token] = subscription

    def remove(self, subscription: Subscription) -> None:
        """Forget ``subscription`` (its pushes and verifications are 404 from now on)."""
        if subscription.state == ACTIVE:
            self._tell(subscription.feed_url, active=False)
        if self.by_feed.get(subscription.feed_url) is subscription:
            del self.by_feed[subscription.feed_url]
        self._by_token.pop(subscription.token, None)

    def held(self, subscription: Subscription) -> bool:
        """Whether ``subscription`` is still its feed's (not removed or replaced)."""
        return self.by_feed.get(subscription.feed_url) is subscription

    def for_token(self, token: str) -> Subscription | None:
        return self._by_token.get(token)

    def set_state(self, subscription: Subscription, state: str, error: str | None) -> None:
        """Move ``subscription`` to ``state`` with ``error`` as its last error; listeners hear of active changes."""
        was_active = subscription.state == ACTIVE
        subscription.state, subscription.last_error, subscription.updated_at = state, error, self.clock()
        if was_active != (state == ACTIVE):
            self._tell(subscription.feed_url, active=state == ACTIVE)

    def _tell(self, url: str, *, active: bool) -> None:
        for listener in self.listeners:
            listener(url, active)

    def push_interval(self, url: str) -> float | None:
        """The polling interval of a feed whose subscription is active (None: poll as usual)."""
        subscription = self.by_feed.get(url)
        return self.fallback_interval if subscription is not None and subscription.state == ACTIVE else None

    def pushed(self, subscription: Subscription, now: float) -> None:
        """Count a push accepted for ``subscription`` (written back by :meth:`take_dirty`'s caller)."""
        subscription.pushes += 1
        subscription.last_push_at = now
        self._dirty.add(subscription.feed_url)

    def take_dirty(self) -> Iterable[Subscription]:
        """The subscriptions whose push counts changed since the last call."""
        dirty, self._dirty = self._dirty, set()
        return [self.by_feed[url] for url in dirty if url in self.by_feed]

    def counts(self) -> Counter[str]:
        """Feeds by push state (every state present, ``none`` for feeds without a subscription)."""
        counts: Counter[str] = Counter(dict.fromkeys(PUSH_STATES, 0))
        counts.update(s.state for s in self.by_feed.values())
        counts[NONE] = sum(1 for url in self.feeds if url not in self.by_feed)
        return counts

    def describe(self, url: str) -> dict[str, object]:
        """A feed's push state as the status page, ``status.json`` and ``news-monitor status`` show it."""
        subscription = self.by_feed.get(url)
        if subscription is None:
            return {"state": NONE, "until": None, "last_push": None, "pushes": 0, "hub": None, "error": None}
        return describe(subscription)


def describe(subscription: Subscription) -> dict[str, object]:
    """One subscription as people see it: its state, active until when, its last push, its hub and
    last error (never its token or secret)."""
    return {
        "state": subscription.state,
        "until": subscription.expires_at if subscription.state == ACTIVE else None,
        "last_push": subscription.last_push_at,
        "pushes": subscription.pushes,
        "hub": subscription.hub,
        "error": subscription.last_error,
    }
