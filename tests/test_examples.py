"""The downstream consumer in examples/, run as its users run it, against the real broker."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from monitor.worker import Monitor
from tests.support import ROOT, FeedServer, make_settings, read_alerts, read_topic, validate_alert

pytestmark = pytest.mark.integration

CONSUMER = ROOT / "examples" / "alert_consumer.py"

_RSS = """<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>https://example.net/</link>
{items}</channel></rss>"""
_ITEM = """<item><title>EU adopts sanctions on Russia, {what}</title><link>https://example.net/{run}/{n}</link>
<guid isPermaLink="false">urn:example:{run}:{n}</guid>
<description>The European Union agreed economic sanctions against Russia targeting {what}.</description></item>"""
_WHAT = ["oil exports and tankers", "state banks and insurers", "diamond traders in Antwerp"]


async def _run_consumer(bootstrap: str, group: str, output) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(CONSUMER),
        "--bootstrap-servers", bootstrap, "--group", group, "--output", str(output), "--idle-exit", "1.5",
        "alerts.sanctions",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    return stderr.decode()


async def test_consumer_writes_each_alert_once_and_resumes_with_its_group(broker, feed_server: FeedServer, tmp_path):
    run = uuid.uuid4().hex[:8]
    items = "".join(_ITEM.format(run=run, n=n, what=what) for n, what in enumerate(_WHAT))
    url = feed_server.serve("/example.rss", _RSS.format(items=items))
    summary = await Monitor(make_settings(tmp_path, broker.bootstrap_servers, [url])).run(once=True, handle_signals=False)
    assert summary.alerts_by_topic["alerts.sanctions"] == 3
    ours = {a["alert_id"]: a for a in await read_alerts(broker.bootstrap_servers, [url], ["alerts.sanctions"], expect=3)}
    assert len(ours) == 3
    output = tmp_path / "alerts.jsonl"
    group = f"archive-{run}"

    await _run_consumer(broker.bootstrap_servers, group, output)

    def our_lines() -> Counter[str]:
        lines = [orjson.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
        for alert in lines:
            validate_alert(alert)
        return Counter(a["alert_id"] for a in lines if a["alert_id"] in ours)

    assert our_lines() == Counter({alert_id: 1 for alert_id in ours})
    written_first = len(output.read_text(encoding="utf-8").splitlines())

    # At-least-once delivery repeats alerts: publish ours again, as a monitor restart would.
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for record in await read_topic(broker.bootstrap_servers, "alerts.sanctions"):
            if orjson.loads(record.value)["alert_id"] in ours:
                await producer.send_and_wait("alerts.sanctions", record.value, key=record.key, headers=list(record.headers))
    finally:
        await producer.stop()

    log = await _run_consumer(broker.bootstrap_servers, group, output)

    assert our_lines() == Counter({alert_id: 1 for alert_id in ours}), "duplicates are dropped by alert_id"
    # The group's committed offsets let the second run start after the first run's records.
    assert len(output.read_text(encoding="utf-8").splitlines()) == written_first
    assert "wrote 0 new alert(s)" in log


async def test_consumer_archives_only_schema_valid_alerts_and_says_why_it_skipped(broker, tmp_path):
    from monitor.adapters.kafka import TopicAdmin
    from monitor.settings import KafkaSettings
    from tests.test_cli_tail import _valid_alert

    topic = f"alerts.consumer-bad-{uuid.uuid4().hex[:8]}"
    await TopicAdmin(KafkaSettings(topic_partitions=1), broker.bootstrap_servers).ensure([topic])
    good, newer = _valid_alert(1), {**_valid_alert(2), "added_in_a_later_v1": True}
    values = [
        orjson.dumps({**_valid_alert(3), "severity": "urgent"}),  # passes the old schema_version/alert_id check
        orjson.dumps({**_valid_alert(4), "article": "a string"}),
        orjson.dumps({**_valid_alert(5), "alert_id": "not-hex"}),
        b"{not json",
        b"",
        orjson.dumps(good),
        orjson.dumps(newer),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()
    output = tmp_path / "alerts.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(CONSUMER), "--bootstrap-servers", broker.bootstrap_servers, "--group", f"g-{topic}",
        "--output", str(output), "--idle-exit", "1.5", topic,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    log = stderr.decode()
    assert process.returncode == 0, log

    archived = [orjson.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [a["alert_id"] for a in archived] == [good["alert_id"], newer["alert_id"]]
    assert archived[1]["added_in_a_later_v1"] is True, "fields a later v1 adds are kept"
    for offset, reason in [(0, "severity: 'urgent' is not one of"), (1, "article: 'a string' is not of type 'object'"),
                           (2, "alert_id: 'not-hex' does not match"), (3, "not JSON"), (4, "empty value")]:
        [line] = [line for line in log.splitlines() if f"skipped {topic} partition 0 offset {offset}: " in line]
        assert reason in line, (offset, reason, line)
    assert "wrote 2 new alert(s)" in log
