"""A member of a Kafka consumer group for the roles of ``run --role`` (docs/scaling.md).

The group shares a topic's partitions among the members and moves them when a member
joins, leaves or dies (unheard for ``session_timeout``). :class:`GroupMember` adds what
a role needs on top of aiokafka's consumer:

* batches handled under a lock that a rebalance waits for, so partitions never move in
  the middle of a batch, and records of partitions taken away meanwhile are dropped
  (their new owner reads them from the last committed offset);
* ``on_assigned`` / ``on_revoked`` callbacks run under the same lock (the role restores
  or flushes the state of those partitions there);
* offsets committed only when the role says so (:meth:`commit`), or every partition read
  from its beginning on each assignment (``from_beginning``: the pollers, which commit nothing).

aiokafka logs an exception raised by a rebalance callback and carries on as if the
callback had worked. A role must not work on partitions whose state it could not
restore, so a failing callback is kept in :attr:`GroupMember.failure` and
:attr:`GroupMember.failed` is set: the role stops the process (its partitions then go to
the other members, which can try again).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import TopicPartition

from monitor.adapters.kafka import connection_options
from monitor.errors import BrokerError
from monitor.log import get_logger
from monitor.settings import KafkaSettings

__all__ = ["GroupMember"]

log = get_logger("kafka")

#: Called with the partition numbers assigned or revoked.
PartitionsCallback = Callable[[set[int]], Awaitable[None]]


class GroupMember:
    """One member of ``group`` on ``topic`` (see the module docstring)."""

    def __init__(
        self,
        settings: KafkaSettings,
        bootstrap_servers: str,
        *,
        topic: str,
        group: str,
        session_timeout: float,
        on_assigned: PartitionsCallback,
        on_revoked: PartitionsCallback,
        max_records: int = 500,
        client_id: str | None = None,
        from_beginning: bool = False,
    ) -> None:
        self.topic = topic
        self.group = group
        session_ms = int(session_timeout * 1000)
        options = connection_options(settings, bootstrap_servers)
        if client_id:
            options["client_id"] = client_id
        self._consumer = AIOKafkaConsumer(
            topic,
            **options,
            group_id=group,
            enable_auto_commit=False,
            # A new group reads what was published before it existed (pollers may start first).
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            # A third of the session at most (Kafka's advice), at least every second.
            heartbeat_interval_ms=max(100, min(1000, session_ms // 3)),
        )
        self._consumer.subscribe([topic], listener=_Listener(self))
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        #: Read every partition from its beginning on each assignment (a member that commits nothing).
        self._from_beginning = from_beginning
        self._max_records = max_records
        #: Held while a batch is handled and while a rebalance callback runs.
        self._lock = asyncio.Lock()
        #: The partitions this member owns now.
        self.owned: set[int] = set()
        self.rebalances = 0
        #: The exception a rebalance callback raised (the role must stop), else None.
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()

    async def start(self) -> None:
        """Connect and subscribe (the first assignment comes with the first :meth:`batch`)."""
        try:
            await self._consumer.start()
        except KafkaError as exc:
            await self._consumer.stop()
            raise BrokerError(f"cannot join consumer group {self.group} on {self.topic}: {type(exc).__name__}: {exc}") from exc

    async def stop(self) -> None:
        """Leave the group (its partitions move to the other members at once); nothing is committed here."""
        await self._consumer.stop()

    @asynccontextmanager
    async def batch(self, timeout: float = 1.0) -> AsyncIterator[list[Any]]:
        """The next records of owned partitions (empty after ``timeout`` s without any),
        handled inside the ``async with``: a rebalance waits until it ends."""
        fetched = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=self._max_records)
        async with self._lock:
            yield [record for tp, records in fetched.items() if tp.partition in self.owned for record in records]

    async def commit(self, offsets: Mapping[int, int]) -> bool:
        """Commit ``partition -> next offset to read`` (call it inside :meth:`batch`);
        False, logged, when the group has moved on without this member."""
        if not offsets:
            return True
        try:
            await self._consumer.commit({TopicPartition(self.topic, p): offset for p, offset in offsets.items()})
        except CommitFailedError as exc:
            log.warning("group.commit.failed", group=self.group, error=str(exc), hint="the partitions' new owner reads these records again")
            return False
        return True

    async def _changed(self, partitions: set[int], *, assigned: bool) -> None:
        callback = self._on_assigned if assigned else self._on_revoked
        async with self._lock:
            if assigned:
                self.rebalances += 1
            else:
                self.owned -= partitions
            try:
                await callback(partitions)
            except Exception as exc:  # aiokafka would log it and carry on: the role must stop instead
                log.exception("group.rebalance.failed", group=self.group, assigned=assigned, partitions=sorted(partitions), error=str(exc))
                self.failure = exc
                self.failed.set()
                return
            if assigned:
                self.owned = set(partitions)
                if self._from_beginning and partitions:
                    await self._consumer.seek_to_beginning(*(TopicPartition(self.topic, p) for p in sorted(partitions)))


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, member: GroupMember) -> None:
        self._member = member

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._member._changed({tp.partition for tp in revoked}, assigned=False)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._member._changed({tp.partition for tp in assigned}, assigned=True)
