"""Deleting acknowledged records from the outbox, against the real broker: the deletions
keep pace with Kafka's acknowledgements, so a crash sends few records again."""

from __future__ import annotations

import uuid

import pytest

from monitor.adapters.kafka import KafkaPublisher
from monitor.adapters.store import AsyncStore
from monitor.delivery import Delivery
from monitor.model import Record
from tests.support import make_settings, read_topic

pytestmark = pytest.mark.integration


async def test_acknowledged_records_leave_the_outbox_in_few_transactions(broker, tmp_path):
    # One transaction per record fell behind the broker's acknowledgements (~300 deleted a
    # second): a daemon SIGKILLed 0.5 s into a batch of 3,000 alerts had deleted 265 rows
    # of the ~2,250 Kafka had taken, and the restart published ~2,000 of them again.
    run = uuid.uuid4().hex[:8]
    topic = f"alerts.acks.{run}"
    count = 600
    settings = make_settings(tmp_path, broker.bootstrap_servers, overrides={"kafka": {"enable_idempotence": "false"}})
    store = AsyncStore.open(settings.state_dir)
    await store.enqueue([Record(f"{run}-{n}", f"urn:{run}:{n % 200}", topic, b"k%d" % n, b"{}", ()) for n in range(count)])
    commits = 0
    committed = store.sync._committed

    def counting() -> None:
        nonlocal commits
        commits += 1
        committed()

    store.sync._committed = counting  # type: ignore[method-assign]
    publisher = KafkaPublisher(settings.kafka, broker.bootstrap_servers)
    await publisher.start()
    try:
        delivery = Delivery(publisher, store, dead_letter_topic=f"dead-{run}")
        assert await delivery.start() == count
        assert await delivery.wait_idle(30)
        await delivery.stop(1)
        assert delivery.stats.published == count and await store.pending_count() == 0
    finally:
        await publisher.stop()
        await store.close()
    print(f"{commits} transactions for {count} acknowledgements")
    assert commits <= count // 5, f"{commits} transactions to delete {count} acknowledged records"
    assert len(await read_topic(broker.bootstrap_servers, topic, until=lambda rs: len(rs) >= count)) == count
