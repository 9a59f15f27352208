"""``news-monitor signals`` sending what its outbox holds, through the real broker: a signal
record the broker rejects for good goes to the dead-letter topic, never nowhere."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from monitor.adapters.kafka import KafkaPublisher
from monitor.adapters.store import AsyncStore
from monitor.app.signals import SignalsProcess
from monitor.model import Record
from tests.support import make_settings, read_topic

pytestmark = pytest.mark.integration


async def test_a_signal_record_the_broker_rejects_is_dead_lettered_not_dropped(broker, tmp_path: Path) -> None:
    # An outbox row too large for [kafka] max_request_size (a record an earlier run queued,
    # before the limit was lowered): it was logged, then deleted from the outbox unsent.
    word = uuid.uuid4().hex[:8]
    settings = make_settings(tmp_path, broker.bootstrap_servers)
    kafka = dataclasses.replace(settings.kafka, max_request_size=4096, dead_letter_topic=f"dead-{word}")
    settings = dataclasses.replace(settings, kafka=kafka, signals=dataclasses.replace(settings.signals, source="alerts"))
    value = orjson.dumps({"schema_version": 1, "signal_id": f"sig-{word}", "kind": "burst", "outlets": ["x" * 8000]})
    record = Record(f"sig-{word}", f"sig-{word}", f"alerts.{word}.signals", b"rule", value, (("ce_type", b"news.signal.burst.v1"),))
    store = AsyncStore.open(tmp_path / "signals")
    await store.enqueue([record])
    publisher = KafkaPublisher(settings.kafka, broker.bootstrap_servers)
    await publisher.start()
    try:
        with capture_logs() as logs:
            assert await SignalsProcess(settings)._send(store, publisher, await store.pending())
        assert await store.pending_count() == 0
    finally:
        await publisher.stop()
        await store.close()
    (rejected,) = [e for e in logs if e["event"] == "signals.record.rejected"]
    assert rejected["signal_id"] == f"sig-{word}" and f"news-monitor tail dead-{word}" in rejected["hint"]
    (letter,) = await read_topic(broker.bootstrap_servers, f"dead-{word}", until=lambda r: len(r) >= 1)
    # Too large for the dead-letter topic as well: the stub that names it.
    stub = orjson.loads(letter.value)
    assert stub["dead_letter"] is True and stub["alert_id"] == f"sig-{word}" and stub["original_topic"] == f"alerts.{word}.signals"
    assert dict(letter.headers)["dlq_original_topic"] == f"alerts.{word}.signals".encode()
