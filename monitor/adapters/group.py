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
  from its beginning on each assignment (``from_beginning``: the pollers, which commit nothing);
* a stop that does not wait for a rebalance under way (:meth:`GroupMember.batch` with
  ``until``, :meth:`GroupMember.leave`): a role stopped in one exits within seconds.

aiokafka logs an exception raised by a rebalance callback and carries on as if the
callback had worked. A role must not work on partitions whose state it could not
restore, so a failing callback is kept in :attr:`GroupMember.failure` and
:attr:`GroupMember.failed` is set: the role stops the process (its partitions then go to
the other members, which can try again).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest
from aiokafka.structs import TopicPartition

from monitor.adapters.kafka import connection_options, kafka_error_text
from monitor.errors import BrokerError
from monitor.lifecycle import unless_set
from monitor.log import get_logger
from monitor.settings import KafkaSettings

__all__ = ["REBALANCE_WAIT", "GroupMember"]

log = get_logger("kafka")

#: Seconds a leaving member waits for a rebalance under way to end before it leaves without it (docs/scaling.md).
REBALANCE_WAIT = 5.0

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
        # Subscribed once started: aiokafka's start would otherwise wait for the first
        # assignment, which no stop can cut short (the join goes on in the fetches instead).
        self._consumer = AIOKafkaConsumer(
            **options,
            group_id=group,
            enable_auto_commit=False,
            # A new group reads what was published before it existed (pollers may start first).
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            # A third of the session at most (Kafka's advice), at least every second.
            heartbeat_interval_ms=max(100, min(1000, session_ms // 3)),
        )
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
        #: Set by :meth:`stop`: rebalance callbacks are no longer called.
        self.leaving = False
        #: Set from the revocation that starts a rebalance (or from the start: the first
        #: join) until its assignment ends it.
        self.rebalancing = asyncio.Event()
        self._settled = asyncio.Event()

    async def start(self) -> None:
        """Connect and subscribe: the member joins the group in the background, and its
        first assignment comes during the first :meth:`batch` calls (a stop meanwhile is a
        stop during a rebalance)."""
        try:
            await self._consumer.start()
        except KafkaError as exc:
            await self._consumer.stop()
            raise BrokerError(f"cannot join consumer group {self.group} on {self.topic}: {kafka_error_text(exc)}") from exc
        self.rebalancing.set()
        self._consumer.subscribe([self.topic], listener=_Listener(self))

    def partition_count(self) -> int:
        """The topic's partition count as the member's metadata knows it (0 when it does not)."""
        return len(self._consumer.partitions_for_topic(self.topic) or ())

    async def leave(self, within: float) -> bool:
        """:meth:`stop` within ``within`` s of a stop's deadline (at least 1 s), a rebalance
        under way given at most :data:`REBALANCE_WAIT` s of it; False when the leave did not
        end in time (the group then gives the partitions to the others after
        ``session_timeout``, as after a kill)."""
        try:
            await asyncio.wait_for(self.stop(min(REBALANCE_WAIT, within)), max(1.0, within))
        except TimeoutError:
            return False
        return True

    async def stop(self, rebalance_wait: float = REBALANCE_WAIT) -> None:
        """Leave the group (its partitions move to the other members at once); nothing is
        committed here. From now on the rebalance callbacks are not called: the role wrote
        its state before.

        During a rebalance aiokafka's stop would first see it through: a JoinGroup the
        broker holds until every other member has joined (up to ``session_timeout``; Tansu
        holds it about half of that), then the callbacks. So a rebalance under way gets at
        most ``rebalance_wait`` s to end (then the member leaves its new generation, and
        the others get its partitions at once); past that the member sends its LeaveGroup
        on a connection of its own (the coordinator's is held by the JoinGroup, and a
        broker answers one connection's requests in order) and drops the rebalance."""
        self.leaving = True
        if self.rebalancing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), rebalance_wait)
        if self.rebalancing.is_set():
            log.warning("group.leave.mid_rebalance", group=self.group, waited=rebalance_wait,
                        hint="the rebalance went on longer: this member leaves without it")
            if await self._leave_now():
                await self._drop_rebalance()
        await self._consumer.stop()

    async def _leave_now(self) -> bool:
        """LeaveGroup now, on its own connection; whether the broker took it."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        client = getattr(self._consumer, "_client", None)
        member = getattr(coordinator, "member_id", None)
        node = getattr(coordinator, "coordinator_id", None)
        if client is None or node is None or not member or member == JoinGroupRequest.UNKNOWN_MEMBER_ID:
            return False
        try:
            response = await client.send(node, LeaveGroupRequest(self.group, member))
        except KafkaError as exc:
            log.warning("group.leave.failed", group=self.group, error=kafka_error_text(exc), hint="left when the consumer stops")
            return False
        return getattr(response, "error_code", -1) == 0

    async def _drop_rebalance(self) -> None:
        """After the LeaveGroup: end aiokafka's coordination task (it may wait for a JoinGroup
        answer) and forget the generation, so the consumer's stop neither waits nor leaves again."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        task = getattr(coordinator, "_coordination_task", None)
        if coordinator is None or not isinstance(task, asyncio.Task):
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        coordinator.reset_generation()

    @asynccontextmanager
    async def batch(self, timeout: float = 1.0, until: asyncio.Event | None = None) -> AsyncIterator[list[Any]]:
        """The next records of owned partitions (empty after ``timeout`` s without any),
        handled inside the ``async with``: a rebalance waits until it ends.

        Empty at once when ``until`` is set (a stop): aiokafka's fetch waits for the end of
        a rebalance under way, however long it takes, and so may the lock (a rebalance
        callback holds it, e.g. while the broker is down); the records fetched are then
        dropped (nothing of them is committed)."""
        fetching = self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=self._max_records)
        fetched, records = await unless_set(until, fetching)
        if fetched and (await unless_set(until, self._lock.acquire()))[0]:
            try:
                yield [record for tp, part in (records or {}).items() if tp.partition in self.owned for record in part]
            finally:
                self._lock.release()
            return
        yield []

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
        try:
            await self._call_back(partitions, assigned=assigned)
        finally:
            if assigned:
                self.rebalancing.clear()
                self._settled.set()

    async def _call_back(self, partitions: set[int], *, assigned: bool) -> None:
        callback = self._on_assigned if assigned else self._on_revoked
        if not assigned:
            self._settled.clear()
            self.rebalancing.set()
        if self.leaving:
            # A rebalance that was under way when the member left: the others get the partitions.
            log.info("group.rebalance.skipped", group=self.group, assigned=assigned, partitions=sorted(partitions), reason="leaving")
            self.owned = set()
            return
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
