"""The poller's WebSub subscriptions on Kafka: a
:class:`~monitor.websub.subscriptions.SubscriptionStore` over the compacted topic
``[cluster] websub_topic`` (records in :mod:`monitor.cluster.websub_state`), co-partitioned
with the feeds topic, so a feed's subscription moves with the feed.

:meth:`KafkaSubscriptionStore.restore` reads the partitions a poller was given;
:meth:`~KafkaSubscriptionStore.load_subscriptions` hands the subscriber those whose feed
the poller has read from the feeds topic by then (the rest wait for their feed);
:meth:`~KafkaSubscriptionStore.save_subscription` writes a subscription to its feed's
partition, and returns once Kafka acknowledged it; a subscription whose feed is not this
poller's any more is not written, and a delete is a tombstone written only when the
subscription this store knows for the feed has the caller's token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from monitor.adapters.changelog import read_latest
from monitor.adapters.kafka import KafkaPublisher
from monitor.cluster.websub_state import subscription_from_record, subscription_to_value
from monitor.log import get_logger
from monitor.model import Record
from monitor.settings import KafkaSettings
from monitor.websub.subscriptions import Subscription

__all__ = ["KafkaSubscriptionStore"]

log = get_logger("websub")


class KafkaSubscriptionStore:
    """Subscriptions on the WebSub topic (see the module docstring)."""

    def __init__(
        self,
        publisher: KafkaPublisher,
        settings: KafkaSettings,
        bootstrap_servers: str,
        topic: str,
        *,
        owner: str,
        partition_of: Callable[[str], int | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._publisher = publisher
        self._settings = settings
        self._bootstrap = bootstrap_servers
        self.topic = topic
        self.owner = owner
        #: The partition a feed of this poller is written to (None: not this poller's feed).
        self._partition_of = partition_of
        self._clock = clock
        #: Feed url -> (partition if known, subscription) restored or kept, not yet given to the subscriber.
        self.waiting: dict[str, tuple[int | None, Subscription]] = {}
        #: Feed url -> the token of its subscription on the topic, as far as this poller knows.
        self._tokens: dict[str, str] = {}

    async def restore(self, partitions: Iterable[int], timeout: float = 60.0) -> int:
        """Read ``partitions`` to their end; their subscriptions wait for their feeds. A
        malformed record is logged and passed over. BrokerError when the end cannot be reached."""
        partitions = set(partitions)

        def malformed(record: Any, exc: ValueError) -> None:
            log.warning(
                "websub.state.malformed",
                topic=self.topic, partition=record.partition, offset=record.offset, reason=str(exc),
                feed_url=record.key.decode("utf-8", "replace") if record.key else "",
                hint="passed over: the feed goes on from the record before it, or finds its hub again",
            )

        found = await read_latest(
            self._publisher, self._settings, self._bootstrap, self.topic, partitions, _decode, malformed, timeout=timeout
        )
        for url, restored in found.items():
            self.waiting[url] = (None, restored)
            self._tokens[url] = restored.token
        return len(found)

    def park(self, subscriptions: Iterable[Subscription], partitions: dict[str, int]) -> None:
        """Keep released subscriptions (their partitions were revoked) until the next assignment says whether they came back."""
        for subscription in subscriptions:
            partition = partitions.get(subscription.feed_url)
            if partition is not None:
                self.waiting[subscription.feed_url] = (partition, subscription)

    def keep_only(self, partitions: set[int]) -> None:
        """Drop what waits for partitions this poller was not given (and restored subscriptions
        whose feed never came: a feed removed while no poller owned it; the hub's lease ends)."""
        for url, (partition, _subscription) in list(self.waiting.items()):
            if partition not in partitions:
                del self.waiting[url]
                self._tokens.pop(url, None)

    # -- SubscriptionStore --------------------------------------------------------------

    async def load_subscriptions(self) -> list[Subscription]:
        """The waiting subscriptions whose feed this poller polls now."""
        ready = [subscription for url, (_p, subscription) in self.waiting.items() if self._partition_of(url) is not None]
        for subscription in ready:
            del self.waiting[subscription.feed_url]
        return ready

    async def save_subscription(self, subscription: Subscription) -> None:
        """Write ``subscription`` (PublishError if Kafka refuses it); nothing if its feed moved away."""
        partition = self._partition_of(subscription.feed_url)
        if partition is None:
            return
        value = subscription_to_value(subscription, owner=self.owner, written_at=self._clock())
        await self._publisher.publish(self._record(subscription.feed_url, value), partition=partition)
        self._tokens[subscription.feed_url] = subscription.token

    async def delete_subscription(self, feed_url: str, token: str) -> None:
        """A tombstone for ``feed_url``, if its subscription here is still the one with ``token``."""
        partition = self._partition_of(feed_url)
        if partition is None or self._tokens.get(feed_url) != token:
            return
        await self._publisher.publish(self._record(feed_url, b""), partition=partition, tombstone=True)
        del self._tokens[feed_url]

    def _record(self, feed_url: str, value: bytes) -> Record:
        return Record("", feed_url, self.topic, feed_url.encode("utf-8"), value, ())


def _decode(key: bytes | None, value: bytes) -> Subscription:
    return subscription_from_record(key, value).subscription
