"""``news-monitor signals`` with ``[signals] source = "alerts"`` (matchers of a release that
publishes no sightings): the detectors as a consumer of the alert topics, through the real broker.

Alerts are produced with back-dated detection times (the controllable clock of a replay):
a week at one alert an hour, then a burst of them, as several matchers would publish them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.adapters.kafka import KafkaPublisher
from monitor.app.signals import SignalsProcess
from monitor.delivery.records import alert_record
from monitor.model import Alert, Hit, alert_id_for
from tests.support import make_settings, read_topic, until, validate_signal

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CLOCK = NOW.timestamp()


def _alert(rule_id: str, topic: str, n: int, at: datetime) -> Alert:
    article_id = f"urn:{rule_id}:{n}"
    return Alert(
        alert_id=alert_id_for(rule_id, article_id), rule_id=rule_id, topic=topic, severity="high", tags=("t",),
        article_id=article_id, url=f"https://www.outlet{n % 7}.com/{n}", title=f"item {n}", published=at,
        feed_url="https://feeds.example.org/rss", matches=(Hit("quake", "title", 0, 5, "quake"),), snippet="quake",
        detected_at=at, ruleset_version="v", outlet=f"outlet{n % 7}.com",
    )  # fmt: skip


async def _produce(publisher: KafkaPublisher, alerts: list[Alert]) -> None:
    for alert in alerts:
        await publisher.publish(alert_record(alert))


async def _until_seen(process: SignalsProcess, rule_id: str, at: datetime) -> None:
    def seen() -> bool:
        spike = process.signals.spikes.get(rule_id) if process.signals else None
        return spike is not None and spike.latest >= at.timestamp()

    await until(seen, timeout=30.0, what=f"the consumer to count {rule_id} up to {at}")


async def test_a_week_at_one_an_hour_then_twelve_in_an_hour_spikes_once_across_a_restart(broker, tmp_path: Path) -> None:
    word = uuid.uuid4().hex[:8]
    loud, quiet = f"loud-{word}", f"quiet-{word}"
    rules = tmp_path / "rules.yaml"
    block = "    spike: {window: 1h, baseline: 7d, factor: 3, min_count: 5}\n"
    rules.write_text(
        f"rules:\n  - id: {loud}\n    query: quake\n    topic: alerts.{loud}\n{block}"
        f"  - id: {quiet}\n    query: quake\n    topic: alerts.{quiet}\n{block}"
    )
    settings = make_settings(tmp_path, broker.bootstrap_servers, rules=[rules])
    options = dataclasses.replace(
        settings.signals, group=f"signals-{word}", state_dir=str(tmp_path / "signals"), from_beginning=True, source="alerts"
    )
    settings = dataclasses.replace(settings, signals=options)
    publisher = KafkaPublisher(settings.kafka, broker.bootstrap_servers)
    await publisher.start()
    try:
        week = [NOW - timedelta(hours=168 - h) for h in range(169)]
        await _produce(publisher, [_alert(r, f"alerts.{r}", h, at) for r in (loud, quiet) for h, at in enumerate(week)])
        first = SignalsProcess(settings, clock=lambda: CLOCK)
        running = asyncio.create_task(first.run(handle_signals=False))
        await _until_seen(first, loud, week[-1])
        await _until_seen(first, quiet, week[-1])
        first.stop()
        assert await running == 0 and first.published == 0

        # A restart: the baseline comes back from the state store, offsets from the group.
        hour = [NOW + timedelta(minutes=5 * i) for i in range(12)]
        await _produce(publisher, [_alert(loud, f"alerts.{loud}", 1000 + i, at) for i, at in enumerate(hour)])
        await _produce(publisher, [_alert(quiet, f"alerts.{quiet}", 1000 + i, at) for i, at in enumerate(hour[:3])])
        second = SignalsProcess(settings, clock=lambda: CLOCK + 3600)
        running = asyncio.create_task(second.run(handle_signals=False))
        await _until_seen(second, loud, hour[-1])
        await _until_seen(second, quiet, hour[2])
        second.stop()
        assert await running == 0
    finally:
        await publisher.stop()

    spikes = [orjson.loads(r.value) for r in await read_topic(broker.bootstrap_servers, f"alerts.{loud}.signals", idle=0.5)]
    for spike in spikes:
        validate_signal(spike)
    assert [(s["kind"], s["rule_id"]) for s in spikes] == [("spike", loud)]
    spike: dict[str, Any] = spikes[0]
    assert spike["severity"] == "high" and spike["tags"] == ["t"]
    assert 0.9 <= spike["baseline"] <= 1.1 and spike["ratio"] >= 3 and spike["counts"]["articles"] >= 5
    assert await read_topic(broker.bootstrap_servers, f"alerts.{quiet}.signals", idle=0.5) == []
