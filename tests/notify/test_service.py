"""``news-monitor notify`` end to end on loopback: the real broker, a real webhook (aiohttp,
through Apprise's ``json://``) and a real SMTP server (aiosmtpd, through ``mailto://``)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from tests.notify.support import (
    FakeClock,
    MailServer,
    Webhook,
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


@pytest.fixture
async def mail():
    server = await MailServer().start()
    try:
        yield server
    finally:
        await server.stop()


def _count(process, family: str, destination: str) -> float:
    return process.metrics.value(family, destination)


async def test_webhook_and_email_get_each_matching_alert_once_and_bad_records_are_skipped(broker, webhook, mail, tmp_path):
    prefix = unique_prefix()
    topic = f"{prefix}.sanctions"
    await create_topics(broker.bootstrap_servers, [topic], partitions=3)
    records = [alert_value(n, severity="high" if n % 2 else "low", tag=prefix) for n in range(6)]
    duplicate = records[0]
    bad = [(b"k", b"not json at all", ()), (b"k", orjson.dumps({"schema_version": 9}), ()), (b"k", b"", ())]
    await produce(broker.bootstrap_servers, topic, [*records[:3], *bad, duplicate, *records[3:]])
    settings = notify_settings(tmp_path, broker.bootstrap_servers, prefix, [
        {"name": "hook", "url": webhook.url()},
        {"name": "mail", "url": mail.url(), "min_severity": "high", "rules": ["sanc*"]},
        {"name": "other-rules", "url": webhook.url("other"), "rules": ["summit"]},
    ])  # fmt: skip
    async with running(settings) as process:
        await wait_until(lambda: len(webhook.messages) >= 6 and len(mail.messages) >= 3, what="6 webhook messages, 3 emails")
        await wait_until(lambda: process.metrics.registry.get_sample_value("news_monitor_notify_records_total") == 10)
        await asyncio.sleep(0.3)  # anything more would be a duplicate: give it the chance to show
        assert sorted(webhook.titles()) == sorted(
            f"[{'high' if n % 2 else 'low'}] sanctions: Story {n} {prefix}" for n in range(6)
        )
        assert _count(process, "duplicates", "hook") == 1
        skipped = {
            reason: process.metrics.registry.get_sample_value("news_monitor_notify_skipped_total", {"reason": reason})
            for reason in ("not_json", "unsupported_version", "empty")
        }
        assert skipped == {"not_json": 1, "unsupported_version": 1, "empty": 1}
    # Plain text for a JSON webhook: the feed's markup arrives as text, not as markup.
    assert any("Snippet of story 1 <b>bold</b>" in body for body in webhook.bodies())
    assert "Read the article" not in webhook.bodies()[0] and "https://example.net/world/story-" in webhook.bodies()[0]
    # Email: only the high ones, as HTML from Markdown, the feed's markup escaped.
    assert sorted(m["Subject"] for m in mail.messages) == sorted(f"[high] sanctions: Story {n} {prefix}" for n in (1, 3, 5))
    html = (
        next(part for part in mail.messages[0].walk() if part.get_content_type() == "text/html").get_payload(decode=True).decode()
    )
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html
    assert '<a href="https://example.net/world/story-' in html
    assert not webhook.bodies("other")


async def test_a_destination_failing_three_times_then_recovering_gets_each_alert_once(broker, webhook, tmp_path):
    prefix = unique_prefix()
    topic = f"{prefix}.sanctions"
    await create_topics(broker.bootstrap_servers, [topic])
    broken = await Webhook().start()
    broken.fail_always = True
    webhook.fail_first = 3
    try:
        await produce(broker.bootstrap_servers, topic, [alert_value(n, tag=prefix) for n in range(3)])
        settings = notify_settings(
            tmp_path, broker.bootstrap_servers, prefix,
            [{"name": "flaky", "url": webhook.url()}, {"name": "down", "url": broken.url()}],
            max_attempts=4, concurrency=1, dead_letter_topic=f"{prefix}-dead",
        )  # fmt: skip
        async with running(settings) as process:
            await wait_until(lambda: len(webhook.messages) == 3, what="3 messages at the recovered webhook")
            await wait_until(lambda: _count(process, "dead_lettered", "down") == 3, what="3 dead letters of the broken one")
            assert _count(process, "failed", "flaky") == 3 and _count(process, "retried", "flaky") == 3
            assert _count(process, "sent", "flaky") == 3
            assert _count(process, "failed", "down") == 12 and _count(process, "sent", "down") == 0
        assert sorted(webhook.titles()) == sorted(f"[medium] sanctions: Story {n} {prefix}" for n in range(3))
        letters = await read_topic(broker.bootstrap_servers, f"{prefix}-dead", until=lambda r: len(r) >= 3)
        assert len(letters) == 3
        headers = dict(letters[0].headers)
        assert headers["notify_destination"] == b"down" and headers["dlq_original_topic"] == topic.encode()
        assert b"failed 4 times" in headers["dlq_reason"] and b"500" in headers["dlq_reason"]
        assert orjson.loads(letters[0].value)["schema_version"] == 1
    finally:
        await broken.stop()


async def test_a_15_minute_digest_sends_one_message_with_every_alert_of_the_period(broker, webhook, tmp_path):
    prefix = unique_prefix()
    topic = f"{prefix}.sanctions"
    await create_topics(broker.bootstrap_servers, [topic])
    clock = FakeClock(datetime(2026, 12, 1, 10, 3, tzinfo=ZoneInfo("UTC")).timestamp())
    settings = notify_settings(
        tmp_path, broker.bootstrap_servers, prefix, [{"name": "digest", "url": webhook.url(), "digest": "15m"}]
    )
    async with running(settings, clock) as process:
        await produce(
            broker.bootstrap_servers, topic, [alert_value(n, tag=prefix, story_id="s1" if n < 2 else None) for n in range(4)]
        )
        await wait_until(lambda: _count(process, "queued", "digest") == 4, what="4 alerts queued")
        clock.advance_to(clock.now() + 11 * 60)  # 10:14: still in the period
        await asyncio.sleep(0.3)
        assert webhook.messages == []
        clock.advance_to(datetime(2026, 12, 1, 10, 15, tzinfo=ZoneInfo("UTC")).timestamp())
        await wait_until(lambda: len(webhook.messages) == 1, what="one digest")
        [digest] = webhook.messages
        assert digest["title"] == "4 alerts: sanctions 4"
        # Two copies of one story share a line.
        assert f"Story 0 {prefix}" in digest["message"] and f"Story 1 {prefix}" not in digest["message"]
        assert "+1 more: example.net" in digest["message"]
        assert all(f"Story {n} {prefix}" in digest["message"] for n in (2, 3))
        assert _count(process, "queued", "digest") == 0 and _count(process, "alerts_sent", "digest") == 4

        await produce(broker.bootstrap_servers, topic, [alert_value(n, tag=prefix) for n in (4, 5)])
        await wait_until(lambda: _count(process, "queued", "digest") == 2, what="2 more queued")
        clock.advance_to(datetime(2026, 12, 1, 10, 30, tzinfo=ZoneInfo("UTC")).timestamp())
        await wait_until(lambda: len(webhook.messages) == 2, what="the second digest")
        assert webhook.messages[1]["title"] == "2 alerts: sanctions 2"


async def test_a_rate_limit_folds_the_excess_into_the_next_digest_and_drops_nothing(broker, webhook, tmp_path):
    prefix = unique_prefix()
    topic = f"{prefix}.sanctions"
    await create_topics(broker.bootstrap_servers, [topic])
    clock = FakeClock(datetime(2026, 12, 1, 9, 0, tzinfo=ZoneInfo("UTC")).timestamp())
    settings = notify_settings(
        tmp_path,
        broker.bootstrap_servers,
        prefix,
        [{"name": "limited", "url": webhook.url(), "rate_limit": "2/1h"}],
        concurrency=1,
    )
    async with running(settings, clock) as process:
        await produce(broker.bootstrap_servers, topic, [alert_value(n, tag=prefix) for n in range(5)])
        await wait_until(lambda: len(webhook.messages) == 2 and _count(process, "queued", "limited") == 3, what="2 sent, 3 held")
        await asyncio.sleep(0.3)
        assert len(webhook.messages) == 2
        clock.advance_to(clock.now() + 3600)
        await wait_until(lambda: len(webhook.messages) == 3, what="the digest of the excess")
        assert webhook.messages[2]["title"] == "3 alerts: sanctions 3"
    mentioned = [
        n for n in range(5) for message in webhook.messages if f"Story {n} {prefix}" in message["title"] + message["message"]
    ]
    assert sorted(mentioned) == [0, 1, 2, 3, 4], "every alert exactly once"


async def test_quiet_hours_hold_alerts_and_deliver_them_as_one_digest_afterwards(broker, webhook, tmp_path):
    prefix = unique_prefix()
    topic = f"{prefix}.sanctions"
    await create_topics(broker.bootstrap_servers, [topic])
    berlin = ZoneInfo("Europe/Berlin")
    clock = FakeClock(datetime(2026, 12, 1, 23, 30, tzinfo=berlin).timestamp())
    destination = {"name": "night", "url": webhook.url(), "quiet_hours": "22:00-07:00", "timezone": "Europe/Berlin"}
    settings = notify_settings(tmp_path, broker.bootstrap_servers, prefix, [destination])
    async with running(settings, clock) as process:
        await produce(broker.bootstrap_servers, topic, [alert_value(n, tag=prefix) for n in range(3)])
        await wait_until(lambda: _count(process, "queued", "night") == 3, what="3 held")
        clock.advance_to(datetime(2026, 12, 2, 6, 59, tzinfo=berlin).timestamp())
        await asyncio.sleep(0.3)
        assert webhook.messages == []
        clock.advance_to(datetime(2026, 12, 2, 7, 0, tzinfo=berlin).timestamp())
        await wait_until(lambda: len(webhook.messages) == 1, what="the morning digest")
        assert webhook.messages[0]["title"] == "3 alerts: sanctions 3"
        await produce(broker.bootstrap_servers, topic, [alert_value(9, tag=prefix)])
        await wait_until(lambda: len(webhook.messages) == 2, what="a daytime alert, alone")
        assert webhook.messages[1]["title"] == f"[medium] sanctions: Story 9 {prefix}"


async def test_an_alert_that_breaks_the_template_gets_the_default_one_and_is_counted(broker, webhook, tmp_path):
    prefix = unique_prefix()
    topic = f"{prefix}.sanctions"
    await create_topics(broker.bootstrap_servers, [topic])
    await produce(broker.bootstrap_servers, topic, [alert_value(1, tag=prefix), alert_value(2, tag=prefix, url=None)])
    destination = {
        "name": "styled",
        "url": webhook.url(),
        "title": "{rule} | {outlet} | {title}",
        "body": "Read: {link}\n{terms}",
    }
    settings = notify_settings(tmp_path, broker.bootstrap_servers, prefix, [destination])
    async with running(settings) as process:
        await wait_until(lambda: len(webhook.messages) == 2, what="2 messages")
        assert _count(process, "template_fallbacks", "styled") == 1
    by_title = {m["title"]: m["message"] for m in webhook.messages}
    assert by_title[f"sanctions | example.net | Story 1 {prefix}"] == "Read: https://example.net/world/story-1\nsanctions"
    # No link: the default template, not "Read: " and nothing.
    assert f"Story 2 {prefix}" in by_title[f"[medium] sanctions: Story 2 {prefix}"]
