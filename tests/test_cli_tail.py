"""``news-monitor tail`` as an operator runs it, against the real broker."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC

import orjson
import pytest

from monitor.worker import Monitor
from tests.support import SEEDS, FeedServer, make_settings, read_alerts, read_topic

pytestmark = pytest.mark.integration


async def _tail(bootstrap: str, *args: str) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "tail", "--bootstrap-servers", bootstrap, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().splitlines()


async def test_tail_prints_json_lines_table_and_respects_since_and_max(broker, feed_server: FeedServer, tmp_path):
    url = feed_server.serve(f"/tail-{uuid.uuid4().hex[:6]}.rss", (SEEDS / "world-news.rss.xml").read_bytes())
    await Monitor(make_settings(tmp_path, broker.bootstrap_servers, [url])).run(once=True, handle_signals=False)
    ours = await read_alerts(broker.bootstrap_servers, [url], ["alerts.summit"], expect=1)
    assert ours

    lines = await _tail(broker.bootstrap_servers, "alerts.summit", "--from-beginning", "--max", "1", "--timeout", "3")
    assert len(lines) == 1
    assert orjson.loads(lines[0])["topic"] == "alerts.summit"

    table = await _tail(broker.bootstrap_servers, "alerts.summit", "--from-beginning", "--format", "table", "--timeout", "1.5")
    assert table[0].split() == ["detected", "rule", "severity", "title"]
    assert any("summit" in row and "Trump and Putin" in row for row in table[1:])

    later = await _tail(broker.bootstrap_servers, "alerts.summit", "--since", "2999-01-01T00:00:00Z", "--timeout", "1.5")
    assert later == []
    # TIME as for backtest: a duration back from now too (before: "not an ISO-8601 time", exit 2).
    recent = await _tail(broker.bootstrap_servers, "alerts.summit", "--since", "1h", "--timeout", "1.5")
    assert any(orjson.loads(line)["alert_id"] == ours[0]["alert_id"] for line in recent)


async def test_tail_with_group_continues_where_it_stopped(broker, feed_server: FeedServer, tmp_path):
    url = feed_server.serve(f"/tail-{uuid.uuid4().hex[:6]}.rss", (SEEDS / "world-news.rss.xml").read_bytes())
    await Monitor(make_settings(tmp_path, broker.bootstrap_servers, [url])).run(once=True, handle_signals=False)
    topics = ["alerts.summit", "alerts.sanctions", "alerts.arms-control"]
    assert len(await read_alerts(broker.bootstrap_servers, [url], topics, expect=3)) >= 3
    # Other tests publish the same seed alert ids, so count records, not ids.
    total = sum([len(await read_topic(broker.bootstrap_servers, topic, idle=0.5)) for topic in topics])
    group = f"tail-{uuid.uuid4().hex[:8]}"

    first = await _tail(broker.bootstrap_servers, *topics, "--group", group, "--from-beginning", "--max", "2", "--timeout", "10")
    rest = await _tail(broker.bootstrap_servers, *topics, "--group", group, "--from-beginning", "--timeout", "2")

    assert len(first) == 2
    # Committed offsets: the second run starts right after what the first printed.
    assert len(first) + len(rest) == total


async def _tail_both(bootstrap: str, *args: str) -> tuple[int, list[str], list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "tail", "--bootstrap-servers", bootstrap, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, stdout.decode().splitlines(), stderr.decode().splitlines()


def _valid_alert(n: int) -> dict:
    from datetime import datetime

    from monitor.delivery.records import alert_to_dict
    from monitor.model import Alert, Hit, alert_id_for

    return alert_to_dict(
        Alert(
            alert_id=alert_id_for("sanctions", f"urn:tail:{n}"), rule_id="sanctions", topic="alerts.sanctions",
            severity="medium", tags=(), article_id=f"urn:tail:{n}", url=None, title=f"Alert number {n}\x1b[2J",
            published=None, feed_url="https://example.net/feed.xml", matches=(Hit("sanctions", "title", 0, 9, "sanctions"),),
            snippet="", detected_at=datetime(2026, 11, 25, 8, 0, n, tzinfo=UTC), ruleset_version="v",
        )
    )


async def test_tail_reports_every_bad_record_on_stderr_and_keeps_json_lines(broker):
    from aiokafka import AIOKafkaProducer

    from monitor.adapters.kafka import TopicAdmin
    from monitor.settings import KafkaSettings

    topic = f"alerts.tail-bad-{uuid.uuid4().hex[:8]}"
    await TopicAdmin(KafkaSettings(topic_partitions=1), broker.bootstrap_servers).ensure([topic])
    string_article = {**_valid_alert(9), "article": "just a string"}
    values = [
        b"this is not json",
        b"",
        orjson.dumps({**_valid_alert(1), "schema_version": 2}),
        orjson.dumps(_valid_alert(2), option=orjson.OPT_INDENT_2),  # valid, but over several lines
        orjson.dumps(string_article),
        b"[1, 2]",
        orjson.dumps(_valid_alert(3)),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()

    (code, lines, errors), (table_code, table, table_errors) = await asyncio.gather(
        _tail_both(broker.bootstrap_servers, topic, "--from-beginning", "--timeout", "1"),
        _tail_both(broker.bootstrap_servers, topic, "--from-beginning", "--format", "table", "--timeout", "1"),
    )
    assert code == 0
    assert [orjson.loads(line)["article"]["id"] for line in lines] == ["urn:tail:2", "urn:tail:3"], "one JSON object per line"
    assert len(errors) == 5, errors
    for offset, reason in [(0, "not JSON"), (1, "empty value"), (2, "schema_version 2 is not supported"),
                           (4, "article is a string, not an object"), (5, "an array, not an alert object")]:
        assert any(f"skipped {topic} partition 0 offset {offset}: {reason}" in line for line in errors), (offset, errors)

    assert table_code == 0 and len(table_errors) == 5 and not any("Traceback" in line for line in table_errors)
    assert len(table) == 3 and "Alert number 2" in table[1] and "\x1b" not in "".join(table)

    group = f"tail-bad-{uuid.uuid4().hex[:8]}"
    code, table, errors = await _tail_both(broker.bootstrap_servers, topic, "--group", group, "--from-beginning", "--format", "table", "--timeout", "1")
    assert code == 0 and len(table) == 3 and len(errors) == 5
    # The group committed past the bad records too: nothing is left to read or report.
    code, lines, errors = await _tail_both(broker.bootstrap_servers, topic, "--group", group, "--from-beginning", "--timeout", "1")
    assert code == 0 and lines == [] and errors == []


async def test_tail_prints_feed_health_events(broker):
    """docs/operations.md: health changes go to ``[health] topic`` so another service can
    page someone; an operator checks them with ``tail monitor.feed-health``. Every event
    was skipped as 'no alert_id'."""
    from aiokafka import AIOKafkaProducer

    from monitor.adapters.kafka import TopicAdmin
    from monitor.feeds.health import FeedHealth, Transition, health_record
    from monitor.model import Feed
    from monitor.settings import KafkaSettings

    topic = f"monitor.feed-health-{uuid.uuid4().hex[:8]}"
    await TopicAdmin(KafkaSettings(topic_partitions=1), broker.bootstrap_servers).ensure([topic])
    transition = Transition(
        Feed("https://example.org/wire.xml"), "ok", FeedHealth("failing", "3 failed polls in a row"), at=1_796_400_000.0,
        consecutive_errors=3, last_error="https://example.org/wire.xml: HTTP 503 Service Unavailable",
    )
    event = orjson.loads(health_record(transition, topic).value)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    try:
        for value in (orjson.dumps(event), orjson.dumps({**event, "health": 3})):
            await producer.send_and_wait(topic, value, key=b"https://example.org/wire.xml")
    finally:
        await producer.stop()

    (code, lines, errors), (_, table, _) = await asyncio.gather(
        _tail_both(broker.bootstrap_servers, topic, "--from-beginning", "--timeout", "1"),
        _tail_both(broker.bootstrap_servers, topic, "--from-beginning", "--format", "table", "--timeout", "1"),
    )
    assert code == 0 and [orjson.loads(line) for line in lines] == [event]
    assert len(errors) == 1 and "offset 1: health is an integer, not a string" in errors[0], errors
    assert "feed-health" in table[1] and "https://example.org/wire.xml: ok -> failing: 3 failed polls in a row" in table[1]
