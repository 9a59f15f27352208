"""``news-monitor notify`` against garbage on its topics and a destination that never answers,
on loopback: records that pass the structural check but carry values no renderer expects
must neither stop the consumer nor hold up the good alerts around them, and a send that
never ends must count as failed."""

from __future__ import annotations

import orjson
import pytest

from monitor.notify.message import Renderer
from tests.notify.support import (
    Trickle,
    alert_value,
    create_topics,
    notify_settings,
    produce,
    running,
    unique_prefix,
    wait_until,
)
from tests.support import read_topic

pytestmark = pytest.mark.integration


def _signal(signal_id: str, **fields: object) -> tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]:
    document = {
        "schema_version": 1, "signal_id": signal_id, "kind": "burst", "rule_id": "sanctions",
        "detected_at": "2026-12-01T08:00:00Z", "counts": {"outlets": 3}, **fields,
    }  # fmt: skip
    return b"k", orjson.dumps(document), (("ce_type", b"news.signal.burst.v1"),)


async def test_garbage_alerts_and_signals_neither_stop_the_consumer_nor_hold_up_good_alerts(broker, webhook, tmp_path):
    prefix = unique_prefix()
    topic = f"{prefix}.sanctions"
    await create_topics(broker.bootstrap_servers, [topic, f"{topic}.signals"])
    _key, value, headers = alert_value(0, tag=prefix)
    unknown_severity = orjson.loads(value) | {"severity": "urgent", "alert_id": "urgent-1"}
    # Structurally broken twice over: the check must not trip on the second problem.
    no_article_matches_true = orjson.dumps({"schema_version": 1, "alert_id": "a", "matches": True})
    await produce(broker.bootstrap_servers, topic, [
        (b"k", orjson.dumps(unknown_severity), headers), (b"k", no_article_matches_true, ()), alert_value(1, tag=prefix),
    ])  # fmt: skip
    await produce(broker.bootstrap_servers, f"{topic}.signals", [
        _signal("outlets-a-number", outlets=3),
        _signal("naive-end", window={"start": "2026-12-01T08:00:00Z", "end": "2026-12-01T08:10:00"}),
    ])  # fmt: skip
    settings = notify_settings(
        tmp_path, broker.bootstrap_servers, prefix,
        [{"name": "each", "url": webhook.url("each"), "kinds": ["alerts", "signals"]}], max_attempts=2,
    )  # fmt: skip
    async with running(settings) as process:
        await wait_until(lambda: len(webhook.messages) == 3, what="the good alert and both signals")
        await produce(broker.bootstrap_servers, topic, [alert_value(2, tag=prefix)])
        await wait_until(lambda: len(webhook.messages) == 4, what="an alert after the garbage")
        skipped = process.metrics.registry.get_sample_value("news_monitor_notify_skipped_total", {"reason": "invalid"})
        assert skipped == 2, "the alert of an unknown severity and the broken one are skipped, not a crash"
        assert process.metrics.value("dead_lettered", "each") == 0
    titles = webhook.titles("each")
    assert f"[medium] sanctions: Story 1 {prefix}" in titles and f"[medium] sanctions: Story 2 {prefix}" in titles
    assert sum(title.startswith("Breaking: sanctions — 3 outlets") for title in titles) == 2


class _FailsOnBombs(Renderer):
    """The destination's renderer, but one that raises on the signal ``bomb`` (a renderer
    bug that a future record could hit)."""

    def signal(self, item):
        if item.key == "signal:bomb":
            raise KeyError("a field the renderer did not expect")
        return super().signal(item)


async def test_an_item_the_renderer_fails_on_is_dead_lettered_at_once_and_the_rest_goes_out(broker, webhook, tmp_path):
    prefix = unique_prefix()
    topic = f"{prefix}.sanctions"
    await create_topics(broker.bootstrap_servers, [topic, f"{topic}.signals"])
    settings = notify_settings(tmp_path, broker.bootstrap_servers, prefix, [
        {"name": "each", "url": webhook.url("each"), "kinds": ["alerts", "signals"]},
        {"name": "digest", "url": webhook.url("digest"), "kinds": ["alerts", "signals"], "digest": "1s"},
    ], dead_letter_topic=f"{prefix}-dead")  # fmt: skip
    async with running(settings) as process:
        assert process.service is not None
        for route in process.service.routes:
            route.renderer = _FailsOnBombs(markdown=route.renderer.markdown)
        await produce(broker.bootstrap_servers, f"{topic}.signals", [_signal("bomb"), _signal("fine")])
        await produce(broker.bootstrap_servers, topic, [alert_value(1, tag=prefix)])
        await wait_until(
            lambda: len(webhook.messages) == 3 and process.metrics.value("dead_lettered", "digest") == 1,
            what="2 messages and a digest, one dead letter each",
        )
        assert process.metrics.value("dead_lettered", "each") == 1
    assert webhook.titles("digest") == ["1 alert, 1 signal: sanctions 2"]
    letters = await read_topic(broker.bootstrap_servers, f"{prefix}-dead", until=lambda r: len(r) >= 2)
    assert {dict(letter.headers)["notify_destination"] for letter in letters} == {b"each", b"digest"}
    assert all(b"cannot be rendered (KeyError" in dict(letter.headers)["dlq_reason"] for letter in letters)


async def test_a_send_that_never_finishes_fails_after_send_timeout_and_is_dead_lettered(broker, webhook, tmp_path):
    prefix = unique_prefix()
    topic = f"{prefix}.sanctions"
    await create_topics(broker.bootstrap_servers, [topic])
    trickle = await Trickle().start()
    try:
        settings = notify_settings(tmp_path, broker.bootstrap_servers, prefix, [
            {"name": "slow", "url": trickle.url()}, {"name": "fine", "url": webhook.url("fine")},
        ], send_timeout=0.5, max_attempts=2, dead_letter_topic=f"{prefix}-dead")  # fmt: skip
        async with running(settings) as process:
            await produce(broker.bootstrap_servers, topic, [alert_value(1, tag=prefix)])
            await wait_until(lambda: process.metrics.value("dead_lettered", "slow") == 1, what="the slow one dead-lettered")
            assert process.metrics.value("failed", "slow") == 2 and trickle.requests == 2
            assert webhook.titles("fine") == [f"[medium] sanctions: Story 1 {prefix}"]
        [letter] = await read_topic(broker.bootstrap_servers, f"{prefix}-dead", until=lambda r: len(r) >= 1)
        assert b"slow did not finish within send_timeout (0.5 s)" in dict(letter.headers)["dlq_reason"]
    finally:
        await trickle.stop()


async def test_entries_an_earlier_version_queued_and_this_one_refuses_are_dead_lettered_not_dropped(broker, webhook, tmp_path):
    """An upgrade: a release that took ce_type news.signal.<kind>.v2 queued such a signal and
    committed its offset; this one refuses it at send. It was deleted without a word (a
    message of its own), or left out of its digest and deleted with it."""
    import time

    from structlog.testing import capture_logs

    from monitor.adapters.notify_store import NotifyStore
    from monitor.notify.service import NewEntry

    prefix = unique_prefix()
    topic = f"{prefix}.sanctions.signals"
    await create_topics(broker.bootstrap_servers, [topic])
    settings = notify_settings(tmp_path, broker.bootstrap_servers, prefix, [
        {"name": "each", "url": webhook.url("each"), "kinds": ["alerts", "signals"]},
        {"name": "digest", "url": webhook.url("digest"), "kinds": ["alerts", "signals"], "digest": "1s"},
    ], dead_letter_topic=f"{prefix}-dead")  # fmt: skip
    _key, v2_value, _headers = _signal("v2-burst")
    v2_headers = (("ce_type", b"news.signal.burst.v2"),)
    _key, fine_value, fine_headers = _signal("fine")

    def entry(destination: str, key: str, offset: int, value: bytes, headers: tuple[tuple[str, bytes], ...]) -> NewEntry:
        return NewEntry(destination, key, destination == "digest", topic, 0, offset, b"k", value, headers)

    store = NotifyStore(settings.state_dir)
    store.enqueue([
        entry("each", "signal:v2-burst", 0, v2_value, v2_headers),
        entry("digest", "signal:v2-burst", 0, v2_value, v2_headers),
        entry("digest", "signal:fine", 1, fine_value, fine_headers),
    ], time.time())  # fmt: skip
    store.close()
    with capture_logs() as logs:
        async with running(settings) as process:
            await wait_until(
                lambda: webhook.titles("digest") and all(process.metrics.value("dead_lettered", d) == 1 for d in ("each", "digest")),
                what="the digest of the good signal, and a dead letter for each destination",
            )
    assert webhook.titles("each") == [] and webhook.titles("digest") == ["1 signal: sanctions 1"]
    refused = [e for e in logs if e["event"] == "notify.entry.refused"]
    assert sorted(e["destination"] for e in refused) == ["digest", "each"]
    assert all(e["key"] == "signal:v2-burst" and e["topic"] == topic and e["offset"] == 0 for e in refused)
    assert all("news.signal.burst.v2" in e["reason"] and f"news-monitor tail {prefix}-dead" in e["hint"] for e in refused)
    letters = await read_topic(broker.bootstrap_servers, f"{prefix}-dead", until=lambda r: len(r) >= 2)
    assert sorted(letter.value for letter in letters) == [v2_value, v2_value]
    assert all(b"queued by an earlier version, refused by this one" in dict(letter.headers)["dlq_reason"] for letter in letters)
