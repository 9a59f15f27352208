"""A consumer-group member (monitor/adapters/group.py) on the real broker: leaving in the
middle of a rebalance."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from monitor.adapters.group import GroupMember
from monitor.adapters.kafka import KafkaPublisher
from monitor.settings import KafkaSettings
from tests.support import until

SESSION_TIMEOUT = 6.0


async def test_a_member_stopped_while_the_broker_holds_its_rejoin_leaves_within_its_wait(broker) -> None:
    """The broker holds a rejoining member's JoinGroup until every member has joined (Tansu
    about half the session timeout; Apache Kafka up to the session timeout when a member is
    slow): a stop gives the rebalance ``rebalance_wait`` seconds, then leaves without it."""
    topic, group = f"group-{uuid.uuid4().hex[:8]}", f"members-{uuid.uuid4().hex[:8]}"
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, enable_idempotence="false", topic_partitions=2)
    publisher = KafkaPublisher(settings, broker.bootstrap_servers)
    await publisher.start()
    try:
        await publisher.ensure_topics([topic])
    finally:
        await publisher.stop()
    rejoining = asyncio.Event()

    async def nothing(_partitions: set[int]) -> None:
        return None

    async def revoked(partitions: set[int]) -> None:
        if partitions:
            rejoining.set()

    def member(on_revoked) -> GroupMember:
        return GroupMember(settings, broker.bootstrap_servers, topic=topic, group=group, session_timeout=SESSION_TIMEOUT,
                           on_assigned=nothing, on_revoked=on_revoked)  # fmt: skip

    async def consume(m: GroupMember, stop: asyncio.Event) -> None:
        while not stop.is_set():
            async with m.batch(0.2, until=stop):
                pass

    first, second = member(revoked), member(nothing)
    first_stop, second_stop = asyncio.Event(), asyncio.Event()
    await first.start()
    tasks = [asyncio.create_task(consume(first, first_stop))]
    try:
        await until(lambda: first.owned == {0, 1}, timeout=30, what="the first member's assignment")
        # Started aside: aiokafka's start returns once the join it starts is over.
        tasks.append(asyncio.create_task(second.start()))
        await asyncio.wait_for(rejoining.wait(), 30)
        # Its revocation done, the first member's JoinGroup is now held by the broker.
        assert first.rebalancing.is_set()
        started = time.monotonic()
        first_stop.set()
        await first.stop(rebalance_wait=0.5)
        stopped = time.monotonic() - started
        assert stopped < SESSION_TIMEOUT / 4, f"the stop took {stopped:.1f}s"
        # Tansu keeps the member in the generation its JoinGroup was held for: the other gets
        # its partitions after the session timeout, as after a kill (docs/scaling.md); not waited for here.
    finally:
        first_stop.set()
        second_stop.set()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await second.stop(rebalance_wait=0.0)


async def test_a_stop_ends_a_batch_waiting_for_an_assignment_callback(broker) -> None:
    """An assignment callback holds the batch lock while it waits (for a broker gone down,
    say): a stop still ends the batch at once, with no records, though the callback goes on."""
    topic, group = f"group-{uuid.uuid4().hex[:8]}", f"members-{uuid.uuid4().hex[:8]}"
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, enable_idempotence="false", topic_partitions=2)
    publisher = KafkaPublisher(settings, broker.bootstrap_servers)
    await publisher.start()
    try:
        await publisher.ensure_topics([topic])
    finally:
        await publisher.stop()
    assigning, never = asyncio.Event(), asyncio.Event()

    async def nothing(_partitions: set[int]) -> None:
        return None

    async def assigned(_partitions: set[int]) -> None:
        assigning.set()
        await never.wait()  # a callback that does not end while the test runs

    def member(on_assigned) -> GroupMember:
        return GroupMember(settings, broker.bootstrap_servers, topic=topic, group=group, session_timeout=SESSION_TIMEOUT,
                           on_assigned=on_assigned, on_revoked=nothing)  # fmt: skip

    first = member(assigned)
    stop = asyncio.Event()
    starting = asyncio.create_task(first.start())
    try:
        await asyncio.wait_for(assigning.wait(), 30)
        # The fetch (0.1 s) ends before the stop: the batch then waits for the callback's lock.
        asyncio.get_running_loop().call_later(0.5, stop.set)
        started = time.monotonic()

        async def one_batch() -> list[object]:
            async with first.batch(0.1, until=stop) as records:
                return records

        assert await asyncio.wait_for(one_batch(), 10) == []
        assert not never.is_set() and time.monotonic() - started < SESSION_TIMEOUT / 4
    finally:
        never.set()
        stop.set()
        await asyncio.gather(starting, return_exceptions=True)
        await first.stop(rebalance_wait=0.0)


async def test_a_member_stopped_before_its_first_assignment_leaves_within_its_wait(broker) -> None:
    """The first join can take long (here the other member's revocation does not end): the
    start does not wait for it, and a stop meanwhile is a stop during a rebalance."""
    topic, group = f"group-{uuid.uuid4().hex[:8]}", f"members-{uuid.uuid4().hex[:8]}"
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, enable_idempotence="false", topic_partitions=2)
    publisher = KafkaPublisher(settings, broker.bootstrap_servers)
    await publisher.start()
    try:
        await publisher.ensure_topics([topic])
    finally:
        await publisher.stop()
    revoking, never = asyncio.Event(), asyncio.Event()

    async def nothing(_partitions: set[int]) -> None:
        return None

    async def revoked(partitions: set[int]) -> None:
        if partitions:
            revoking.set()
            await never.wait()  # a hand-over that does not end while the test runs

    def member(on_revoked) -> GroupMember:
        return GroupMember(settings, broker.bootstrap_servers, topic=topic, group=group, session_timeout=SESSION_TIMEOUT,
                           on_assigned=nothing, on_revoked=on_revoked)  # fmt: skip

    async def consume(m: GroupMember, stop: asyncio.Event) -> None:
        while not stop.is_set():
            async with m.batch(0.2, until=stop):
                pass

    first, second = member(revoked), member(nothing)
    first_stop, second_stop = asyncio.Event(), asyncio.Event()
    await first.start()
    tasks = [asyncio.create_task(consume(first, first_stop))]
    try:
        await until(lambda: first.owned == {0, 1}, timeout=30, what="the first member's assignment")
        started = time.monotonic()
        await asyncio.wait_for(second.start(), 10)
        tasks.append(asyncio.create_task(consume(second, second_stop)))
        await asyncio.wait_for(revoking.wait(), 30)
        assert second.rebalancing.is_set() and not second.owned
        second_stop.set()
        await asyncio.wait_for(second.stop(rebalance_wait=0.5), 20)
        stopped = time.monotonic() - started
        assert stopped < SESSION_TIMEOUT / 2, f"the start and stop took {stopped:.1f}s"
    finally:
        never.set()
        first_stop.set()
        second_stop.set()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await first.stop(rebalance_wait=0.0)
